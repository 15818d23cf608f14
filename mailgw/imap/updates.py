"""The selected state's view bookkeeping: change notifications, untagged EXPUNGE/FLAGS/EXISTS/FETCH, closing.

Mixed into IMAPSession; RFC 3501 §7.4.1 decides *when* report_updates may run (the session's
command table and IDLE), this module decides *what* is sent.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from mailgw.imap.wire.response import flag_list
from mailgw.interfaces import IFolder
from mailgw.observe.failures import log_failure

log = Logger()

SELECTED = "selected"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def flags_lines(keywords: Iterable[str], readonly: bool) -> bytes:
    """`* FLAGS (...)` and `* OK [PERMANENTFLAGS (...)]` for a mailbox with these keywords (RFC 3501 §7.1, §7.2.6)."""
    flags = list(SYSTEM_FLAGS) + sorted(keywords)
    permanent = b"()" if readonly else flag_list(flags)[:-1] + b" \\*)"
    return b"* FLAGS %s\r\n* OK [PERMANENTFLAGS %s] Flags permitted.\r\n" % (flag_list(flags), permanent)


class SelectedState:
    """Attributes used here are set up by IMAPSession.__init__."""

    folder: Optional[IFolder]
    uid_validity: int
    uids: list[int]
    keywords: set[str]  # the keywords this client was told of in FLAGS (at SELECT and since)
    bye: Callable[[bytes], None]
    dirty: bool
    mode: Optional[str]
    busy: bool
    state: str
    send: Callable[[bytes], None]
    _done: Callable[[Any], None]

    def folder_changed(self, folder: IFolder) -> None:
        if folder is not self.folder:
            return
        self.dirty = True
        if self.mode == "idle" and not self.busy:
            self.busy = True
            d = self.report_updates()
            d.addErrback(lambda f: log_failure(log, f, "idle refresh failed", event="imap.idle_error"))
            d.addBoth(self._done)

    def keyword_update(self, flags: Iterable[str]) -> bytes:
        """FLAGS/PERMANENTFLAGS if `flags` hold a keyword this client has not been told of yet, else b"".

        RFC 3501 §7.2.6: a keyword must be in the mailbox's FLAGS before any FETCH shows it; every
        place that writes a message's flags (STORE replies, FETCH, pushed updates) asks here first.
        """
        new = [f for f in flags if not f.startswith("\\") and f not in self.keywords]
        if not new or self.folder is None:
            return b""
        self.keywords.update(new)
        return flags_lines(self.keywords, self.folder.readonly)

    def report_updates(self) -> "Deferred[None]":
        """Refresh the view and send EXPUNGE / EXISTS / RECENT / FETCH FLAGS (only at allowed points)."""
        folder = self.folder
        if folder is None:
            return succeed(None)
        self.dirty = False
        return folder.refresh().addCallback(self._apply_changes, folder)

    def _apply_changes(self, changes: Any, folder: IFolder) -> None:
        if folder is not self.folder:
            return
        if folder.uid_validity != self.uid_validity:
            # the store had to renumber (a lost UID list): every UID this client holds is void
            log.warn("uidvalidity changed under a session in {folder}", folder=folder.name, event="imap.uidvalidity")
            self.bye(b"Mailbox UIDVALIDITY changed")
            return
        out: list[bytes] = []
        current = folder.messages()
        present = {m.uid for m in current}
        # RFC 3501 §7.4.1: highest sequence numbers first, so no renumbering between them
        for pos in range(len(self.uids) - 1, -1, -1):
            if self.uids[pos] not in present:
                out.append(b"* %d EXPUNGE\r\n" % (pos + 1))
        old_count = len(self.uids) - len(out)
        known = set(self.uids)
        # new messages (APPEND, delivery, another session's COPY) and flag changes may carry new keywords
        announce = self.keyword_update({f for m in current if m.uid not in known for f in m.flags}
                                       | {f for flags in changes.flags.values() for f in flags})
        if announce:
            out.append(announce)
        self.uids = folder.uids()  # type: ignore[assignment]  # immutable, shared with other sessions
        if len(self.uids) != old_count or changes.added:
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            out.append(b"* %d RECENT\r\n" % len(folder.recent_uids()))
        if changes.flags:
            from mailgw.imap.fetch import flags_of
            index = {u: i for i, u in enumerate(self.uids)}
            recent = folder.recent_uids()
            for uid in sorted(changes.flags):
                where = index.get(uid)
                if where is not None:
                    out.append(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (
                        where + 1, uid, flags_of(changes.flags[uid], uid in recent)))
        if out:
            self.send(b"".join(out))

    def close_folder(self) -> None:
        if self.folder is not None:
            try:
                self.folder.remove_listener(self)  # type: ignore[arg-type]  # IMAPSession provides IFolderListener
                self.folder.close()
            except Exception:
                log.failure("folder close failed", event="imap.close_error")
        self.folder = None
        self.uids = []
        self.keywords = set()
        self.dirty = False
        if self.state == SELECTED:
            self.state = "auth"
