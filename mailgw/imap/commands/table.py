"""The command table: name -> (handler, states it is allowed in, whether EXPUNGE may follow it)."""

from __future__ import annotations

from typing import Any

from mailgw.imap.commands import auth, mailbox, selected
from mailgw.imap.session import IMAPSession

COMMANDS: dict[str, Any] = {**auth.COMMANDS, **mailbox.COMMANDS, **selected.COMMANDS}


def install() -> None:
    IMAPSession.commands = COMMANDS


install()
