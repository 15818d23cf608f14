"""The configuration schema: frozen, typed dataclasses whose field docs are the reference.

Field metadata drives parsing and validation: `kind` is one of duration, size, rate, file
(must exist), path, endpoint, endpoints, hostport, cidrs, or `choice` with `choices`.
Durations are stored as float seconds, sizes as int bytes, rates as (count, seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def opt(default: Any = None, doc: str = "", kind: str = "", choices: tuple[str, ...] = (), required: bool = False) -> Any:
    """A schema field with its documentation and parsing kind."""
    meta = {"doc": doc, "kind": kind, "choices": choices, "required": required}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata=meta)


def section(factory: type, doc: str = "") -> Any:
    return field(default_factory=factory, metadata={"doc": doc, "kind": "", "choices": (), "required": False})


def named(doc: str = "") -> Any:
    """A table of named instances, e.g. [imap.NAME]."""
    return field(default_factory=dict, metadata={"doc": doc, "kind": "", "choices": (), "required": False})


MECHANISMS = ("plain", "login", "ntlm", "basic")


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = opt("localhost", "The gateway's public host name: greetings, Received headers, certificate check.")
    state_dir: str = opt("./mailgw-state", "Directory for queue, Maildirs (by default), host keys, generated certificates.", kind="path")


@dataclass(frozen=True)
class TLSCertConfig:
    cert_file: str = opt("", "PEM file: the leaf certificate followed by its chain.", kind="file", required=True)
    key_file: str = opt("", "PEM private key; refused if others may access it (0600, or 0640 with the service's group).", kind="file", required=True)
    min_version: str = opt("TLSv1.2", "Lowest TLS version accepted (never below TLSv1.2).", kind="choice", choices=("TLSv1.2", "TLSv1.3"))
    server_names: tuple[str, ...] = opt((), "Extra host names (SNI) this certificate must cover besides server.hostname.")


@dataclass(frozen=True)
class StoreConfig:
    root: str = opt("", "Maildir of each user; {user} and {domain} are replaced. Default: <state_dir>/mail/{user}.")
    quota_bytes: Optional[int] = opt(None, "Per-user storage quota, e.g. \"2G\" (unset: none).", kind="size")
    quota_messages: Optional[int] = opt(None, "Per-user message count quota (unset: none).")


@dataclass(frozen=True)
class AuthLimits:
    per_ip: tuple[int, float] = opt((20, 300.0), "Failed logins allowed per client IP in a window, e.g. \"20/5m\".", kind="rate")
    per_user_ip: tuple[int, float] = opt((5, 300.0), "Failed logins allowed per (client IP, account), e.g. \"5/5m\".", kind="rate")


@dataclass(frozen=True)
class LocalAuthConfig:
    users_file: str = opt("", "Local users file, managed with `mailgwctl user ...` (the first add creates it); refused if others may access it (0640 with the service's group is fine).", kind="file", required=True)


@dataclass(frozen=True)
class LDAPConfig:
    urls: tuple[str, ...] = opt((), "Directory servers in failover order (ldap:// with starttls, or ldaps://).", required=True)
    ca_file: Optional[str] = opt(None, "CA certificate(s) to verify the directory's TLS certificate.", kind="file")
    starttls: bool = opt(False, "Issue StartTLS on ldap:// URLs before any bind.")
    bind_dn: str = opt("", "Service account DN used to search for users.", required=True)
    bind_password_file: str = opt("", "File holding the service account's password.", kind="file", required=True)
    user_base: str = opt("", "Search base for user entries.", required=True)
    user_filter: str = opt("(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))", "Filter; {login} is replaced, escaped (RFC 4515).")
    uid_attribute: str = opt("uid", "Attribute holding the canonical user id (names the mailbox).")
    mail_attribute: str = opt("mail", "Attribute(s) holding the user's addresses (send-as, local delivery).")
    nt_hash_attribute: Optional[str] = opt(None, "Attribute with the NT hash for NTLM, e.g. sambaNTPassword.")
    require_group: Optional[str] = opt(None, "DN of a group the user must be a member of.")
    timeout: float = opt(5.0, "Connect and request timeout.", kind="duration")
    pool_size: int = opt(4, "Threads (and connections) for directory requests.")


@dataclass(frozen=True)
class NTLMConfig:
    domain: str = opt("", "NetBIOS domain name announced in the NTLM challenge; logins for other domains fail.")
    source: str = opt("directory", "Where NT hashes come from: directory (a backend's NT hash) or winbind (ntlm_auth).", kind="choice", choices=("directory", "winbind"))
    winbind_helper: tuple[str, ...] = opt(("/usr/bin/ntlm_auth", "--helper-protocol=ntlm-server-1"), "Samba helper command for source = winbind.")
    helpers: int = opt(2, "Number of ntlm_auth helper processes.")


@dataclass(frozen=True)
class AuthConfig:
    backends: tuple[str, ...] = opt(("local",), "Credential backends tried in order: \"local\" and \"ldap.NAME\".")
    failure_delay: float = opt(2.0, "Delay before every authentication failure reply.", kind="duration")
    proxy_users: tuple[str, ...] = opt((), "Accounts that may log in with a PLAIN authorization identity other than their own.")
    limits: AuthLimits = section(AuthLimits, "Failure budgets against brute force.")
    local: Optional[LocalAuthConfig] = opt(None, "The local users file backend.")
    ldap: dict[str, LDAPConfig] = named("LDAP directories, one table each: [auth.ldap.NAME].")
    ntlm: Optional[NTLMConfig] = opt(None, "NTLM (\"integrated\") authentication.")


@dataclass(frozen=True)
class CalendaringConfig:
    front_end: str = opt("", "Host name (FQDN) of the web front end (OWA) that meeting request links point to; no IP literal, port or scheme.", required=True)
    use_ssl: bool = opt(True, "Links use https:// (false: http://).")
    path: str = opt("/exchange/{user}/{mailbox}/?cmd=open&uid={ical_uid}", "Path of the link; {user}, {mailbox}, {uid}, {uidvalidity}, {uid_url} (RFC 5092 IMAP URL) and {ical_uid} are replaced, URL-escaped.")


@dataclass(frozen=True)
class IMAPConfig:
    bind: tuple[str, ...] = opt((), "Plain IMAP listeners (offer STARTTLS when a certificate is set).", kind="endpoints")
    bind_tls: tuple[str, ...] = opt((), "Implicit-TLS IMAPS listeners (993).", kind="endpoints")
    tls: Optional[str] = opt(None, "Name of the [tls.NAME] certificate.")
    require_tls: bool = opt(True, "Refuse every credential before TLS (\"Require secure channel\").")
    auth: tuple[str, ...] = opt(("plain", "login"), "Allowed mechanisms: plain, login, ntlm; basic = plain + login.", kind="choices", choices=MECHANISMS)
    fast_message_retrieval: bool = opt(True, "Serve sizes, flags, envelopes and headers from the index without opening message files.")
    preauth_timeout: float = opt(60.0, "Time from connect to login (absolute: bytes that end no command do not extend it).", kind="duration")
    autologout: float = opt(1800.0, "Idle time allowed after login (IDLE refreshes it).", kind="duration")
    append_limit: int = opt(50 * 1024 * 1024, "Largest message APPEND accepts (APPENDLIMIT).", kind="size")
    max_line: int = opt(64 * 1024, "Longest command line.", kind="size")
    max_connections_per_user_ip: int = opt(10, "Concurrent sessions per (user, client IP).")
    clients: tuple[str, ...] = opt(("any",), "Who may connect: \"any\", CIDRs, or [client_sets.NAME] names (as publishing rules); others are closed before the greeting.")
    max_connections: int = opt(1000, "Concurrent connections to this virtual server (all its listeners); more are closed before the greeting.")
    proxy_protocol_from: tuple[str, ...] = opt((), "Proxies (CIDRs) that send a PROXY protocol v1/v2 header first; when set, only they may connect and must send one.", kind="cidrs")
    calendaring: Optional[CalendaringConfig] = opt(None, "Meeting requests are shown with a summary and a link to answer them on this web front end (docs/imap.md \"Calendaring\"); unset: messages as stored.")


@dataclass(frozen=True)
class SmarthostConfig:
    host: str = opt("", "Host that relays mail for non-local recipients.", required=True)
    port: int = opt(25, "Its port.")
    starttls: str = opt("required", "STARTTLS towards the smarthost.", kind="choice", choices=("required", "opportunistic", "off"))
    implicit_tls: bool = opt(False, "Connect with TLS from the first byte (port 465).")
    ca_file: Optional[str] = opt(None, "CA certificate(s) to verify the smarthost (default: the system store).", kind="file")
    auth_user: Optional[str] = opt(None, "AUTH PLAIN user at the smarthost (needs starttls = \"required\" or implicit_tls = true).")
    auth_password_file: Optional[str] = opt(None, "File holding that password.", kind="file")


@dataclass(frozen=True)
class SubmissionConfig:
    bind: tuple[str, ...] = opt((), "Submission listeners with STARTTLS (587).", kind="endpoints")
    bind_tls: tuple[str, ...] = opt((), "Implicit-TLS submission listeners (465).", kind="endpoints")
    tls: Optional[str] = opt(None, "Name of the [tls.NAME] certificate (TLS is always required).")
    auth: tuple[str, ...] = opt(("plain", "login"), "Allowed mechanisms: plain, login, ntlm; basic = plain + login.", kind="choices", choices=MECHANISMS)
    local_domains: tuple[str, ...] = opt((), "Domains delivered into the Maildir store; others are relayed.")
    send_as: str = opt("own", "own: MAIL FROM and From: must be the user's addresses; any: no check.", kind="choice", choices=("own", "any"))
    max_message_size: int = opt(35 * 1024 * 1024, "Largest message (SIZE).", kind="size")
    max_recipients: int = opt(100, "Recipients per message.")
    long_lines: str = opt("reject", "Lines over 998 octets in DATA: reject the message, or accept them.", kind="choice", choices=("reject", "accept"))
    timeout: float = opt(300.0, "Idle time allowed between commands.", kind="duration")
    smarthost: Optional[SmarthostConfig] = opt(None, "Where non-local mail goes.")
    max_queue_age: float = opt(5 * 86400.0, "How long a message may wait before it is bounced.", kind="duration")
    clients: tuple[str, ...] = opt(("any",), "Who may connect: \"any\", CIDRs, or [client_sets.NAME] names (as publishing rules); others are closed before the greeting.")
    max_connections: int = opt(1000, "Concurrent connections to this virtual server (all its listeners); more are closed before the greeting.")
    proxy_protocol_from: tuple[str, ...] = opt((), "Proxies (CIDRs) that send a PROXY protocol v1/v2 header first; when set, only they may connect and must send one.", kind="cidrs")


@dataclass(frozen=True)
class ClientSetConfig:
    addresses: tuple[str, ...] = opt((), "IPv4 and IPv6 addresses and networks (CIDR).", kind="cidrs")


@dataclass(frozen=True)
class PublishConfig:
    listen: str = opt("", "External endpoint the rule listens on.", kind="endpoint", required=True)
    target: str = opt("", "Internal server host:port (\"[v6]:port\"; host names resolve to IPv4).", kind="hostport", required=True)
    protocol: str = opt("tcp", "Protocol label (metrics, session list); the bytes are never inspected.", kind="choice", choices=("imap", "imaps", "smtp", "submission", "smtps", "tcp"))
    clients: tuple[str, ...] = opt((), "\"any\", CIDRs, or names of [client_sets.NAME].", required=True)
    proxy_protocol: str = opt("off", "Send a HAProxy PROXY protocol header (v1 text, v2 binary) to the target first.", kind="choice", choices=("off", "v1", "v2"))
    max_connections: int = opt(1000, "Concurrent connections through the rule; more are closed at accept.")
    max_per_client: int = opt(50, "Concurrent connections per client address; more are closed at accept.")
    connect_timeout: float = opt(10.0, "Time to connect to the target before the client is closed.", kind="duration")
    idle_timeout: float = opt(300.0, "Idle time (no byte either way) before both sides are closed; \"0s\": never.", kind="duration")
    splice: bool = opt(True, "Move bytes with Linux splice(2) (zero copy) when both sides are plain TCP.")


@dataclass(frozen=True)
class ManholeConfig:
    listen: str = opt("", "Loopback endpoint of the SSH admin shell.", kind="endpoint", required=True)
    authorized_keys_file: str = opt("", "OpenSSH authorized_keys of the administrators (public keys only).", kind="file", required=True)


@dataclass(frozen=True)
class HTTPAdminConfig:
    listen: str = opt("", "Loopback endpoint of /health and /metrics.", kind="endpoint", required=True)


@dataclass(frozen=True)
class AdminConfig:
    manhole: Optional[ManholeConfig] = opt(None, "SSH manhole (public-key only, loopback only).")
    http: Optional[HTTPAdminConfig] = opt(None, "HTTP health and metrics endpoint (loopback only).")


@dataclass(frozen=True)
class LogConfig:
    format: str = opt("text", "Log format on standard output.", kind="choice", choices=("text", "json", "journald"))
    level: str = opt("info", "Lowest level logged.", kind="choice", choices=("debug", "info", "warn", "error"))


@dataclass(frozen=True)
class Config:
    config_version: int = opt(None, "Schema version of this file; must be 1.", required=True)
    server: ServerConfig = section(ServerConfig)
    tls: dict[str, TLSCertConfig] = named("Named certificates: [tls.NAME].")
    store: StoreConfig = section(StoreConfig)
    auth: AuthConfig = section(AuthConfig)
    imap: dict[str, IMAPConfig] = named("IMAP virtual servers: [imap.NAME].")
    submission: dict[str, SubmissionConfig] = named("SMTP submission relays: [submission.NAME].")
    publish: dict[str, PublishConfig] = named("Server publishing rules: [publish.NAME].")
    client_sets: dict[str, ClientSetConfig] = named("Client address sets used by publishing rules and the clients of IMAP and submission servers.")
    admin: AdminConfig = section(AdminConfig)
    log: LogConfig = section(LogConfig)
