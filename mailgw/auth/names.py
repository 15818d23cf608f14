"""Login names: validation, the canonical throttle key, and sanitising for logs."""

from __future__ import annotations

import re

MAX_LOGIN_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024

# Dovecot's auth_username_chars (a-zA-Z0-9.-_@) plus '+' and '\' for DOMAIN\user; \w admits
# Unicode letters. LDAP escaping happens anyway; this is defence in depth (security.md 28).
_LOGIN_RE = re.compile(r"[\w.\-@+\\]{1,%d}" % MAX_LOGIN_LENGTH)
_LOG_UNSAFE = re.compile(r"[^\w.\-@+]", re.ASCII)


def clean_login(login: str) -> str | None:
    """The login with surrounding whitespace removed, or None if it has characters we never accept."""
    login = login.strip()
    if not _LOGIN_RE.fullmatch(login):
        return None
    return login


def split_login(login: str) -> tuple[str, str, str]:
    """Split `DOMAIN\\user`, `user@domain` or `user` into (netbios_domain, local_part, mail_domain)."""
    netbios = ""
    if "\\" in login:
        netbios, _, login = login.partition("\\")
    elif "/" in login:  # curl accepts DOMAIN/user as well
        netbios, _, login = login.partition("/")
    local, at, domain = login.rpartition("@")
    if not at:
        return netbios, login, ""
    return netbios, local, domain


def throttle_key(login: str) -> str:
    """The key that `alice`, `ALICE`, `alice `, `DOM\\alice` and `alice@dom` share in the failure budget."""
    _, local, _ = split_login(login.strip())
    return local.casefold()


def log_safe(login: str, limit: int = 64) -> str:
    """A user name fit for a fail2ban-matched log line: no quotes, spaces, control or filter characters.

    Printable ASCII word characters and `.-@+` are kept, a backslash (DOMAIN\\user) is doubled,
    everything else becomes `?`, so `user="..."` always parses and no second `rip=` can be forged.
    """
    text = "\\\\".join(_LOG_UNSAFE.sub("?", part) for part in login[:limit].split("\\"))
    if len(login) > limit:
        text += "..."
    return text
