"""The metrics side: the duration histogram, and the counters and gauges a scrape reads.

The duration is recorded per call by the traced repository. The counters and
gauges are observable instruments read from the repository's ``counters()`` (no
I/O, any thread), as ``session_repo.prometheus`` reads them. The gauges that need
I/O (sessions, expired rows, owners, bytes) are the last ``metrics()`` read: each
collection asks for a fresh read on the repository's loop, without waiting for
it (the reader may run on that loop), so a collection shows the read the one
before it asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue

from session_repo.contract import SessionRepository
from session_repo.errors import RepositoryClosed
from session_repo.metrics import LATENCY_BUCKETS, Instrumented, SessionStoreMetrics

__all__ = ["Meters"]

logger = logging.getLogger("session_repo")

Attributes = dict[str, AttributeValue]

# SessionStoreMetrics counter field -> (unit, description), as session_repo.prometheus has them.
COUNTERS = {
    "lookups": ("{lookup}", "Lookups answered."),
    "hits": ("{lookup}", "Lookups that found a live binding."),
    "misses": ("{lookup}", "Lookups that found none."),
    "upserts": ("{binding}", "Bindings written by upsert."),
    "claims": ("{claim}", "Claims decided."),
    "touches": ("{touch}", "Touch calls."),
    "deletes": ("{binding}", "Bindings removed by delete and delete_owner."),
    "cleaned": ("{row}", "Expired rows removed by cleanup."),
    "errors": ("{error}", "Storage errors met (including those a fallback absorbed)."),
    "retries": ("{retry}", "Retries of transient storage errors."),
    "claims_lost": ("{claim}", "Claims granted during an outage that lost on write-back."),
    "journal_dropped": ("{write}", "Outage writes a full journal could not keep."),
}
GAUGES = {
    "sessions": ("{session}", "Live bindings, as last read."),
    "expired_rows": ("{row}", "Expired rows not yet cleaned up, as last read."),
    "owners": ("{owner}", "Owners with a live heartbeat, as last read."),
    "storage_bytes": ("By", "Bytes the store uses, as last read."),
    "fallback_active": ("1", "1 while serving from the fallback store."),
    "journal_entries": ("{write}", "Outage writes waiting to be written back."),
}
Callback = Callable[[CallbackOptions], Iterable[Observation]]


class Meters:
    """One repository's instruments on one meter.

    Args:
        meter: where the instruments are made.
        repository: what the counters and gauges are read from.
        attributes: every data point's attributes (``db.system.name``, backend).
        timeout: how long one read of the gauges may take (seconds).
    """

    def __init__(
        self,
        meter: Meter,
        repository: SessionRepository,
        attributes: Attributes,
        timeout: float,
    ) -> None:
        self._repo = repository
        self._attrs = attributes
        self._timeout = timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        """The repository's loop, where the gauges are read (set on first use)."""
        self.last: SessionStoreMetrics | None = None
        """The last ``metrics()`` read (None before the first)."""
        self._refreshing: asyncio.Task[None] | None = None
        self._closed = False
        # duration attributes per (operation, outcome): no dict is built per call
        self._outcomes: dict[tuple[str, str], Attributes] = {}
        self._duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of session repository operations, as the caller saw them.",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
        )
        for field, (unit, text) in COUNTERS.items():
            meter.create_observable_counter(
                f"session_repo.{field}", [self._counter(field)], unit, text
            )
        for name, (unit, text) in GAUGES.items():
            meter.create_observable_gauge(f"session_repo.{name}", [self._gauge(name)], unit, text)

    def done(self, op: str, outcome: str, seconds: float) -> None:
        """Record a call that returned, with its outcome (``hit``, ``won``, ``ok``...)."""
        key = (op, outcome)
        attrs = self._outcomes.get(key)
        if attrs is None:
            attrs = self._outcomes[key] = {
                **self._attrs,
                "db.operation.name": op,
                "session_repo.outcome": outcome,
            }
        self._duration.record(seconds, attrs)

    def failed(self, op: str, error_type: str, seconds: float) -> None:
        """Record a call that raised, by its ``error.type``."""
        attrs = {**self._attrs, "db.operation.name": op, "error.type": error_type}
        self._duration.record(seconds, attrs)

    def snapshot(self) -> SessionStoreMetrics | None:
        """The counters now (no I/O); for a repository without ``counters()``, the last read."""
        if isinstance(self._repo, Instrumented):
            return self._repo.counters()
        return self.last

    # -- what the metric reader calls (any thread; no I/O, never raises) ----

    def _counter(self, field: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            try:
                metrics = self.snapshot()
            except Exception:  # a collection never raises
                logger.exception("reading the counters for OpenTelemetry failed")
                return []
            return [] if metrics is None else [Observation(getattr(metrics, field), self._attrs)]

        return observe

    def _gauge(self, name: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if name == "sessions":  # once per collection: read the gauges for the next one
                self._request_refresh()
            try:
                now = self.snapshot()
            except Exception:
                logger.exception("reading the gauges for OpenTelemetry failed")
                return []
            last = self.last
            value: float | None = None  # not read yet
            if name == "fallback_active" and now is not None:
                value = int(now.fallback_active)
            elif name == "journal_entries" and now is not None:
                value = now.journal_entries
            elif last is not None:
                value = {
                    "sessions": last.sessions,
                    "expired_rows": last.expired,
                    "owners": last.owners,
                    "storage_bytes": last.storage_bytes,
                }[name]
            return [] if value is None else [Observation(value, self._attrs)]

        return observe

    def _request_refresh(self) -> None:
        loop = self.loop
        if loop is None or self._closed or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._start_refresh)

    def _start_refresh(self) -> None:
        if self._closed or (self._refreshing is not None and not self._refreshing.done()):
            return
        self._refreshing = asyncio.get_running_loop().create_task(
            self._refresh(), name="session-repo opentelemetry gauges"
        )

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                self.last = await self._repo.metrics()
        except RepositoryClosed:
            pass
        except Exception as exc:  # StorageError, TimeoutError: keep the last gauges
            logger.debug(
                "metrics refresh failed: %s",
                exc,
                extra={
                    "backend": self._attrs["session_repo.backend"],
                    "operation": "metrics",
                    "outcome": "error",
                },
            )

    async def close(self) -> None:
        """Read the gauges no more; a read under way is cancelled."""
        self._closed = True
        task, self._refreshing = self._refreshing, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.wait([task])
