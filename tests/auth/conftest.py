"""pytest glue for tests/auth: a `slapd` fixture."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.ldap_fixture import SlapdFixture, available


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
