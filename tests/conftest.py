"""Test session set-up: run from a scratch directory, and choose the Hypothesis profile.

Scratch directory: pytest runs from one, as trial does from _trial_temp, so TestCase.mktemp()
litters nothing.

Hypothesis profiles (every property test in every package uses them, README "Security bounds"):
- `mailgw-ci` (the default run): Hypothesis' default example count, a 2 s per-example deadline
  (the default 200 ms flakes on a loaded 2-core CI machine; a property that hangs still fails),
  no too_slow health check.
- `mailgw-fuzzlong`: selected by `MAILGW_FUZZ_EXAMPLES=N` (bench/fuzz_long.py sets it). Every
  property runs N examples: tests on the default settings through the profile, and tests with an
  explicit `@settings(max_examples=k)` because their `k` is raised to N while the variable is set.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_ENV = "MAILGW_FUZZ_EXAMPLES"

settings.register_profile("mailgw-ci", deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])


def _long_examples() -> int:
    raw = os.environ.get(FUZZ_EXAMPLES_ENV, "")
    try:
        return max(1, int(raw)) if raw else 0
    except ValueError:
        raise pytest.UsageError(f"{FUZZ_EXAMPLES_ENV}={raw!r}: expected a number of examples") from None


def _raise_explicit_counts(examples: int) -> None:
    """Make `settings(max_examples=k)` written in a test mean max(k, examples) for this run."""
    original = settings.__init__

    def init(self: settings, parent: Any = None, **kwargs: Any) -> None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if "max_examples" in kwargs and not caller.startswith("hypothesis"):
            kwargs["max_examples"] = max(kwargs["max_examples"], examples)
        original(self, parent, **kwargs)

    settings.__init__ = init  # type: ignore[method-assign]


_EXAMPLES = _long_examples()
if _EXAMPLES:
    settings.register_profile("mailgw-fuzzlong", max_examples=_EXAMPLES, deadline=timedelta(seconds=10),
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    _raise_explicit_counts(_EXAMPLES)
    settings.load_profile("mailgw-fuzzlong")
else:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mailgw-ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: a property test the long fuzz run selects besides @given tests "
                                       "(for a test whose @given is nested inside it)")


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory: pytest.TempPathFactory):
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("trial_temp"))
    yield
    os.chdir(previous)
