"""What a repository reports about itself: metrics and health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["Counters", "Health", "HealthStatus", "SessionStoreMetrics"]

HealthStatus = Literal["ok", "degraded", "down"]


@dataclass(frozen=True, slots=True)
class SessionStoreMetrics:
    """A snapshot of counters (since open) and gauges (now)."""

    sessions: int
    expired: int
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
    fallback_active: bool = False
    last_cleanup_at: datetime | None = None
    storage_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """``status`` is "ok", "degraded" (serving from a fallback) or "down"."""

    status: HealthStatus
    backend: str
    detail: str = ""


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

    def snapshot(
        self,
        *,
        sessions: int,
        expired: int,
        storage_bytes: int | None,
        fallback_active: bool = False,
    ) -> SessionStoreMetrics:
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
        )
