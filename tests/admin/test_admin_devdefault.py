"""The development default's admin surfaces: manhole on 127.0.0.1:2222 with an empty 0600 authorized_keys, HTTP on 8025."""

from __future__ import annotations

import io
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from mailgw.tap import prepare_development_state
from tests.admin.helpers_ops import tempdir


class DevelopmentDefaultTests(SynchronousTestCase):
    def test_first_start(self) -> None:
        """First start creates authorized_keys (empty, 0600) and says where to add a key; a second start says nothing."""
        state = os.path.join(tempdir(self), "mailgw-state")
        out = io.StringIO()
        config = prepare_development_state(state, out)
        keys = os.path.join(state, "authorized_keys")
        self.assertEqual(os.path.getsize(keys), 0)
        self.assertEqual(stat.S_IMODE(os.stat(keys).st_mode), 0o600)
        self.assertIn(f"accepts the public keys in {os.path.abspath(keys)}", out.getvalue())
        self.assertIn("ssh -p 2222", out.getvalue())
        self.assertEqual(config.admin.manhole.listen, "tcp:2222:interface=127.0.0.1")
        self.assertEqual(config.admin.manhole.authorized_keys_file, f"{state}/authorized_keys")
        self.assertEqual(config.admin.http.listen, "tcp:8025:interface=127.0.0.1")
        again = io.StringIO()
        prepare_development_state(state, again)
        self.assertNotIn("authorized_keys", again.getvalue())
