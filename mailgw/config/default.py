"""The embedded development default: everything on 127.0.0.1 high ports, state in ./mailgw-state/.

IMAP 1143 (STARTTLS) and 1993 (IMAPS) and submission 1587/1465 offer PLAIN and LOGIN; the
NTLM-only IMAP server is on 1144 (no TLS, never a plaintext password).
"""

from __future__ import annotations

DEFAULT_STATE_DIR = "./mailgw-state"


def development_config(state_dir: str = DEFAULT_STATE_DIR) -> str:
    """TOML text of the development default, with files under `state_dir` (created by the tap)."""
    return f"""
config_version = 1

[server]
hostname = "localhost"
state_dir = {state_dir!r}

[tls.default]
cert_file = "{state_dir}/tls/localhost.pem"
key_file = "{state_dir}/tls/localhost.key"

[store]
root = "{state_dir}/mail/{{user}}"

[auth]
backends = ["local"]
failure_delay = "2s"

[auth.local]
users_file = "{state_dir}/users"

[auth.ntlm]
domain = "MAILGW"
source = "directory"

# TLS servers offer basic (PLAIN, LOGIN) only: curl, mutt, mbsync and fetchmail all prefer NTLM
# when it is offered, and only curl of them speaks NTLMv2 (docs/auth.md "Which clients speak NTLM").
[imap.default]
bind = ["tcp:1143:interface=127.0.0.1"]
bind_tls = ["tcp:1993:interface=127.0.0.1"]
tls = "default"
require_tls = true
auth = ["basic"]

# NTLM lives on its own server, as in etc/mailgw.toml.example ("legacy"): integrated auth only.
[imap.legacy]
bind = ["tcp:1144:interface=127.0.0.1"]
require_tls = false
auth = ["ntlm"]

[submission.default]
bind = ["tcp:1587:interface=127.0.0.1"]
bind_tls = ["tcp:1465:interface=127.0.0.1"]
tls = "default"
auth = ["basic"]
local_domains = ["localhost"]

[admin]
http = {{ listen = "tcp:8025:interface=127.0.0.1" }}
manhole = {{ listen = "tcp:2222:interface=127.0.0.1", authorized_keys_file = "{state_dir}/authorized_keys" }}
"""
