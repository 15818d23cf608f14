"""pytest glue for tests/auth: makes tests/support importable and offers a `slapd` fixture."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

from ldap_fixture import SlapdFixture, available  # noqa: E402


@pytest.fixture
def slapd() -> Iterator[SlapdFixture]:
    """A private TLS-capable slapd with the standard test users (see tests/support/ldap_fixture.py)."""
    if not available():
        pytest.skip("slapd not installed")
    fixture = SlapdFixture(tls=True).start()
    try:
        yield fixture
    finally:
        fixture.stop()
