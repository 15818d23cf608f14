"""DESIGN.md's dependency rules as an allow-list per package, checked by reading every import under mailgw/.

Every import counts: module level, inside functions, under `if TYPE_CHECKING:`, relative ones,
and `importlib.import_module("mailgw...")` / `__import__("mailgw...")` with a literal name.
The table (and why) is documented in docs/architecture.md; a new package needs a row here.
"""

from __future__ import annotations

import ast
import os
from typing import Iterator

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mailgw")

LOW = frozenset({"interfaces", "errors", "files"})
PROTOCOL = frozenset({"interfaces", "errors", "net", "observe"})
# What each part of mailgw (the first name under mailgw.) may import of mailgw besides itself and
# `mailgw.__version__`. Nothing may import assemble, tap or cli but the wiring rows below.
ALLOWED: dict[str, frozenset[str]] = {
    "": frozenset(),                          # mailgw/__init__.py
    "errors": frozenset(),                    # rule 1: the bottom layer
    "interfaces": frozenset({"errors"}),
    "config": frozenset({"errors"}),          # rule 1 (and no Twisted, test below)
    "files": frozenset({"errors"}),           # durable writes and ownership (low-level, like errors)
    "auth": LOW,                              # rule 2
    "store": LOW,
    "net": LOW,
    "observe": frozenset({"interfaces", "errors"}),
    "imap": PROTOCOL,                         # rule 3: meet auth and store through interfaces only
    "smtp": PROTOCOL | {"files"},
    "publish": PROTOCOL,
    "admin": frozenset({"interfaces", "errors", "files", "observe"}),  # the gateway only through IGatewayView
    "gateway_view": frozenset({"interfaces", "errors"}),  # IGatewayView's reading half, mixed into assemble.Gateway
}
# rule 4: the wiring, which alone may import every package.
_PARTS = frozenset(ALLOWED) - {""} | {"__version__"}
ALLOWED["assemble"] = _PARTS
ALLOWED["tap"] = _PARTS | {"assemble"}
ALLOWED["cli"] = _PARTS | {"assemble"}
# Imports that exist only for annotations (under `if TYPE_CHECKING:`), per part.
TYPE_CHECKING_ALLOWED: dict[str, frozenset[str]] = {"gateway_view": frozenset({"assemble"})}


def modules() -> Iterator[tuple[str, str]]:
    for directory, _, files in os.walk(ROOT):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:` bodies."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    inside.update(id(n) for n in ast.walk(child))
    return inside


def imports_in(source: str, module: str, is_package: bool = False) -> list[tuple[str, int, bool]]:
    """(imported mailgw name, line, only under TYPE_CHECKING) for every mailgw import of `source`."""
    tree = ast.parse(source, module)
    package = module if is_package else module.rsplit(".", 1)[0]
    typing_only = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            if name == "mailgw" or name.startswith("mailgw."):
                found.append((name, node.lineno, id(node) in typing_only))
    return found


def imports(path: str, module: str) -> list[tuple[str, int, bool]]:
    with open(path) as handle:
        return imports_in(handle.read(), module, path.endswith("__init__.py"))


def _part(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def check_source(module: str, source: str, is_package: bool = False) -> list[str]:
    """One line per import of `source` (as module `module`) that the allow-list forbids."""
    top = _part(module)
    if top not in ALLOWED:
        return [f"{module}: {top or module} has no row in ALLOWED (tests/test_layering.py): "
                "decide what it may import and document it in docs/architecture.md"]
    problems, seen = [], set()
    for name, line, typing_only in imports_in(source, module, is_package):
        target = _part(name)
        if target in ("", top, "__version__") or target in ALLOWED[top] or (line, target) in seen:
            continue
        if typing_only and target in TYPE_CHECKING_ALLOWED.get(top, frozenset()):
            continue
        seen.add((line, target))  # one line per statement and part: `from mailgw.x import a, b` is one problem
        allowed = ", ".join(sorted(ALLOWED[top])) or "nothing"
        problems.append(f"{module}:{line} imports {name}: mailgw.{top} may import only {allowed}")
    return problems


def reactor_imports(path: str) -> list[int]:
    tree = ast.parse(open(path).read(), path)
    lines = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet" and any(a.name == "reactor" for a in node.names):
            lines.append(node.lineno)
    return lines


class LayeringTests(SynchronousTestCase):
    def test_dependency_rules(self) -> None:
        """No module imports a part of mailgw outside its row of the allow-list."""
        violations = []
        for module, path in modules():
            with open(path) as handle:
                violations += check_source(module, handle.read(), path.endswith("__init__.py"))
        self.assertEqual(violations, [], "\n" + "\n".join(violations))

    def test_checker_catches_session_importing_implementations(self) -> None:
        """The real imap/session.py plus an import of AuthService, MemoryStore or Config, in any form, is refused."""
        with open(os.path.join(ROOT, "imap", "session.py")) as handle:
            session = handle.read()
        self.assertEqual(check_source("mailgw.imap.session", session), [])
        for added in ("from mailgw.auth.service import AuthService",
                      "from mailgw.store.memory import MemoryStore",
                      "from mailgw.config.schema import Config",
                      "from mailgw.config import Config",
                      "import mailgw.store.memory",
                      "from ..auth import service",
                      "from ..store.memory import MemoryStore",
                      "def later():\n    from mailgw.auth.service import AuthService",
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mailgw.config.schema import Config",
                      "import importlib\nimportlib.import_module('mailgw.store.memory')",
                      "from mailgw import assemble"):
            with self.subTest(added=added):
                problems = check_source("mailgw.imap.session", session + "\n" + added + "\n")
                self.assertEqual(len(problems), 1, problems)
                self.assertIn("mailgw.imap may import only errors, interfaces, net, observe", problems[0])

    def test_checker_allows_own_package_and_rows(self) -> None:
        """Imports of the part itself, of its row and of __version__ pass; a part without a row fails."""
        source = ("from mailgw.interfaces import IAccount\nfrom mailgw.net.flow import ReplyFlow\n"
                  "from . import names\nfrom mailgw.imap.wire import grammar\nfrom mailgw import __version__\n")
        self.assertEqual(check_source("mailgw.imap.session", source), [])
        self.assertEqual(check_source("mailgw.cli.main", "from mailgw import assemble\nimport mailgw.store.maildir\n"), [])
        self.assertEqual(len(check_source("mailgw.config.parse", "from mailgw.interfaces import IAccount\n")), 1)
        self.assertEqual(len(check_source("mailgw.assemble", "from mailgw.cli import main\n")), 1)
        self.assertIn("has no row", check_source("mailgw.newthing.x", "")[0])

    def test_type_checking_exception_is_only_for_annotations(self) -> None:
        """gateway_view may name assemble's types under TYPE_CHECKING, never import assemble at run time."""
        typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mailgw.assemble import Gateway\n"
        self.assertEqual(check_source("mailgw.gateway_view", typing_only), [])
        self.assertEqual(len(check_source("mailgw.gateway_view", "from mailgw.assemble import Gateway\n")), 1)
        self.assertEqual(len(check_source("mailgw.admin.shell", typing_only)), 1)

    def test_admin_reads_the_gateway_through_its_interface(self) -> None:
        """mailgw/admin's gateway-facing modules call no getattr/hasattr: they use IGatewayView (rule 3)."""
        probing = []
        for name in ("http", "probes", "shell", "reloader"):
            path = os.path.join(ROOT, "admin", f"{name}.py")
            with open(path) as handle:
                tree = ast.parse(handle.read(), path)
            probing += [f"mailgw.admin.{name}:{node.lineno}" for node in ast.walk(tree)
                        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("getattr", "hasattr")]
        self.assertEqual(probing, [])

    def test_config_imports_no_twisted(self) -> None:
        """mailgw.config is plain Python: no Twisted."""
        for module, path in modules():
            if module.startswith("mailgw.config"):
                self.assertNotIn("twisted", open(path).read().replace("Twisted endpoint", ""), module)

    def test_no_module_level_reactor(self) -> None:
        """Library code never imports the global reactor at module level (rule 5)."""
        offenders = [f"{m}:{line}" for m, p in modules() for line in reactor_imports(p)]
        self.assertEqual(offenders, [])

    def test_module_size(self) -> None:
        """No module is over 600 lines (rule 6)."""
        big = [m for m, p in modules() if sum(1 for _ in open(p)) > 600]
        self.assertEqual(big, [])

    def test_no_stock_servers(self) -> None:
        """Twisted's IMAP4Server and ESMTP are never used (notes/twisted.md)."""
        for module, path in modules():
            text = open(path).read()
            for stock in ("IMAP4Server", "smtp.ESMTP", "import ESMTP"):
                self.assertNotIn(stock, text, module)
