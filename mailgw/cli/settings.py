"""Which configuration a `mailgwctl` command acts on: the lookup order of mailgw.config.locate, loaded once.

`twistd mailgw` (mailgw.tap) and every `mailgwctl` command use the same order (--config, else
$MAILGW_CONFIG, else /etc/mailgw/mailgw.toml if present, else the development default), so both
act on the same file.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

from mailgw.config import load_config, load_config_text
from mailgw.config.default import development_config
from mailgw.config.locate import locate_config
from mailgw.config.schema import Config

EX_CONFIG = 78  # EX_CONFIG of sysexits.h: the configuration is invalid


def config_path(args: argparse.Namespace) -> Optional[str]:
    """The file named by `--config` (before or after the subcommand) or the environment; None: the development default."""
    explicit = getattr(args, "config_sub", None) or getattr(args, "config", None)
    path, _ = locate_config(str(explicit) if explicit else None, os.environ)
    return path


def load_effective_config(args: argparse.Namespace, check_files: bool = True) -> Config:
    """The configuration mailgwctl acts on; ConfigError propagates.

    `check_files=False` for commands that manage one file (users file, certificates): the files the
    config names need not exist yet, since creating them is the point (see mailgw.config.load_config).
    """
    path = config_path(args)
    return load_config(path, check_files) if path else load_config_text(development_config(), check_files)
