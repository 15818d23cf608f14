"""What a SEARCH key tree needs loaded from the store before it can be evaluated (search.py runs synchronously).

Flags, sizes, internal dates and sets come from the index; HEADER, SENT* dates and TEXT need
the header block; BODY and TEXT need the whole message (so does every header key when
`fast_message_retrieval` is off, and SIZE then too).
"""

from __future__ import annotations

from mailgw.imap.fetch import Need
from mailgw.imap.wire.searchspec import Key


def search_need(key: Key, fast: bool) -> Need:
    """One Need for every message of a SEARCH with this key (walked without recursion)."""
    header = full = False
    stack = [key]
    while stack:
        k = stack.pop()
        op = k.op
        if op in ("AND", "OR", "NOT"):
            stack.extend(a for a in k.args if isinstance(a, Key))
        elif op == "HEADER" or (op == "DATE" and str(k.args[0]).startswith("SENT")):
            header = True
        elif op == "BODY":
            full = True
        elif op == "TEXT":
            header = full = True
        elif op == "SIZE" and not fast:
            full = True
    if header and not fast:
        full = True
    return Need(header=header and not full, full=full, body=full)
