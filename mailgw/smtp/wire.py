"""SMTP wire format: command-line framing, command parsing, DATA unstuffing and outbound dot-stuffing.

Bytes in, values out: no transport, no reactor, no store. Every limit here is a guard against
a known attack (security.md C13-C16); the server and client only act on what these return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

COMMAND_LINE_LIMIT = 2048  # RFC 5321 §4.5.3.1.4 says 512; Postfix line_length_limit is 2048
SASL_LINE_LIMIT = 12 * 1024  # an NTLM Type 3 from Active Directory can be a few KiB of base64
CLOSE_LINE_LIMIT = 64 * 1024  # a "line" this long without CRLF is an attack: 421 and close
TEXT_LINE_LIMIT = 998  # RFC 5322 §2.1.1, without the CRLF
_HOLD = 4096  # bytes of an unterminated DATA line held before they are passed on


# --------------------------------------------------------------------------- command framing


@dataclass(frozen=True)
class Line:
    """One complete command line, without its CRLF."""

    data: bytes


@dataclass(frozen=True)
class BareNewline:
    """A line ended by LF alone (SMTP smuggling, CVE-2023-51764): answered 500 5.5.2."""


@dataclass(frozen=True)
class TooLong:
    """A line over the current limit; the rest of it up to CRLF was discarded."""


@dataclass(frozen=True)
class Flood:
    """More than CLOSE_LINE_LIMIT octets without a line end: the connection must close."""


FramerEvent = Union[Line, BareNewline, TooLong, Flood]


class CommandFramer:
    """Pull-based line splitter over a bounded buffer: the session takes one line at a time.

    Pulling (rather than splitting everything on arrival) keeps the raw bytes after the current
    command intact, so STARTTLS can discard exactly the plaintext that followed it and DATA can
    hand the rest of the segment to the DataDecoder. The buffer is a bytearray consumed from the
    front (O(1) in CPython), so taking n short lines out of a full buffer costs O(buffer), not
    O(n x buffer). Holds at most `limit` + 1 octets of an unterminated line (then it discards to
    the next LF and reports TooLong, or Flood past CLOSE_LINE_LIMIT); what the session lets pile
    up in complete lines is bounded by the session, which stops reading (MAX_PIPELINED_INPUT).
    """

    def __init__(self, limit: int = SASL_LINE_LIMIT) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._discarding = 0  # >0: inside an over-long line, this many octets dropped so far
        self._too_long = False  # an over-long line ended: report it next

    def feed(self, data: bytes) -> None:
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                self._discarding += len(data)
                return
            self._discarding, self._too_long = 0, True
            data = data[nl + 1 :]
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Optional[FramerEvent]:
        """The next complete event, or None when more bytes are needed."""
        if self._too_long:
            self._too_long = False
            return TooLong()
        if self._discarding:
            return Flood() if self._discarding > CLOSE_LINE_LIMIT else None
        buf = self._buf
        nl = buf.find(b"\n", 0, self.limit + 2)
        if nl < 0:
            if len(buf) > self.limit + 1:
                later = buf.find(b"\n", self.limit + 2)
                if later >= 0:
                    del buf[: later + 1]
                    return TooLong()
                self._discarding = len(buf)
                self._buf = bytearray()
                return Flood() if self._discarding > CLOSE_LINE_LIMIT else None
            return None
        bare = nl == 0 or buf[nl - 1] != 0x0D
        line = b"" if bare else bytes(buf[: nl - 1])
        del buf[: nl + 1]
        if bare:
            return BareNewline()
        if len(line) > self.limit:
            return TooLong()
        return Line(line)

    def take_buffer(self) -> bytes:
        """Remove and return what is buffered (after STARTTLS: plaintext; after DATA: the body)."""
        rest = bytes(self._buf)
        self._buf, self._discarding, self._too_long = bytearray(), 0, False
        return rest


# --------------------------------------------------------------------------- command parsing


@dataclass(frozen=True)
class Command:
    """A parsed command line: upper-case verb and the raw argument text."""

    verb: str
    arg: str


def parse_command(line: bytes) -> Command:
    """Split a command line into verb and argument; non-ASCII verbs become '' (unknown)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("latin-1")
    verb, _, arg = text.partition(" ")
    if not verb.isascii() or not verb.isalpha():
        return Command("", arg)
    return Command(verb.upper(), arg.strip(" "))


class AddressError(ValueError):
    """An envelope address or parameter the server refuses; carries the reply."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.code, self.enhanced, self.text = code, enhanced, text

    def reply(self) -> bytes:
        return f"{self.code} {self.enhanced} {self.text}\r\n".encode()


@dataclass(frozen=True)
class PathArgument:
    """MAIL FROM / RCPT TO: the address (lower-cased domain kept as given) and ESMTP parameters."""

    address: str
    params: dict[str, Optional[str]] = field(default_factory=dict)


_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#&'*+\-/=?^_{|}~]+(\.[A-Za-z0-9!#&'*+\-/=?^_{|}~]+)*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$")
_PARAM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9\-]*)(=([\x21-\x3c\x3e-\x7e]+))?$")
_FORBIDDEN = set("\r\n\x00;`$<>\\\"%!@ ,:[]()")


def _check_mailbox(address: str, utf8: bool) -> str:
    """Validate `local@domain` strictly; relay tricks (%, !, quotes, routes, literals) are refused."""
    if len(address) > 254:
        raise AddressError(501, "5.1.7", "Bad address syntax")
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError(501, "5.1.3", "Bad recipient address syntax")
    if len(local.encode("utf-8")) > 64:
        raise AddressError(501, "5.1.7", "Bad address syntax")
    if any(ch in _FORBIDDEN for ch in local) or any(ch in _FORBIDDEN for ch in domain):
        # `b%x@gw`, `x!b@gw`, `"b@x"@gw`, `b@x@gw`, `b@[192.0.2.9]`, `$(cmd)` (CVE-2020-7247)
        raise AddressError(501, "5.1.3", "Bad recipient address syntax")
    if not utf8 and (not local.isascii() or not domain.isascii()):
        raise AddressError(553, "5.6.7", "SMTPUTF8 required for non-ASCII addresses")
    ascii_local = local if local.isascii() else "x"
    if not _LOCAL_ATOM.match(ascii_local):
        raise AddressError(501, "5.1.3", "Bad recipient address syntax")
    try:
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(501, "5.1.3", "Bad recipient address syntax") from None
    if not _DOMAIN.match(ascii_domain):
        raise AddressError(501, "5.1.3", "Bad recipient address syntax")
    return address


def parse_path(arg: str, keyword: str, allow_empty: bool, utf8_allowed: bool) -> PathArgument:
    """Parse `FROM:<addr> PARAM=VAL ...` (keyword "FROM" or "TO"); raise AddressError with the reply."""
    head, sep, rest = arg.partition(":")
    if not sep or head.strip().upper() != keyword:
        raise AddressError(501, "5.5.4", f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = rest.lstrip(" ")
    if not rest.startswith("<"):
        raise AddressError(501, "5.5.4", "Syntax error: address must be in angle brackets")
    close = rest.find(">")
    if close < 0:
        raise AddressError(501, "5.5.4", "Syntax error: missing '>'")
    address = rest[1:close]
    params: dict[str, Optional[str]] = {}
    for word in rest[close + 1 :].split():
        m = _PARAM.match(word)
        if not m:
            raise AddressError(501, "5.5.4", "Malformed parameter")
        name = m.group(1).upper()
        if name in params:
            raise AddressError(501, "5.5.4", "Duplicate parameter")
        params[name] = m.group(3)
    utf8 = utf8_allowed and "SMTPUTF8" in params if keyword == "FROM" else utf8_allowed
    if address.startswith("@"):  # RFC 5321 §4.1.2 source route: never honoured (`@gw:b@x`)
        raise AddressError(501, "5.1.3", "Source routes are not accepted")
    if address == "":
        if not allow_empty:
            raise AddressError(501, "5.1.3", "Bad recipient address syntax")
        return PathArgument("", params)
    return PathArgument(_check_mailbox(address, utf8), params)


def reply(code: int, enhanced: str, text: str) -> bytes:
    """One reply line (enhanced code may be '' for replies that have none, e.g. 220/221/334)."""
    middle = f" {enhanced}" if enhanced else ""
    return f"{code}{middle} {text}\r\n".encode()


def multiline(code: int, lines: list[str]) -> bytes:
    """A multi-line reply: `250-first` ... `250 last`."""
    out = [f"{code}-{text}\r\n" for text in lines[:-1]]
    out.append(f"{code} {lines[-1]}\r\n")
    return "".join(out).encode()


# --------------------------------------------------------------------------- DATA (inbound)


class DataDecoder:
    """Reads the DATA stream to the one `CRLF.CRLF` that ends it, removing dot-stuffing.

    Only CRLF ends lines; a bare CR or LF anywhere sets `bare_newline` and stops decoding
    (SMTP smuggling: `\\n.\\n`, `\\n.\\r\\n`, `\\r.\\r`). A long line never ends the data (T4):
    it only sets `long_line`. `sink` receives the unstuffed message, CRLF-terminated lines.
    """

    def __init__(self, sink: Callable[[bytes], None], max_line: int = TEXT_LINE_LIMIT) -> None:
        self._sink = sink
        self._max_line = max_line
        self._buf = b""
        self._bol = True  # _buf starts at the beginning of a line
        self._partial = 0  # octets of the current line already passed on
        self.size = 0  # unstuffed octets passed to the sink
        self.long_line = False
        self.bare_newline = False
        self.done = False

    def feed(self, data: bytes) -> Optional[bytes]:
        """Consume `data`; return the bytes after the terminator once the data is complete, else None.

        After `bare_newline` is set, returns b"" at once: the caller rejects and closes.
        """
        prefix = b"\r\n" if self._bol else b""
        s = prefix + self._buf + data
        self._buf = b""
        term = s.find(b"\r\n.\r\n")
        if term >= 0:
            self._region(s[: term + 2], len(prefix))
            self.done = True
            return b"" if self.bare_newline else s[term + 5 :]
        last = s.rfind(b"\r\n")
        if last >= len(prefix):
            self._region(s[: last + 2], len(prefix))
            rest, self._bol = s[last + 2 :], True
        else:
            rest = s[len(prefix) :]
        if self.bare_newline:
            return b""
        hold = 1 if rest.endswith(b"\r") else 0
        if b"\r" in rest[: len(rest) - hold] or b"\n" in rest:
            self.bare_newline = True
            return b""
        if len(rest) > _HOLD:  # pass on the bulk of an unterminated line, keep a possible CR
            body = rest[: len(rest) - hold]
            if self._bol and body.startswith(b"."):
                body = body[1:]
                self._partial += 1
            self._emit(body)
            self._partial += len(body)
            if self._partial > self._max_line:
                self.long_line = True
            rest, self._bol = rest[len(rest) - hold :], False
        self._buf = rest
        return None

    def _region(self, r: bytes, skip: int) -> None:
        """Pass on complete lines `r` (ending in CRLF; starting with a virtual CRLF when skip=2)."""
        crlf = r.count(b"\r\n")
        if r.count(b"\r") != crlf or r.count(b"\n") != crlf:
            self.bare_newline = True
            return
        if len(r) - skip > self._max_line or self._partial:
            lines = r[skip:].split(b"\r\n")
            first = self._partial + len(lines[0])
            if first > self._max_line or max(map(len, lines)) > self._max_line:
                self.long_line = True
        self._partial = 0
        out = r.replace(b"\r\n.", b"\r\n")  # RFC 5321 §4.5.2: drop the first of a leading dot
        self._emit(out[skip:])

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self.size += len(chunk)
            self._sink(chunk)


# --------------------------------------------------------------------------- DATA (outbound)


class DotStuffer:
    """Dot-stuffs a CRLF message stream across arbitrary chunk boundaries (RFC 5321 §4.5.2, T5).

    The input must be CRLF-only (the spool guarantees it); `finish()` returns the tail that
    ends the data with exactly one `CRLF.CRLF`.
    """

    def __init__(self) -> None:
        self._bol = True
        self._last = b""

    def stuff(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        prefix = b"\r\n" if self._bol else b""
        out = (prefix + chunk).replace(b"\r\n.", b"\r\n..")[len(prefix) :]
        # a CRLF split across two chunks: `...\r` | `\n.foo`
        if self._last == b"\r" and chunk.startswith(b"\n."):
            out = b"\n." + out[1:]
        self._bol = chunk.endswith(b"\r\n") or (self._last == b"\r" and chunk == b"\n")
        self._last = chunk[-1:]
        return out

    def finish(self) -> bytes:
        if self._last == b"":
            return b".\r\n"
        return b".\r\n" if self._bol else b"\r\n.\r\n"


def stuff_all(message: bytes, chunk: int = 16384) -> bytes:
    """Whole-message helper used by tests and small bounces."""
    s = DotStuffer()
    parts = [s.stuff(message[i : i + chunk]) for i in range(0, len(message), chunk)]
    parts.append(s.finish())
    return b"".join(parts)
