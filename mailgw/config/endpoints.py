"""Listening addresses written as Twisted endpoint strings, parsed without Twisted for validation.

Only what validation needs: the socket a string binds (family, host, port) so that overlapping
listeners, and admin listeners off loopback, are refused before anything binds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_KINDS = {"tcp", "tcp6", "systemd", "unix"}


@dataclass(frozen=True)
class BindAddress:
    """What one endpoint string binds."""

    kind: str  # "tcp" | "tcp6" | "systemd" | "unix"
    host: str = ""  # "" = all addresses of the family
    port: int = 0
    name: str = ""  # systemd FileDescriptorName / index, or unix path

    def overlaps(self, other: "BindAddress") -> bool:
        """True when both cannot be bound at once (Linux, IPV6_V6ONLY off as Twisted leaves it)."""
        if self.kind in ("systemd", "unix") or other.kind in ("systemd", "unix"):
            return self.kind == other.kind and self.name == other.name
        if self.port != other.port or self.port == 0:
            return False
        mine, theirs = _normalise(self), _normalise(other)
        if mine == theirs:
            return True
        # [::] (dual stack) takes every address; 0.0.0.0 takes every IPv4 address.
        for wild, addr in ((mine, theirs), (theirs, mine)):
            if wild == "::":
                return True
            if wild == "0.0.0.0" and _is_v4(addr):
                return True
        return False

    def is_loopback(self) -> bool:
        if self.kind == "unix":
            return True
        if self.kind == "systemd" or not self.host:
            return False
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.kind in ("systemd", "unix"):
            return f"{self.kind}:{self.name}"
        host = _normalise(self)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _normalise(address: BindAddress) -> str:
    if not address.host:
        return "::" if address.kind == "tcp6" else "0.0.0.0"
    try:
        return str(ipaddress.ip_address(address.host))
    except ValueError:
        return address.host


def _is_v4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def split_endpoint(text: str) -> list[str]:
    """Split on unescaped colons, honouring backslash escapes (`tcp6:993:interface=\\:\\:1`)."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_endpoint(text: str) -> BindAddress:
    """The address a server endpoint string binds; ValueError with a readable reason otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected an endpoint string such as \"tcp:143:interface=127.0.0.1\"")
    parts = split_endpoint(text)
    kind = parts[0]
    if kind == "ssl":
        raise ValueError("ssl: endpoints are not used here; use bind_tls with a named [tls.*] certificate")
    if kind not in _KINDS:
        raise ValueError(f"unsupported endpoint type {kind!r} (use tcp, tcp6, systemd or unix)")
    positional = [p for p in parts[1:] if "=" not in p]
    options = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    if kind == "unix":
        path = positional[0] if positional else options.get("address", "")
        if not path:
            raise ValueError("unix endpoint needs a path")
        return BindAddress("unix", name=path)
    if kind == "systemd":
        name = options.get("name") or options.get("index")
        if not name or "domain" not in options:
            raise ValueError("systemd endpoint needs domain= and name= (or index=)")
        return BindAddress("systemd", name=name)
    port_text = positional[0] if positional else options.get("port", "")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r}")
    host = options.get("interface", "")
    if host:
        try:
            parsed = ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ValueError(f"interface {host!r} is not an IP address") from None
        else:
            if kind == "tcp" and parsed.version == 6:
                raise ValueError(f"interface {host!r} is IPv6: use tcp6")
    return BindAddress(kind, host=host, port=int(port_text))


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """("host", port) from "host:port", "[v6]:port" or "host" with a default port."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected host:port")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r} has no port (use host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)
