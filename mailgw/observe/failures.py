"""How a failed operation is logged: an expected condition as one line, a bug with its traceback.

`log.failure` logs at critical level with a traceback; that is for bugs. A `MailError` (a directory
that is down or ambiguous, a full mailbox, an unknown folder) is an ordinary condition with a
client-facing reply already decided: one warning (temporary) or info line, its detail in a field.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.errors import MailError
from mailgw.observe.events import sanitise


def log_failure(log: Logger, failure: Failure, text: str, *, event: str, **fields: Any) -> None:
    """Log `failure` under `text`: one line for a MailError, a traceback for anything else."""
    error = failure.value
    if isinstance(error, MailError):
        level = log.warn if error.temporary else log.info
        level(text + ": {error_class}: {detail}", error_class=type(error).__name__,
              detail=sanitise(error.detail or error.public, 300), event=event, **fields)
        return
    log.failure(text, failure, event=event, **fields)
