"""In-process gateways for the admin and observe tests: build the real service tree from TOML and start it."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Optional

from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from mailgw import assemble
from mailgw.config import load_config


class FakeSession:
    """A registered client session as protocol code registers them: `peer`, `user`, `kick()`."""

    def __init__(self, registry: Any, peer: str, user: Optional[str] = None) -> None:
        self.registry, self.peer, self.user = registry, peer, user
        self.kicked = False

    def kick(self) -> None:
        self.kicked = True
        self.registry.remove(self)


def tempdir(case: Any) -> str:
    """A fresh directory outside the worktree, removed after the test."""
    path = tempfile.mkdtemp(prefix="mailgw-ops-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def write_config(case: TestCase, body: str, state_dir: Optional[str] = None) -> tuple[str, str]:
    """(config path, state dir) of a config file holding `body` after config_version and [server]."""
    directory = tempdir(case)
    state_dir = state_dir or os.path.join(directory, "state")
    path = os.path.join(directory, "mailgw.toml")
    with open(path, "w") as handle:
        handle.write(f'config_version = 1\n[server]\nstate_dir = "{state_dir}"\n{body}')
    return path, state_dir


def start_gateway(case: TestCase, path: str, environ: Optional[dict[str, str]] = None) -> assemble.Gateway:
    """Build and start the root service from `path` (reloads re-read it); stopped at cleanup."""
    root = assemble.build(load_config(path), reactor, source=lambda: load_config(path), environ=environ or {})
    root.privilegedStartService()
    root.startService()
    case.addCleanup(root.stopService)
    case.addCleanup(close_runners, root.gateway.auth)
    return root.gateway


def until(predicate: Callable[[], bool], turns: int = 10000) -> defer.Deferred:
    """Fires once `predicate()` holds, checking once per reactor turn (no wall-clock sleeps)."""
    @defer.inlineCallbacks
    def wait() -> Any:
        for _ in range(turns):
            if predicate():
                return True
            yield task.deferLater(reactor, 0, lambda: None)
        raise AssertionError("condition never became true")
    return wait()


class EventWaiter:
    """Deferreds that fire on the next log event with a given `event` key (subscribe before causing it)."""

    def __init__(self, case: Any) -> None:
        self._waiting: dict[str, list[defer.Deferred]] = {}
        globalLogPublisher.addObserver(self._observe)
        case.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def next(self, event: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.setdefault(event, []).append(d)
        return d

    def _observe(self, entry: dict) -> None:
        waiting = self._waiting.pop(entry.get("event", ""), [])
        for d in waiting:
            reactor.callLater(0, d.callback, entry)


def close_runners(auth: Any) -> None:
    """Stop the auth backends' thread pools (twistd stops them at reactor shutdown; trial never shuts down)."""
    for backend in getattr(auth, "backends", ()):
        runner = getattr(backend, "_runner", None)
        if runner is not None:
            runner.close()


def port_of(gateway: assemble.Gateway, label: str) -> int:
    assert gateway.root is not None
    for svc in gateway.root.listeners:
        if svc.label == label and svc.port is not None:
            return svc.port.getHost().port
    raise KeyError(label)
