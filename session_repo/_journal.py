"""The outage journal: the writes made while degraded, and how each is written back.

Entries keep what the storage hooks take (the session digest, alloc ids, absolute
expiry in ms), never a session id. Written back in order, each with its own
semantics: an upsert overwrites, a claim claims (so a live binding another
instance made meanwhile wins), a touch touches, deletes delete.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from typing import Literal

from session_repo._base import BackendBase

__all__ = ["WRITE_BACK_BATCH", "Entry", "Journal", "Op", "write_back"]

Op = Literal["upsert", "claim", "touch", "delete", "delete_owner"]
# Journal entries written back together (each for a different session).
WRITE_BACK_BATCH = 256


@dataclasses.dataclass(slots=True)
class Entry:
    """One write made while degraded, as the primary's hooks take it."""

    op: Op
    key: bytes = b""
    alloc_id: str = ""
    expires_at: int = 0
    replacing: str | None = None
    void: bool = False  # a claim that lost in the fallback changed nothing


class Journal:
    """Entries in the order they were written; they leave only once written back."""

    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def append(self, entry: Entry) -> None:
        self._entries.append(entry)

    def drop(self, count: int) -> None:
        """Forget the first ``count`` entries (they were written back)."""
        for _ in range(count):
            self._entries.popleft()

    def next_batch(self) -> list[Entry]:
        """The next entries that may be written together.

        Entries for different sessions go together (the backends batch them); two
        for one session never share a batch, and a ``delete_owner`` goes alone.
        """
        batch: list[Entry] = []
        keys: set[bytes] = set()
        for entry in self._entries:
            if entry.op == "delete_owner":
                if not batch:
                    batch.append(entry)
                break
            if entry.key in keys or len(batch) == WRITE_BACK_BATCH:
                break
            keys.add(entry.key)
            batch.append(entry)
        return batch


async def write_back(primary: BackendBase, entry: Entry, now: int) -> bool | None:
    """Write one entry with its own semantics; None if it had expired.

    Returns False for a claim that lost to a live binding already there.
    """
    if entry.op in ("upsert", "claim", "touch") and entry.expires_at <= now:
        return None
    if entry.op == "upsert":
        await primary._do_upsert(entry.key, entry.alloc_id, entry.expires_at)
    elif entry.op == "claim":
        winner = await primary._do_claim(
            entry.key, entry.alloc_id, entry.expires_at, now, entry.replacing
        )
        return winner == entry.alloc_id
    elif entry.op == "touch":
        await primary._do_touch(entry.key, entry.expires_at, now)
    elif entry.op == "delete":
        await primary._do_delete(entry.key, now)
    else:
        await primary._do_delete_owner(entry.alloc_id, now)
    return True
