"""The storage interface: what a backend implements beneath the front.

The front (``session_repo._core.front.StoreFront``) checks inputs, hashes the
session id, reads the clock, counts, times and translates errors; a ``Storage``
only stores. Every method takes already-validated values: the session's digest,
alloc ids, and integer milliseconds from the front's clock.

A storage may raise its driver's own errors: the front turns them into
``StorageError`` once, with the backend's error table (the ``classify`` it gives
the front) saying whether another try may succeed.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["Gauges", "LeaseRow", "Storage"]


class Gauges(NamedTuple):
    """What ``metrics()`` reads from the store now."""

    sessions: int
    """Live bindings."""
    expired: int
    """Rows present but expired (cleanup has not reached them yet)."""
    storage_bytes: int | None
    """Bytes the store uses, where it can tell; else ``None``."""
    owners: int = 0
    """Owners with a live heartbeat."""


class LeaseRow(NamedTuple):
    """A live binding with its fencing generation, as storage keeps it."""

    owner: str
    generation: int
    """Strictly increases for a session whenever its owner changes or it is bound anew."""
    expires_at: int
    """The binding's own end, in ms of the front's clock."""


class Storage(Protocol):
    """Bindings keyed by session digest, with expiry in integer milliseconds.

    A binding is live while ``now < expires_at``; ``now`` is always passed in.
    """

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        """Bind ``key`` to ``alloc_id`` until ``expires_at``, whoever held it.

        The generation stays if ``alloc_id`` held a live binding; else a new one.

        Args:
            key: the session's SHA-256 digest.
            alloc_id: the new owner.
            expires_at: when the binding dies, in ms of the front's clock.
            now: the front's clock, in ms (whether the old binding was live).
        """
        ...

    async def lookup(self, key: bytes, now: int) -> str | None:
        """The owner of ``key``'s live binding, or ``None``; the expiry is not extended.

        Args:
            key: the session's SHA-256 digest.
            now: the front's clock, in ms.
        """
        ...

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        """Atomically: the live owner unless it is ``replacing``; else bind and return ``alloc_id``.

        A deadlock or serialization failure is retried here, never raised.

        Args:
            key: the session's SHA-256 digest.
            alloc_id: who wants the session.
            expires_at: when a new binding dies, in ms.
            now: the front's clock, in ms.
            replacing: an owner whose live binding this claim may take over.
        """
        ...

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> LeaseRow:
        """``claim``, answering the winner's lease (generation and expiry) too.

        Args:
            key: the session's SHA-256 digest.
            alloc_id: who wants the session.
            expires_at: when a new binding dies, in ms.
            now: the front's clock, in ms.
            replacing: an owner whose live binding this claim may take over.
        """
        ...

    async def lease(self, key: bytes, now: int) -> LeaseRow | None:
        """``lookup`` with the generation and expiry: the live binding's lease, or ``None``.

        Args:
            key: the session's SHA-256 digest.
            now: the front's clock, in ms.
        """
        ...

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        """Move a live binding's expiry to ``expires_at``; ``False`` if there is none.

        Args:
            key: the session's SHA-256 digest.
            expires_at: the binding's new end, in ms.
            now: the front's clock, in ms.
            generation: if given, act only while the live binding has this generation.
        """
        ...

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        """Remove ``key``'s binding; ``True`` only if it was live.

        Args:
            key: the session's SHA-256 digest.
            now: the front's clock, in ms.
            generation: if given, act only while the live binding has this generation.
        """
        ...

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        """``alloc_id`` is alive until ``expires_at``.

        A heartbeat after a lapse starts a new incarnation: the bindings the lapse
        killed stay dead.

        Args:
            alloc_id: the owner.
            expires_at: when its heartbeat lapses, in ms.
            now: the front's clock, in ms.
        """
        ...

    async def release(self, alloc_id: str, now: int) -> int:
        """Drop ``alloc_id``'s heartbeat and every binding of it; how many were live.

        Args:
            alloc_id: the owner that leaves.
            now: the front's clock, in ms.
        """
        ...

    async def owners(self, now: int) -> dict[str, int]:
        """Owners with a live heartbeat, and when each lapses (ms).

        Args:
            now: the front's clock, in ms.
        """
        ...

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        """Remove every binding of ``alloc_id``; how many were live.

        Args:
            alloc_id: the owner that is gone.
            now: the front's clock, in ms.
        """
        ...

    async def cleanup(self, now: int, batch: int) -> int:
        """Remove all rows expired at ``now``, at most ``batch`` per transaction; how many.

        Args:
            now: the front's clock, in ms.
            batch: the most rows one transaction removes (writers wait at most that).
        """
        ...

    async def gauges(self, now: int) -> Gauges:
        """Live and expired rows, and the storage size where the store can tell.

        Args:
            now: the front's clock, in ms.
        """
        ...

    async def ping(self) -> str:
        """Check the store answers; a short detail for ``health()`` (no secrets)."""
        ...

    async def close(self) -> None:
        """Release connections and background work; called once."""
        ...
