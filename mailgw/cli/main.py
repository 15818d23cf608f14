"""`mailgwctl`: check-config, show-config, and the subcommands of the other modules of mailgw.cli (user, queue, cert).

Exit codes: 0 ok, 1 runtime failure, 2 usage error (argparse), 78 invalid configuration (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from mailgw.cli import cert, queue, user
from mailgw.cli.settings import EX_CONFIG, config_path, load_effective_config
from mailgw.config.schema import Config

# Subcommands of the other modules of this package: each exposes add_parser(subparsers) and run(args) -> int.
_PLUGINS = (user, queue, cert)


def _check_config(args: argparse.Namespace) -> int:
    from mailgw import assemble
    from mailgw.errors import ConfigError

    try:
        config = load_effective_config(args)
        assemble.check(config)
    except ConfigError as exc:
        for line in exc.problems:
            sys.stderr.write(f"config error: {line}\n")
        return EX_CONFIG
    from mailgw.config.resolve import front_end_warnings

    for line in ntlm_warnings(config) + front_end_warnings(config):
        sys.stderr.write(f"warning: {line}\n")
    print(f"configuration ok: {config_path(args) or 'embedded development default'}")
    return 0


def ntlm_servers(config: Config) -> list[str]:
    """Dotted names of the servers whose `auth` offers ntlm."""
    return ([f"imap.{n}" for n, s in config.imap.items() if "ntlm" in s.auth]
            + [f"submission.{n}" for n, s in config.submission.items() if "ntlm" in s.auth])


def ntlm_warnings(config: Config) -> list[str]:
    """Warnings (not errors) about NTLM that cannot work: local users without an NT hash.

    NTLMv2 needs the NT hash on the server; a user added without one fails every NTLM login, and
    clients that prefer NTLM (curl) do not fall back to PLAIN, each failure feeding the throttle.
    """
    from mailgw.auth.usersfile import read_users_file
    from mailgw.errors import ConfigError

    servers = ntlm_servers(config)
    local = config.auth.local
    if not servers or local is None or "local" not in config.auth.backends:
        return []
    if config.auth.ntlm is not None and config.auth.ntlm.source == "winbind":
        return []  # the domain controller verifies; the users file plays no part in NTLM
    try:
        users, _ = read_users_file(local.users_file)
    except (OSError, ConfigError):
        return []  # not readable by this user; the running gateway reports it
    missing = sorted(u.name for u in users.values() if u.nt_hash is None and not u.password_hash.startswith("!"))
    if not missing:
        return []
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return [f"{', '.join(servers)} offer{'s' if len(servers) == 1 else ''} ntlm, but local user"
            f"{'s' if len(missing) > 1 else ''} {shown} in {local.users_file} "
            f"{'have' if len(missing) > 1 else 'has'} no NT hash: NTLM fails for them "
            "(store one with `mailgwctl user passwd --ntlm NAME`)"]


def _show_config(args: argparse.Namespace) -> int:
    from mailgw.config import render
    from mailgw.errors import ConfigError

    try:
        config = load_effective_config(args)
    except ConfigError as exc:
        for line in exc.problems:
            sys.stderr.write(f"config error: {line}\n")
        return EX_CONFIG
    sys.stdout.write(render(config, non_default=args.non_default))
    return 0


def _users_file_from_config(args: argparse.Namespace) -> Optional[str]:
    """[auth.local] users_file of the configuration (which need not exist yet); the development default's without one.

    ConfigError propagates: a configuration mailgwctl cannot read is reported, never taken for "no users file".
    """
    from mailgw.config.default import DEFAULT_STATE_DIR

    if config_path(args) is None:
        return os.path.join(DEFAULT_STATE_DIR, "users")
    config = load_effective_config(args, check_files=False)
    return config.auth.local.users_file if config.auth.local else None


def _offers_ntlm(args: argparse.Namespace) -> bool:
    """Does the configuration (or the development default) offer NTLM on any server? False if unreadable."""
    from mailgw.errors import ConfigError

    try:
        return bool(ntlm_servers(load_effective_config(args, check_files=False)))
    except ConfigError:
        return False


def _accept_config_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--config` after any (sub)command too (`mailgwctl user add --config C alice`), as before it.

    SUPPRESS as default: a nested parser must not reset the value an outer one parsed.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--config" not in child._option_string_actions:
                    flags = ["--config"] + (["-c"] if "-c" not in child._option_string_actions else [])
                    child.add_argument(*flags, dest="config_sub", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _accept_config_everywhere(child)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="mailgwctl", description="Administer a mailgw gateway.")
    parser.add_argument("--config", "-c", help="configuration file (default: $MAILGW_CONFIG or /etc/mailgw/mailgw.toml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate the configuration (exit 0, or 78 with one line per error)")
    check.set_defaults(handler=_check_config)
    show = sub.add_parser("show-config", help="print the effective configuration")
    show.add_argument("--non-default", action="store_true", help="only settings that differ from the defaults")
    show.set_defaults(handler=_show_config)
    plugins: dict[str, object] = {}
    for module in _PLUGINS:
        name = module.__name__
        before = set(sub.choices)
        module.add_parser(sub)
        for added in set(sub.choices) - before:
            if sub.choices[added].get_default("handler") is None:
                sub.choices[added].set_defaults(handler=module.run)
        plugins[name] = module
    _accept_config_everywhere(parser)
    return parser, plugins


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config_sub", None):
        args.config = args.config_sub
    if args.command == "user":
        from mailgw.errors import ConfigError

        if not getattr(args, "users_file", None):
            try:
                args.users_file = _users_file_from_config(args)
            except ConfigError as exc:
                for line in exc.problems:
                    sys.stderr.write(f"config error: {line}\n")
                return EX_CONFIG
        args.config_offers_ntlm = _offers_ntlm(args)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error("no handler for this command")
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
