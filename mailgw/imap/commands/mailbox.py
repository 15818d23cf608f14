"""Authenticated-state commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS, APPEND, NAMESPACE."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from mailgw.errors import MailboxExists, NoSuchMailbox
from mailgw.imap.commands.auth import AUTHED
from mailgw.imap.names import MAX_MATCH_WORK, BadName, Pattern, decode_mailbox, decode_pattern, encode_mailbox
from mailgw.imap.pacing import Pacer
from mailgw.imap.session import SELECTED, Reply
from mailgw.imap.updates import flags_lines
from mailgw.imap.wire.framing import SpooledLiteral
from mailgw.imap.wire.grammar import Request
from mailgw.imap.wire.response import astring, flag_list, tagged
from mailgw.interfaces import FolderInfo, MessageFile

if TYPE_CHECKING:
    from mailgw.imap.session import IMAPSession


def _name(raw: object) -> str:
    assert isinstance(raw, bytes)
    return decode_mailbox(raw)


def cmd_select(s: "IMAPSession", req: Request) -> "Deferred[Any]":
    name = _name(req.args[0])
    readonly = req.name == "EXAMINE"
    s.close_folder()  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
    assert s.account is not None
    d = s.account.open_folder(name, readonly)

    def opened(folder: Any) -> bytes:
        if s.closing:
            folder.close()
            return b""
        s.folder = folder
        s.state = SELECTED
        folder.add_listener(s)
        messages = folder.messages()
        s.uids = folder.uids()  # type: ignore[assignment]  # an immutable tuple shared with other sessions
        s.uid_validity = folder.uid_validity
        s.keywords = {f for m in messages for f in m.flags if not f.startswith("\\")}
        out = [flags_lines(s.keywords, readonly),
               b"* %d EXISTS\r\n" % len(messages),
               b"* %d RECENT\r\n" % len(folder.recent_uids())]
        unseen = next((i + 1 for i, m in enumerate(messages) if "\\Seen" not in m.flags), None)
        if unseen is not None:
            out.append(b"* OK [UNSEEN %d] First unseen.\r\n" % unseen)
        out.append(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % folder.uid_validity)
        out.append(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % folder.uid_next)
        s.send(b"".join(out))
        code = b"READ-ONLY" if readonly else b"READ-WRITE"
        return tagged(req.tag, b"OK", b"%s completed." % req.name.title().encode(), code)

    d.addCallback(opened)
    return d


def _simple(s: "IMAPSession", req: Request, d: "Deferred[Any]", text: bytes) -> "Deferred[Any]":
    d.addCallback(lambda _: tagged(req.tag, b"OK", text))
    return d


def cmd_create(s: "IMAPSession", req: Request) -> "Deferred[Any]":
    name = _name(req.args[0])
    if name.rstrip("/") == "INBOX":
        raise Reply(b"NO", "Mailbox already exists", "ALREADYEXISTS")
    assert s.account is not None
    return _simple(s, req, s.account.create_folder(name), b"Create completed.")


def cmd_delete(s: "IMAPSession", req: Request) -> "Deferred[Any]":
    name = _name(req.args[0])
    if name == "INBOX":
        raise Reply(b"NO", "INBOX can't be deleted.", "CANNOT")
    assert s.account is not None
    if s.folder is not None and s.folder.name == name:
        s.close_folder()
    return _simple(s, req, s.account.delete_folder(name), b"Delete completed.")


def cmd_rename(s: "IMAPSession", req: Request) -> "Deferred[Any]":
    old, new = _name(req.args[0]), _name(req.args[1])
    assert s.account is not None
    d = s.account.rename_folder(old, new)
    return _simple(s, req, d, b"Rename completed.")


def cmd_subscribe(s: "IMAPSession", req: Request) -> "Deferred[Any]":
    name = _name(req.args[0])
    assert s.account is not None
    if req.name == "SUBSCRIBE":
        return _simple(s, req, s.account.subscribe(name), b"Subscribe completed.")
    return _simple(s, req, s.account.unsubscribe(name), b"Unsubscribe completed.")


def _attributes(info: FolderInfo, subscribed: bool) -> bytes:
    attrs = [b"\\HasChildren" if info.has_children else b"\\HasNoChildren"]
    if not info.selectable:
        attrs.insert(0, b"\\Noselect")
    if info.special_use:
        attrs.append(info.special_use.encode("ascii"))
    if subscribed:
        attrs.append(b"\\Subscribed")
    return b"(" + b" ".join(attrs) + b")"


def _patterns(ref_raw: bytes, raw_patterns: tuple[bytes, ...]) -> list[Pattern]:
    ref = decode_pattern(ref_raw)
    return [Pattern(ref + decode_pattern(p)) for p in raw_patterns]


def _check_work(patterns: list[Pattern], names: list[str]) -> None:
    """Refuse a LIST/LSUB whose matching work (patterns x mailboxes x pattern words) passes the bound (issue 12)."""
    chars = sum(len(n) + 1 for n in names)
    work = sum(p.words for p in patterns) * chars
    if work > MAX_MATCH_WORK:
        raise Reply(b"NO", "Too many mailbox patterns for this many mailboxes", "LIMIT")


def cmd_list(s: "IMAPSession", req: Request) -> Any:
    selection, ref_raw, raw_patterns, returns = req.args
    assert isinstance(selection, tuple) and isinstance(returns, tuple) and isinstance(raw_patterns, tuple)
    assert isinstance(ref_raw, bytes)
    if raw_patterns == (b"",) and not selection:
        s.send(b'* LIST (\\Noselect) "/" ""\r\n')  # RFC 3501 §6.3.8: the hierarchy delimiter
        return tagged(req.tag, b"OK", b"List completed.")
    patterns = _patterns(ref_raw, raw_patterns)
    assert s.account is not None
    account = s.account
    subscribed_only = "SUBSCRIBED" in selection
    special_only = "SPECIAL-USE" in selection
    want_subscribed = subscribed_only or "SUBSCRIBED" in returns

    async def run() -> Optional[bytes]:
        folders: list[FolderInfo] = await account.list_folders()
        subs: set[str] = set(await account.subscriptions()) if want_subscribed else set()
        _check_work(patterns, [f.name for f in folders])
        pacer = Pacer(s.reactor, lambda: s.closing)
        out = []
        for info in folders:
            if not await pacer.tick():
                return None
            if subscribed_only and info.name not in subs:
                continue
            if special_only and not info.special_use:
                continue
            if not any(p.match(info.name) for p in patterns):
                continue
            out.append(b'* LIST %s "/" %s\r\n' % (_attributes(info, info.name in subs),
                                                   astring(encode_mailbox(info.name))))
        s.send(b"".join(out))
        return tagged(req.tag, b"OK", b"List completed.")

    return Deferred.fromCoroutine(run())


def cmd_lsub(s: "IMAPSession", req: Request) -> Any:
    ref_raw, raw_pattern = req.args
    assert isinstance(ref_raw, bytes) and isinstance(raw_pattern, bytes)
    patterns = _patterns(ref_raw, (raw_pattern,))
    assert s.account is not None
    account = s.account

    async def run() -> Optional[bytes]:
        subs: list[str] = await account.subscriptions()
        subscribed = set(subs)
        # RFC 3501 §6.3.9: with "%", an unsubscribed parent of a subscribed name shows as \Noselect
        parents: dict[str, None] = {}
        for n in subs:
            parts = n.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in subscribed:
                    parents[parent] = None
        _check_work(patterns, subs + list(parents))
        pacer = Pacer(s.reactor, lambda: s.closing)
        out = []
        for n in subs:
            if not await pacer.tick():
                return None
            if any(p.match(n) for p in patterns):
                out.append(b'* LSUB () "/" %s\r\n' % astring(encode_mailbox(n)))
        for n in parents:
            if not await pacer.tick():
                return None
            if any(p.match(n) for p in patterns):
                out.append(b'* LSUB (\\Noselect) "/" %s\r\n' % astring(encode_mailbox(n)))
        s.send(b"".join(out))
        return tagged(req.tag, b"OK", b"Lsub completed.")

    return Deferred.fromCoroutine(run())


def cmd_status(s: "IMAPSession", req: Request) -> Any:
    name = _name(req.args[0])
    items = req.args[1]
    assert isinstance(items, tuple) and s.account is not None
    d = s.account.status(name)

    def got(st: Any) -> bytes:
        values = {"MESSAGES": st.messages, "RECENT": st.recent, "UIDNEXT": st.uid_next,
                  "UIDVALIDITY": st.uid_validity, "UNSEEN": st.unseen, "SIZE": st.size}
        body = b" ".join(b"%s %d" % (i.encode(), values[i]) for i in items)
        s.send(b"* STATUS %s (%s)\r\n" % (astring(encode_mailbox(name)), body))
        return tagged(req.tag, b"OK", b"Status completed.")

    d.addCallback(got)
    return d


def cmd_append(s: "IMAPSession", req: Request) -> Any:
    raw_name, flags, when, literal = req.args
    assert isinstance(raw_name, bytes)
    try:
        name = decode_mailbox(raw_name)
    except BadName as e:
        raise Reply(b"NO", e.text, e.code) from None
    if not len(literal):  # type: ignore[arg-type]
        raise Reply(b"NO", "Can't save a zero byte message.")
    assert s.account is not None
    wanted: frozenset[str] = frozenset(flags) if isinstance(flags, tuple) else frozenset()
    fd = -1
    if isinstance(literal, SpooledLiteral):
        # The store copies the spooled literal in its pool, in chunks: never whole in memory.
        # The framer closes its spool file when this handler returns, so keep a descriptor of our own.
        literal.file.flush()
        fd = os.dup(literal.file.fileno())
        source: "bytes | MessageFile" = MessageFile(fd=fd, size=literal.size)
    else:
        assert isinstance(literal, bytes)
        source = literal
    d = s.account.append(name, source, wanted, when)  # type: ignore[arg-type]

    def release(result: Any) -> Any:
        if fd >= 0:
            os.close(fd)
        return result

    def appended(res: Any) -> bytes:
        return tagged(req.tag, b"OK", b"Append completed.", b"APPENDUID %d %d" % (res.uid_validity, res.uid))

    def missing(f: Failure) -> Any:
        if f.check(NoSuchMailbox):
            raise Reply(b"NO", "Mailbox doesn't exist: " + name, "TRYCREATE")
        return f

    d.addBoth(release)
    d.addCallbacks(appended, missing)
    return d


def cmd_namespace(s: "IMAPSession", req: Request) -> bytes:
    s.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')  # RFC 2342: personal only
    return tagged(req.tag, b"OK", b"Namespace completed.")


_ = MailboxExists
COMMANDS = {
    "SELECT": (cmd_select, AUTHED, True), "EXAMINE": (cmd_select, AUTHED, True),
    "CREATE": (cmd_create, AUTHED, True), "DELETE": (cmd_delete, AUTHED, True),
    "RENAME": (cmd_rename, AUTHED, True), "SUBSCRIBE": (cmd_subscribe, AUTHED, True),
    "UNSUBSCRIBE": (cmd_subscribe, AUTHED, True), "LIST": (cmd_list, AUTHED, True),
    "LSUB": (cmd_lsub, AUTHED, True), "STATUS": (cmd_status, AUTHED, True),
    "APPEND": (cmd_append, AUTHED, True), "NAMESPACE": (cmd_namespace, AUTHED, True),
}
