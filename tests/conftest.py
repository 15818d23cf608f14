"""Run pytest from a scratch directory, as trial does from _trial_temp, so TestCase.mktemp() litters nothing."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory: pytest.TempPathFactory):
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("trial_temp"))
    yield
    os.chdir(previous)
