"""TOML text to a validated Config: types, units and unknown keys checked, every error with its dotted key."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from typing import Any, Union

from mailgw.errors import ConfigError

from . import endpoints, units
from .schema import Config
from .validate import validate

_SECRET_WORDS = ("password", "secret", "passphrase")


class _Problems:
    def __init__(self, check_files: bool = True) -> None:
        self.lines: list[str] = []
        self.check_files = check_files  # False: `kind="file"` values need not exist yet (mailgwctl creates them)

    def add(self, key: str, problem: str) -> None:
        self.lines.append(f"{key}: {problem}" if key else problem)


def load_config(path: str, check_files: bool = True) -> Config:
    """Read and validate a config file; ConfigError lists every problem found.

    `check_files=False` skips only the existence and readability checks of the files the config
    names (users file, certificates, keys): the mode `mailgwctl user` and `mailgwctl cert` load
    with, since those files are what they are about to create. Everything else is checked.
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return from_dict(data, check_files)


def load_config_text(text: str, check_files: bool = True) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}") from None
    return from_dict(data, check_files)


def from_dict(data: dict[str, Any], check_files: bool = True) -> Config:
    problems = _Problems(check_files)
    config = _build(Config, data, "", problems)
    if not problems.lines:
        if config.config_version != 1:
            problems.add("config_version", f"unsupported version {config.config_version} (this mailgw reads 1)")
        else:
            for line in validate(config):
                problems.lines.append(line)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _build(cls: type, data: Any, prefix: str, problems: _Problems) -> Any:
    if not isinstance(data, dict):
        problems.add(prefix, f"expected a table, got {_tname(data)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        dotted = _join(prefix, key)
        if key not in fields:
            if any(word in key for word in _SECRET_WORDS) and not key.endswith("_file"):
                problems.add(dotted, f"secrets are never inline: put it in a file and use {key}_file")
            else:
                problems.add(dotted, "unknown key")
            continue
        values[key] = _value(hints[key], fields[key].metadata, raw, dotted, problems)
    for name, fld in fields.items():
        if fld.metadata.get("required") and name not in data:
            problems.add(_join(prefix, name), "missing (required)")
    try:
        return cls(**{k: v for k, v in values.items() if v is not _INVALID})
    except TypeError:
        return None


_INVALID = object()


def _tname(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _value(hint: Any, meta: Any, raw: Any, key: str, problems: _Problems) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _value(inner, meta, raw, key, problems)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        built = _build(hint, raw, key, problems)
        return _INVALID if built is None else built
    if origin is dict:
        item_type = args[1]
        if not isinstance(raw, dict):
            problems.add(key, f"expected a table of named entries, got {_tname(raw)}")
            return _INVALID
        out = {}
        for name, item in raw.items():
            built = _value(item_type, meta, item, _join(key, name), problems)
            if built is not _INVALID:
                out[name] = built
        return out
    kind = meta.get("kind", "")
    if kind == "file" and not problems.check_files:
        kind = "path"
    try:
        return _scalar(hint, origin, kind, meta, raw)
    except ValueError as exc:
        problems.add(key, str(exc))
        return _INVALID


def _scalar(hint: Any, origin: Any, kind: str, meta: Any, raw: Any) -> Any:
    if kind == "duration":
        if isinstance(raw, bool) or not isinstance(raw, str):
            raise ValueError(f"expected a duration string such as \"5s\", got {_tname(raw)}")
        return units.parse_duration(raw)
    if kind == "size":
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if not isinstance(raw, str):
            raise ValueError(f"expected a size such as \"35M\", got {_tname(raw)}")
        return units.parse_size(raw)
    if kind == "rate":
        return units.parse_rate(raw)
    if origin is tuple:
        if not isinstance(raw, list):
            raise ValueError(f"expected an array, got {_tname(raw)}")
        items = []
        for item in raw:
            if not isinstance(item, str):
                raise ValueError(f"expected an array of strings, found {_tname(item)}")
            items.append(_check_kind(kind, meta, item))
        return tuple(items)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, got {_tname(raw)}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected an integer, got {_tname(raw)}")
        if raw < 0:
            raise ValueError("must not be negative")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"expected a number, got {_tname(raw)}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {_tname(raw)}")
        return _check_kind(kind, meta, raw)
    raise ValueError(f"unsupported value {raw!r}")


def _check_kind(kind: str, meta: Any, raw: str) -> str:
    if kind in ("choice", "choices") and raw not in meta["choices"]:
        raise ValueError(f"{raw!r} is not one of: {', '.join(meta['choices'])}")
    if kind in ("endpoint", "endpoints"):
        endpoints.parse_endpoint(raw)
    elif kind == "hostport":
        endpoints.parse_hostport(raw)
    elif kind == "cidrs":
        try:
            ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise ValueError(f"{raw!r} is not an IP address or network") from None
    elif kind == "file" and raw:
        if not os.path.exists(raw):
            raise ValueError(f"file {raw!r} does not exist")
        if not os.access(raw, os.R_OK):
            raise ValueError(f"file {raw!r} is not readable")
    return raw
