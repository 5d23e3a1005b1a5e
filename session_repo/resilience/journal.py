"""The outage journal: at most one entry per session, each written back exactly once.

While degraded, the fallback applies every write in order, and the journal keeps,
per session, what those writes did *relative to the binding that was there before
the first of them* (its ``basis``, as the fallback knew it). Later writes fold into
the session's entry, so an hour of touches on one hot session is still one entry.
Written back, an entry never undoes anyone else's work and never contradicts an
answer given during the outage:

===========  =====================================  ===============================
kind         made by                                 written back as
===========  =====================================  ===============================
``set``      an upsert (and what followed it)       upsert (it overwrote, as it did)
``claim``    a claim or acquire that won in the     claim, replacing the basis: a
             fallback                               live binding made meanwhile wins
``keep``     touches of the basis binding           the basis renewed, if still its
``clear``    a delete that removed a binding        the basis removed, if still its
``owner``    ``delete_owner``                       delete_owner
``release``  ``release`` (and a heartbeat after     release, then that heartbeat if
             it)                                    it has not lapsed yet
===========  =====================================  ===============================

A conditional touch or delete that acted is journaled as its plain form (the
generation it matched was the fallback's own). Heartbeats are kept apart, one per
owner (only the latest matters), and each round of write-back writes them first,
each only if it has not lapsed by then: a binding written back for an owner then
carries the owner's current incarnation, as it did in the fallback (behind a lapsed
heartbeat it would be dead on arrival). ``owner`` and ``release`` entries are
barriers: each goes alone, in order; a release folds the owner's pending heartbeat
away and its sessions' entries into ``clear``, and a heartbeat after it rides on
the release entry.

A write whose answer changed nothing (a touch or delete answered ``False``, a
claim that lost) is not journaled. An entry whose expiry has passed by the time it
is written back still removes the basis it replaced. Entries keep digests, alloc
ids and absolute expiry in ms, never a session id.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Literal

from session_repo._core.front import StoreFront

__all__ = [
    "BARRIERS",
    "WRITE_BACK_BATCH",
    "Entry",
    "Journal",
    "Kind",
    "Write",
    "write_back",
    "write_beat",
]

Kind = Literal["set", "claim", "keep", "clear", "owner", "release"]
Write = Literal["upsert", "claim", "touch", "delete"]
# Entries written back together (each for a different session).
WRITE_BACK_BATCH = 64
_KIND_OF: dict[Write, Kind] = {
    "upsert": "set",
    "claim": "claim",
    "touch": "keep",
    "delete": "clear",
}
# Entries that order what follows them: each written back alone.
BARRIERS: frozenset[Kind] = frozenset({"owner", "release"})


@dataclasses.dataclass(slots=True)
class Entry:
    """What a session's outage writes did, folded into one write-back."""

    kind: Kind
    key: bytes
    basis: str | None = None  # the owner before the first outage write, as the fallback knew
    owner: str = ""  # the owner after the last one (the alloc id for barriers)
    expires_at: int = 0  # for ``release``: the end of a heartbeat after it (0: none)


class Journal:
    """Entries in the order of each session's last write, bounded by ``max_entries``."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.dropped = 0
        self.owner_entries = 0  # barriers waiting (``delete_owner``, ``release``)
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._beats: dict[str, int] = {}  # owner -> its latest heartbeat's end (ms)

    def __len__(self) -> int:
        return len(self._entries) + len(self._beats)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def record(
        self, write: Write, key: bytes, before: str | None, owner: str, expires_at: int
    ) -> bool:
        """Fold one write that changed the fallback; ``False`` if the journal is full.

        Args:
            write: which write it was (only ones that changed something).
            key: the session digest.
            before: the fallback's owner just before this write (``None`` if free).
            owner: the owner after it (for a touch: the owner it renewed).
            expires_at: the expiry after it, in ms (ignored for a delete).
        """
        entry = self._entries.get(key)
        if entry is None:
            if len(self) >= self.max_entries:
                self.dropped += 1
                return False
            entry = self._entries[key] = Entry(_KIND_OF[write], key, basis=before)
        else:
            self._entries.move_to_end(key)
            if write == "claim" and entry.kind == "set":
                write = "upsert"  # a claim over our own outage upsert: still an overwrite
            if write != "touch":
                entry.kind = _KIND_OF[write]
        if write != "delete":
            entry.owner, entry.expires_at = owner, expires_at
        return True

    def record_delete_owner(self, alloc_id: str) -> bool:
        """Fold a ``delete_owner``: its sessions here end cleared, then it runs itself."""
        return self._barrier("owner", alloc_id)

    def record_release(self, alloc_id: str) -> bool:
        """Fold a ``release``: its heartbeat and sessions go, then it runs itself."""
        self._beats.pop(alloc_id, None)
        return self._barrier("release", alloc_id)

    def record_beat(self, alloc_id: str, expires_at: int) -> bool:
        """Fold a heartbeat: only the owner's latest is kept; ``False`` if full."""
        release = self._entries.get(b"release:" + alloc_id.encode())
        if release is not None:  # after a release still to write: written after it
            release.expires_at = expires_at
        elif alloc_id in self._beats or len(self) < self.max_entries:
            self._beats[alloc_id] = expires_at
        else:
            self.dropped += 1
            return False
        return True

    def _barrier(self, kind: Kind, alloc_id: str) -> bool:
        for entry in [e for e in self._entries.values() if e.kind not in BARRIERS]:
            if entry.kind != "clear" and entry.owner == alloc_id:
                entry.kind = "clear"
                self._entries.move_to_end(entry.key)
        key = kind.encode() + b":" + alloc_id.encode()
        if key not in self._entries and len(self) >= self.max_entries:
            self.dropped += 1
            return False
        if self._entries.pop(key, None) is None:
            self.owner_entries += 1
        self._entries[key] = Entry(kind, key, owner=alloc_id)
        return True

    def take_beats(self) -> dict[str, int]:
        """Remove and return the heartbeats to write back (owner -> end, ms)."""
        beats, self._beats = self._beats, {}
        return beats

    def put_back_beat(self, alloc_id: str, expires_at: int) -> None:
        """Return a heartbeat that could not be written back, unless a later one came."""
        if alloc_id not in self._beats and b"release:" + alloc_id.encode() not in self._entries:
            self._beats[alloc_id] = expires_at

    def take_batch(self) -> list[Entry]:
        """Remove and return the next entries to write back together.

        Session entries go together, up to ``WRITE_BACK_BATCH``; a barrier
        goes alone, after everything journaled before it.
        """
        batch: list[Entry] = []
        for entry in self._entries.values():
            if entry.kind in BARRIERS:
                if not batch:
                    batch.append(entry)
                break
            batch.append(entry)
            if len(batch) == WRITE_BACK_BATCH:
                break
        for entry in batch:
            del self._entries[entry.key]
        self.owner_entries -= sum(entry.kind in BARRIERS for entry in batch)
        return batch

    def put_back(self, entry: Entry) -> None:
        """Return an entry that could not be written back to the front."""
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key, last=False)
        self.owner_entries += entry.kind in BARRIERS


async def _remove_if_held(primary: StoreFront, key: bytes, owner: str, now: int) -> None:
    """Remove ``owner``'s binding, atomically, only if it still holds the session.

    A claim replacing ``owner`` that expires at ``now``, so it is not live (a store
    on native TTLs keeps it the least it can, 1 ms): anyone else's live binding wins
    and is left as it is.
    """
    await primary.run("claim", lambda s: s.claim(key, owner, now, now, owner))


async def write_beat(primary: StoreFront, alloc_id: str, expires_at: int, now: int) -> None:
    """Write one outage heartbeat back, unless it has lapsed by now."""
    if expires_at > now:
        await primary.run("heartbeat", lambda s: s.heartbeat(alloc_id, expires_at, now))


async def write_back(primary: StoreFront, entry: Entry, now: int) -> str | None:
    """Write one entry back; for a claim, the winner (else ``None``)."""
    live = entry.expires_at > now
    if entry.kind == "owner":
        await primary.run("delete_owner", lambda s: s.delete_owner(entry.owner, now))
    elif entry.kind == "release":
        await primary.run("release", lambda s: s.release(entry.owner, now))
        await write_beat(primary, entry.owner, entry.expires_at, now)
    elif entry.kind == "set" and live:
        await primary.run(
            "upsert", lambda s: s.upsert(entry.key, entry.owner, entry.expires_at, now)
        )
    elif entry.kind == "claim" and live:
        return await primary.run(
            "claim", lambda s: s.claim(entry.key, entry.owner, entry.expires_at, now, entry.basis)
        )
    elif entry.kind == "keep" and live and entry.basis is not None:
        basis = entry.basis
        await primary.run(
            "claim", lambda s: s.claim(entry.key, basis, entry.expires_at, now, basis)
        )
    elif entry.basis is not None:  # cleared, or its own expiry passed: the basis goes
        await _remove_if_held(primary, entry.key, entry.basis, now)
    return None
