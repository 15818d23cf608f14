"""The pre-auth policy: which mechanisms each listener offers and accepts, and when TLS must come first.

This is the one place these decisions are made (DESIGN.md "Pre-auth policy in one place"). IMAP
and SMTP never look at `require_tls` or a mechanism list themselves: they ask the credential
service (`AuthService.mechanisms`, `.start`, `.login`), which asks this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from twisted.logger import Logger

from mailgw.errors import TLSRequired, UnknownMechanism
from mailgw.interfaces import ClientInfo

log = Logger()

# Mechanisms that carry the password itself (RFC 3501 §6.2.3 LOGINDISABLED, RFC 4954 §4).
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
_SECTIONS = {"imap": "imap", "smtp": "submission"}  # ClientInfo.protocol -> config section of its listeners


def expand_mechanisms(names: Sequence[str]) -> tuple[str, ...]:
    """Upper-case config names; `basic` stands for PLAIN and LOGIN. Order kept, duplicates dropped."""
    out: list[str] = []
    for name in names:
        for mech in (("PLAIN", "LOGIN") if name.upper() == "BASIC" else (name.upper(),)):
            if mech not in out:
                out.append(mech)
    return tuple(out)


@dataclass(frozen=True)
class ListenerPolicy:
    """What one IMAP/SMTP virtual server allows: its mechanisms and whether TLS comes first."""

    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    require_tls: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mechanisms", expand_mechanisms(self.mechanisms))


class PreAuthPolicy:
    """Per-listener decisions over the mechanisms a service can run (`supported`).

    `listeners` maps a listener name (ClientInfo.listener, or its config key: "imap.NAME" for
    protocol imap, "submission.NAME" for smtp) to its ListenerPolicy. A listener missing from the
    map fails closed: every supported mechanism, but TLS first (logged once when a map is given).
    PLAIN/LOGIN are never accepted before TLS unless `plaintext_without_tls` (a lab setting).
    """

    def __init__(self, listeners: Optional[Mapping[str, ListenerPolicy]] = None,
                 plaintext_without_tls: bool = False) -> None:
        self.listeners = dict(listeners or {})
        self.plaintext_without_tls = plaintext_without_tls
        self._warned: set[str] = set()

    def policy(self, client: ClientInfo, supported: Sequence[str]) -> ListenerPolicy:
        """The listener's policy, keyed by ClientInfo.listener or by its config section name."""
        section = _SECTIONS.get(client.protocol, client.protocol)
        for key in (client.listener, f"{section}.{client.listener}"):
            if key in self.listeners:
                return self.listeners[key]
        if self.listeners and client.listener not in self._warned:
            self._warned.add(client.listener)
            log.warn("no auth policy for listener {listener}: requiring TLS", listener=client.listener,
                     event="auth.no_policy")
        return ListenerPolicy(tuple(supported), require_tls=True)

    def needs_tls(self, mechanism: str, client: ClientInfo, policy: ListenerPolicy) -> bool:
        """True when `mechanism` (any, if "") must wait for TLS on this connection."""
        if client.tls:
            return False
        if policy.require_tls:
            return True  # "Require secure channel": no credential of any kind before TLS
        # RFC 3501 §6.2.3 LOGINDISABLED; RFC 4954 §4: no plaintext passwords in clear
        return mechanism in PLAINTEXT_MECHANISMS and not self.plaintext_without_tls

    def offered(self, client: ClientInfo, supported: Sequence[str]) -> tuple[str, ...]:
        """Mechanisms to advertise now: the listener's, that the service runs and the TLS state permits."""
        policy = self.policy(client, supported)
        return tuple(m for m in policy.mechanisms if m in supported and not self.needs_tls(m, client, policy))

    def check_start(self, mechanism: str, client: ClientInfo, supported: Sequence[str]) -> None:
        """TLSRequired before TLS (checked first: nothing about the mechanisms leaks in clear), else
        UnknownMechanism for one this listener does not offer."""
        policy = self.policy(client, supported)
        if self.needs_tls(mechanism, client, policy):
            raise TLSRequired()
        if mechanism not in supported or mechanism not in policy.mechanisms:
            raise UnknownMechanism()

    def check_login(self, client: ClientInfo, supported: Sequence[str]) -> None:
        """A user/password command (IMAP LOGIN) is allowed where PLAIN or LOGIN would be.

        Before TLS every refusal is TLSRequired (the client must learn the password crossed in
        clear); under TLS a listener without PLAIN/LOGIN (NTLM only) gives UnknownMechanism.
        """
        offered = self.offered(client, supported)
        if any(m in PLAINTEXT_MECHANISMS for m in offered):
            return
        if not client.tls:
            raise TLSRequired()
        raise UnknownMechanism()

    def login_allowed(self, client: ClientInfo, supported: Sequence[str]) -> bool:
        """Whether check_login would pass now (IMAP's LOGINDISABLED is its negation)."""
        return any(m in PLAINTEXT_MECHANISMS for m in self.offered(client, supported))
