"""`mailgwctl queue list|flush|delete`: the relay queue on disk (works with the gateway running or stopped).

`list` reads the envelopes; `flush` leaves a request file that each running relay picks up
within its poll interval; `delete` removes the envelope (the commit point) and the data.
Nothing destructive without `--yes`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

from mailgw.cli.settings import EX_CONFIG, load_effective_config
from mailgw.smtp.queue import entry_summary, remove_files, request_flush, scan_entries


def add_parser(subparsers: Any) -> None:
    queue = subparsers.add_parser("queue", help="the relay queue: list, flush, delete")
    queue.add_argument("--config", "-c", dest="config_sub", help=argparse.SUPPRESS)
    queue.add_argument("--state-dir", help="state directory (default: from the configuration)")
    sub = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="queued messages (id, age, attempts, recipients, last error)")
    ls.add_argument("-f", "--format", choices=("table", "tab", "json"), default="table")
    sub.add_parser("flush", help="retry every queued message now")
    rm = sub.add_parser("delete", help="remove queued messages without delivering or bouncing them")
    rm.add_argument("ids", nargs="*", metavar="ID")
    rm.add_argument("--all", action="store_true", help="every queued message")
    rm.add_argument("--yes", action="store_true", help="really delete")


def queue_dirs(args: argparse.Namespace) -> dict[str, str]:
    """{submission name: queue directory}; raises ConfigError for a bad configuration."""
    state_dir = getattr(args, "state_dir", None)
    names: list[str] = []
    if state_dir is None:
        config = load_effective_config(args)
        state_dir = config.server.state_dir
        names = list(config.submission)
    root = os.path.join(state_dir, "queue")
    if os.path.isdir(root):
        names += [n for n in sorted(os.listdir(root)) if n not in names]
    return {n: os.path.join(root, n) for n in names}


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def run(args: argparse.Namespace) -> int:
    from mailgw.errors import ConfigError

    try:
        dirs = queue_dirs(args)
    except ConfigError as exc:
        for line in exc.problems:
            sys.stderr.write(f"config error: {line}\n")
        return EX_CONFIG
    action = args.queue_command
    if action == "list":
        return _list(dirs, args.format)
    if action == "flush":
        for directory in dirs.values():
            if os.path.isdir(directory):
                request_flush(directory)
        print("flush requested")
        return 0
    return _delete(dirs, args)


def _list(dirs: dict[str, str], fmt: str) -> int:
    now = time.time()
    rows = []
    for name, directory in dirs.items():
        for entry in scan_entries(directory):
            row = entry_summary(entry, now)
            row["relay"] = name
            rows.append(row)
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return 0
    sep = "\t" if fmt == "tab" else "  "
    if fmt == "table":
        print(sep.join(["ID".ljust(24), "RELAY".ljust(10), "AGE".rjust(6), "TRIES", "SIZE".rjust(9), "SENDER -> RECIPIENTS"]))
    for r in rows:
        cells = [r["id"].ljust(24), r["relay"].ljust(10), _age(r["age"]).rjust(6), str(r["attempts"]).rjust(5),
                 str(r["size"]).rjust(9), f"<{r['sender']}> -> " + ", ".join(r["recipients"])]
        print(sep.join(c.strip() if fmt == "tab" else c for c in cells))
        if r["last_error"] and fmt == "table":
            print(" " * 26 + "last error: " + r["last_error"])
        if r["next_attempt_at"] and fmt == "table":
            print(" " * 26 + "next attempt: " + r["next_attempt_at"])
    if fmt == "table":
        print(f"{len(rows)} message(s) queued")
    return 0


def _delete(dirs: dict[str, str], args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        sys.stderr.write("queue delete: give message ids or --all\n")
        return 2
    if not args.yes:
        sys.stderr.write("queue delete: refusing without --yes\n")
        return 2
    wanted = set(args.ids)
    deleted, missing = 0, set(wanted)
    for directory in dirs.values():
        for entry in scan_entries(directory):
            if args.all or entry.id in wanted:
                if remove_files(directory, entry.id):
                    deleted += 1
                missing.discard(entry.id)
    for queue_id in sorted(missing):
        sys.stderr.write(f"queue delete: no message {queue_id}\n")
    print(f"{deleted} message(s) deleted")
    return 1 if missing else 0
