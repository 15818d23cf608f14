"""Log observers for `[log] format`: text and JSON lines on standard output, journald datagrams."""

from __future__ import annotations

import socket
import sys
from typing import IO, Any, Callable

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
_PRIORITY = {"critical": 2, "error": 3, "warn": 4, "info": 6, "debug": 7}


def make_observer(fmt: str, level: str = "info", stream: IO[str] | None = None) -> ILogObserver:
    """The observer for a configured format, filtered at `level`."""
    stream = stream or sys.stdout
    if fmt == "json":
        inner: ILogObserver = jsonFileLogObserver(stream)
    elif fmt == "journald":
        inner = JournaldObserver()
    else:
        inner = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    return FilteringLogObserver(inner, [predicate])


@implementer(ILogObserver)
class JournaldObserver:
    """Native journald protocol datagrams: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, MAILGW_* fields."""

    def __init__(self, path: str = "/run/systemd/journal/socket", fallback: Callable[[dict], None] | None = None) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.fallback = fallback or textFileLogObserver(sys.stdout)

    def __call__(self, event: dict[str, Any]) -> None:
        fields = {
            "MESSAGE": formatEvent(event),
            "PRIORITY": str(_PRIORITY.get(getattr(event.get("log_level"), "name", "info"), 6)),
            "SYSLOG_IDENTIFIER": "mailgw",
        }
        for key in ("event", "peer", "user", "listener", "protocol"):
            if key in event:
                fields[f"MAILGW_{key.upper()}"] = str(event[key])
        try:
            self.socket.sendto(encode_journal(fields), self.path)
        except OSError:
            self.fallback(event)


def encode_journal(fields: dict[str, str]) -> bytes:
    """journald's native format; values with a newline use the length-prefixed binary form."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


