"""Typed configuration: TOML in, frozen dataclasses out (no Twisted, nothing else of mailgw but errors)."""

from .parse import from_dict, load_config, load_config_text
from .render import render
from .schema import Config

__all__ = ["Config", "from_dict", "load_config", "load_config_text", "render"]
