"""One virtual server's calendaring at run time: its settings (replaced on reload) and a bounded cache.

The FETCH and SEARCH loader (mailgw.imap.fetchdata.load_batch) asks a `Presentation` whether a
message is decided already (`known`) and, if not, has it decide from the stored header and the
message's first octets, both read in the store's pool (`decide`); a recipe then presents the
header, the size and the body (present.PresentedBody). Recipes are cached per (user, mailbox,
UIDVALIDITY, UID, settings fingerprint): a message is examined once per configuration, and a
reload (a new fingerprint) recomputes. The stored file is never modified; COPY, MOVE, APPEND and
the submission relay never see this. Cost with `fast_message_retrieval`: a message whose
index header says multipart/*, text/calendar or application/ics has its first EXAMINE octets
read once (then the cache answers); every other message keeps the index size and header.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Optional, Union

from mailgw.imap.calendaring.link import CalendarSettings, Where
from mailgw.imap.calendaring.present import Recipe, is_candidate, plan

_STORED = "stored"  # cached: examined, shown as stored
Entry = Union[Recipe, str]


class RecipeCache:
    """LRU of recipes (a few KiB each) and "as stored" markers, bounded in entries and bytes."""

    def __init__(self, size: int = 50000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.size, self.max_bytes, self.bytes = size, max_bytes, 0
        self._data: "OrderedDict[Hashable, Entry]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> Optional[Entry]:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Entry) -> None:
        if key in self._data:
            return
        self._data[key] = value
        self.bytes += _weight(value)
        while len(self._data) > self.size or self.bytes > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self.bytes -= _weight(old)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0


def _weight(value: Entry) -> int:
    return value.weight if isinstance(value, Recipe) else 64


class Presentation:
    """The form one selection shows (settings fixed when it was taken); the MessageData hooks."""

    def __init__(self, settings: CalendarSettings, cache: RecipeCache) -> None:
        self.settings, self.cache = settings, cache
        self.fingerprint = settings.fingerprint

    def _key(self, data: Any) -> tuple[Any, ...]:
        folder = data.folder
        return (data.key[0], folder.name, folder.uid_validity, data.info.uid, self.fingerprint)

    def _where(self, data: Any) -> Where:
        return Where(user=data.key[0], mailbox=data.folder.name, uid=data.info.uid,
                     uidvalidity=data.folder.uid_validity)

    def _decide(self, data: Any, prefix: bytes) -> Optional[Recipe]:
        key = self._key(data)
        recipe = plan(prefix, self.settings, self._where(data))
        self.cache.put(key, recipe if recipe is not None else _STORED)
        return recipe

    def known(self, data: Any) -> tuple[bool, Optional[Recipe]]:
        """(decided already, its recipe): from the cache only, no I/O."""
        cached = self.cache.get(self._key(data))
        if cached is None:
            return False, None
        return True, cached if isinstance(cached, Recipe) else None

    def decide(self, data: Any, header: bytes, prefix: Optional[bytes]) -> Optional[Recipe]:
        """Decide from the stored header (the cheap rule) and, for a candidate, the message's first EXAMINE octets.

        `prefix` None means the caller did not read it because `is_candidate(header)` is false.
        """
        if prefix is None or not is_candidate(header):
            self.cache.put(self._key(data), _STORED)
            return None
        return self._decide(data, prefix)


class Presenter:
    """One [imap.NAME]'s calendaring: None settings show every message as stored."""

    def __init__(self, settings: Optional[CalendarSettings] = None, cache: Optional[RecipeCache] = None) -> None:
        self.settings = settings
        self.cache = cache if cache is not None else RecipeCache()

    def configure(self, settings: Optional[CalendarSettings]) -> None:
        """Reload: new selections show the new form (old entries age out of the LRU, keyed by fingerprint)."""
        if settings != self.settings:
            self.settings = settings
            if settings is None:
                self.cache.clear()

    def current(self) -> Optional[Presentation]:
        return Presentation(self.settings, self.cache) if self.settings is not None else None
