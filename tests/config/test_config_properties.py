"""Property tests of the config loader: any document, and any mutation of the example, load or raise ConfigError naming its key.

The loader's contract (DESIGN.md "Configuration contract"): unknown keys, wrong types, bad units,
endpoints, files and cross-key conflicts are each one line `dotted.key: problem`; nothing else
escapes (no TypeError, KeyError or ValueError from deep inside), and a load terminates fast.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
import stat
import tempfile
import tomllib
import typing
from datetime import timedelta
from typing import Any, Optional, Union

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailgw.config import from_dict, load_config_text
from mailgw.config.schema import Config
from mailgw.errors import ConfigError
from tests.support.certs import make_server_cert

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "etc", "mailgw.toml.example")
SETTINGS = settings(deadline=timedelta(seconds=3), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOP = {f.name for f in dataclasses.fields(Config)}
# `key: problem`, the key dotted with [i] indexes; table names here are drawn from NAME below.
KEYED = re.compile(r"^(?P<key>[A-Za-z0-9_-]+(\[\d+\])?(\.[A-Za-z0-9_-]+(\[\d+\])?)*): \S")
NAME = st.text("abcxyz_019-", min_size=1, max_size=8)


def top_keys_of(text: str) -> set[str]:
    try:
        return set(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        return set()


def check_load(load: Any, top_keys: set[str]) -> None:
    """`load()` returns a Config, or raises ConfigError whose every line is TOML syntax or names a dotted key."""
    try:
        result = load()
    except ConfigError as exc:
        assert exc.problems, "ConfigError without a problem"
        for line in exc.problems:
            assert isinstance(line, str) and "\n" not in line, repr(line)
            if line.startswith("TOML syntax error"):
                continue
            match = KEYED.match(line)
            assert match, f"problem without a dotted key: {line!r}"
            assert match.group("key").split(".")[0].split("[")[0] in top_keys | TOP, line
        return
    assert isinstance(result, Config)


# ------------------------------------------------------------------ schema-shaped documents

SCALARS = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), st.booleans(), st.text(max_size=20),
    st.sampled_from(["5s", "2m", "0s", "-1s", "1e9h", "35M", "0", "1G", "x", "20/5m", "0/0s", "5/", "/5m", "\0",
                     "tcp:0:interface=127.0.0.1", "tcp:143", "tcp:99999", "unix:/x", "systemd:domain=INET:name=x",
                     "ssl:993", "tcp:", "tcp:143:interface=", "127.0.0.1:25", "[::1]:25", "host:", ":25",
                     "198.51.100.0/24", "::/0", "any", "TLSv1.3", "TLSv1.0", "plain", "ntlm", "basic", "own", "off",
                     "v2", "required", "json", "journald", "/nonexistent", "/dev/null", "."]),
    st.datetimes(), st.dates(), st.times())


def values(depth: int = 2) -> st.SearchStrategy[Any]:
    if depth == 0:
        return SCALARS
    inner = values(depth - 1)
    return st.one_of(SCALARS, st.lists(inner, max_size=3), st.dictionaries(NAME, inner, max_size=3))


def _unwrap(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, getattr(__import__("types"), "UnionType")) and type(None) in typing.get_args(hint):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def for_hint(hint: Any, depth: int) -> st.SearchStrategy[Any]:
    """A value for a schema field: mostly the right shape (a table for a section), sometimes anything."""
    hint = _unwrap(hint)
    if dataclasses.is_dataclass(hint) and depth > 0:
        return st.one_of(table(hint, depth - 1), values(1))
    if typing.get_origin(hint) is dict and depth > 0:
        item = typing.get_args(hint)[1]
        return st.one_of(st.dictionaries(NAME, for_hint(item, depth - 1), max_size=2), values(1))
    if typing.get_origin(hint) is tuple:
        return st.one_of(st.lists(SCALARS, max_size=3), SCALARS)
    return values(1)


def table(cls: type, depth: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    known = {f.name: for_hint(hints[f.name], depth) for f in dataclasses.fields(cls)}
    return st.builds(lambda chosen, extra: {**chosen, **extra},
                     st.fixed_dictionaries({}, optional=known),
                     st.dictionaries(NAME, values(1), max_size=1))


# ------------------------------------------------------------------ mutations of the example

LITERALS = ['""', '"x"', "0", "-1", "99999999999999999999", "1.5", "nan", "inf", "true", "[]", '["x"]', "{}",
            '{ a = 1 }', '"5s"', '"0s"', '"-5s"', '"35M"', '"20/5m"', '"tcp:0"', '"tcp:143:interface=0.0.0.0"',
            '"any"', '"own"', '"TLSv1.0"', '"/nonexistent"', "1979-05-27T07:32:00Z", '"\\u0000"', '[1, "a"]']


@st.composite
def mutated_example(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["value", "value", "delete", "duplicate", "rename", "insert", "bytes", "table"]))
        line = lines[at]
        if kind == "value" and "=" in line:
            key = line.split("=", 1)[0]
            lines[at] = f"{key}= {draw(st.sampled_from(LITERALS))}"
        elif kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif kind == "rename" and "=" in line:
            key, rest = line.split("=", 1)
            lines[at] = f"{draw(NAME)} ={rest}"
        elif kind == "insert":
            lines.insert(at, f"{draw(NAME)} = {draw(st.sampled_from(LITERALS))}")
        elif kind == "table":
            lines.insert(at, f"[{draw(st.sampled_from(sorted(TOP)))}.{draw(NAME)}]")
        else:
            cut = draw(st.integers(0, len(line)))
            lines[at] = line[:cut] + draw(st.text(max_size=5)) + line[cut:]
    return "\n".join(lines) + "\n"


class ExampleFiles:
    """The example config rewritten to point at real files in a temp dir, so every key reaches validation."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp()
        with open(EXAMPLE) as handle:
            self.text = (handle.read().replace("/etc/mailgw", self.root + "/etc")
                         .replace("/var/lib/mailgw", self.root + "/var"))
        cert = make_server_cert(os.path.join(self.root, "etc", "tls"), ["mail.example.com"], stem="mail")
        shutil.copy(cert.ca_file, os.path.join(self.root, "etc", "tls", "corp-ca.pem"))
        os.makedirs(os.path.join(self.root, "etc", "secrets"))
        for name in ("users", "secrets/ldap", "admin_keys"):
            path = os.path.join(self.root, "etc", name)
            with open(path, "w"):
                pass
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


_FILES: Optional[ExampleFiles] = None


def example_files() -> ExampleFiles:
    global _FILES
    if _FILES is None:
        _FILES = ExampleFiles()
    return _FILES


class ConfigLoaderProperties(SynchronousTestCase):
    @classmethod
    def tearDownClass(cls) -> None:
        global _FILES
        if _FILES is not None:
            shutil.rmtree(_FILES.root, ignore_errors=True)
            _FILES = None

    @SETTINGS
    @given(st.text(max_size=400))
    @example("[imap.x]\nbind = [1]\n")
    @example("a = 1\n[a]\n")
    def test_arbitrary_text(self, text: str) -> None:
        """Arbitrary text is a Config, or ConfigError of TOML syntax or dotted-key lines."""
        check_load(lambda: load_config_text(text), top_keys_of(text))

    @SETTINGS
    @given(table(Config))
    def test_schema_shaped_documents(self, document: dict[str, Any]) -> None:
        """Documents shaped like the schema, with wrong types, units, endpoints and unknown keys, only raise keyed ConfigError."""
        document.setdefault("config_version", 1)
        check_load(lambda: from_dict(document), set(document))

    @SETTINGS
    @given(st.data())
    def test_mutated_example(self, data: st.DataObject) -> None:
        """The example config with values replaced, lines deleted, duplicated, renamed or corrupted only raises keyed ConfigError."""
        files = example_files()
        text = data.draw(mutated_example(files.text))
        check_load(lambda: load_config_text(text), top_keys_of(text))

    def test_example_itself_loads(self) -> None:
        """The unmutated example (pointing at real files) loads: the mutation property starts from a valid document."""
        self.assertIsInstance(load_config_text(example_files().text), Config)
