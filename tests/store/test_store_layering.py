"""The store imports nothing of mailgw but interfaces, errors, files (durable writes) and itself (DESIGN.md rule 2)."""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import mailgw.store

STORE = os.path.dirname(mailgw.store.__file__)
ALLOWED = ("mailgw.interfaces", "mailgw.errors", "mailgw.files", "mailgw.store")  # as tests/test_layering.py


class LayeringTests(SynchronousTestCase):
    """Import rules, read from the source."""

    def test_store_imports(self) -> None:
        """Every mailgw import under mailgw/store is of interfaces, errors or the store; no global reactor import."""
        bad = []
        for folder, _, files in os.walk(STORE):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.module:
                        mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                        if node.module == "twisted.internet" and any(a.name == "reactor" for a in node.names):
                            bad.append(f"{path}: imports the global reactor")
                    elif isinstance(node, ast.Import):
                        mods = [a.name for a in node.names]
                    else:
                        continue
                    for mod in mods[:1]:
                        if mod.startswith("mailgw") and not mod.startswith(ALLOWED):
                            bad.append(f"{path}: {mod}")
                with open(path, encoding="utf-8") as fh:
                    self.assertLess(len(fh.read().splitlines()), 600, path)
        self.assertEqual(bad, [])
