"""The real `mailgwctl` as a subprocess, and a first-run configuration whose files do not exist yet."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

from tests.support.gateway import environment

PASSWORD = "correct horse battery staple"


@dataclass
class Run:
    code: int
    out: str
    err: str


def mailgwctl(*args: str, stdin: str = "", cwd: Optional[str] = None, env: Optional[dict[str, str]] = None) -> Run:
    """`mailgwctl ARGS` (the console script's own entry point) in its own process."""
    extra = {"MAILGW_CONFIG": ""}
    extra.update(env or {})
    done = subprocess.run([sys.executable, "-c", "import sys; from mailgw.cli.main import main; sys.exit(main())", *args],
                          input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd or tempfile.gettempdir(),
                          env=environment(extra))
    return Run(done.returncode, done.stdout, done.stderr)


def first_run_config(root: str, extra: str = "", etc: Optional[str] = None, state: Optional[str] = None) -> str:
    """A complete config under `root` naming a users file and a certificate that do not exist yet; its path."""
    etc = etc or os.path.join(root, "etc")
    state = state or os.path.join(root, "state")
    os.makedirs(etc, exist_ok=True)
    path = os.path.join(etc, "mailgw.toml")
    with open(path, "w") as handle:
        handle.write(f"""config_version = 1

[server]
hostname = "localhost"
state_dir = "{state}"

[tls.mail]
cert_file = "{etc}/mail.pem"
key_file = "{etc}/mail.key"

[auth.local]
users_file = "{etc}/users"

[imap.secure]
bind_tls = ["tcp:0:interface=127.0.0.1"]
tls = "mail"
{extra}""")
    return path


def workspace(case: Any) -> str:
    root = tempfile.mkdtemp(prefix="mailgw-first-run-")
    case.addCleanup(shutil.rmtree, root, True)
    return root
