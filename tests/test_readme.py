"""README's promises that CI depends on: .ci/run ends with the README's test command."""

import os

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ReadmeTests(SynchronousTestCase):
    def test_ci_runs_readme_command(self) -> None:
        """The last command of .ci/run is the test command written in README.md."""
        with open(os.path.join(REPO, ".ci", "run")) as handle:
            last = [l for l in handle.read().splitlines() if l.strip() and not l.startswith("#")][-1]
        with open(os.path.join(REPO, "README.md")) as handle:
            self.assertIn(last.strip(), handle.read())
