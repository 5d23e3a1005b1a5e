"""``SessionRepository``: the contract every backend fulfils the same way.

A *binding* maps a session id to the alloc id (instance) that owns it and is
live while ``now < expires_at``; ``now`` comes from the repository's clock.
Session ids are secrets: backends keep only their SHA-256 digest.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from session_repo._inputs import Ttl
from session_repo.metrics import Health, SessionStoreMetrics

__all__ = ["SessionRepository"]


@runtime_checkable
class SessionRepository(Protocol):
    """An async, TTL-keyed map of session id -> alloc id.

    Every method validates its arguments before any I/O (``TypeError`` for a
    wrong type, ``InvalidInput`` for a wrong value; nothing is written then),
    opens the repository lazily if needed, and raises ``RepositoryClosed``
    after ``close()``. ``ttl=None`` means the repository's default.
    """

    async def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        """Bind or rebind ``session_id`` to ``alloc_id``; expiry = now + ttl."""
        ...

    async def lookup(self, session_id: str) -> str | None:
        """The owner of a live binding, else None (expired counts as absent)."""
        ...

    async def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        """Atomically take a session unless someone else holds it.

        If a live binding exists and its owner is not ``replacing``, return
        that owner and change nothing. Otherwise bind to ``alloc_id`` and
        return ``alloc_id``. Of many concurrent claims exactly one wins.
        """
        ...

    async def touch(self, session_id: str, ttl: Ttl | None = None) -> bool:
        """Extend a live binding to now + ttl; False if there is none."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Remove a live binding; True if there was one."""
        ...

    async def delete_owner(self, alloc_id: str) -> int:
        """Remove every live binding of an instance that is gone; how many."""
        ...

    async def cleanup(self) -> int:
        """Remove expired rows in bounded batches; how many were removed."""
        ...

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since open and gauges read now."""
        ...

    async def health(self) -> Health:
        """ "ok", "degraded" (serving from a fallback) or "down", never raising
        a storage error."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
