"""Per-user usage for quotas: the Maildir++ `maildirsize` file (when a quota is set) or a scan.

maildirsize: first line `<bytes>S,<messages>C` (the limits), then `<bytes> <messages>` delta
lines; the sum of the deltas is the usage. It is rewritten (temp file + rename) as one line
once it passes 5120 bytes, as the Maildir++ specification says. Blocking: pool thread only.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

from mailgw.store.maildir.layout import FileName, folder_path, list_folder_names
from mailgw.store import names

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
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._tracked and self._read():
            return
        self.bytes, self.messages = scan_usage(self.root)
        if self._tracked:
            self._rewrite()

    def _limits_line(self) -> str:
        return f"{self.bytes_limit or 0}S,{self.messages_limit or 0}C\n"

    def _read(self) -> bool:
        try:
            with open(self._file, "r", encoding="ascii", errors="replace") as fh:
                lines = fh.read().split("\n")
        except FileNotFoundError:
            return False
        if not lines or lines[0] + "\n" != self._limits_line():
            return False  # limits changed (or another tool's file): recount
        b = m = 0
        for line in lines[1:]:
            parts = line.split()
            if len(parts) != 2:
                continue
            try:
                b, m = b + int(parts[0]), m + int(parts[1])
            except ValueError:
                return False
        self.bytes, self.messages = max(0, b), max(0, m)
        return True

    @property
    def tracked(self) -> bool:
        return self._tracked

    def add(self, nbytes: int, nmessages: int) -> None:
        """Count a change in memory (reactor thread); `record` writes it to the file (pool thread)."""
        self.bytes = max(0, self.bytes + nbytes)
        self.messages = max(0, self.messages + nmessages)

    def record(self, nbytes: int, nmessages: int) -> None:
        if not self._tracked or (nbytes == 0 and nmessages == 0):
            return
        with self._lock:
            self._append(nbytes, nmessages)

    def _append(self, nbytes: int, nmessages: int) -> None:
        try:
            with open(self._file, "a", encoding="ascii") as fh:
                fh.write(f"{nbytes} {nmessages}\n")
                big = fh.tell() > 5120
            if big:
                self._rewrite()
        except OSError:
            pass  # usage stays right in memory; the file is recounted when it disagrees

    def _rewrite(self) -> None:
        tmp = self._file + f".tmp{os.getpid()}"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(self._limits_line() + f"{self.bytes} {self.messages}\n")
        os.rename(tmp, self._file)
