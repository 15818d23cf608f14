"""`twistd mailgw`: options, the development default's state, and makeService (config errors exit 78)."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.python import usage

from mailgw.config import load_config, load_config_text
from mailgw.config.default import DEFAULT_STATE_DIR, development_config
from mailgw.config.schema import Config
from mailgw.errors import ConfigError

EX_CONFIG = 78


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = ("Run the mailgw gateway. Without --config, an embedded development setup serves on "
                "127.0.0.1 high ports with its state in ./mailgw-state/.")
    optParameters = [["config", "c", None, "TOML configuration file (default: the development setup)"]]


def prepare_development_state(state_dir: str = DEFAULT_STATE_DIR, out: Any = None) -> Config:
    """Create the development default's certificate (and first user) if missing; return its config."""
    from mailgw.net.certgen import ensure_self_signed

    out = out or sys.stdout
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    tls_dir = os.path.join(state_dir, "tls")
    if ensure_self_signed(os.path.join(tls_dir, "localhost.pem"), os.path.join(tls_dir, "localhost.key"), ["localhost", "127.0.0.1"]):
        out.write(f"mailgw: generated a self-signed certificate in {tls_dir}/ (localhost, 127.0.0.1)\n")
    _ensure_first_user(state_dir, out)
    return load_config_text(development_config(state_dir))


FIRST_USER = "mailgw"


def _ensure_first_user(state_dir: str, out: Any) -> None:
    """Create the users file with one user and a random password, printed once, if there is no user."""
    import secrets

    from mailgw.auth.md4 import nt_hash
    from mailgw.auth.usersfile import LocalUser, hash_password, locked, read_users_file, write_users_file

    users_file = os.path.join(state_dir, "users")
    if not os.path.exists(users_file):
        os.close(os.open(users_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with locked(users_file):
        users, _ = read_users_file(users_file)
        if users:
            return
        password = secrets.token_urlsafe(12)
        users[FIRST_USER] = LocalUser(FIRST_USER, hash_password(password), (f"{FIRST_USER}@localhost",), nt_hash(password))
        write_users_file(users_file, users)
    out.write(f"mailgw: created the first user: login {FIRST_USER!r}, password {password!r} "
              f"(shown only now; change it with: mailgwctl user passwd {FIRST_USER})\n"
              f"mailgw: try: curl --cacert {state_dir}/tls/localhost.pem imaps://localhost:1993/ -u {FIRST_USER}:{password}\n")


def load(options: Options) -> Config:
    if options["config"] is None:
        return prepare_development_state()
    return load_config(options["config"])


def makeService(options: Options):  # noqa: N802 (twistd's name)
    from twisted.internet import reactor

    from mailgw import assemble

    try:
        return assemble.build(load(options), reactor)
    except ConfigError as exc:
        for line in exc.problems:
            sys.stderr.write(f"config error: {line}\n")
        sys.stderr.flush()
        raise SystemExit(EX_CONFIG)
