#!/bin/sh
# Unpack Samba's ntlm_auth without installing Samba (for tests/auth/test_auth_winbind_real.py).
# Usage: tests/support/fetch_ntlm_auth.sh DIR ; then export what it prints.
set -eu
dir=${1:?usage: fetch_ntlm_auth.sh DIR}
mkdir -p "$dir/debs" "$dir/root"
cd "$dir/debs"
apt-get download samba samba-libs libwbclient0 samba-common samba-common-bin winbind libldb2 \
    libtalloc2 libtevent0 libtdb1 libpopt0 >/dev/null 2>&1
for deb in *.deb; do dpkg-deb -x "$deb" "$dir/root"; done
libs="$dir/root/usr/lib/x86_64-linux-gnu"
echo "export MAILGW_TEST_NTLM_AUTH=$dir/root/usr/bin/ntlm_auth"
echo "export MAILGW_TEST_NTLM_AUTH_LIBS=$libs:$libs/samba"
