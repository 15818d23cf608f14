"""The Maildir store against the shared store contract (real files, real thread pool)."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.store.maildir_helpers import MaildirFixture
from tests.store.store_concurrency import StoreConcurrency
from tests.store.store_contract import StoreContract


class MaildirStoreContractTests(MaildirFixture, StoreContract, StoreConcurrency, TestCase):
    """The Maildir store satisfies the store contract."""
