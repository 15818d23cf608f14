"""[publish.NAME] and [client_sets.NAME]: refusals at load time, and the rules assemble builds."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import tomllib

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mailgw import assemble
from mailgw.config import load_config_text
from mailgw.config.parse import from_dict
from mailgw.errors import ConfigError
from mailgw.tap import prepare_development_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "etc", "mailgw.toml.example")


def problems(body: str) -> list[str]:
    try:
        load_config_text("config_version = 1\n[auth]\nbackends = []\n" + body)
    except ConfigError as exc:
        return exc.problems
    return []


RULE = '[publish.{name}]\nlisten = "{listen}"\ntarget = "10.0.0.25:143"\nclients = {clients}\n'


def rule(name: str = "a", listen: str = "tcp:143:interface=203.0.113.5", clients: str = '["any"]', extra: str = "") -> str:
    return RULE.format(name=name, listen=listen, clients=clients) + extra


class RefusalTests(SynchronousTestCase):
    def assertProblem(self, body: str, expected: str) -> None:
        found = problems(body)
        self.assertTrue(any(expected in p for p in found), f"{expected!r} not in {found!r}")

    def test_same_address_published_twice(self) -> None:
        """One external address:port in two rules is refused, naming both keys."""
        self.assertProblem(rule("a") + rule("b"),
                           "publish.b.listen: 'tcp:143:interface=203.0.113.5' overlaps publish.a.listen")

    def test_rule_overlapping_a_wildcard_rule(self) -> None:
        """A rule on 0.0.0.0:993 overlaps a rule on one address's 993."""
        self.assertProblem(rule("a", "tcp:993:interface=203.0.113.5") + rule("b", "tcp:993"),
                           "publish.b.listen: 'tcp:993' overlaps publish.a.listen")

    def test_rule_overlapping_imap_listener(self) -> None:
        """A rule may not take an address:port an IMAP virtual server binds."""
        body = '[imap.s]\nbind = ["tcp:143"]\nrequire_tls = false\nauth = ["ntlm"]\n[auth.ntlm]\ndomain = "X"\n' + rule("p")
        self.assertProblem(body, "publish.p.listen: 'tcp:143:interface=203.0.113.5' overlaps imap.s.bind[0]")

    def test_distinct_addresses_allowed(self) -> None:
        """The same port on two external addresses is two separate rules (ISA: one per interface)."""
        self.assertEqual(problems(rule("a") + rule("b", "tcp:143:interface=203.0.113.6")), [])

    def test_bad_clients(self) -> None:
        """Unknown client set names, bad CIDRs and an empty list are refused with their key."""
        self.assertProblem(rule(clients='["nowhere"]'), "publish.a.clients[0]: 'nowhere' is neither")
        self.assertProblem(rule(clients='["10.0.0.0/33"]'), "publish.a.clients[0]: '10.0.0.0/33' is neither")
        self.assertProblem(rule(clients="[]"), "publish.a.clients: empty")
        self.assertProblem('[client_sets.x]\naddresses = ["300.1.1.1"]\n', "client_sets.x.addresses")

    def test_bad_settings(self) -> None:
        """Unknown PROXY versions, zero limits and zero connect timeouts are refused."""
        self.assertProblem(rule(extra='proxy_protocol = "v3"\n'), "publish.a.proxy_protocol: 'v3' is not one of")
        self.assertProblem(rule(extra="max_per_client = 0\n"), "publish.a.max_per_client: must be at least 1")
        self.assertProblem(rule(extra="max_connections = 0\n"), "publish.a.max_connections: must be at least 1")
        self.assertProblem(rule(extra='connect_timeout = "0s"\n'), "publish.a.connect_timeout: must be more than 0s")
        self.assertProblem(rule(extra='protocol = "gopher"\n'), "publish.a.protocol: 'gopher' is not one of")

    def test_target_loop(self) -> None:
        """A rule whose target is its own listening address is refused."""
        self.assertProblem('[publish.l]\nlisten = "tcp:8143:interface=127.0.0.1"\ntarget = "127.0.0.1:8143"\nclients = ["any"]\n',
                           "publish.l.target: '127.0.0.1:8143' is the rule's own listening address")


class AssembleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.state)

    def test_example_rules_built(self) -> None:
        """The example's IMAP4 and IMAPS rules (client type any) become rules with listeners and targets."""
        with open(EXAMPLE, "rb") as handle:
            data = tomllib.load(handle)
        config = from_dict({"config_version": 1, "server": {"state_dir": self.state}, "auth": {"backends": []},
                            "publish": data["publish"], "client_sets": data["client_sets"]})
        root = assemble.build(config, MemoryReactorClock())
        rules = root.gateway.extras["publish"]
        self.assertEqual(sorted(rules), ["exchange_imap4", "exchange_imaps"])
        imaps = rules["exchange_imaps"]
        self.assertEqual((imaps.settings.target, imaps.settings.protocol, imaps.settings.proxy_protocol),
                         ("10.0.0.25:993", "imaps", "off"))
        self.assertTrue(imaps.clients.allow_any)
        labels = {svc.label: svc.description for svc in root.listeners}
        self.assertEqual(labels["publish.exchange_imap4.listen"], "tcp:143:interface=203.0.113.5")
        self.assertEqual(labels["publish.exchange_imaps.listen"], "tcp:993:interface=203.0.113.5")

    def test_client_set_names_resolved(self) -> None:
        """A rule naming a [client_sets.NAME] allows exactly that set's addresses."""
        config = from_dict({"config_version": 1, "server": {"state_dir": self.state}, "auth": {"backends": []},
                            "client_sets": {"branch": {"addresses": ["198.51.100.0/24"]}},
                            "publish": {"p": {"listen": "tcp:0:interface=127.0.0.1", "target": "[::1]:143",
                                              "clients": ["branch", "2001:db8::/32"]}}})
        rule = assemble.build(config, MemoryReactorClock()).gateway.extras["publish"]["p"]
        self.assertEqual((rule.settings.target_host, rule.settings.target_port), ("::1", 143))
        self.assertTrue(rule.clients.allows("198.51.100.7"))
        self.assertTrue(rule.clients.allows("2001:db8::7"))
        self.assertFalse(rule.clients.allows("198.51.101.7"))

    def test_reload_applies_clients_and_refuses_new_endpoints(self) -> None:
        """reload_publish swaps client sets live and names what needs a restart (moved listener, added rule)."""
        def config(clients: list[str], listen: str = "tcp:0:interface=127.0.0.1", extra: bool = False):
            publish = {"p": {"listen": listen, "target": "127.0.0.1:143", "clients": clients}}
            if extra:
                publish["q"] = {"listen": "tcp:0:interface=127.0.0.2", "target": "127.0.0.1:143", "clients": ["any"]}
            return from_dict({"config_version": 1, "server": {"state_dir": self.state}, "auth": {"backends": []},
                              "publish": publish})
        root = assemble.build(config(["any"]), MemoryReactorClock())
        rule = root.gateway.extras["publish"]["p"]
        self.assertEqual(assemble.reload_publish(root.gateway, config(["192.0.2.0/24"])), [])
        self.assertFalse(rule.clients.allows("198.51.100.1"))
        self.assertEqual(assemble.reload_publish(root.gateway, config(["any"], listen="tcp:0:interface=127.0.0.3", extra=True)),
                         ["publish.q: rule added or removed (restart mailgw)",
                          "publish.p.listen: cannot change on reload (restart mailgw)"])
        self.assertFalse(rule.clients.allow_any)

    def test_development_default_publishes_nothing(self) -> None:
        """The embedded development setup has no publishing rule and no publish listener."""
        config = prepare_development_state(os.path.join(self.state, "dev"), out=io.StringIO())
        root = assemble.build(config, MemoryReactorClock())
        self.assertEqual(root.gateway.extras["publish"], {})
        self.assertFalse([svc for svc in root.listeners if svc.label.startswith("publish.")])
