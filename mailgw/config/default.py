"""The embedded development default: everything on 127.0.0.1 high ports, state in ./mailgw-state/."""

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

[imap.default]
bind = ["tcp:1143:interface=127.0.0.1"]
bind_tls = ["tcp:1993:interface=127.0.0.1"]
tls = "default"
require_tls = true
auth = ["plain", "login", "ntlm"]

[submission.default]
bind = ["tcp:1587:interface=127.0.0.1"]
bind_tls = ["tcp:1465:interface=127.0.0.1"]
tls = "default"
auth = ["plain", "login", "ntlm"]
local_domains = ["localhost"]

[admin]
http = {{ listen = "tcp:8025:interface=127.0.0.1" }}
"""
