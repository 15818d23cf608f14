"""DESIGN.md's dependency rules, checked by reading every import under mailgw/."""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mailgw")
WIRING = {"mailgw.assemble", "mailgw.tap", "mailgw.admin.cli"}
LOW = {"interfaces", "errors", "files"}
# rule 2: these import only interfaces/errors and themselves
SELF_CONTAINED = {"auth", "store", "net", "observe"}
# rule 3: protocol packages never reach into these implementations
FORBIDDEN_FOR_PROTOCOLS = ("mailgw.store.maildir", "mailgw.auth.ldap", "mailgw.auth.ntlm")
PROTOCOLS = {"imap", "smtp", "publish", "admin"}


def modules():
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def imports(path: str, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every mailgw import."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "mailgw" or name.startswith("mailgw."):
                found.append((name, node.lineno, id(node) in top_level))
    return found


def reactor_imports(path: str) -> list[int]:
    tree = ast.parse(open(path).read(), path)
    lines = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet" and any(a.name == "reactor" for a in node.names):
            lines.append(node.lineno)
    return lines


class LayeringTests(SynchronousTestCase):
    def test_dependency_rules(self) -> None:
        """No module imports across the layers DESIGN.md forbids."""
        violations = []
        for module, path in modules():
            parts = module.split(".")
            top = parts[1] if len(parts) > 1 else ""
            for name, line, _ in imports(path, module):
                target = name.split(".")
                target_top = target[1] if len(target) > 1 else ""
                where = f"{module}:{line} imports {name}"
                if module in WIRING or target_top in ("", "__version__") or target_top == top:
                    continue
                if top in ("interfaces", "errors", "config", "files") and target_top not in ("errors",):
                    violations.append(f"{where} (rule 1)")
                elif top in SELF_CONTAINED and target_top not in LOW:
                    violations.append(f"{where} (rule 2)")
                elif top in PROTOCOLS and (name.startswith(FORBIDDEN_FOR_PROTOCOLS) or target_top in {"imap", "smtp", "publish", "admin"} - {top}):
                    violations.append(f"{where} (rule 3/4)")
                elif target_top in ("assemble", "tap"):
                    violations.append(f"{where} (rule 4)")
        self.assertEqual(violations, [])

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
