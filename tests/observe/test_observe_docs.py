"""The docs name only metrics that /metrics exposes (the names a scraper sees, with `_total`)."""

from __future__ import annotations

import glob
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from mailgw.observe.metrics import REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_METRICS = {"mailgw_help"}  # the manhole's help function


SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("", "_bucket", "_count", "_sum"), "info": ("_info",)}


def exposed() -> set[str]:
    """Every name the text exposition can print for the registry's families (labelled ones too, before use)."""
    return {family.name + suffix for family in REGISTRY.collect() for suffix in SUFFIXES.get(family.type, ("",))}


class DocumentedMetricsTests(SynchronousTestCase):
    def test_documented_names_exist(self) -> None:
        """Every mailgw_* name in README.md and docs/*.md is a sample name of the registry."""
        known = exposed()
        missing = []
        for path in [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md"))]:
            with open(path, encoding="utf-8") as handle:
                for name in set(re.findall(r"\bmailgw_[a-z_]+[a-z]", handle.read())) - NOT_METRICS:
                    if name not in known:
                        missing.append(f"{os.path.relpath(path, REPO)}: {name}")
        self.assertEqual(sorted(missing), [])

    def test_documented_listener_labels(self) -> None:
        """Log examples in the docs and the fail2ban filter name listeners as the program does: imap.NAME or submission.NAME."""
        files = [os.path.join(REPO, "README.md"), os.path.join(REPO, "etc", "fail2ban", "filter.d", "mailgw.conf"),
                 *glob.glob(os.path.join(REPO, "docs", "*.md"))]
        wrong = []
        for path in files:
            with open(path, encoding="utf-8") as handle:
                for label in re.findall(r"\blistener=([A-Za-z][\w.\[\]-]*)", handle.read()):
                    if not re.fullmatch(r"(imap|submission)\.[a-z][\w-]*", label):
                        wrong.append(f"{os.path.relpath(path, REPO)}: listener={label}")
        self.assertEqual(wrong, [])
