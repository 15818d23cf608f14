"""Per-folder keywords (`mailgw-keywords`): IMAP keywords that have no Maildir info letter.

Format (UTF-8 text, append-only): one line per change, `<uid> <keyword> <keyword> ...`;
a line with only `<uid>` clears that message's keywords; the last line for a uid wins.
Lines for expunged uids are dropped when the file is compacted (rewritten via temp file and
rename once it holds more than twice as many lines as live entries). System flags live in
the file names' `:2,` info letters, so other Maildir tools agree on them.
"""

from __future__ import annotations

import os

from mailgw.files import durable_replace

FILE = "mailgw-keywords"


class Keywords:
    def __init__(self, path: str) -> None:
        self._file = os.path.join(path, FILE)
        self.by_uid: dict[int, frozenset[str]] = {}
        self._lines = 0
        try:
            with open(self._file, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return
        for line in raw.decode("utf-8", "replace").split("\n"):
            parts = line.split()
            if not parts or not parts[0].isdigit():
                continue
            self._lines += 1
            uid = int(parts[0])
            if len(parts) > 1:
                self.by_uid[uid] = frozenset(parts[1:])
            else:
                self.by_uid.pop(uid, None)

    def get(self, uid: int) -> frozenset[str]:
        return self.by_uid.get(uid, frozenset())

    def update(self, changes: dict[int, frozenset[str]]) -> None:
        """Record new keyword sets (only those that differ) with one append."""
        lines = []
        for uid, kws in sorted(changes.items()):
            if self.get(uid) == kws:
                continue
            if kws:
                self.by_uid[uid] = kws
            else:
                self.by_uid.pop(uid, None)
            lines.append(" ".join([str(uid), *sorted(kws)]) + "\n")
        if not lines:
            return
        with open(self._file, "ab") as fh:
            fh.write("".join(lines).encode("utf-8"))
        self._lines += len(lines)

    def forget(self, uids: list[int]) -> None:
        """Drop keywords of expunged uids; compact the file when it has grown."""
        for uid in uids:
            self.by_uid.pop(uid, None)
        if self._lines > 2 * len(self.by_uid) + 100:
            self.compact()

    def compact(self) -> None:
        lines = "".join(" ".join([str(uid), *sorted(kws)]) + "\n" for uid, kws in sorted(self.by_uid.items()))
        durable_replace(self._file, lines.encode("utf-8"), sync_directory=False)  # same content: a lost rename loses nothing
        self._lines = len(self.by_uid)
