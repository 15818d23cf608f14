"""Which configuration file a process uses: --config, else $MAILGW_CONFIG, else /etc/mailgw/mailgw.toml if present.

`twistd mailgw` and `mailgwctl` follow the same order, so both act on the same file; when none
applies, `twistd mailgw` runs the development default (mailgw.config.default).
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional

DEFAULT_CONFIG = "/etc/mailgw/mailgw.toml"
ENV_VAR = "MAILGW_CONFIG"


def locate_config(explicit: Optional[str], environ: Mapping[str, str], default: str = DEFAULT_CONFIG,
                  exists: Callable[[str], bool] = os.path.exists) -> tuple[Optional[str], str]:
    """(path, how it was chosen), or (None, "development default") when nothing names a file.

    A path given by --config or $MAILGW_CONFIG is used even if missing (loading it then fails
    with the path named); the system default only when the file exists.
    """
    if explicit:
        return explicit, "--config"
    if environ.get(ENV_VAR):
        return environ[ENV_VAR], f"${ENV_VAR}"
    if exists(default):
        return default, "system default"
    return None, "development default"
