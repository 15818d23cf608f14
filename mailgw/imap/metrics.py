"""IMAP's use of the process metrics (observe/metrics): connections and commands, bounded labels only."""

from __future__ import annotations

from mailgw.imap.commands.names import KNOWN_COMMANDS
from mailgw.observe import metrics as m

_STATUS = {b"OK": "ok", b"NO": "no", b"BAD": "bad"}


def connection_opened(listener: str) -> None:
    m.connections_total.labels(listener=listener, protocol="imap").inc()
    m.connections_active.labels(listener=listener, protocol="imap").inc()


def connection_closed(listener: str) -> None:
    m.connections_active.labels(listener=listener, protocol="imap").dec()


def tls_handshake(listener: str, result: str, version: str) -> None:
    m.tls_handshakes_total.labels(listener=listener, result=result, version=version or "none").inc()


def record_command(command: str, status: bytes, seconds: float) -> None:
    name = command if command in KNOWN_COMMANDS else "OTHER"
    m.imap_commands_total.labels(command=name, status=_STATUS.get(status, "no")).inc()
    m.imap_command_duration_seconds.labels(command=name).observe(max(seconds, 0.0))
