"""`mailgwctl user add|passwd|del|list`: edits the local users file (passwords never on the command line).

mailgw.cli.main dispatches to it: `user.add_parser(subparsers)` registers the `user` command and
`user.run(args) -> int` executes it. `args.users_file` comes from `--users-file`, or the
caller sets it from `[auth.local] users_file` before calling run; the caller also sets
`args.config_offers_ntlm` (any server's `auth` has ntlm), which makes `add` store the NT hash.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import IO, Any, Optional

from mailgw.auth.md4 import nt_hash
from mailgw.auth.usersfile import (LocalUser, hash_password, locked, parse_users, read_users_file, valid_address,
                                   valid_name, write_users_file)
from mailgw.errors import ConfigError

EX_OK, EX_FAIL, EX_USAGE = 0, 1, 2


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Register `user` with its subcommands on an argparse subparsers object."""
    user = subparsers.add_parser("user", help="manage the local users file")
    user.add_argument("--users-file", dest="users_file", default=None,
                      help="users file (default: [auth.local] users_file of the config)")
    sub = user.add_subparsers(dest="user_command", required=True)

    def password_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
        p.add_argument("--scheme", choices=("argon2id", "bcrypt"), default="argon2id")
        p.add_argument("--ntlm", action=argparse.BooleanOptionalAction, default=None,
                       help="also store the NT hash (password-equivalent; needed for NTLM from this file). "
                            "Default for add: yes when the configuration offers ntlm on any server; "
                            "for passwd: keep what the user had")

    add = sub.add_parser("add", help="add an account")
    add.add_argument("name")
    add.add_argument("--address", "-a", action="append", default=[], help="address the user may send as (repeat)")
    password_options(add)
    passwd = sub.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    password_options(passwd)
    delete = sub.add_parser("del", help="delete an account")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="really delete")
    listing = sub.add_parser("list", help="list accounts")
    listing.add_argument("-f", "--format", choices=("table", "tab", "json"), default="table")
    return user


def _read_password(args: argparse.Namespace, stdin: IO[str], err: IO[str]) -> Optional[str]:
    if args.password_stdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        if not stdin.isatty():
            err.write("error: no terminal for the password prompt; use --password-stdin\n")
            return None
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            err.write("error: passwords do not match\n")
            return None
    if not password:
        err.write("error: empty password\n")
        return None
    return password


def _load(path: str) -> dict[str, LocalUser]:
    if not os.path.exists(path):
        return {}
    return read_users_file(path)[0]


def run(args: argparse.Namespace, stdin: Optional[IO[str]] = None, out: Optional[IO[str]] = None,
        err: Optional[IO[str]] = None) -> int:
    """Execute a parsed `user` command; 0 ok, 1 failure, 2 usage error."""
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    path = getattr(args, "users_file", None)
    if not path:
        err.write("error: no users file (--users-file, or [auth.local] users_file in the config)\n")
        return EX_USAGE
    try:
        if args.user_command == "list":
            return _list(_load(path), args.format, out)
        if not valid_name(args.name):
            err.write(f"error: invalid user name {args.name!r}\n")
            return EX_USAGE
        with locked(path):
            users = _load(path)
            key = args.name.casefold()
            if args.user_command == "del":
                if key not in users:
                    err.write(f"error: no such user {args.name}\n")
                    return EX_FAIL
                if not args.yes:
                    err.write(f"error: refusing to delete {args.name} without --yes\n")
                    return EX_USAGE
                del users[key]
                write_users_file(path, users)
                out.write(f"deleted {args.name}\n")
                return EX_OK
            return _set_password(args, users, key, path, stdin, out, err)
    except ConfigError as e:
        err.write("".join(f"error: {p}\n" for p in e.problems))
        return EX_FAIL
    except OSError as e:
        err.write(f"error: {path}: {e.strerror}\n")
        return EX_FAIL


def _set_password(args: argparse.Namespace, users: dict[str, LocalUser], key: str, path: str,
                  stdin: IO[str], out: IO[str], err: IO[str]) -> int:
    existing = users.get(key)
    if args.user_command == "add":
        if existing is not None:
            err.write(f"error: user {args.name} exists (use passwd)\n")
            return EX_FAIL
        addresses = tuple(a.strip().lower() for a in args.address)
        bad = [a for a in addresses if not valid_address(a)]
        if bad:
            err.write(f"error: invalid address {bad[0]!r}\n")
            return EX_USAGE
        taken = {a for u in users.values() for a in u.addresses} & set(addresses)
        if taken:
            err.write(f"error: address {sorted(taken)[0]} belongs to another user\n")
            return EX_FAIL
        name = args.name
    else:
        if existing is None:
            err.write(f"error: no such user {args.name}\n")
            return EX_FAIL
        name, addresses = existing.name, existing.addresses
    password = _read_password(args, stdin, err)
    if password is None:
        return EX_FAIL
    keep_nt = existing is not None and existing.nt_hash is not None
    want_nt = args.ntlm if args.ntlm is not None else keep_nt
    if args.user_command == "add" and args.ntlm is None and getattr(args, "config_offers_ntlm", False):
        # A server offers NTLM: without the NT hash every NTLM login of this user fails.
        want_nt = True
        err.write("note: also storing the NT hash, since the configuration offers NTLM; it is password-"
                  "equivalent (anyone who reads it can log in by NTLM): keep the users file private, "
                  "or use --no-ntlm\n")
    try:
        hashed = hash_password(password, args.scheme)
    except ValueError as e:
        err.write(f"error: {e}\n")
        return EX_USAGE
    users[key] = LocalUser(name, hashed, addresses, nt_hash(password) if want_nt else None)
    parse_users(users[key].line())  # never write a line the reader would refuse
    write_users_file(path, users)
    out.write(f"{'added' if args.user_command == 'add' else 'password changed for'} {name}\n")
    return EX_OK


def _list(users: dict[str, LocalUser], fmt: str, out: IO[str]) -> int:
    rows: list[dict[str, Any]] = [{"name": u.name, "addresses": list(u.addresses), "ntlm": u.nt_hash is not None,
             "disabled": u.password_hash.startswith("!"),
             "scheme": "argon2" if "$argon2" in u.password_hash else "bcrypt"}
            for u in sorted(users.values(), key=lambda u: u.name.casefold())]
    if fmt == "json":
        out.write(json.dumps(rows) + "\n")
    elif fmt == "tab":
        for r in rows:
            out.write(f"{r['name']}\t{','.join(r['addresses'])}\t{'yes' if r['ntlm'] else 'no'}\n")
    else:
        width = max([4] + [len(r["name"]) for r in rows])
        out.write(f"{'NAME':<{width}}  NTLM  ADDRESSES\n")
        for r in rows:
            out.write(f"{r['name']:<{width}}  {'yes' if r['ntlm'] else 'no ':<4}  {', '.join(r['addresses'])}\n")
    return EX_OK


def main(argv: Optional[list[str]] = None) -> int:
    """Standalone entry (`python -m mailgw.cli.user user ...`): the `user` command alone, without a configuration."""
    parser = argparse.ArgumentParser(prog="mailgwctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
