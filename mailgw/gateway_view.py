"""The admin view of an assembled gateway: IGatewayView's reading methods over assemble.Gateway's parts.

A mixin of `mailgw.assemble.Gateway` (which adds `reload()`), so the object the manhole shows as
`gateway` is the same one admin code reads through the interface. It imports nothing of the
packages it reads: it only follows the attributes assemble.py filled in (`root.listeners`,
`extras["queue.NAME"]`, `extras["publish"]`, `extras["publish_health"]`, `auth`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from mailgw.interfaces import IDirectory, IPublishRule, IRelayQueue, ListenerState

if TYPE_CHECKING:
    from mailgw.assemble import MailgwService


def _address(host: Any) -> str:
    """`host:port` of an IPv4/IPv6 address, the path of a UNIX socket."""
    if isinstance(host, (IPv4Address, IPv6Address)):
        return f"{host.host}:{host.port}"
    if isinstance(host, UNIXAddress) and host.name is not None:
        return host.name.decode("utf-8", "replace") if isinstance(host.name, bytes) else str(host.name)
    return str(host)


class GatewayViewMixin:
    """IGatewayView for a class with `root`, `auth`, `queue` and `extras` (assemble.Gateway)."""

    root: Optional["MailgwService"]
    auth: Any
    queue: Any
    extras: dict[str, Any]

    def listeners(self) -> list[ListenerState]:
        out = []
        for svc in self.root.listeners if self.root is not None else []:
            port = svc.port
            out.append(ListenerState(svc.label, svc.description, _address(port.getHost()) if port is not None else None,
                                     port is not None and bool(svc.running)))
        return out

    def relay_queues(self) -> dict[str, IRelayQueue]:
        queues = {key.split(".", 1)[1]: q for key, q in self.extras.items() if key.startswith("queue.")}
        if not queues and self.queue is not None:
            queues[""] = self.queue
        return queues

    def directories(self) -> list[IDirectory]:
        return list(self.auth.backends) if self.auth is not None else []

    def throttled(self) -> list[dict[str, Any]]:
        return list(self.auth.throttled()) if self.auth is not None else []

    def publish_rules(self) -> dict[str, IPublishRule]:
        return dict(self.extras.get("publish", {}))

    def publish_targets(self) -> list[dict[str, Any]]:
        health = self.extras.get("publish_health")
        return list(health.report()) if health is not None else []
