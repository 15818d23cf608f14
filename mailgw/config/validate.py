"""Checks across keys: certificates for TLS ports, overlapping listeners, loopback-only admin, auth policy."""

from __future__ import annotations

import ipaddress
import re
import string
from typing import TYPE_CHECKING, Iterator, Optional

from . import endpoints

if TYPE_CHECKING:
    from .schema import Config


def validate(config: "Config") -> list[str]:
    return (list(_tls(config)) + list(_auth(config)) + list(_listeners(config)) + list(_admin(config))
            + list(_publish(config)) + list(_connection_control(config)) + list(_calendaring(config)))


def listeners(config: "Config") -> Iterator[tuple[str, str]]:
    """(dotted key, endpoint string) of everything the config binds."""
    for name, imap in config.imap.items():
        for i, ep in enumerate(imap.bind):
            yield f"imap.{name}.bind[{i}]", ep
        for i, ep in enumerate(imap.bind_tls):
            yield f"imap.{name}.bind_tls[{i}]", ep
    for name, sub in config.submission.items():
        for i, ep in enumerate(sub.bind):
            yield f"submission.{name}.bind[{i}]", ep
        for i, ep in enumerate(sub.bind_tls):
            yield f"submission.{name}.bind_tls[{i}]", ep
    for name, rule in config.publish.items():
        yield f"publish.{name}.listen", rule.listen
    if config.admin.manhole:
        yield "admin.manhole.listen", config.admin.manhole.listen
    if config.admin.http:
        yield "admin.http.listen", config.admin.http.listen


def _tls(config: "Config") -> Iterator[str]:
    for name, imap in config.imap.items():
        key = f"imap.{name}"
        if imap.tls is None:
            if imap.bind_tls:
                yield f"{key}.tls: bind_tls needs a certificate (set tls = \"NAME\" of a [tls.NAME])"
            elif imap.require_tls and imap.bind:
                yield f"{key}.tls: require_tls = true needs a certificate for STARTTLS (set tls, or require_tls = false)"
        elif imap.tls not in config.tls:
            yield f"{key}.tls: no certificate named {imap.tls!r} (define [tls.{imap.tls}])"
        if not imap.bind and not imap.bind_tls:
            yield f"{key}: no bind or bind_tls: the virtual server would listen nowhere"
    for name, sub in config.submission.items():
        key = f"submission.{name}"
        if sub.tls is None:
            yield f"{key}.tls: submission always requires TLS: set tls = \"NAME\" of a [tls.NAME]"
        elif sub.tls not in config.tls:
            yield f"{key}.tls: no certificate named {sub.tls!r} (define [tls.{sub.tls}])"
        if not sub.bind and not sub.bind_tls:
            yield f"{key}: no bind or bind_tls: the relay would listen nowhere"
        if sub.smarthost and sub.smarthost.auth_user and not sub.smarthost.auth_password_file:
            yield f"{key}.smarthost.auth_password_file: needed with auth_user"
        if sub.smarthost and sub.smarthost.auth_user and not (sub.smarthost.implicit_tls
                                                              or sub.smarthost.starttls == "required"):
            # issue 12: with "opportunistic" a STRIPTLS'd smarthost got the password in clear
            yield (f"{key}.smarthost.auth_user: smarthost credentials need starttls = \"required\" or "
                   "implicit_tls = true (they would be sent in clear)")


def _auth(config: "Config") -> Iterator[str]:
    for name, imap in config.imap.items():
        plain = [m for m in imap.auth if m != "ntlm"]  # every other name carries the password (auth.policy)
        if plain and not imap.require_tls:
            yield (f"imap.{name}.auth: plaintext mechanisms ({', '.join(plain)}) are refused on a server "
                   "with require_tls = false (use [\"ntlm\"], or require_tls = true)")
    known = {"local"} | {f"ldap.{n}" for n in config.auth.ldap}
    for i, backend in enumerate(config.auth.backends):
        if backend not in known:
            yield f"auth.backends[{i}]: unknown backend {backend!r} (known: {', '.join(sorted(known))})"
        elif backend == "local" and config.auth.local is None and (config.imap or config.submission):
            yield f"auth.backends[{i}]: \"local\" needs [auth.local] users_file"
    wants_ntlm = any("ntlm" in s.auth for s in config.imap.values()) or any("ntlm" in s.auth for s in config.submission.values())
    if wants_ntlm and config.auth.ntlm is None:
        yield "auth.ntlm: a server allows ntlm but there is no [auth.ntlm] section"
    for name, ldap in config.auth.ldap.items():
        for i, url in enumerate(ldap.urls):
            if not url.startswith(("ldap://", "ldaps://")):
                yield f"auth.ldap.{name}.urls[{i}]: {url!r} is not an ldap:// or ldaps:// URL"
            elif url.startswith("ldap://") and not ldap.starttls and not is_loopback_url(url):
                yield f"auth.ldap.{name}.urls[{i}]: ldap:// without starttls = true would send passwords in clear"
        if "{login}" not in ldap.user_filter:
            yield f"auth.ldap.{name}.user_filter: must contain {{login}}"


def is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[1].split("/", 1)[0]
    host = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or host.startswith("[") else host
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listeners(config: "Config") -> Iterator[str]:
    seen: list[tuple[str, str, endpoints.BindAddress]] = []
    for key, text in listeners(config):
        try:
            address = endpoints.parse_endpoint(text)
        except ValueError:
            continue  # reported by the parser
        for other_key, other_text, other in seen:
            if address.overlaps(other):
                yield f"{key}: {text!r} overlaps {other_key} ({other_text!r}): both would bind {address}"
                break
        seen.append((key, text, address))


def _admin(config: "Config") -> Iterator[str]:
    for key, item in (("admin.manhole.listen", config.admin.manhole), ("admin.http.listen", config.admin.http)):
        if item is None:
            continue
        try:
            address = endpoints.parse_endpoint(item.listen)
        except ValueError:
            continue
        if not address.is_loopback():
            yield f"{key}: {item.listen!r} is not a loopback address (admin listeners must use interface=127.0.0.1 or ::1)"


def _publish(config: "Config") -> Iterator[str]:
    for name, rule in config.publish.items():
        yield from _clients(f"publish.{name}.clients", rule.clients, config, "a rule")
        for limit in ("max_connections", "max_per_client"):
            if getattr(rule, limit) < 1:
                yield f"publish.{name}.{limit}: must be at least 1"
        if rule.connect_timeout <= 0:
            yield f"publish.{name}.connect_timeout: must be more than 0s"
        try:
            host, port = endpoints.parse_hostport(rule.target)
            listen = endpoints.parse_endpoint(rule.listen)
        except ValueError:
            continue
        target = endpoints.BindAddress("tcp6" if ":" in host else "tcp", host=host, port=port)
        if listen.kind in ("tcp", "tcp6") and host and _is_ip(host) and listen.overlaps(target):
            yield f"publish.{name}.target: {rule.target!r} is the rule's own listening address (a loop)"


def _clients(key: str, clients: tuple[str, ...], config: "Config", what: str) -> Iterator[str]:
    """A `clients` list: "any", CIDRs and [client_sets.NAME] names (publishing rules, IMAP, submission)."""
    if not clients:
        yield f"{key}: empty: {what} must name its clients ([\"any\"], CIDRs, or client sets)"
    for i, client in enumerate(clients):
        if client == "any" or client in config.client_sets:
            continue
        try:
            ipaddress.ip_network(client, strict=False)
        except ValueError:
            yield f"{key}[{i}]: {client!r} is neither \"any\", a CIDR, nor a [client_sets.NAME]"


def _connection_control(config: "Config") -> Iterator[str]:
    for kind, servers in (("imap", config.imap), ("submission", config.submission)):
        for name, server in servers.items():
            yield from _clients(f"{kind}.{name}.clients", server.clients, config, "a virtual server")
            if server.max_connections < 1:
                yield f"{kind}.{name}.max_connections: must be at least 1"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# mailgw.imap.calendaring.link.PATH_FIELDS (config imports no other package; a test keeps them equal)
CALENDARING_PATH_FIELDS = ("user", "mailbox", "uid", "uidvalidity", "uid_url", "ical_uid")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def front_end_problem(host: str) -> Optional[str]:
    """Why `host` is not a bare host name (FQDN) a link can carry, or None."""
    if "://" in host or host.lower().startswith(("http:", "https:")):
        return f"{host!r} has a scheme: give the host name only (use_ssl chooses https:// or http://)"
    if _is_ip(host.strip("[]")):
        return f"{host!r} is an IP literal: give the front end's host name (FQDN)"
    if ":" in host:
        return f"{host!r} has a port: give the host name only"
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        return f"{host!r} is not a host name"
    return None


def _calendaring(config: "Config") -> Iterator[str]:
    for name, imap in config.imap.items():
        cal = imap.calendaring
        if cal is None:
            continue
        key = f"imap.{name}.calendaring"
        problem = front_end_problem(cal.front_end)
        if problem:
            yield f"{key}.front_end: {problem}"
        if not cal.path.startswith("/") or any(c.isspace() or not c.isprintable() for c in cal.path):
            yield f"{key}.path: {cal.path!r} must start with / and hold no spaces or control characters"
        try:
            for _, field, spec, conversion in string.Formatter().parse(cal.path):
                if field is not None and (spec or conversion or field not in CALENDARING_PATH_FIELDS):
                    yield (f"{key}.path: unknown placeholder {{{field}}} "
                           f"(known: {', '.join('{' + f + '}' for f in CALENDARING_PATH_FIELDS)})")
                    break
        except ValueError as exc:
            yield f"{key}.path: {exc} (write {{{{ and }}}} for literal braces)"
