"""The effective configuration back as TOML (show-config), optionally only what differs from defaults."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from . import units
from .schema import Config


def render(config: Config, non_default: bool = False) -> str:
    lines: list[str] = []
    _table(config, "", lines, non_default)
    return "\n".join(lines).strip() + "\n"


def _format(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "duration":
        return json.dumps(units.format_duration(value))
    if kind == "size":
        return json.dumps(units.format_size(value))
    if kind == "rate":
        return json.dumps(units.format_rate(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def _table(obj: Any, prefix: str, lines: list[str], non_default: bool) -> None:
    scalars: list[str] = []
    nested: list[tuple[str, Any]] = []
    defaults = _defaults(type(obj))
    for fld in dataclasses.fields(obj):
        value = getattr(obj, fld.name)
        dotted = f"{prefix}.{fld.name}" if prefix else fld.name
        if dataclasses.is_dataclass(value):
            nested.append((dotted, value))
        elif isinstance(value, dict):
            for name, item in value.items():
                nested.append((f"{dotted}.{name}", item))
        elif value is None:
            continue
        else:
            if non_default and fld.name in defaults and defaults[fld.name] == value and fld.name != "config_version":
                continue
            scalars.append(f"{fld.name} = {_format(value, fld.metadata.get('kind', ''))}")
    if scalars:
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(scalars)
    for dotted, value in nested:
        _table(value, dotted, lines, non_default)


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for fld in dataclasses.fields(cls):
        if fld.default is not dataclasses.MISSING:
            out[fld.name] = fld.default
    return out
