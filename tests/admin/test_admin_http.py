"""The loopback HTTP admin endpoint: /health JSON with 200/503, /metrics Prometheus text, GET/HEAD only, header limits."""

from __future__ import annotations

import json
import os
import socket

import treq
from twisted.web.client import HTTPConnectionPool
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailgw.admin.http import HealthReport
from mailgw.net.listen import ListenerService
from tests.admin.helpers_ops import FakeSession, port_of, start_gateway, tempdir, write_config

HTTP = '[admin]\nhttp = { listen = "tcp:0:interface=127.0.0.1" }\n'


def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes, read until the server closes (or 10 s), in a thread: the reactor serves meanwhile."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


class AdminHTTPTests(TestCase):
    def setUp(self) -> None:
        path, _ = write_config(self, HTTP)
        self.gateway = start_gateway(self, path)
        self.base = f"http://127.0.0.1:{port_of(self.gateway, 'admin.http.listen')}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def get(self, path: str, method: str = "GET", **kwargs):
        return treq.request(method, self.base + path, pool=self.pool, **kwargs)

    @defer.inlineCallbacks
    def test_health_ok(self):
        """With every listener bound and no failing backend, /health is 200 with a JSON status per listener."""
        response = yield self.get("/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        body = json.loads((yield response.content()))
        self.assertEqual(body["status"], "ok")
        self.assertEqual([l["name"] for l in body["listeners"]], ["admin.http.listen"])
        self.assertTrue(body["listeners"][0]["ok"])
        self.assertTrue(body["listeners"][0]["address"].startswith("127.0.0.1:"))

    @defer.inlineCallbacks
    def test_health_backend_down(self):
        """A registered backend check that fails (or raises) turns /health into 503 naming it."""
        self.gateway.health_checks.append(lambda: ("ldap.corp", False, "dc1: connection refused"))
        self.gateway.health_checks.append(lambda: defer.succeed(("store", True, "ok")))

        def broken():
            raise RuntimeError("boom")
        self.gateway.health_checks.append(broken)
        response = yield self.get("/health")
        self.assertEqual(response.code, 503)
        body = json.loads((yield response.content()))
        self.assertEqual(body["status"], "down")
        self.assertEqual(body["backends"], [
            {"name": "ldap.corp", "ok": False, "detail": "dc1: connection refused"},
            {"name": "store", "ok": True, "detail": "ok"},
            {"name": "broken", "ok": False, "detail": "RuntimeError"},
        ])

    @defer.inlineCallbacks
    def test_health_unbound_listener(self):
        """A listener that is not bound is reported as down with 503."""
        svc = ListenerService(reactor, "tcp:0:interface=127.0.0.1", None, None, "imap.x.bind[0]")
        self.gateway.root.listeners.append(svc)
        response = yield self.get("/health")
        self.assertEqual(response.code, 503)
        body = json.loads((yield response.content()))
        self.assertEqual(body["listeners"][1], {"name": "imap.x.bind[0]", "ok": False, "detail": "not bound"})

    @defer.inlineCallbacks
    def test_metrics(self):
        """/metrics serves the registry; mailgw_connections_active follows the session registry at scrape time."""
        sessions = [FakeSession(self.gateway.sessions, "127.0.0.9:5000", "alice") for _ in range(3)]
        for s in sessions:
            self.gateway.sessions.add("opsmetrics", "imap", s)
        response = yield self.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4"))
        text = (yield response.text())
        self.assertIn('mailgw_connections_active{listener="opsmetrics",protocol="imap"} 3.0', text)
        self.assertIn("mailgw_build_info{", text)
        self.assertIn("process_open_fds", text)
        self.assertNotIn("127.0.0.9", text)
        self.assertNotIn("alice", text)
        sessions[0].kick()
        text = (yield (yield self.get("/metrics")).text())
        self.assertIn('mailgw_connections_active{listener="opsmetrics",protocol="imap"} 2.0', text)
        for s in sessions[1:]:
            s.kick()
        text = (yield (yield self.get("/metrics")).text())
        self.assertIn('mailgw_connections_active{listener="opsmetrics",protocol="imap"} 0.0', text)

    @defer.inlineCallbacks
    def test_methods(self):
        """Only GET and HEAD are served: POST, PUT, DELETE get 405; HEAD gets headers without a body."""
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            response = yield self.get("/metrics", method, data=b"x" if method != "OPTIONS" else None)
            self.assertEqual(response.code, 405, method)
            yield response.content()
        response = yield self.get("/health", "HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual((yield response.content()), b"")
        response = yield self.get("/nothing-here")
        self.assertEqual(response.code, 404)
        yield response.content()

    @defer.inlineCallbacks
    def test_oversized_headers(self):
        """A header block over 16 KiB, or one longer line, is answered 400 (block) or 431 (line) and the connection closed."""
        port = port_of(self.gateway, "admin.http.listen")
        many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
        reply = yield deferToThread(raw_request, port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply[:100])
        reply = yield deferToThread(raw_request, port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 431 "), reply[:100])


class OutageDirectory:
    """A directory that is down: the one fault a local users file cannot produce (LDAP is not on main yet)."""

    name = "ldap.corp"

    def lookup(self, login: str):
        from mailgw.errors import AuthUnavailable
        return defer.fail(AuthUnavailable(detail="ldaps://dc1.corp.example: connection refused"))


class DirectoryHealthTests(TestCase):
    def setUp(self) -> None:
        users = os.path.join(tempdir(self), "users")
        os.close(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600))
        path, _ = write_config(self, HTTP + f'[auth]\nbackends = ["local"]\n[auth.local]\nusers_file = "{users}"\n')
        self.gateway = start_gateway(self, path)
        self.base = f"http://127.0.0.1:{port_of(self.gateway, 'admin.http.listen')}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    @defer.inlineCallbacks
    def test_directories(self):
        """Each credential backend is probed with a lookup: the local file is reachable, a directory outage is 503."""
        response = yield treq.get(self.base + "/health", pool=self.pool)
        body = json.loads((yield response.content()))
        self.assertEqual(response.code, 200)
        self.assertEqual(body["backends"], [{"name": "directory:local", "ok": True, "detail": "reachable"}])
        self.gateway.auth.backends.append(OutageDirectory())
        response = yield treq.get(self.base + "/health", pool=self.pool)
        body = json.loads((yield response.content()))
        self.assertEqual(response.code, 503)
        self.assertEqual(body["backends"][1], {"name": "directory:ldap.corp", "ok": False,
                                               "detail": "ldaps://dc1.corp.example: connection refused"})


class HealthTimeoutTests(SynchronousTestCase):
    def test_slow_check_times_out(self) -> None:
        """A backend check that does not answer within its timeout is reported down as "timeout"."""
        clock = task.Clock()
        never = defer.Deferred()
        report = HealthReport(lambda: [], lambda: [lambda: never], clock, check_timeout=5.0)
        d = report.report()
        self.assertNoResult(d)
        clock.advance(5.0)
        result = self.successResultOf(d)
        self.assertEqual(result["status"], "down")
        self.assertEqual(result["backends"][0]["detail"], "timeout")
