"""Client address sets: "any", IPv4/IPv6 networks (CIDR) and named [client_sets], matched in one bisect.

Shared by publishing rules (`[publish.NAME] clients`) and the connection control of the IMAP and
submission virtual servers (`[imap.NAME] clients`, `proxy_protocol_from`): one syntax, one code.
"""

from __future__ import annotations

import bisect
import ipaddress
from typing import Iterable, Mapping, Optional

ANY = "any"


def peer_address(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The peer as an address; IPv4-mapped IPv6 (dual-stack listener) becomes IPv4."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientSet:
    """An allowed set of client addresses: everything ("any"), or IPv4/IPv6 networks.

    Networks are collapsed into sorted, disjoint integer ranges per family, so a lookup is one
    bisect however long the list. An empty set allows nobody.
    """

    def __init__(self, networks: Iterable[str] = (), allow_any: bool = False) -> None:
        self.allow_any = allow_any
        parsed = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.networks: tuple[str, ...] = tuple(str(n) for n in parsed)
        self._ranges: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            family = [n for n in parsed if n.version == version]
            collapsed = list(ipaddress.collapse_addresses(family))  # type: ignore[type-var]
            starts = [int(n.network_address) for n in collapsed]
            ends = [int(n.broadcast_address) for n in collapsed]
            self._ranges[version] = (starts, ends)

    @classmethod
    def any(cls) -> "ClientSet":
        return cls(allow_any=True)

    def allows(self, host: str) -> bool:
        """Is a peer address (as Twisted reports it) in the set?"""
        if self.allow_any:
            return True
        address = peer_address(host)
        if address is None:
            return False
        starts, ends = self._ranges[address.version]
        value = int(address)
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= ends[index]

    def describe(self) -> str:
        return ANY if self.allow_any else (", ".join(self.networks) or "(nobody)")

    def __repr__(self) -> str:
        return f"ClientSet({self.describe()})"


def client_set_for(clients: Iterable[str], named_sets: Mapping[str, Iterable[str]]) -> ClientSet:
    """A rule's `clients` list resolved: "any", CIDRs, and names of [client_sets.NAME] (their addresses)."""
    networks: list[str] = []
    for entry in clients:
        if entry == ANY:
            return ClientSet.any()
        if entry in named_sets:
            networks.extend(named_sets[entry])
        else:
            networks.append(entry)
    return ClientSet(networks)
