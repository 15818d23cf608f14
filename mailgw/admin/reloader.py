"""Configuration reload of a running gateway: re-read, validate, swap certificates, call component hooks.

Order (docs/operations.md "Reload"): read and validate the file (invalid: nothing changes);
classify every changed key (mailgw.admin.reload.plan; any that needs a restart refuses the whole
reload); load every certificate from the new paths without using it yet; ask each component hook
whose key patterns changed to *prepare* the change (slow work off the reactor; ConfigError
refuses, and every change already prepared is discarded); only when all are prepared, *install*
them, swap the certificates and replace `gateway.config`. A failure at any prepare step leaves
nothing half-applied. Reloads are serialised; systemd sees RELOADING=1 before and READY=1 after.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from mailgw.admin.reload import plan as make_plan
from mailgw.errors import ConfigError
from mailgw.interfaces import IReloadTarget
from mailgw.observe import metrics

log = Logger()



def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Staged:
    """A prepared change. `install()` applies it (quick, on the reactor, must not fail);
    `discard()` releases what the prepare step built when another hook refused the reload."""

    install: Callable[[], None]
    discard: Callable[[], Any] = _nothing


# (dotted key patterns a component applies live, prepare(new_config) -> Staged | install callable,
#  or a Deferred firing with one; ConfigError refuses)
ReloadHook = tuple[tuple[str, ...], Callable[[Any], Any]]


def _staged(result: Any, patterns: tuple[str, ...]) -> Staged:
    if isinstance(result, Staged):
        return result
    if callable(result):
        return Staged(result)
    raise TypeError(f"reload hook for {'/'.join(patterns)} returned {result!r}, not an install step")


class Reloader:
    """Reloads `gateway` (an IReloadTarget: config, config_source, tls, reload_hooks, notifier).

    `new_certificate(name, cert_config, names, registry)` builds the TLS object for a certificate
    name the running process did not have yet.
    """

    def __init__(self, gateway: IReloadTarget, new_certificate: Callable[[str, Any, tuple[str, ...], Any], Any]) -> None:
        self.gateway = gateway
        self.new_certificate = new_certificate
        self.lock = defer.DeferredLock()

    def from_source(self) -> defer.Deferred:
        """Re-read the configuration file and reload; an unreadable or invalid file leaves the running one in force."""
        def attempt() -> Any:
            self.gateway.notifier.reloading()
            source = self.gateway.config_source
            try:
                new_config = source() if source is not None else self.gateway.config
            except ConfigError as exc:
                return self._done("invalid", problems=exc.problems)
            return self._apply(new_config)

        return self.lock.run(attempt)

    def apply(self, new_config: Any) -> defer.Deferred:
        """Reload with a Config already read (fires with "ok", "refused", "invalid" or "failed")."""
        def attempt() -> Any:
            self.gateway.notifier.reloading()
            return self._apply(new_config)

        return self.lock.run(attempt)

    def hooks(self) -> list[ReloadHook]:
        return list(self.gateway.reload_hooks)

    @defer.inlineCallbacks
    def _apply(self, new_config: Any) -> Any:
        hooks = self.hooks()
        plan = make_plan(self.gateway.config, new_config, [p for patterns, _ in hooks for p in patterns])
        if plan.restart:
            return self._done("refused", restart=plan.restart)
        try:
            installs = self._prepare_tls(new_config)
        except ConfigError as exc:
            return self._done("invalid", problems=exc.problems)
        staged: list[Staged] = []
        for patterns, prepare in hooks:
            if not plan.live_under(patterns):
                continue
            try:
                staged.append(_staged((yield defer.maybeDeferred(prepare, new_config)), patterns))
            except ConfigError as exc:
                self._discard(staged)
                return self._done("failed", problems=exc.problems)
            except Exception as exc:
                log.failure("reload hook failed", event="config_reload.hook_error")
                self._discard(staged)
                return self._done("failed", problems=[f"{'/'.join(patterns)}: {type(exc).__name__}"])
        for change in staged:
            self._run(change.install, "install")
        for install in installs:
            install()
        self.gateway.config = new_config
        return self._done("ok", changed=plan.live)

    def _discard(self, staged: list[Staged]) -> None:
        for change in staged:
            self._run(change.discard, "discard")

    @staticmethod
    def _run(step: Callable[[], Any], what: str) -> None:
        try:
            result = step()
        except Exception:
            log.failure("reload {what} step failed", what=what, event="config_reload.hook_error")
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda f: log.failure("reload {what} step failed", f, what=what,
                                                    event="config_reload.hook_error"))

    def _prepare_tls(self, config: Any) -> list[Callable[[], None]]:
        """Load every certificate of `config` (new paths too) before installing any; ConfigError lists the bad ones."""
        registry = self.gateway.tls
        installs: list[Callable[[], None]] = []
        problems: list[str] = []
        for name, cert in config.tls.items():
            names = (config.server.hostname, *cert.server_names)
            current = registry.get(name)
            try:
                if current is not None:
                    installs.append(current.prepare(cert.cert_file, cert.key_file, cert.min_version, names))
                else:
                    installs.append(functools.partial(registry.add, self.new_certificate(name, cert, names, registry)))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        for gone in set(registry.certificates) - set(config.tls):
            installs.append(functools.partial(registry.certificates.pop, gone, None))
        return installs

    def _done(self, result: str, changed: Optional[list[str]] = None, restart: Optional[list[str]] = None,
              problems: Optional[list[str]] = None) -> str:
        metrics.config_reloads_total.labels(result=result).inc()
        if result == "ok":
            metrics.config_last_reload_success.set(time.time())
            log.info("config reload: ok; certificates re-read; changed: {changed}",
                     changed=", ".join(changed or ()) or "nothing", event="config_reload", result=result)
        elif result == "refused":
            log.warn("config reload refused: {keys} changed, which needs a restart; the running configuration stays in force",
                     keys=", ".join(restart or ()), event="config_reload", result=result)
        else:
            log.error("config reload {result}: {problems}; the running configuration stays in force",
                      result=result, problems="; ".join(problems or ()), event="config_reload")
        self.gateway.notifier.ready("serving")
        return result
