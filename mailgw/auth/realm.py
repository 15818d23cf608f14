"""twisted.cred glue around AuthService: credentials that carry the client, a checker, a realm, a portal.

IMAP and SMTP call IAuthService directly (SASL needs more than cred's one-shot credentials);
this is for anything that speaks twisted.cred (e.g. a web admin). The manhole uses SSH keys.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from mailgw.auth.service import AuthService
from mailgw.errors import AuthFailed
from mailgw.interfaces import ClientInfo, Identity


class IAccountAvatar(Interface):
    """The avatar interface: the avatar is the account's Identity."""


@implementer(IUsernamePassword)
class ClientCredentials:
    """A user name and password together with who sent them (for throttling and logs)."""

    def __init__(self, username: str, password: str, client: ClientInfo) -> None:
        self.username = username
        self.password = password
        self.client = client

    def checkPassword(self, password: Any) -> bool:
        mine = self.password.encode() if isinstance(self.password, str) else self.password
        theirs = password.encode() if isinstance(password, str) else password
        return hmac.compare_digest(mine, theirs)

    def __repr__(self) -> str:
        return f"<ClientCredentials {self.username!r} from {self.client.peer_host}>"  # never the password


@implementer(ICredentialsChecker)
class AuthServiceChecker:
    """Checks IUsernamePassword through AuthService.login; the avatar id is the canonical user id.

    Credentials without a `client` attribute are checked as coming from `default_client`.
    AuthFailed becomes cred's UnauthorizedLogin; AuthUnavailable passes through unchanged.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, service: AuthService,
                 default_client: ClientInfo = ClientInfo("cred", "cred", "unknown", tls=True)) -> None:
        self.service = service
        self.default_client = default_client

    def requestAvatarId(self, credentials: Any) -> "Deferred[str]":  # type: ignore[override]
        client = getattr(credentials, "client", self.default_client)
        username = credentials.username.decode() if isinstance(credentials.username, bytes) else credentials.username
        password = credentials.password.decode() if isinstance(credentials.password, bytes) else credentials.password
        d = self.service.login(username, password, client)

        def unauthorized(f: Failure) -> Failure:
            if f.check(AuthFailed):
                return Failure(UnauthorizedLogin(f.value.public))
            return f

        return d.addCallbacks(lambda identity: identity.user, unauthorized)


@implementer(IRealm)
class IdentityRealm:
    """Turns an avatar id (canonical user id) into its Identity via AuthService.lookup."""

    def __init__(self, service: AuthService) -> None:
        self.service = service

    def requestAvatar(self, avatarId: Any, mind: Any,  # type: ignore[override]
                      *interfaces: Any) -> "Deferred[tuple[Any, Identity, Callable[[], None]]]":
        if IAccountAvatar not in interfaces:
            raise NotImplementedError("IdentityRealm only provides IAccountAvatar")
        user = avatarId.decode() if isinstance(avatarId, bytes) else avatarId

        def found(identity: Identity | None) -> tuple[Any, Identity, Callable[[], None]]:
            return IAccountAvatar, identity or Identity(user), lambda: None

        return self.service.lookup(user).addCallback(found)


def make_portal(service: AuthService) -> Portal:
    """A Portal with the IdentityRealm and the AuthService checker."""
    return Portal(IdentityRealm(service), [AuthServiceChecker(service)])
