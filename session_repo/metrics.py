"""What a repository reports about itself: metrics and health."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "LATENCY_BUCKETS",
    "Health",
    "HealthStatus",
    "Instrumented",
    "Latency",
    "SessionStoreMetrics",
]

# Upper bounds (seconds) of the per-operation latency histogram; one more bucket is +Inf.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

HealthStatus = Literal["ok", "degraded", "down"]


@dataclass(frozen=True, slots=True)
class SessionStoreMetrics:
    """A snapshot of counters (since open) and gauges (now).

    Args:
        sessions: live bindings (gauge).
        expired: rows present but expired, not yet cleaned up (gauge).
        lookups: lookups made.
        hits: lookups that found a live binding.
        misses: lookups that found none.
        upserts: upserts made.
        claims: claims made.
        touches: touches made.
        deletes: bindings removed by ``delete`` and ``delete_owner``.
        cleaned: expired rows removed by cleanup.
        errors: storage errors met, including those a fallback absorbed.
        retries: retries of transient errors.
        fallback_active: whether the fallback is serving.
        last_cleanup_at: when cleanup last ran, by the repository's clock.
        storage_bytes: bytes the store uses, where known.
        claims_lost: outage claims that lost on write-back.
        journal_entries: outage writes waiting to be written back.
        journal_dropped: outage writes a full journal could not keep.
        owners: owners with a live heartbeat (gauge).
    """

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
    # The resilient wrapper's: outage claims that lost on write-back, the writes
    # waiting to be written back, and those a full journal could not keep.
    claims_lost: int = 0
    journal_entries: int = 0
    journal_dropped: int = 0
    owners: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    """``status`` is "ok", "degraded" (serving from a fallback) or "down".

    Args:
        status: "ok", "degraded" or "down".
        backend: which store (``"sqlite"``, ``"postgresql"``, ``"redis"``, ``"memory"``, ...).
        detail: a short human-readable explanation.
    """

    status: HealthStatus
    backend: str
    detail: str = ""


@dataclass(slots=True)
class Latency:
    """How long one operation took, as a histogram over ``LATENCY_BUCKETS``.

    Args:
        counts: calls per bucket; the last bucket is +Inf.
        total: the seconds of all calls together.
        failures: calls that ended in a storage error.
    """

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    failures: int = 0

    def observe(self, seconds: float, *, failed: bool) -> None:
        """Count one call in its bucket.

        Args:
            seconds: how long the call took.
            failed: whether it ended in a storage error.
        """
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.failures += failed

    @property
    def count(self) -> int:
        """How many calls were observed."""
        return sum(self.counts)


@runtime_checkable
class Instrumented(Protocol):
    """What exporters read without I/O: every backend and the resilient wrapper have it.

    Declared so that the CLI, Prometheus and benchmarks never probe with ``getattr``.
    """

    @property
    def backend(self) -> str:
        """The store's name (``"sqlite"``, ``"redis"``, ...); the primary's for a wrapper."""
        ...

    def counters(self) -> SessionStoreMetrics:
        """Counters now, gauges as last read; no I/O, callable from any thread."""
        ...

    def latencies(self) -> dict[str, Latency]:
        """Per-operation latency histograms (copies)."""
        ...
