"""The link a meeting request carries: `https://{front_end}{path}` with the path template filled, URL-escaped."""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from urllib.parse import quote

# Exchange 2003 OWA's form of a meeting item URL
DEFAULT_PATH = "/exchange/{user}/{mailbox}/?cmd=open&uid={ical_uid}"
PATH_FIELDS = ("user", "mailbox", "uid", "uidvalidity", "uid_url", "ical_uid")


@dataclass(frozen=True)
class CalendarSettings:
    """One virtual server's `calendaring` table, plus the IMAP host name the RFC 5092 URL names."""

    front_end: str
    use_ssl: bool = True
    path: str = DEFAULT_PATH
    hostname: str = "localhost"

    @property
    def fingerprint(self) -> str:
        """Changes whenever the presented bytes could: part of every cache key (a reload recomputes)."""
        text = "\0".join((self.front_end, str(self.use_ssl), self.path, self.hostname))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Where:
    """Where the message is, as the logged-in user sees it."""

    user: str
    mailbox: str
    uid: int
    uidvalidity: int


def template_fields(path: str) -> list[str]:
    """The placeholder names of a path template; ValueError on `{a.b}`, `{a!r}`, `{a:x}` or a stray brace."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(path):
        if name is None:
            continue
        if spec or conversion or name not in PATH_FIELDS:
            raise ValueError(f"unknown placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} (known: {', '.join(PATH_FIELDS)})")
        names.append(name)
    return names


def uid_url(settings: CalendarSettings, where: Where) -> str:
    """RFC 5092 §6: imap://user@host/mailbox;UIDVALIDITY=n/;UID=m (user and mailbox UTF-8, %-escaped)."""
    return (f"imap://{quote(where.user, safe='')}@{settings.hostname}/{quote(where.mailbox, safe='/')}"
            f";UIDVALIDITY={where.uidvalidity}/;UID={where.uid}")


def link(settings: CalendarSettings, where: Where, ical_uid: str) -> str:
    """The URL; every value is %-escaped (the mailbox keeps its `/` hierarchy separators)."""
    values = {"user": quote(where.user, safe=""), "mailbox": quote(where.mailbox, safe="/"),
              "uid": str(where.uid), "uidvalidity": str(where.uidvalidity),
              "uid_url": quote(uid_url(settings, where), safe=""), "ical_uid": quote(ical_uid, safe="")}
    out = []
    for literal, name, _, _ in string.Formatter().parse(settings.path):
        out.append(literal)
        if name is not None:
            out.append(values.get(name, ""))  # the config refuses unknown names; never str.format
    scheme = "https" if settings.use_ssl else "http"
    return f"{scheme}://{settings.front_end}{''.join(out)}"
