"""`twistd mailgw`: options, which configuration to run (logged), the development default's state, makeService (exit 78)."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Optional

from twisted.logger import Logger
from twisted.python import usage

from mailgw.config import load_config, load_config_text
from mailgw.config.default import DEFAULT_STATE_DIR, development_config
from mailgw.config.locate import DEFAULT_CONFIG, ENV_VAR, locate_config
from mailgw.config.schema import Config
from mailgw.errors import ConfigError

EX_CONFIG = 78

log = Logger()


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = ("Run the mailgw gateway with the configuration named by --config, else $MAILGW_CONFIG, else "
                "/etc/mailgw/mailgw.toml if it exists (as mailgwctl). Without any of them, an embedded "
                "development setup serves on 127.0.0.1 high ports with its state in ./mailgw-state/.")
    optParameters = [["config", "c", None,
                      "TOML configuration file (default: $MAILGW_CONFIG, /etc/mailgw/mailgw.toml, the development setup)"]]


def prepare_development_state(state_dir: str = DEFAULT_STATE_DIR, out: Any = None) -> Config:
    """Create the development default's certificate (and first user) if missing; return its config."""
    from mailgw.net.certgen import ensure_self_signed

    out = out or sys.stdout
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    tls_dir = os.path.join(state_dir, "tls")
    if ensure_self_signed(os.path.join(tls_dir, "localhost.pem"), os.path.join(tls_dir, "localhost.key"), ["localhost", "127.0.0.1"]):
        out.write(f"mailgw: generated a self-signed certificate in {tls_dir}/ (localhost, 127.0.0.1)\n")
    _ensure_first_user(state_dir, out)
    _ensure_authorized_keys(state_dir, out)
    return load_config_text(development_config(state_dir))


FIRST_USER = "mailgw"


def _ensure_authorized_keys(state_dir: str, out: Any) -> None:
    """Create the manhole's empty authorized_keys (mode 0600) and say where to add a key."""
    path = os.path.join(state_dir, "authorized_keys")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        out.write(f"mailgw: SSH manhole on 127.0.0.1:2222 accepts the public keys in {os.path.abspath(path)} "
                  "(empty now): add yours, e.g. `cat ~/.ssh/id_ed25519.pub >> " + path + "`, then `ssh -p 2222 admin@127.0.0.1`\n")


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


def config_path(options: Options, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The file this process runs (mailgw.config.locate, as mailgwctl), logged once; None: the development default."""
    path, how = locate_config(options["config"], os.environ if environ is None else environ)
    if path is None:
        log.info("configuration: the development default (no --config, no ${var}, no {default})", var=ENV_VAR,
                 default=DEFAULT_CONFIG, event="config.source", source=how)
    else:
        log.info("configuration: {path} (from {how})", path=os.path.abspath(path), how=how, event="config.source",
                 source=how)
    return path


def load(path: Optional[str]) -> Config:
    if path is None:
        return prepare_development_state()
    return load_config(path)


def config_source(path: Optional[str]) -> Callable[[], Config]:
    """What a reload re-reads: the file chosen at start, or the development default."""
    if path is None:
        return lambda: load_config_text(development_config(DEFAULT_STATE_DIR))
    return lambda: load_config(path)


def makeService(options: Options):  # noqa: N802 (twistd's name)
    from twisted.internet import reactor

    from mailgw import assemble

    try:
        path = config_path(options)
        return assemble.build(load(path), reactor, source=config_source(path))
    except ConfigError as exc:
        for line in exc.problems:
            sys.stderr.write(f"config error: {line}\n")
        sys.stderr.flush()
        raise SystemExit(EX_CONFIG)
