"""The SSH manhole: a Python shell in the gateway process, public-key only, with a persisted ed25519 host key.

Built from Conch's pieces rather than `manhole_tap` (notes/twisted.md §1 "Key-only SSH manhole";
security.md T9, G36): manhole_tap falls back to the system's accounts and writes a world-readable
host key. Here the portal holds exactly one checker, `SSHPublicKeyChecker`, so the server offers
`publickey` and nothing else (no password, no keyboard-interactive, never /etc/passwd); exec
requests are refused by `TerminalSession`. The authorized_keys file is read at each login, so
adding or removing a key needs no restart. Every login is logged with its key fingerprint.

Algorithms (security.md T9): Conch's defaults still offer 3des-cbc, the CBC modes, hmac-md5,
hmac-sha1 and SHA-1 Diffie-Hellman; each connection here negotiates only `CIPHERS`, `MACS` and
`KEX` (RFC 9142 for kex; CBC modes per RFC 4344 §4 and the SSH CBC plaintext-recovery attack,
CVE-2008-5161). The lists name AES-GCM, chacha20-poly1305 and the -etm MACs too, so they are
used as soon as Conch implements them; whatever this Conch lacks is dropped, never added.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch import manhole
from twisted.conch.insults import insults
from twisted.conch.ssh import keys, session, transport
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutFactory
from zope.interface import implementer

from mailgw import files
from mailgw.observe import events

log = Logger()

HOST_KEY_NAME = "manhole_host_ed25519_key"
IDLE_TIMEOUT = 900.0  # security.md G36: an abandoned admin shell is closed after 15 minutes without traffic

# In preference order. AEAD first; then encrypt-then-MAC; CTR with HMAC-SHA2 (RFC 4344, RFC 6668).
CIPHERS = (b"chacha20-poly1305@openssh.com", b"aes256-gcm@openssh.com", b"aes128-gcm@openssh.com",
           b"aes256-ctr", b"aes192-ctr", b"aes128-ctr")
MACS = (b"hmac-sha2-512-etm@openssh.com", b"hmac-sha2-256-etm@openssh.com",
        b"hmac-sha2-512", b"hmac-sha2-384", b"hmac-sha2-256")
# mlkem768x25519 is X25519 hybridised with ML-KEM (post-quantum); then curve25519 (RFC 8731), ECDH (RFC 5656).
KEX = (b"mlkem768x25519-sha256", b"curve25519-sha256", b"curve25519-sha256@libssh.org",
       b"ecdh-sha2-nistp256", b"ecdh-sha2-nistp384", b"ecdh-sha2-nistp521")


def _available(wanted: Iterable[bytes], offered: Iterable[bytes]) -> list[bytes]:
    """`wanted`, in its order, less what this Conch does not implement."""
    implemented = set(offered)
    return [name for name in wanted if name in implemented]


def openssh_fingerprint(key: keys.Key) -> str:
    """`SHA256:...` exactly as `ssh-keygen -l` and sshd's logs print it."""
    return "SHA256:" + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("=")


def ensure_host_key(path: str) -> keys.Key:
    """Load the ed25519 host key at `path`, creating it (mode 0600, never readable by others) if missing."""
    if not os.path.exists(path):
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        # Whole or absent: a key cut short by a crash would stop every later start at parsing it.
        files.create_durably(path, key.toString("openssh"), 0o600)
        log.info("generated manhole host key {path} ({fingerprint})", path=path,
                 fingerprint=openssh_fingerprint(key), event="manhole.host_key")
        return key
    mode = os.stat(path).st_mode
    if mode & 0o077:
        # A host key others can read lets them impersonate the manhole: tighten it rather than trust it.
        os.chmod(path, 0o600)
        log.warn("manhole host key {path} was readable by others; mode set to 0600", path=path, event="manhole.host_key_mode")
    with open(path, "rb") as handle:
        return keys.Key.fromString(handle.read())


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """OpenSSH authorized_keys lines (`type base64 [comment]`); any SSH user name maps to the same keys.

    Lines with options (`from=...`, `command=...`) are skipped: mailgw cannot honour them.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, avatarId: bytes) -> Iterable[keys.Key]:  # noqa: N802 (Conch's name)
        try:
            with open(self.path, "rb") as handle:
                return list(readAuthorizedKeyFile(handle))
        except OSError as exc:
            log.error("cannot read manhole authorized keys {path}: {error}", path=self.path, error=exc.strerror,
                      event="manhole.keys_unreadable")
            return []


class LoggingKeyChecker(SSHPublicKeyChecker):
    """SSHPublicKeyChecker that logs each successful login with the key's SHA256 fingerprint."""

    def requestAvatarId(self, credentials: Any) -> Any:  # noqa: N802
        d = super().requestAvatarId(credentials)

        def logged(avatar_id: bytes) -> bytes:
            if credentials.signature is not None:
                fingerprint = openssh_fingerprint(keys.Key.fromString(credentials.blob))
                events.emit(log, events.MANHOLE_LOGIN, "info", user=avatar_id.decode("utf-8", "replace"),
                            key=fingerprint)
            return avatar_id

        def refused(failure: Any) -> Any:
            if failure.check(UnauthorizedLogin) and not failure.check(ValidPublicKey):
                try:
                    fingerprint = openssh_fingerprint(keys.Key.fromString(credentials.blob))
                except keys.BadKeyError:
                    fingerprint = "unparseable"
                log.warn("manhole key refused: {key} for {user}", key=fingerprint,
                         user=events.sanitise(credentials.username), event="manhole.key_refused")
            return failure

        return d.addCallbacks(logged, refused)


class ShellOnlySession(session.SSHSession):
    """Refuses exec, subsystem and terminal-less shell requests with a one-line log instead of Conch's logged traceback."""

    def request_shell(self, data: bytes) -> int:
        # The REPL is a terminal application: without pty-req Conch's TerminalSession has no size
        # and raises (logged as a traceback "while establishing session client").
        if not getattr(self._session, "has_terminal", True):
            log.warn("manhole: shell without a terminal refused (use ssh -t)", event="manhole.no_terminal")
            return 0
        return super().request_shell(data)

    def request_exec(self, data: bytes) -> int:
        log.warn("manhole: command execution refused", event="manhole.exec_refused")
        return 0

    def request_subsystem(self, data: bytes) -> int:
        log.warn("manhole: subsystem refused", event="manhole.subsystem_refused")
        return 0


class ManholeTerminalSession(manhole_ssh.TerminalSession):
    """Conch's TerminalSession with the ISession events it leaves unimplemented (each raised into the log).

    The client closing its input (`ssh ... < /dev/null`, the end of a here-document; RFC 4254
    §5.3 CHANNEL_EOF) ends the shell as Ctrl-D does; a window resize reaches the line editor.
    """

    width: int
    height: int

    @property
    def has_terminal(self) -> bool:
        return hasattr(self, "width")

    def openShell(self, proto: Any) -> None:  # noqa: N802 (ISession)
        self._terminal = self.transportFactory(proto, self.chainedProtocolFactory(), IConchUser(self.original),
                                               self.width, self.height)

    def windowChanged(self, newWindowSize: Any) -> None:  # noqa: N802,N803 (ISession)
        self.height, self.width = newWindowSize[:2]
        terminal = getattr(self, "_terminal", None)
        if terminal is not None:
            terminal.chainedProtocol.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:  # noqa: N802 (ISession)
        terminal = getattr(self, "_terminal", None)
        if terminal is not None:
            terminal.proto.loseConnection()


class ResultInterpreter(manhole.ManholeInterpreter):
    """Shows what a Deferred fires with (`reload()` -> `reload: ok`), not `<Deferred #0>` and "called back".

    A result available at once is shown under the prompt's line; a later one is written when it
    comes (Conch's asynchronous output). Failures show their message, never a traceback.
    """

    def displayhook(self, obj: Any) -> None:
        if not isinstance(obj, defer.Deferred):
            super().displayhook(obj)
            return
        self.locals["_"] = obj
        later = [False]

        def show(result: Any) -> Any:
            if result is not None:
                self.write(repr(result), later[0])
            return result

        def failed(failure: Any) -> None:
            self.write(f"failed: {failure.getErrorMessage()}", later[0])

        obj.addCallbacks(show, failed)
        later[0] = True


class ResultManhole(manhole.ColoredManhole):
    def connectionMade(self) -> None:  # noqa: N802 (Conch's name)
        super().connectionMade()
        self.interpreter = ResultInterpreter(self, self.namespace)


class ShellFactory:
    """The terminal protocol stack of one manhole session over `namespace` (manhole_tap's, with ResultManhole)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def __call__(self) -> insults.ServerProtocol:
        return insults.ServerProtocol(ResultManhole, self.namespace)


class ManholeTransport(transport.SSHServerTransport):
    """SSHServerTransport that logs a client's DISCONNECT as one line, not at error level.

    Conch logs every peer DISCONNECT as an error, even OpenSSH's ordinary "disconnected by user"
    (RFC 4253 §11.1 reason 11, DISCONNECT_BY_APPLICATION) at the end of each session.
    """

    def receiveError(self, reasonCode: int, description: bytes) -> None:  # noqa: N802,N803 (Conch's names)
        level = log.info if reasonCode == transport.DISCONNECT_BY_APPLICATION else log.warn
        level("manhole client disconnected: {reason} (code {code})", code=reasonCode,
              reason=events.sanitise(description.decode("utf-8", "replace")), event="manhole.disconnect")


class ManholeFactory(manhole_ssh.ConchFactory):
    """ConchFactory whose transports negotiate only mailgw's algorithms (set per instance: Conch's class lists stay as they are)."""

    protocol = ManholeTransport

    def buildProtocol(self, addr: Any) -> transport.SSHServerTransport:  # noqa: N802
        proto = super().buildProtocol(addr)
        proto.supportedCiphers = _available(CIPHERS, proto.supportedCiphers)
        proto.supportedMACs = _available(MACS, proto.supportedMACs)
        proto.supportedKeyExchanges = _available(KEX, proto.supportedKeyExchanges)
        return proto


class ManholeUser(manhole_ssh.TerminalUser):
    def __init__(self, original: Any, avatarId: bytes) -> None:  # noqa: N803
        super().__init__(original, avatarId)
        self.channelLookup[b"session"] = ShellOnlySession


def manhole_factory(namespace: dict[str, Any], host_key: keys.Key, authorized_keys: IAuthorizedKeysDB,
                    idle_timeout: float = IDLE_TIMEOUT) -> TimeoutFactory:
    """A ConchFactory serving a Python REPL over `namespace` to holders of an authorized key, closed when idle."""
    realm = manhole_ssh.TerminalRealm()
    realm.userFactory = ManholeUser
    realm.sessionFactory = ManholeTerminalSession  # type: ignore[assignment]
    realm.chainedProtocolFactory = ShellFactory(namespace)  # type: ignore[assignment]
    factory = ManholeFactory(Portal(realm, [LoggingKeyChecker(authorized_keys)]))  # type: ignore[arg-type]
    # Instance attributes: ConchFactory's class-level dicts are shared by every factory (manhole_ssh.py:142).
    factory.publicKeys = {host_key.sshType(): host_key.public()}  # type: ignore[dict-item]  # Conch accepts Key objects
    factory.privateKeys = {host_key.sshType(): host_key}  # type: ignore[dict-item]
    return TimeoutFactory(factory, timeoutPeriod=idle_timeout)
