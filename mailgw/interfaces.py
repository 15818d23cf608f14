"""Every zope.interface seam of mailgw: store, auth, relay, sessions, TLS, publishing, the admin view.

Protocol packages (imap, smtp, publish, admin) meet storage and authentication only
through these interfaces; `assemble.py` wires concrete implementations to them.
Values crossing a seam are the frozen dataclasses defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ClientInfo:
    """Who is talking to us: handed to the auth service for policy, throttling and logs."""

    protocol: str  # "imap" | "smtp" | "manhole"
    listener: str  # config name of the virtual server, e.g. "secure"
    peer_host: str  # textual IP of the client (after PROXY protocol, if any)
    peer_port: int = 0
    tls: bool = False
    tls_version: str = ""  # e.g. "TLSv1.3"
    tls_cipher: str = ""  # e.g. "TLS_AES_256_GCM_SHA384"


@dataclass(frozen=True)
class Identity:
    """An authenticated (or looked-up) account: the canonical id names the mailbox."""

    user: str  # canonical id, e.g. the directory entry's uid ("alice")
    addresses: tuple[str, ...] = ()  # addresses the user may send as (lower-case)
    backend: str = ""  # which backend vouched for it, e.g. "ldap.corp" or "local"


@dataclass(frozen=True)
class SASLChallenge:
    """A SASL step that needs another client response; `data` is raw (not base64)."""

    data: bytes = b""


@dataclass(frozen=True)
class SASLSuccess:
    """The exchange finished and the client is authenticated."""

    identity: Identity
    data: Optional[bytes] = None  # final server data, if the mechanism has any


@dataclass(frozen=True)
class FolderInfo:
    """One folder as LIST shows it (names are Unicode, '/' separated; INBOX is 'INBOX')."""

    name: str
    special_use: Optional[str] = None  # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"
    has_children: bool = False
    selectable: bool = True


@dataclass(frozen=True)
class FolderStatus:
    """STATUS data for one folder."""

    messages: int
    recent: int
    uid_next: int
    uid_validity: int
    unseen: int
    size: int = 0


@dataclass(frozen=True)
class MessageInfo:
    """What the index knows of one message, without opening its file."""

    uid: int
    flags: frozenset[str]  # system flags with backslash ("\\Seen") and keywords
    size: int  # RFC822.SIZE in octets (CRLF line ends)
    internal_date: datetime  # timezone-aware


@dataclass(frozen=True)
class FolderChanges:
    """What changed in a folder since the previous refresh, for untagged responses."""

    added: tuple[int, ...] = ()  # new uids, ascending
    expunged: tuple[int, ...] = ()  # removed uids
    flags: dict[int, frozenset[str]] = field(default_factory=dict)  # uid -> new flags


@dataclass(frozen=True)
class CopyResult:
    """UIDPLUS data for COPY/MOVE (RFC 4315 COPYUID)."""

    uid_validity: int
    pairs: tuple[tuple[int, int], ...]  # (source uid, destination uid)


@dataclass(frozen=True)
class AppendResult:
    """UIDPLUS data for APPEND and for a local delivery (RFC 4315 APPENDUID)."""

    uid_validity: int
    uid: int


@dataclass(frozen=True)
class MessageFile:
    """A message held in a file (a spooled APPEND literal, an SMTP DATA spool) handed to the store.

    The store copies it into its own file in chunks in its thread pool (converting bare LF to
    CRLF on the way), so no whole-message `bytes` exists on either side of the seam. Give `path`
    (the store opens and closes it) or `fd` (an open descriptor the caller keeps and closes after
    the Deferred fires; read with pread, so its file position does not matter).
    """

    path: str = ""
    fd: int = -1
    size: int = 0  # octets in the file (before any LF -> CRLF conversion)


@dataclass(frozen=True)
class QuotaUsage:
    """Storage use against an optional quota (None = unlimited)."""

    bytes_used: int
    bytes_limit: Optional[int]
    messages_used: int
    messages_limit: Optional[int]


# --------------------------------------------------------------------------- store


class IMessageStore(Interface):
    """All users' mail. IMAP serves it; SMTP delivers into it."""

    def open_account(user: str) -> "Deferred[IAccount]":  # type: ignore[empty-body]
        """Open (creating on first use, with SPECIAL-USE folders) the account of canonical user id."""

    def deliver(user: str, message: "bytes | MessageFile", folder: str = "INBOX") -> "Deferred[AppendResult]":  # type: ignore[empty-body]
        """Durably deliver a message (tmp -> fsync -> new/ -> dir fsync) before the Deferred fires."""


class IAccount(Interface):
    """One user's folders. Every name is Unicode with '/' as separator; bad names raise InvalidMailboxName."""

    user = Attribute("canonical user id")

    def list_folders() -> "Deferred[list[FolderInfo]]":  # type: ignore[empty-body]
        """All folders, INBOX first."""

    def create_folder(name: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Create a folder (and missing parents). Raises MailboxExists."""

    def delete_folder(name: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Delete a folder and its messages (not INBOX). Raises NoSuchMailbox."""

    def rename_folder(old: str, new: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Rename a folder and its children; renaming INBOX moves its messages to a new folder (RFC 3501 §6.3.5)."""

    def subscriptions() -> "Deferred[list[str]]":  # type: ignore[empty-body]
        """Subscribed folder names."""

    def subscribe(name: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Add a name to the subscriptions."""

    def unsubscribe(name: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Remove a name from the subscriptions."""

    def status(name: str) -> "Deferred[FolderStatus]":  # type: ignore[empty-body]
        """STATUS counts of a folder, from its index."""

    def open_folder(name: str, readonly: bool = False) -> "Deferred[IFolder]":  # type: ignore[empty-body]
        """Open a session view of a folder (SELECT/EXAMINE). Raises NoSuchMailbox."""

    def append(name: str, message: "bytes | MessageFile", flags: frozenset[str] = frozenset(), internal_date: Optional[datetime] = None) -> "Deferred[AppendResult]":  # type: ignore[empty-body]
        """APPEND: durable before the Deferred fires. Raises NoSuchMailbox (-> TRYCREATE), QuotaExceeded."""

    def quota() -> QuotaUsage:  # type: ignore[empty-body]
        """Current use against the quota."""


class IMessageBody(Interface):
    """One opened message as stored (CRLF octets): immutable, and still readable after another session expunges it.

    Reads run in the store's thread pool (or are already in memory for small messages); the
    reactor never reads a message file itself.
    """

    size = Attribute("length in octets (int)")

    def read(offset: int, length: int) -> "Deferred[bytes]":  # type: ignore[empty-body]
        """Up to `length` octets from `offset` (fewer only at the end)."""

    def read_all() -> "Deferred[bytes]":  # type: ignore[empty-body]
        """The whole message (for parsing; FETCH streams big bodies with read() instead)."""

    def close() -> None:
        """Release the file (after any read still running has finished)."""


class IFolder(Interface):
    """A session's view of one open folder. Message lists come from the index, not the files.

    Threading (docs/store.md): the attributes and messages() are immutable values owned by the
    reactor thread; everything that reads the store's files or bookkeeping returns a Deferred and
    runs in the store's thread pool behind the folder's lock.
    """

    name = Attribute("folder name")
    uid_validity = Attribute("UIDVALIDITY (int)")
    uid_next = Attribute("UIDNEXT (int)")
    readonly = Attribute("True for EXAMINE")

    def messages() -> "tuple[MessageInfo, ...]":  # type: ignore[empty-body]
        """This view's messages in ascending UID order (position + 1 = sequence number): an immutable snapshot."""

    def uids() -> "tuple[int, ...]":  # type: ignore[empty-body]
        """The UIDs of messages(), in the same order (an immutable tuple, shared between views where possible)."""

    def recent_uids() -> "frozenset[int]":  # type: ignore[empty-body]
        """UIDs that are \\Recent for this session (RFC 3501 §2.3.2)."""

    def refresh() -> "Deferred[FolderChanges]":  # type: ignore[empty-body]
        """Pick up changes by other sessions and other programs; apply them to this view."""

    def store_flags(uids: "list[int]", flags: "frozenset[str]", mode: str) -> "Deferred[dict[int, frozenset[str]]]":  # type: ignore[empty-body]
        """mode: "set" | "add" | "remove". Returns the new flags of each existing uid."""

    def copy(uids: "list[int]", destination: str) -> "Deferred[CopyResult]":  # type: ignore[empty-body]
        """Copy messages into another folder (hard links where possible). Raises NoSuchMailbox."""

    def move(uids: "list[int]", destination: str) -> "Deferred[CopyResult]":  # type: ignore[empty-body]
        """Move messages (RFC 6851): copy result, and the sources are expunged."""

    def expunge(uids: "Optional[list[int]]" = None) -> "Deferred[list[int]]":  # type: ignore[empty-body]
        """Remove \\Deleted messages (restricted to `uids` if given); returns the expunged uids."""

    def open_message(uid: int) -> "Deferred[IMessageBody]":  # type: ignore[empty-body]
        """The message opened for reading. Fails with MessageExpunged if it is gone."""

    def open_messages(uids: "list[int]") -> "Deferred[dict[int, IMessageBody]]":  # type: ignore[empty-body]
        """Several messages opened in one job (small ones read ahead); expunged uids are left out."""

    def header_bytes(uid: int) -> "Deferred[bytes]":  # type: ignore[empty-body]
        """The raw header block (up to and including the blank line). Fails with MessageExpunged if it is gone."""

    def headers(uids: "list[int]") -> "Deferred[dict[int, bytes]]":  # type: ignore[empty-body]
        """Header blocks of several messages in one job, from the index cache when possible; expunged uids left out."""

    def add_listener(listener: "IFolderListener") -> None:
        """Be told of changes made through other views of the same folder."""

    def remove_listener(listener: "IFolderListener") -> None:
        """Stop being told."""

    def close() -> None:
        """Release the view (CLOSE, UNSELECT, logout)."""


class IFolderListener(Interface):
    """Change notifications for an open folder (IMAP turns them into untagged responses)."""

    def folder_changed(folder: IFolder) -> None:
        """Something changed; call `folder.refresh()` at a point the protocol allows."""


# --------------------------------------------------------------------------- auth


class IDirectory(Interface):
    """A credential backend (local users file, an LDAP directory)."""

    name = Attribute("config name, e.g. 'local' or 'ldap.corp'")

    def verify_password(login: str, password: str) -> "Deferred[Optional[Identity]]":  # type: ignore[empty-body]
        """Identity on success, None for unknown user or wrong password; raises AuthUnavailable on outage."""

    def lookup(login: str) -> "Deferred[Optional[Identity]]":  # type: ignore[empty-body]
        """Identity of a login name or address, without a password (recipient resolution, send-as)."""

    def nt_hash(login: str) -> "Deferred[Optional[tuple[Identity, bytes]]]":  # type: ignore[empty-body]
        """(identity, 16-byte NT hash) for NTLM, or None if the backend holds none for that login."""


class INTLMVerifier(Interface):
    """Checks an NTLMv2 response (from directory NT hashes, or Samba's ntlm_auth helper)."""

    def verify(user: str, domain: str, server_challenge: bytes, nt_response: bytes) -> "Deferred[Optional[Identity]]":  # type: ignore[empty-body]
        """Identity if the response proves the password; None otherwise; AuthUnavailable on outage."""

    def verify_session(user: str, domain: str, server_challenge: bytes, nt_response: bytes) -> "Deferred[Optional[tuple[Identity, bytes]]]":  # type: ignore[empty-body]
        """As verify, with the 16-byte SessionBaseKey (MS-NLMP 3.3.2) for checking the MIC."""


class ISASLExchange(Interface):
    """One running SASL exchange (PLAIN, LOGIN, NTLM): driven by IMAP AUTHENTICATE and SMTP AUTH alike."""

    mechanism = Attribute("upper-case mechanism name")

    def step(response: "Optional[bytes]") -> "Deferred[SASLChallenge | SASLSuccess]":  # type: ignore[empty-body]
        """Feed the client's decoded response (None when there was no initial response).

        Fails with AuthFailed (wrong credentials, malformed data), AuthUnavailable (backend down),
        or AuthThrottled.
        """


class IAuthService(Interface):
    """The one pre-auth policy and credential checker that every protocol asks."""

    def mechanisms(client: ClientInfo) -> "tuple[str, ...]":  # type: ignore[empty-body]
        """Mechanisms to advertise to this client now (upper-case): its listener's policy and TLS state decide."""

    def login_allowed(client: ClientInfo) -> bool:  # type: ignore[empty-body]
        """Whether a user/password command (IMAP LOGIN) is accepted now; IMAP's LOGINDISABLED is its negation."""

    def start(mechanism: str, client: ClientInfo) -> ISASLExchange:  # type: ignore[empty-body]
        """Begin an exchange; raises TLSRequired when TLS must come first (checked before anything
        else, for any name), UnknownMechanism when the listener does not offer it."""

    def login(username: str, password: str, client: ClientInfo) -> "Deferred[Identity]":  # type: ignore[empty-body]
        """IMAP LOGIN: fails at once with TLSRequired (before TLS) or UnknownMechanism (listener takes
        no passwords); else with AuthFailed / AuthUnavailable / AuthThrottled after the failure delay."""

    def lookup(address: str) -> "Deferred[Optional[Identity]]":  # type: ignore[empty-body]
        """Resolve a login name or address to an identity (local delivery, send-as); None if unknown."""


# --------------------------------------------------------------------------- relay


class IRelayQueue(Interface):
    """The durable outbound queue for non-local recipients."""

    def enqueue(sender: str, recipients: "list[str]", message: bytes) -> "Deferred[str]":  # type: ignore[empty-body]
        """Write and fsync the message; the Deferred fires with the queue id only once it is durable."""

    def entries() -> "list[dict]":  # type: ignore[empty-body]
        """Queued messages: id, sender, recipients, size, age, attempts, last error."""

    def flush() -> None:
        """Attempt delivery of everything now."""

    def delete(queue_id: str) -> bool:  # type: ignore[empty-body]
        """Remove a queued message; False if unknown."""


# --------------------------------------------------------------------------- sessions and TLS


class ISessionRegistry(Interface):
    """Open client sessions by listener, for the manhole (list, kick) and metrics."""

    def add(listener: str, protocol: str, session: object) -> None:
        """Register a session (an object with `peer`, `user` and `kick()`)."""

    def remove(session: object) -> None:
        """Forget a session."""

    def sessions(listener: "Optional[str]" = None) -> "list[object]":  # type: ignore[empty-body]
        """Sessions, optionally for one listener."""

    def entries() -> "list[tuple[str, str, Any]]":  # type: ignore[empty-body]
        """(listener, protocol, session) of every open session, in the order they were added."""

    def counts() -> "dict[tuple[str, str], int]":  # type: ignore[empty-body]
        """Open sessions per (listener, protocol)."""


class IServerTLS(Interface):
    """A named server certificate with mailgw's TLS policy; reloadable."""

    name = Attribute("config name of the certificate")

    def context_factory():  # type: ignore[no-untyped-def]
        """An IOpenSSLServerConnectionCreator for startTLS and implicit-TLS listeners (always current)."""

    def reload() -> None:
        """Re-read the certificate and key; raises ConfigError and keeps the old one if they are bad."""


# --------------------------------------------------------------------------- publish


class IPublishRule(Interface):
    """One live server publishing rule ([publish.NAME]): what admin and reload code may do with it."""

    name = Attribute("config name of the rule")
    settings = Attribute("its current settings (listen, target, limits, timeouts, PROXY mode)")

    def active_connections() -> "list[dict]":  # type: ignore[empty-body]
        """One dict per open connection: rule, peer, target, state, bytes_in, bytes_out, age, splice."""

    def set_clients(clients: "Any", close_existing: bool = True) -> int:  # type: ignore[empty-body]
        """Swap the allowed client set live; close open connections it refuses; return how many."""

    def reconfigure(settings: "Any", clients: "Any", close_existing: bool = True) -> int:  # type: ignore[empty-body]
        """Apply reloaded settings and clients (same listen endpoint); return connections closed."""

    def close_all() -> None:
        """Close every open connection through the rule."""


# --------------------------------------------------------------------------- admin


@dataclass(frozen=True)
class ListenerState:
    """One listener of the running gateway, as /health and the manhole's listeners() show it."""

    label: str  # the config key, e.g. "imap.secure.bind_tls[0]"
    endpoint: str  # the endpoint description it was configured with
    address: Optional[str] = None  # "host:port" (or a socket path) it is bound to; None: not bound
    bound: bool = False  # listening now (bound and its service running)


class IGatewayView(Interface):
    """What the admin surfaces (/health, /metrics, the manhole shell) read and do in the running gateway.

    Implemented by the assembled gateway (mailgw.assemble.Gateway); admin code knows nothing else of it.
    """

    config = Attribute("the configuration in force (mailgw.config.schema.Config), replaced by a successful reload")
    sessions = Attribute("the ISessionRegistry of every open client session")
    health_checks = Attribute("extra /health checks components registered: zero-argument callables "
                              "returning (name, ok, detail) or a Deferred of it")

    def listeners() -> "list[ListenerState]":  # type: ignore[empty-body]
        """Every listener, in the order they were built."""

    def relay_queues() -> "dict[str, IRelayQueue]":  # type: ignore[empty-body]
        """The relay queue of each [submission.NAME], by NAME."""

    def directories() -> "list[IDirectory]":  # type: ignore[empty-body]
        """The credential backends in the order they are tried (their health is a lookup that must answer)."""

    def throttled() -> "list[dict[str, Any]]":  # type: ignore[empty-body]
        """Client networks and (network, account) pairs over their failure budget: ip, user, failures, until."""

    def publish_rules() -> "dict[str, IPublishRule]":  # type: ignore[empty-body]
        """The live server publishing rules, by [publish.NAME]."""

    def publish_targets() -> "list[dict[str, Any]]":  # type: ignore[empty-body]
        """Each publishing rule's last periodic target check (name, target, ok, detail), for /health."""

    def reload() -> "Deferred[str]":  # type: ignore[empty-body]
        """Re-read the configuration file and apply it (as SIGHUP does); fires with ok, refused, invalid or failed."""


class IReloadTarget(Interface):
    """What a configuration reload (mailgw.admin.reloader) reads and replaces in the running gateway."""

    config = Attribute("the configuration in force; the reloader replaces it once every change is installed")
    config_source = Attribute("zero-argument callable re-reading the configuration file (raises ConfigError), or None")
    tls = Attribute("the certificate registry: get(name) -> IServerTLS with prepare(), add(tls), certificates by name")
    reload_hooks = Attribute("(dotted key patterns, prepare(new_config)) of each component that applies changes live")
    notifier = Attribute("the sd_notify client: reloading() before a reload, ready(status) after")
