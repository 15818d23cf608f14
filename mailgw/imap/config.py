"""Per-virtual-server IMAP settings and limits, as plain values handed to the factory.

Which mechanisms a server offers and whether TLS comes first are not here: the credential
service decides them (mailgw.auth.policy), and the session asks it.
"""

from __future__ import annotations

from dataclasses import dataclass

APPEND_LIMIT = 50 * 1024 * 1024


@dataclass(frozen=True)
class IMAPLimits:
    """Resource limits of one connection (security.md D, G)."""

    max_line: int = 64 * 1024
    append_limit: int = APPEND_LIMIT  # RFC 7889 APPENDLIMIT; larger {n} -> NO [TOOBIG], no "+"
    preauth_literal: int = 4096  # literal size allowed before login
    command_literal: int = 64 * 1024  # literal size allowed in commands other than APPEND
    spool_threshold: int = 1024 * 1024  # literals above this go to an unlinked temporary file
    max_literals: int = 256  # literals per command (CVE-2025-61600)
    command_literals_total: int = 1024 * 1024  # all literals of one non-APPEND command together
    command_lines_total: int = 1024 * 1024  # the lines of one command (between its literals) together
    preauth_command: int = 64 * 1024  # one command before login: lines and literals ({0+} too) together
    preauth_timeout: float = 60.0
    autologout: float = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes
    idle_keepalive: float = 120.0  # "* OK Still here" during IDLE
    max_pipelined: int = 64  # commands waiting while one runs (past it, reading pauses); also run per reactor turn
    max_buffer: int = 256 * 1024  # unread input while a command runs; past it, reading pauses
    max_auth_failures: int = 3
    max_user_ip_sessions: int = 10  # concurrent logged-in sessions per (user, client IP)
    max_bad_commands: int = 20
    fetch_batch: int = 200  # at most this many messages per reactor turn in FETCH (and at most pacing.SLICE)


@dataclass(frozen=True)
class IMAPPolicy:
    """What one `[imap.NAME]` virtual server does after login (its pre-auth policy is the auth service's)."""

    name: str = "default"
    fast_message_retrieval: bool = True
    hostname: str = "localhost"
    limits: IMAPLimits = IMAPLimits()
