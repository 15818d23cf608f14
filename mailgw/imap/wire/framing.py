"""Input framing: bytes -> command units (lines with their literals), with line and literal limits.

The framer never executes anything: it splits input into commands, asks a decision callback before
accepting any literal (so APPENDLIMIT is checked before the `+`), spools literals over a threshold to
an unlinked temporary file, and can drop everything buffered (STARTTLS, CVE-2011-0411 class).
Every literal, `{0+}` included, is offered, so the session's count and byte caps see them all.
pull() never raises on input; each event it returns consumed input.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO, Optional, Union

MAX_LINE = 64 * 1024
SPOOL_THRESHOLD = 1024 * 1024


class SpooledLiteral:
    """A literal held in an unlinked temporary file (over SPOOL_THRESHOLD)."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def to_bytes(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return self.size


Part = Union[bytes, SpooledLiteral]  # bytes: a line fragment or a small literal (see Command.literal_index)


@dataclass
class Command:
    """A complete command: `lines[i]` is followed by `literals[i]` (len(literals) == len(lines) - 1)."""

    lines: list[bytes]
    literals: list[Part] = field(default_factory=list)

    def close(self) -> None:
        for lit in self.literals:
            if isinstance(lit, SpooledLiteral):
                lit.close()


@dataclass
class RawLine:
    """One line in line mode (IDLE's DONE, an AUTHENTICATE response)."""

    data: bytes


@dataclass
class LineTooLong:
    """The current line passed MAX_LINE; the rest of it up to LF is being discarded."""

    head: bytes


@dataclass
class LiteralOffer:
    """A literal was announced; call Framer.accept() or Framer.reject() before pulling again."""

    lines: list[bytes]  # the command so far (last element ends with the `{n}` announcement)
    size: int
    nonsync: bool


@dataclass
class BadLiteral:
    """`{...}` with an unusable size; for a non-synchronising one the stream cannot be resynchronised."""

    lines: list[bytes]
    nonsync: bool


@dataclass
class Discarded:
    """A command whose non-synchronising literal was refused has been read and thrown away."""

    lines: list[bytes]


Event = Union[Command, RawLine, LineTooLong, LiteralOffer, BadLiteral, Discarded]


def literal_announcement(line: bytes) -> Optional[tuple[int, bool, int]]:
    """(size, nonsync, start index of '{') if `line` ends with a literal announcement; size -1 if unusable."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    inner = line[start + 1 : -1]
    nonsync = inner.endswith(b"+")
    if nonsync:
        inner = inner[:-1]
    if not inner:
        return (-1, nonsync, start)
    if not inner.isdigit():
        return None
    if len(inner) > 10 or int(inner) > 4294967295:
        return (-1, nonsync, start)
    return (int(inner), nonsync, start)


class Framer:
    """Incremental splitter; feed() bytes, pull() events."""

    def __init__(self, max_line: int = MAX_LINE, spool_threshold: int = SPOOL_THRESHOLD) -> None:
        self.max_line = max_line
        self.spool_threshold = spool_threshold
        self._buf = bytearray()
        self._scan = 0  # no LF in _buf[:_scan]
        self._lines: list[bytes] = []
        self._literals: list[Part] = []
        self._literal: Optional[Union[bytearray, SpooledLiteral]] = None
        self._remaining = 0
        self._skipping = False  # reading a refused command to its end
        self._discard_line = False  # throwing away the tail of an over-long line
        self._offer: Optional[LiteralOffer] = None
        self._line_bytes = 0  # octets of the lines kept for the command being read

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes) -> None:
        self._buf.extend(data)

    def buffered(self) -> int:
        return len(self._buf)

    def pending_lines(self) -> int:
        return self._buf.count(b"\n")

    def drop_buffer(self) -> bytes:
        """Forget all unread input (STARTTLS); returns what was dropped."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        self._reset_command()
        return data

    def literal_bytes(self) -> int:
        """Octets of the literals already taken for the command being read."""
        return sum(len(lit) for lit in self._literals)

    def line_bytes(self) -> int:
        """Octets of the lines (with their literal announcements) of the command being read."""
        return self._line_bytes

    def in_command(self) -> bool:
        return bool(self._lines) or self._literal is not None or self._offer is not None

    # ------------------------------------------------------------------ decisions
    def accept(self) -> None:
        """Take the offered literal."""
        offer = self._offer
        assert offer is not None
        self._offer = None
        self._remaining = offer.size
        if offer.size == 0:
            self._literals.append(b"")
            return
        self._literal = SpooledLiteral() if offer.size > self.spool_threshold else bytearray()

    def reject(self) -> None:
        """Refuse the offered literal: a synchronising one ends the command, a non-synchronising one is skipped."""
        offer = self._offer
        assert offer is not None
        self._offer = None
        if offer.nonsync:
            self._skipping = True
            self._remaining = offer.size
            self._literal = None
        else:
            self._reset_command()

    # ------------------------------------------------------------------ output
    def pull(self, line_mode: bool = False) -> Optional[Event]:
        """The next event, or None if more input is needed."""
        while True:
            if self._offer is not None:
                return None
            if self._remaining:
                if not self._buf:
                    return None
                take = min(self._remaining, len(self._buf))
                chunk = bytes(self._buf[:take])
                del self._buf[:take]
                self._scan = 0
                self._remaining -= take
                if not self._skipping:
                    assert self._literal is not None
                    if isinstance(self._literal, bytearray):
                        self._literal.extend(chunk)
                    else:
                        self._literal.write(chunk)
                if self._remaining:
                    return None
                if not self._skipping:
                    lit = self._literal
                    self._literals.append(bytes(lit) if isinstance(lit, bytearray) else lit)  # type: ignore[arg-type]
                    self._literal = None
                continue
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                self._scan = len(self._buf)
                if self._discard_line:
                    self._buf.clear()
                    self._scan = 0
                    return None
                if len(self._buf) > self.max_line:
                    head = bytes(self._buf[:64])
                    self._buf.clear()
                    self._scan = 0
                    self._discard_line = True
                    self._reset_command()
                    return LineTooLong(head)
                return None
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan = 0
            if self._discard_line:
                self._discard_line = False
                continue
            if len(line) > self.max_line:
                self._reset_command()
                return LineTooLong(line[:64])
            if line.endswith(b"\r"):
                line = line[:-1]
            if line_mode and not self.in_command():
                return RawLine(line)
            ann = literal_announcement(line)
            if not (self._skipping and self._lines):
                # a refused command is only read to its end: its tag is all that is kept of it
                self._lines.append(line)
                self._line_bytes += len(line) + 2
            if ann is None:
                return self._finish()
            size, nonsync, _ = ann
            if size < 0:
                lines = self._lines
                self._reset_command()
                return BadLiteral(lines, nonsync)
            if self._skipping:
                if nonsync:
                    self._remaining = size
                    continue
                return self._finish()  # a synchronising literal inside a refused command: answer now
            # every literal is offered, {0+} included: the session's count and byte caps see them all
            # (issue 12: {0+} once skipped the offer, and 2,000 of them grew a pre-auth session by 127 MB)
            self._offer = LiteralOffer(list(self._lines), size, nonsync)
            return self._offer

    def _finish(self) -> Event:
        lines, literals = self._lines, self._literals
        skipping = self._skipping
        self._lines, self._literals = [], []
        self._line_bytes = 0
        self._skipping = False
        if skipping:
            for lit in literals:
                if isinstance(lit, SpooledLiteral):
                    lit.close()
            return Discarded(lines)
        return Command(lines, literals)

    def _reset_command(self) -> None:
        for lit in self._literals:
            if isinstance(lit, SpooledLiteral):
                lit.close()
        if isinstance(self._literal, SpooledLiteral):
            self._literal.close()
        self._lines, self._literals = [], []
        self._line_bytes = 0
        self._literal = None
        self._remaining = 0
        self._skipping = False
        self._offer = None
