"""The manhole's namespace: the assembled gateway plus helpers for sessions, the relay queue, throttling and reload.

The gateway is met only through mailgw.interfaces.IGatewayView (its sessions, relay queues,
throttled peers, listeners and configuration); the namespace still offers the object itself as
`gateway` for inspection. Helpers print tables and return None, so the REPL shows no quoted strings.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

from twisted.internet import defer

from mailgw.interfaces import IGatewayView, IRelayQueue

HELP = """mailgw manhole: a Python shell inside the running gateway. Names:
  gateway            the assembled Gateway (config, tls, sessions, store, auth, queue, extras, root)
  config             the configuration in force
  sessions()         open client sessions, numbered, per listener; sessions("name") for one listener
  kick(n)            close session number n of the last sessions() listing (or pass the session object)
  queue()            the relay queues; flush() attempts delivery of everything now
  throttled()        client addresses and accounts over their authentication failure budget
  listeners()        every listener and the address it is bound to
  health()           what /health reports, as JSON
  reload()           re-read and apply the configuration file (as SIGHUP does); prints "reload: ok" etc.
"""


class Shown(str):
    """Text the REPL shows as it is (its repr is itself): results of reload() and health()."""

    def __repr__(self) -> str:
        return str(self)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header] + rows]
    return "\n".join(lines)


def _age(seconds: Any) -> str:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


class Shell:
    """The helpers bound to one gateway; `namespace()` is what the manhole REPL sees."""

    def __init__(self, gateway: IGatewayView, reload: Callable[[], Any], health: Optional[Callable[[], Any]] = None,
                 throttled: Optional[Callable[[], list[dict[str, Any]]]] = None, out: Callable[[str], None] = print) -> None:
        self.gateway = gateway
        self._reload = reload
        self._health = health
        self._throttled = throttled
        self._out = out
        self._listed: list[Any] = []  # sessions: objects with peer, user and kick()

    def namespace(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "config": self.gateway.config,
            "sessions": self.sessions,
            "kick": self.kick,
            "queue": self.queue,
            "flush": self.flush,
            "throttled": self.throttled,
            "listeners": self.listeners,
            "health": self.health,
            "reload": self.reload,
            "mailgw_help": lambda: self._out(HELP),
            "__doc__": HELP,
        }

    def sessions(self, listener: Optional[str] = None) -> None:
        entries = [e for e in self.gateway.sessions.entries() if listener is None or e[0] == listener]
        entries.sort(key=lambda e: (e[0], e[1]))
        self._listed = [session for _, _, session in entries]
        # Registered sessions have `peer`, `user` and `kick()` (ISessionRegistry.add).
        rows = [[str(i), name, protocol, str(s.peer), str(s.user or "-")] for i, (name, protocol, s) in enumerate(entries)]
        self._out(_table(rows, ["#", "listener", "protocol", "peer", "user"]) + f"\n{len(rows)} session(s)")

    def kick(self, target: Any) -> None:
        session = target
        if isinstance(target, int):
            if not 0 <= target < len(self._listed):
                self._out(f"no session #{target} in the last sessions() listing")
                return
            session = self._listed[target]
        if session not in self.gateway.sessions.sessions():
            self._out("that session is no longer open")
            return
        session.kick()
        self._out(f"kicked {session.peer} ({session.user or '-'})")

    def _queues(self) -> dict[str, IRelayQueue]:
        return {name or "relay": queue for name, queue in self.gateway.relay_queues().items()}

    def queue(self) -> None:
        queues = self._queues()
        if not queues:
            self._out("no relay queue (no [submission] is running)")
            return
        rows = [[name, str(e.get("id", "?")), str(e.get("sender", "")), ",".join(e.get("recipients", ()) or ()),
                 str(e.get("size", "")), _age(e.get("age", "")), str(e.get("attempts", "")),
                 str(e.get("next_attempt_at", "") or "-"), str(e.get("last_error", "") or "")]
                for name, q in queues.items() for e in q.entries()]
        self._out(_table(rows, ["queue", "id", "sender", "recipients", "size", "age", "attempts", "next attempt", "last error"])
                  + f"\n{len(rows)} message(s)")

    def flush(self) -> None:
        queues = self._queues()
        if not queues:
            self._out("no relay queue")
            return
        for q in queues.values():
            q.flush()
        self._out("flush started: every queued message is being attempted now")

    def throttled(self) -> None:
        entries = self._throttled() if self._throttled is not None else self.gateway.throttled()
        rows = []
        now = time.time()
        for entry in entries:
            until = entry.get("until")
            rows.append([str(entry.get("ip", "")), str(entry.get("user", "") or "*"), str(entry.get("failures", "")),
                         _age(until - now) if isinstance(until, (int, float)) else str(until or "")])
        self._out(_table(rows, ["client", "account", "failures", "for"]) + f"\n{len(rows)} throttled")

    def listeners(self) -> None:
        rows = [[state.label, state.address or "not bound", state.endpoint] for state in self.gateway.listeners()]
        self._out(_table(rows, ["listener", "bound to", "endpoint"]))

    def health(self) -> Any:
        """The /health report as indented JSON (a Deferred: the REPL shows the text when it fires)."""
        if self._health is None:
            self._out("no health report configured")
            return None
        return defer.maybeDeferred(self._health).addCallback(
            lambda report: Shown(json.dumps(report, indent=2, sort_keys=True, default=str)))

    def reload(self) -> Any:
        """`reload: ok` (or refused, invalid, failed) once the reload is done; the reasons are in the log."""
        return defer.maybeDeferred(self._reload).addCallback(lambda result: Shown(f"reload: {result}"))
