"""Folder names: validation, INBOX normalisation, SPECIAL-USE roles, and the Maildir++ on-disk form.

Shared by the in-memory and the Maildir store so both refuse exactly the same names.
Names are Unicode with "/" as the hierarchy separator (modified UTF-7 is the IMAP layer's).
"""

from __future__ import annotations

from mailgw.errors import InvalidMailboxName

SEPARATOR = "/"
INBOX = "INBOX"

# Roles created for every new user (RFC 6154), by folder name.
SPECIAL_USE: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}

# Dovecot mailbox-list.c: MAILBOX_MAX_HIERARCHY_LEVELS 20, MAILBOX_MAX_NAME_LENGTH 200 (per component).
MAX_LEVELS = 20
MAX_COMPONENT_BYTES = 200
# A Maildir++ folder is one directory entry ".a.b.c": it must fit NAME_MAX (255) with room to spare.
MAX_DISK_NAME_BYTES = 250

_RESERVED_COMPONENTS = frozenset({"cur", "new", "tmp"})


def _refuse(reason: str) -> InvalidMailboxName:
    return InvalidMailboxName(f"Invalid mailbox name: {reason}", detail=reason)


def normalize(name: str) -> str:
    """Validate a folder name and return its canonical form ("inbox/x" -> "INBOX/x").

    Raises InvalidMailboxName with a short reason a client may see.
    """
    if not isinstance(name, str):
        raise _refuse("Not a string")
    if name == "":
        raise _refuse("Empty name")
    if "\x00" in name:
        raise _refuse("Contains NUL")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise _refuse("Contains control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise _refuse("Contains lone surrogates")
    if name.startswith(SEPARATOR):
        raise _refuse("Begins with hierarchy separator")
    if name.endswith(SEPARATOR):
        raise _refuse("Ends with hierarchy separator")
    if SEPARATOR * 2 in name:
        raise _refuse("Has adjacent hierarchy separators")
    if ".." in name:
        raise _refuse("Contains '..'")
    if "*" in name or "%" in name:
        # LIST wildcards (RFC 3501 §6.3.8); also keeps '%' free for the on-disk escape of '.'.
        raise _refuse("Contains a wildcard")
    if "\\" in name:
        raise _refuse("Contains a backslash")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_LEVELS:
        raise _refuse("Too many hierarchy levels")
    for part in parts:
        if part in (".",):
            raise _refuse("Has a '.' component")
        if part.startswith("~"):
            raise _refuse("Begins with '~'")
        if part.strip() != part or part.strip() == "":
            raise _refuse("Component begins or ends with white space")
        if part.lower() in _RESERVED_COMPONENTS:
            raise _refuse("Reserved Maildir name")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _refuse("Component too long")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    canonical = SEPARATOR.join(parts)
    if canonical != INBOX and len(to_disk(canonical).encode("utf-8")) > MAX_DISK_NAME_BYTES:
        raise _refuse("Name too long")
    return canonical


def parent_names(name: str) -> list[str]:
    """The proper ancestors of a canonical name, outermost first ("a/b/c" -> ["a", "a/b"])."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def is_inferior(name: str, ancestor: str) -> bool:
    """True if `name` lies below `ancestor` in the hierarchy."""
    return name.startswith(ancestor + SEPARATOR)


def special_use(name: str) -> str | None:
    """The SPECIAL-USE role of a top-level folder, by name."""
    return SPECIAL_USE.get(name)


def to_disk(name: str) -> str:
    """Maildir++ directory name of a non-INBOX folder: "Archive/2026" -> ".Archive.2026".

    A '.' inside a component is written "%2E" (names never contain '%', so this is reversible).
    """
    return "." + ".".join(part.replace(".", "%2E") for part in name.split(SEPARATOR))


def from_disk(entry: str) -> str | None:
    """The folder name of a Maildir++ directory entry, or None if it is not a valid folder name."""
    if not entry.startswith(".") or entry in (".", "..") or entry.startswith(".."):
        return None
    parts = entry[1:].split(".")
    name = SEPARATOR.join(part.replace("%2E", ".") for part in parts)
    try:
        canonical = normalize(name)
    except InvalidMailboxName:
        return None
    if canonical == INBOX or to_disk(canonical) != entry:
        return None
    return canonical
