"""The twisted.cred portal around AuthService."""

from __future__ import annotations

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailgw.auth.memory import MemoryDirectory
from mailgw.auth.realm import AuthServiceChecker, ClientCredentials, IAccountAvatar, make_portal
from mailgw.auth.service import AuthService
from mailgw.interfaces import ClientInfo, Identity

CLIENT = ClientInfo("http", "admin", "127.0.0.1", tls=True)


class PortalTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = MemoryDirectory()
        directory.add_user("alice", "S3cret!", ["alice@example.test"])
        self.service = AuthService([directory], Clock(), failure_delay=0)
        self.portal = make_portal(self.service)

    def test_login(self) -> None:
        """A good password gives the IAccountAvatar and the canonical Identity."""
        iface, avatar, logout = self.successResultOf(
            self.portal.login(ClientCredentials("alice@example.test", "S3cret!", CLIENT), None, IAccountAvatar))
        self.assertIs(iface, IAccountAvatar)
        self.assertEqual(avatar, Identity("alice", ("alice@example.test",), "memory"))
        logout()

    def test_bad_password(self) -> None:
        """A wrong password is cred's UnauthorizedLogin; stock credentials work too."""
        self.failureResultOf(self.portal.login(ClientCredentials("alice", "x", CLIENT), None, IAccountAvatar),
                             UnauthorizedLogin)
        self.successResultOf(self.portal.login(UsernamePassword(b"alice", b"S3cret!"), None, IAccountAvatar))

    def test_interfaces(self) -> None:
        """The checker and credentials provide their cred interfaces; repr hides the password."""
        from twisted.cred.checkers import ICredentialsChecker
        from twisted.cred.credentials import IUsernamePassword
        verifyObject(ICredentialsChecker, AuthServiceChecker(self.service))
        creds = ClientCredentials("alice", "S3cret!", CLIENT)
        verifyObject(IUsernamePassword, creds)
        self.assertTrue(creds.checkPassword("S3cret!"))
        self.assertNotIn("S3cret", repr(creds))
