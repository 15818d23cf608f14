"""COPY and MOVE between two Maildir folders: hard links (or durable copies) and renames, then UIDs.

Runs in the thread pool with both folders' flocks held (taken in path order).
"""

from __future__ import annotations

import errno
import os
from contextlib import ExitStack
from typing import Optional

from mailgw.interfaces import CopyResult, MessageFile
from mailgw.store.body import message_chunks
from mailgw.store.maildir.disk import Delta, FolderDisk, merge
from mailgw.store.maildir.layout import FileName, fsync_dir, place_message, storage_error, unique_base
from mailgw.store.maildir.uidlist import FolderLock

_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)


def _locks(stack: ExitStack, *disks: FolderDisk) -> None:
    for path in sorted({d.path for d in disks}):
        stack.enter_context(FolderLock(path))


def _placed_copy(src: FolderDisk, dst: FolderDisk, uid: int, letters: str) -> str:
    r = src.state.recs[uid]  # type: ignore[union-attr]
    source = MessageFile(path=os.path.join(src.path, r.sub, r.name))
    _, name, _ = place_message(dst.path, message_chunks(source), dst.hostname, dst.writer, letters, float(r.mtime))
    return name


def transfer(src: FolderDisk, dst: FolderDisk, uids: list[int], move: bool) -> tuple[Delta, Delta, CopyResult]:
    """Copy (link) or move (rename) messages; returns (source delta, destination delta, COPYUID data)."""
    with ExitStack() as stack:
        _locks(stack, src, dst)
        src_pre = src._catch_up()
        dst_pre = dst._catch_up() if dst is not src else src._delta([], [])
        assert src.state is not None and dst.state is not None and dst.ul is not None and src.ul is not None
        placed: list[tuple[int, str, Optional[bytes]]] = []
        try:
            for uid in uids:
                r = src.state.recs.get(uid)
                if r is None:
                    continue
                letters = FileName.parse(r.name).letters
                name = f"{unique_base(dst.hostname, r.size)}:2,{letters}"
                old = os.path.join(src.path, r.sub, r.name)
                new = os.path.join(dst.path, "cur", name)
                block = src.header_bytes(uid) if r.hoff >= 0 else None
                try:
                    if move:
                        os.rename(old, new)
                    else:
                        os.link(old, new)
                except FileNotFoundError:
                    continue  # gone meanwhile: the next scan reports the expunge
                except OSError as e:
                    if e.errno not in _NO_LINK:
                        raise
                    name = _placed_copy(src, dst, uid, letters)
                    if move:
                        os.unlink(old)
                placed.append((uid, name, block))
            fsync_dir(os.path.join(dst.path, "cur"))
            new_uids = dst.ul.assign([FileName.parse(n).base for _, n, _ in placed])
        except OSError as e:
            if not move:
                for _, name, _ in placed:
                    try:
                        os.unlink(os.path.join(dst.path, "cur", name))
                    except OSError:
                        pass
            raise storage_error("move" if move else "copy", e) from e
        pairs = []
        kw = {}
        for (src_uid, name, block), dst_uid in zip(placed, new_uids):
            r = src.state.recs[src_uid]
            dst.state.recs[dst_uid] = dst._rec("cur", name, r.size, r.mtime, block, r.lf)
            dst.names["cur"][name] = dst_uid
            dst.unsaved += 1
            kw[dst_uid] = src.keywords.get(src_uid)
            pairs.append((src_uid, dst_uid))
        dst.keywords.update(kw)
        gone = [s for s, _ in pairs] if move else []
        if gone:
            for uid in gone:
                src._forget(uid)
            for sub in ("new", "cur"):
                fsync_dir(os.path.join(src.path, sub))
            src.ul.remove(gone)
            src.keywords.forget(gone)
        src_delta = merge(src_pre, src._delta([], gone))
        dst_delta = merge(dst_pre, dst._delta(list(new_uids), []))
        return src_delta, dst_delta, CopyResult(uid_validity=dst.ul.uid_validity, pairs=tuple(pairs))
