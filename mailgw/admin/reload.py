"""What a configuration reload may change live, and what needs a restart: a diff of two Configs by dotted key.

Live (applied by SIGHUP without dropping a connection): `tls.*` (certificates, keys, names,
versions: the ServerTLS objects the listeners hold are updated in place), and every key under a
prefix that a running component registered a reload hook for (assemble.py: `auth` and the
servers' `auth`/`require_tls` for the credential checker, `publish.<rule>.*` but `listen` and
`client_sets` for the forwarder, `imap.*.calendaring` for the meeting request presenters). Anything else
that differs (listeners added, removed or changed, the store root, admin endpoints, log format)
needs a restart, and the whole reload is refused, leaving the running configuration in force.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

_ALWAYS_LIVE = ("tls",)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config values (dataclasses, dicts of named tables)."""
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new) and type(old) is type(new):
        out: list[str] = []
        for f in dataclasses.fields(old):
            out += changed_keys(getattr(old, f.name), getattr(new, f.name), f"{prefix}.{f.name}" if prefix else f.name)
        return out
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for name in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{name}"
            if name not in old:
                out.append(f"{key} (added)")
            elif name not in new:
                out.append(f"{key} (removed)")
            else:
                out += changed_keys(old[name], new[name], key)
        return out
    return [] if old == new else [prefix]


def _bare(key: str) -> str:
    return key.split(" ", 1)[0]


def matches(key: str, pattern: str) -> bool:
    """Does dotted `key` fall under `pattern`? A `*` matches one component: `publish.*.clients`."""
    regex = "^" + r"\.".join("[^.]+" if part == "*" else re.escape(part) for part in pattern.split(".")) + r"($|\.)"
    return re.match(regex, _bare(key)) is not None


@dataclass
class ReloadPlan:
    """The changes a new configuration brings, sorted into live ones and those that need a restart."""

    live: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.live and not self.restart

    def live_under(self, patterns: Iterable[str]) -> list[str]:
        return [k for k in self.live if any(matches(k, p) for p in patterns)]


def plan(old: Any, new: Any, live_patterns: Iterable[str]) -> ReloadPlan:
    """Classify every changed key of `new` against `old` given the prefixes some component applies live."""
    patterns = tuple(_ALWAYS_LIVE) + tuple(live_patterns)
    result = ReloadPlan()
    for key in changed_keys(old, new):
        (result.live if any(matches(key, p) for p in patterns) else result.restart).append(key)
    return result
