"""Per-user usage for quotas: the Maildir++ `maildirsize` file (when a quota is set) or a scan.

maildirsize: first line `<bytes>S,<messages>C` (the limits), then `<bytes> <messages>` delta
lines; the sum of the deltas is the usage. It is rewritten (temp file + rename) as one line
once it passes 5120 bytes, as the Maildir++ specification says. The counts in memory belong to
the reactor thread; the file is read and written by pool jobs holding the account lock, which
get the counts they need as arguments (docs/store.md).
"""

from __future__ import annotations

import os
from typing import Optional

from mailgw.store import names
from mailgw.store.maildir.accountfiles import replace_file
from mailgw.store.maildir.layout import FileName, folder_path, list_folder_names

FILE = "maildirsize"


def scan_usage(root: str) -> tuple[int, int]:
    """(bytes, messages) of every folder, from file names (W=, S=) or stat: no message is read."""
    total = count = 0
    for name in [names.INBOX, *list_folder_names(root)]:
        b, m = folder_usage(folder_path(root, name))
        total, count = total + b, count + m
    return total, count


def folder_usage(path: str) -> tuple[int, int]:
    """(bytes, messages) of one folder."""
    total = count = 0
    for sub in ("new", "cur"):
        try:
            entries = os.listdir(os.path.join(path, sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.startswith("."):
                continue
            s, w = FileName.parse(entry).sizes()
            size = w if w is not None else s
            if size is None:
                try:
                    size = os.stat(os.path.join(path, sub, entry)).st_size
                except OSError:
                    continue
            total += size
            count += 1
    return total, count


class Usage:
    """A user's (bytes, messages) against the configured limits."""

    def __init__(self, root: str, bytes_limit: Optional[int], messages_limit: Optional[int]) -> None:
        self.root = root
        self.bytes_limit = bytes_limit
        self.messages_limit = messages_limit
        self.bytes = 0
        self.messages = 0
        self._file = os.path.join(root, FILE)
        self._tracked = bytes_limit is not None or messages_limit is not None

    def load(self) -> tuple[int, int]:
        """(bytes, messages) from maildirsize, or counted (and written) afresh. Pool thread, account lock held."""
        if self._tracked:
            found = self._read()
            if found is not None:
                return found
        counted = scan_usage(self.root)
        if self._tracked:
            self._rewrite(counted)
        return counted

    def _limits_line(self) -> str:
        return f"{self.bytes_limit or 0}S,{self.messages_limit or 0}C\n"

    def _read(self) -> Optional[tuple[int, int]]:
        try:
            with open(self._file, "r", encoding="ascii", errors="replace") as fh:
                lines = fh.read().split("\n")
        except FileNotFoundError:
            return None
        if not lines or lines[0] + "\n" != self._limits_line():
            return None  # limits changed (or another tool's file): recount
        b = m = 0
        for line in lines[1:]:
            parts = line.split()
            if len(parts) != 2:
                continue
            try:
                b, m = b + int(parts[0]), m + int(parts[1])
            except ValueError:
                return None
        return max(0, b), max(0, m)

    @property
    def tracked(self) -> bool:
        return self._tracked

    def add(self, nbytes: int, nmessages: int) -> None:
        """Count a change in memory (reactor thread); `record` writes it to the file (pool thread)."""
        self.bytes = max(0, self.bytes + nbytes)
        self.messages = max(0, self.messages + nmessages)

    def record(self, nbytes: int, nmessages: int, total: tuple[int, int]) -> None:
        """Append a delta line (pool thread, account lock held); `total` is the usage after it, for a rewrite."""
        if not self._tracked or (nbytes == 0 and nmessages == 0):
            return
        try:
            with open(self._file, "a", encoding="ascii") as fh:
                fh.write(f"{nbytes} {nmessages}\n")
                big = fh.tell() > 5120
            if big:
                self._rewrite(total)
        except OSError:
            pass  # usage stays right in memory; the file is recounted when it disagrees

    def _rewrite(self, total: tuple[int, int]) -> None:
        replace_file(self._file, (self._limits_line() + f"{total[0]} {total[1]}\n").encode("ascii"), durable=False)
