"""Durations, sizes and rates with units, as written in the TOML configuration ("5s", "35M", "20/5m")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_FACTOR = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "500ms", "5s", "2m", "1.5h", "36h", "5d"."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad duration {text!r} (use a number and a unit: ms, s, m, h, d)")
    return float(match.group(1)) * _DURATION_FACTOR[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for show-config."""
    for unit in ("d", "h", "m", "s"):
        factor = _DURATION_FACTOR[unit]
        if seconds >= factor and float(seconds / factor).is_integer():
            return f"{int(seconds / factor)}{unit}"
    if seconds == 0:
        return "0s"
    if float(seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"


def parse_size(text: str) -> int:
    """Bytes in a size such as "35M", "512K", "1G", "1024" (binary multiples)."""
    match = _SIZE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad size {text!r} (use a number and a unit: K, M, G)")
    unit = (match.group(2) or "").upper().replace("IB", "").replace("B", "") or ""
    return int(match.group(1)) * _SIZE_FACTOR[unit]


def format_size(size: int) -> str:
    """The shortest exact spelling of a size, for show-config."""
    for unit in ("T", "G", "M", "K"):
        factor = _SIZE_FACTOR[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def parse_rate(text: str) -> tuple[int, float]:
    """(count, window seconds) from a rate such as "20/5m"."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"bad rate {text!r} (use count/duration, e.g. \"20/5m\")")
    count, _, window = text.partition("/")
    if not count.strip().isdigit():
        raise ValueError(f"bad rate {text!r} (use count/duration, e.g. \"20/5m\")")
    return int(count), parse_duration(window)


def format_rate(rate: tuple[int, float]) -> str:
    return f"{rate[0]}/{format_duration(rate[1])}"
