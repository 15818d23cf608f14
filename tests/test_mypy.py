"""mypy, configured in pyproject.toml ([tool.mypy], the mypy-zope plugin), passes on the whole mailgw package."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: (?P<message>.*)$", re.MULTILINE)


def mypy_errors(output: str) -> list[str]:
    """`path:line: message [code]` of every error in mypy's output, sorted by file."""
    return sorted(f"{m['path']}:{m['line']}: {m['message']}" for m in ERROR.finditer(output))


class MypyTests(SynchronousTestCase):
    def test_package_type_checks(self) -> None:
        """`python3 -m mypy mailgw` reports no error; a failure lists each one as file:line: message [code]."""
        for module in ("mypy", "mypy_zope"):
            if importlib.util.find_spec(module) is None:
                raise SkipTest(f"{module} is not installed (pip install -e '.[test]')")
        with tempfile.TemporaryDirectory(prefix="mailgw-mypy-") as cache:
            done = subprocess.run([sys.executable, "-m", "mypy", "mailgw", "--cache-dir", cache, "--no-color-output",
                                   "--no-error-summary"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        errors = mypy_errors(done.stdout)
        if done.returncode != 0 or errors:
            files = sorted({e.split(":", 1)[0] for e in errors})
            self.fail(f"mypy found {len(errors)} error(s) in {len(files)} file(s) ({', '.join(files)}):\n"
                      + "\n".join(errors or [done.stdout.strip(), done.stderr.strip()]))

    def test_error_lines_are_parsed(self) -> None:
        """The failure message names every error of mypy's output format, notes left out."""
        output = ("mailgw/a.py:3: error: Incompatible types in assignment  [assignment]\n"
                  "mailgw/a.py:3: note: Superclass:\n"
                  "mailgw/b/c.py:10: error: Missing return statement  [return]\n")
        self.assertEqual(mypy_errors(output), ["mailgw/a.py:3: Incompatible types in assignment  [assignment]",
                                               "mailgw/b/c.py:10: Missing return statement  [return]"])
