"""The mutable counters behind ``SessionStoreMetrics``, kept by each front."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from session_repo.metrics import Latency, SessionStoreMetrics

__all__ = ["Counters"]


@dataclass(slots=True)
class Counters:
    """The mutable counters behind ``SessionStoreMetrics``."""

    lookups: int = 0
    hits: int = 0
    misses: int = 0
    upserts: int = 0
    claims: int = 0
    touches: int = 0
    deletes: int = 0
    cleaned: int = 0
    errors: int = 0
    retries: int = 0
    last_cleanup_at: datetime | None = field(default=None)
    latency: dict[str, Latency] = field(default_factory=dict)

    def looked_up(self, owner: str | None) -> None:
        """Count one lookup and whether it found a live binding.

        Args:
            owner: what the lookup returned (``None`` is a miss).
        """
        self.lookups += 1
        if owner is None:
            self.misses += 1
        else:
            self.hits += 1

    def observe(self, operation: str, seconds: float, *, failed: bool = False) -> None:
        """Add one call to ``operation``'s latency histogram.

        Args:
            operation: the method's name (``"lookup"``, ``"claim"``, ...).
            seconds: how long the call took.
            failed: whether it ended in a storage error.
        """
        latency = self.latency.get(operation)
        if latency is None:
            latency = self.latency[operation] = Latency()
        latency.observe(seconds, failed=failed)

    def snapshot(
        self,
        *,
        sessions: int,
        expired: int,
        storage_bytes: int | None,
        fallback_active: bool = False,
        owners: int = 0,
    ) -> SessionStoreMetrics:
        """The counters now, frozen, with the gauges given.

        Args:
            sessions: live bindings.
            expired: rows present but expired.
            storage_bytes: bytes the store uses, or ``None`` if unknown.
            fallback_active: whether a fallback is serving.
            owners: owners with a live heartbeat.
        """
        return SessionStoreMetrics(
            sessions=sessions,
            expired=expired,
            lookups=self.lookups,
            hits=self.hits,
            misses=self.misses,
            upserts=self.upserts,
            claims=self.claims,
            touches=self.touches,
            deletes=self.deletes,
            cleaned=self.cleaned,
            errors=self.errors,
            retries=self.retries,
            fallback_active=fallback_active,
            last_cleanup_at=self.last_cleanup_at,
            storage_bytes=storage_bytes,
            owners=owners,
        )
