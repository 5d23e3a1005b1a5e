"""Prometheus export (extra ``[prometheus]``): ``SessionStoreCollector`` and ``register``.

A scrape never waits for the store. Counters and latencies live in the process:
the collector reads them with the repository's ``counters()`` and
``latencies()``, which do no I/O, so a scrape shows them live from any thread,
the event loop's own included (``make_asgi_app()`` mounted in the app). The
gauges that need I/O (sessions, expired rows, owners with a live heartbeat,
storage bytes) are read by a background task on the repository's loop every
``refresh_interval`` seconds, and a scrape serves the last value read. The task
starts when the collector is created (or first scraped, or refreshed) on a running
loop, and ends when the repository is closed or ``close()`` is awaited. Every
metric name starts ``session_repo_``; every sample is labelled with the ``backend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from session_repo.contract import SessionRepository
from session_repo.errors import RepositoryClosed
from session_repo.metrics import LATENCY_BUCKETS, Instrumented, SessionStoreMetrics

__all__ = ["COUNTERS", "LiveCounters", "SessionStoreCollector", "register"]

logger = logging.getLogger("session_repo")

# SessionStoreMetrics counter field -> help text (exported as session_repo_<field>_total).
COUNTERS = {
    "lookups": "Lookups answered.",
    "hits": "Lookups that found a live binding.",
    "misses": "Lookups that found none.",
    "upserts": "Bindings written by upsert.",
    "claims": "Claims decided.",
    "touches": "Touch calls.",
    "deletes": "Bindings removed by delete and delete_owner.",
    "cleaned": "Expired rows removed by cleanup.",
    "errors": "Storage errors met (including those a fallback absorbed).",
    "retries": "Retries of transient storage errors.",
    "claims_lost": "Claims granted during an outage that lost on write-back.",
    "journal_dropped": "Outage writes a full journal could not keep for write-back.",
}


LiveCounters = Instrumented
"""The old name of ``session_repo.metrics.Instrumented``."""


class SessionStoreCollector(Collector):
    """A prometheus_client collector for one repository.

    Args:
        repository: the repository to export.
        timeout: how long one background read of the gauges may take (seconds).
        refresh_interval: seconds between background reads of the gauges.

    Raises:
        TypeError: ``timeout`` or ``refresh_interval`` is not a number.
        ValueError: ``timeout`` or ``refresh_interval`` is not finite and > 0.
    """

    def __init__(
        self,
        repository: SessionRepository,
        *,
        timeout: float = 5.0,
        refresh_interval: float = 15.0,
    ) -> None:
        for name, value in (("timeout", timeout), ("refresh_interval", refresh_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be finite and > 0 seconds")
        self._repository = repository
        self._timeout = float(timeout)
        self._interval = float(refresh_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._last: SessionStoreMetrics | None = None
        self._backend = (
            repository.backend
            if isinstance(repository, Instrumented)
            else type(repository).__name__
        )
        with contextlib.suppress(RuntimeError):  # no loop here: the first scrape on one starts it
            self._start(asyncio.get_running_loop())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the background refresh on ``loop`` (on that loop's thread)."""
        self._loop = loop
        if self._task is None and not self._stopped and not loop.is_closed():
            self._task = loop.create_task(
                self._refresh_loop(), name=f"session-repo prometheus ({self._backend})"
            )

    async def refresh(self) -> SessionStoreMetrics:
        """Read the gauges now (on the repository's loop); scrapes serve them until the next.

        Returns:
            The repository's full metrics, as read.
        """
        self._start(asyncio.get_running_loop())
        self._last = await self._repository.metrics()
        return self._last

    async def _refresh_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    await self.refresh()
            except RepositoryClosed:
                return
            except Exception as exc:  # StorageError, TimeoutError: keep the last gauges
                logger.debug(
                    "metrics refresh failed: %s",
                    exc,
                    extra={"backend": self._backend, "operation": "metrics", "outcome": "error"},
                )
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """Stop the background refresh (it also stops once the repository is closed)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.wait([task])

    def _live(self) -> SessionStoreMetrics | None:
        """Counters now (gauges from the last refresh), or None when nothing is known."""
        if self._task is None and not self._stopped:
            with contextlib.suppress(RuntimeError):  # a scrape on the loop's own thread
                self._start(asyncio.get_running_loop())
        if isinstance(self._repository, Instrumented):
            return self._repository.counters()
        return self._last  # a repository without counters(): its last full snapshot

    def collect(self) -> Iterator[Any]:
        """Yield the metric families for a scrape; never raises and does no I/O.

        Yields:
            The families: counters and latencies live, gauges as last refreshed.
        """
        try:
            metrics = self._live()
        except Exception:  # a scrape never raises
            logger.exception("reading the counters for a scrape failed")
            return
        if metrics is None:
            return
        backend = [self._backend]

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"session_repo_{name}", help_text, labels=["backend"])
            family.add_metric(backend, value)
            return family

        last = self._last
        if last is not None:
            yield gauge("sessions", "Live bindings.", last.sessions)
            yield gauge("expired_rows", "Expired rows not yet cleaned up.", last.expired)
            yield gauge("owners", "Owners with a live heartbeat.", last.owners)
            if last.storage_bytes is not None:
                yield gauge("storage_bytes", "Bytes the store uses.", last.storage_bytes)
        yield gauge(
            "fallback_active", "1 while serving from the fallback store.", metrics.fallback_active
        )
        yield gauge(
            "journal_entries", "Outage writes waiting to be written back.", metrics.journal_entries
        )
        if metrics.last_cleanup_at is not None:
            yield gauge(
                "last_cleanup_timestamp_seconds",
                "When cleanup last ran (clock seconds).",
                metrics.last_cleanup_at.timestamp(),
            )
        for field, help_text in COUNTERS.items():
            family = CounterMetricFamily(f"session_repo_{field}", help_text, labels=["backend"])
            family.add_metric(backend, getattr(metrics, field))
            yield family
        yield from self._latency()

    def _latency(self) -> Iterator[Any]:
        if not isinstance(self._repository, Instrumented):
            return
        histogram = HistogramMetricFamily(
            "session_repo_operation_duration_seconds",
            "Time a repository operation took, failures included.",
            labels=["backend", "operation"],
        )
        failures = CounterMetricFamily(
            "session_repo_operation_failures",
            "Repository operations that met a storage error.",
            labels=["backend", "operation"],
        )
        snapshot = self._repository.latencies()
        for operation, latency in sorted(snapshot.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*LATENCY_BUCKETS, float("inf")], latency.counts, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            labels = [self._backend, operation]
            histogram.add_metric(labels, buckets, latency.total)
            failures.add_metric(labels, latency.failures)
        yield histogram
        yield failures


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def register(
    repository: SessionRepository,
    registry: CollectorRegistry | None = None,
    *,
    refresh_interval: float = 15.0,
) -> SessionStoreCollector:
    """Register a collector for ``repository`` (the default registry when None).

    Args:
        repository: the repository to export.
        registry: where to register; prometheus_client's default ``REGISTRY`` when None.
        refresh_interval: seconds between background reads of the gauges.

    Returns:
        The registered collector; await its ``close()`` to stop its background task.
    """
    collector = SessionStoreCollector(repository, refresh_interval=refresh_interval)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
