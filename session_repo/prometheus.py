"""Prometheus export (extra ``[prometheus]``): ``SessionStoreCollector`` and ``register``.

A scrape reads the repository's ``metrics()``. Scrapes usually run on
prometheus_client's own thread, while the repository lives on an event loop: the
collector remembers the loop it was created on and asks it for a fresh snapshot,
waiting at most ``timeout`` seconds. Called on that loop itself (an ASGI
``/metrics`` route), it cannot wait: ``await collector.refresh()`` first, and it
serves that snapshot. Every metric name starts ``session_repo_``; every sample is
labelled with the ``backend``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from session_repo.metrics import LATENCY_BUCKETS, Latency, SessionStoreMetrics
from session_repo.repository import SessionRepository

__all__ = ["COUNTERS", "SessionStoreCollector", "register"]

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
}


class SessionStoreCollector(Collector):
    """A prometheus_client collector for one repository."""

    def __init__(self, repository: SessionRepository, *, timeout: float = 5.0) -> None:
        self._repository = repository
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        with contextlib.suppress(RuntimeError):  # created outside a loop: refresh() finds one
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        self._last: SessionStoreMetrics | None = None
        primary = getattr(repository, "primary", repository)
        self._backend = str(getattr(primary, "backend", type(repository).__name__))

    async def refresh(self) -> SessionStoreMetrics:
        """Take a snapshot now (on the repository's loop); scrapes serve it until the next."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._last = await self._repository.metrics()
        return self._last

    def _snapshot(self) -> SessionStoreMetrics | None:
        loop = self._loop
        on_loop_thread = self._loop_thread == threading.get_ident()
        if loop is None or loop.is_closed() or not loop.is_running() or on_loop_thread:
            return self._last
        future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
        try:
            return future.result(self._timeout)
        except (concurrent.futures.TimeoutError, Exception):
            future.cancel()
            return self._last

    def collect(self) -> Iterator[Any]:
        metrics = self._snapshot()
        if metrics is None:
            return
        backend = [self._backend]

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"session_repo_{name}", help_text, labels=["backend"])
            family.add_metric(backend, value)
            return family

        yield gauge("sessions", "Live bindings.", metrics.sessions)
        yield gauge("expired_rows", "Expired rows not yet cleaned up.", metrics.expired)
        yield gauge(
            "fallback_active", "1 while serving from the fallback store.", metrics.fallback_active
        )
        if metrics.storage_bytes is not None:
            yield gauge("storage_bytes", "Bytes the store uses.", metrics.storage_bytes)
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
        latencies = getattr(self._repository, "latencies", None)
        if latencies is None:
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
        snapshot: dict[str, Latency] = latencies()
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
    repository: SessionRepository, registry: CollectorRegistry | None = None
) -> SessionStoreCollector:
    """Register a collector for ``repository`` (the default registry when None)."""
    collector = SessionStoreCollector(repository)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
