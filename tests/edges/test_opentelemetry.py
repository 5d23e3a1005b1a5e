"""OpenTelemetry spans and metrics, with the real SDK, on the memory and SQLite backends."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from session_repo import (
    InvalidInput,
    MemorySessionRepository,
    RepositoryClosed,
    ResilientSessionRepository,
    SessionRepository,
    SqlSessionRepository,
    StorageError,
)
from session_repo.backends.sql.model import bindings
from session_repo.contract import session_ref
from session_repo.metrics import Instrumented
from session_repo.opentelemetry import OPERATIONS, TracedSessionRepository, instrument
from session_repo.opentelemetry.conventions import SQL_TABLE
from session_repo.testing import FakeClock

SECRET = "SECRET-session-7f3a9c"  # appears in no attribute, event or status, in full or part


class Telemetry:
    """An SDK tracer and meter provider of the test's own (never the global ones)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, repo: SessionRepository) -> TracedSessionRepository:
        return instrument(
            repo, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self) -> dict[str, list[Any]]:
        """Metric name -> its data points, collected now."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.shutdown()


@pytest.fixture(params=["memory", "sqlite"])
async def repo(
    request: pytest.FixtureRequest, tmp_path: Path, fake_clock: FakeClock
) -> AsyncIterator[SessionRepository]:
    if request.param == "memory":
        store: SessionRepository = MemorySessionRepository(clock=fake_clock)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/otel.sqlite"
        store = SqlSessionRepository(url, clock=fake_clock, cleanup_interval=0)
    yield store
    await store.close()


def the_secret_is_nowhere(spans: list[ReadableSpan], points: dict[str, list[Any]]) -> None:
    """No attribute, event or status of any span or data point holds the session id or a part."""
    parts = {SECRET, SECRET[:8], SECRET[-8:], "7f3a9c"}
    values: list[str] = []
    for span in spans:
        values.append(span.name)
        values.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        values.append(span.status.description or "")
        for event in span.events:
            values.append(event.name)
            values.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    for name, found in points.items():
        values.append(name)
        for point in found:
            values.extend(f"{k}={v}" for k, v in point.attributes.items())
    assert values, "nothing was recorded to check"
    leaked = [v for v in values if any(part in v for part in parts)]
    assert not leaked


async def test_each_operation_is_a_client_span_named_and_attributed_by_the_conventions(
    repo: SessionRepository, telemetry: Telemetry, fake_clock: FakeClock
) -> None:
    system = "memory" if isinstance(repo, MemorySessionRepository) else "sqlite"
    async with telemetry.instrument(repo) as traced:
        await traced.upsert(SECRET, "machine-a", ttl=10)
        assert await traced.lookup(SECRET) == "machine-a"
        assert await traced.lookup("unknown") is None
        assert await traced.claim("s2", "machine-b") == "machine-b"
        assert await traced.claim("s2", "machine-c") == "machine-b"
        assert await traced.touch(SECRET, ttl=1) is True
        assert await traced.delete("s2") is True
        await traced.upsert("s3", "machine-a", ttl=1)
        assert await traced.delete_owner("machine-b") == 0
        fake_clock.advance(2)
        assert await traced.cleanup() == 2

    spans = telemetry.finished()
    said = [(s.name, s.attributes.get("session_repo.outcome")) for s in spans if s.attributes]
    table = " session_bindings" if system == "sqlite" else ""
    assert said == [
        (f"upsert{table}", "ok"),
        (f"lookup{table}", "hit"),
        (f"lookup{table}", "miss"),
        (f"claim{table}", "won"),
        (f"claim{table}", "lost"),
        (f"touch{table}", "ok"),
        (f"delete{table}", "ok"),
        (f"upsert{table}", "ok"),
        (f"delete_owner{table}", "ok"),
        (f"cleanup{table}", "ok"),
    ]
    for span in spans:
        attrs = dict(span.attributes or {})
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert attrs["db.system.name"] == system
        assert attrs["db.operation.name"] == span.name.split()[0]
        assert attrs["session_repo.backend"] == system
        assert "error.type" not in attrs
        if system == "sqlite":
            assert attrs["db.collection.name"] == "session_bindings"
    refs = [s.attributes.get("session_repo.session.ref") for s in spans if s.attributes]
    assert refs[:2] == [session_ref(SECRET)] * 2
    assert refs[8:] == [None, None]  # delete_owner and cleanup name no session
    assert spans[-1].attributes is not None
    assert spans[-1].attributes["session_repo.removed"] == 2
    the_secret_is_nowhere(spans, telemetry.points())


async def test_metrics_are_the_duration_histogram_the_counters_and_the_gauges(
    repo: SessionRepository, telemetry: Telemetry
) -> None:
    system = "memory" if isinstance(repo, MemorySessionRepository) else "sqlite"
    async with telemetry.instrument(repo) as traced:
        await traced.upsert("a", "machine-a")
        await traced.upsert("b", "machine-a")
        assert await traced.lookup("a") == "machine-a"
        assert await traced.lookup("a") == "machine-a"
        assert await traced.lookup("nope") is None
        first = telemetry.points()  # asks for the gauges, read on the loop for the next one
        for _ in range(100):
            await asyncio.sleep(0.01)
            later = telemetry.points()
            if later.get("session_repo.sessions"):
                break
        counted = traced.counters()

    assert "session_repo.sessions" not in first  # not read before the first collection
    durations = {
        (p.attributes["db.operation.name"], p.attributes["session_repo.outcome"]): p
        for p in later["db.client.operation.duration"]
    }
    assert {k: p.count for k, p in durations.items()} == {
        ("upsert", "ok"): 2,
        ("lookup", "hit"): 2,
        ("lookup", "miss"): 1,
    }
    for point in durations.values():
        assert point.attributes["db.system.name"] == system
        assert 0 < point.sum < 5  # seconds, not milliseconds
    only = {name: points[0].value for name, points in later.items() if len(points) == 1}
    assert only["session_repo.lookups"] == counted.lookups == 3
    assert only["session_repo.hits"] == 2
    assert only["session_repo.misses"] == 1
    assert only["session_repo.upserts"] == 2
    assert only["session_repo.errors"] == 0
    assert only["session_repo.sessions"] == 2
    assert only["session_repo.fallback_active"] == 0
    assert later["session_repo.sessions"][0].attributes == {
        "db.system.name": system,
        "session_repo.backend": system,
    }


@pytest.fixture
async def sqlite_repo(tmp_path: Path) -> AsyncIterator[tuple[SqlSessionRepository, Path]]:
    path = tmp_path / "locked.sqlite"
    store = SqlSessionRepository(
        f"sqlite+aiosqlite:///{path}", cleanup_interval=0, busy_timeout=0.2
    )
    yield store, path
    await store.close()


async def test_a_storage_failure_is_an_error_span_and_an_error_duration(
    sqlite_repo: tuple[SqlSessionRepository, Path], telemetry: Telemetry
) -> None:
    store, path = sqlite_repo
    async with telemetry.instrument(store) as traced:
        await traced.upsert("a", "machine-a")
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            with pytest.raises(StorageError) as raised:
                await traced.upsert(SECRET, "machine-a")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert await traced.lookup("a") == "machine-a"  # and the next call is fine

    failed = telemetry.finished()[1]
    attrs = dict(failed.attributes or {})
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == str(raised.value) == "upsert failed: database is locked"
    assert attrs["error.type"] == "sqlite3.OperationalError"  # the error beneath, per the spec
    assert attrs["session_repo.transient"] is True
    assert "session_repo.outcome" not in attrs
    assert [e.name for e in failed.events] == ["exception"]
    points = telemetry.points()
    errors = [p for p in points["db.client.operation.duration"] if "error.type" in p.attributes]
    assert [(p.attributes["db.operation.name"], p.count) for p in errors] == [("upsert", 1)]
    assert errors[0].attributes["error.type"] == "sqlite3.OperationalError"
    the_secret_is_nowhere(telemetry.finished(), points)


async def test_a_call_on_a_closed_repository_is_an_error_span(
    repo: SessionRepository, telemetry: Telemetry
) -> None:
    traced = telemetry.instrument(repo)
    await traced.upsert(SECRET, "machine-a")
    await traced.close()
    with pytest.raises(RepositoryClosed):
        await traced.lookup(SECRET)

    span = telemetry.finished()[-1]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "session_repo.errors.RepositoryClosed"
    the_secret_is_nowhere(telemetry.finished(), telemetry.points())


async def test_bad_input_is_an_error_span_that_names_only_the_error_type(
    repo: SessionRepository, telemetry: Telemetry
) -> None:
    async with telemetry.instrument(repo) as traced:
        with pytest.raises(InvalidInput):
            await traced.upsert(SECRET + "\x00", "machine-a")
        with pytest.raises(TypeError):
            await traced.lookup(42)  # type: ignore[arg-type]

    bad, wrong = telemetry.finished()
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == "input: InvalidInput"
    assert bad.attributes is not None
    assert "session_repo.session.ref" not in bad.attributes
    assert not bad.events  # no exception event: its message is the caller's input
    assert wrong.attributes is not None
    assert wrong.attributes["error.type"] == "TypeError"
    the_secret_is_nowhere(telemetry.finished(), telemetry.points())


async def test_a_cancellation_reaches_the_caller_and_ends_the_span(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    path = tmp_path / "slow.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    async with telemetry.instrument(
        SqlSessionRepository(url, cleanup_interval=0, busy_timeout=10)
    ) as traced:
        await traced.upsert("a", "machine-a")
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            task = asyncio.create_task(traced.upsert("b", "machine-b"))
            await asyncio.sleep(0.2)  # waiting for the lock, up to 10 s
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            assert task.cancelled()
        finally:
            locker.execute("ROLLBACK")
            locker.close()

    span = telemetry.finished()[1]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "cancelled"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "asyncio.exceptions.CancelledError"


async def test_with_no_sdk_the_operations_are_the_repositorys_own_and_nothing_is_recorded(
    fake_clock: FakeClock, telemetry: Telemetry
) -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global TracerProvider was set in this process")
    if type(otel_metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider":
        pytest.skip("a global MeterProvider was set in this process")
    store = MemorySessionRepository(clock=fake_clock)
    async with instrument(store) as traced:  # the global (proxy) providers
        for op in OPERATIONS:
            assert getattr(traced, op) == getattr(store, op)  # the same bound method
        await traced.upsert("a", "machine-a")
        assert await traced.lookup("a") == "machine-a"
        assert await traced.claim("a", "machine-b") == "machine-a"
        assert (await traced.metrics()).lookups == 1
        assert (await traced.health()).status == "ok"
    assert telemetry.finished() == []  # an SDK not made global sees none of it
    assert "db.client.operation.duration" not in telemetry.points()


def test_an_sdk_configured_after_instrument_is_used_from_the_next_open() -> None:
    script = textwrap.dedent(
        """
        import asyncio, json
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from session_repo import MemorySessionRepository
        from session_repo.opentelemetry import instrument

        traced = instrument(MemorySessionRepository())  # no SDK yet
        before = "lookup" in vars(traced)
        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

        async def main():
            async with traced:
                await traced.lookup("a")
            points = [
                m.name
                for r in reader.get_metrics_data().resource_metrics
                for s in r.scope_metrics
                for m in s.metrics
            ]
            return [s.name for s in exporter.get_finished_spans()], points

        spans, points = asyncio.run(main())
        print(json.dumps({"before": before, "spans": spans, "points": points}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(out.stdout)
    assert found["before"] is True
    assert found["spans"] == ["lookup"]
    assert "db.client.operation.duration" in found["points"]
    assert "session_repo.lookups" in found["points"]


async def test_a_resilient_repository_is_instrumented_and_its_parts_reachable(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    primary = SqlSessionRepository(f"sqlite+aiosqlite:///{tmp_path}/r.sqlite", cleanup_interval=0)
    async with telemetry.instrument(ResilientSessionRepository(primary)) as traced:
        await traced.upsert("a", "machine-a")
        assert traced.primary is primary  # the wrapped one's attributes, forwarded
        assert isinstance(traced, Instrumented)  # so Prometheus exports it too
        assert traced.backend == "sqlite"
        assert traced.latencies()["upsert"].count == 1
    span = telemetry.finished()[0]
    assert span.name == "upsert session_bindings"
    assert span.attributes is not None
    assert span.attributes["db.system.name"] == "sqlite"


def test_the_span_target_is_the_sql_backends_table() -> None:
    assert bindings.name == SQL_TABLE == "session_bindings"
    with pytest.raises(TypeError):
        instrument(object())  # type: ignore[arg-type]


async def test_the_overhead_benchmark_runs() -> None:
    from benchmarks.otel_overhead import SUBJECTS, ops_per_second

    found = await ops_per_second(SUBJECTS, 0.05, 1)
    assert set(found) == {"bare", "no-sdk", "sdk"}
    assert all(ops > 0 for ops in found.values())


async def test_the_lease_operations_are_spans_with_their_outcomes_and_the_owners_gauge(
    repo: SessionRepository, telemetry: Telemetry, fake_clock: FakeClock
) -> None:
    system = "memory" if isinstance(repo, MemorySessionRepository) else "sqlite"
    async with telemetry.instrument(repo) as traced:
        assert isinstance(traced, SessionRepository)
        await repo.heartbeat("machine-z", 20)  # not traced: the wrapped repository's own
        await traced.heartbeat("machine-a", 10)
        won = await traced.acquire(SECRET, "machine-a", 60)
        lost = await traced.acquire(SECRET, "machine-b")
        assert (won.owner, lost) == ("machine-a", won)
        assert await traced.lease(SECRET) == won
        assert await traced.lease("unknown") is None
        assert await traced.touch(SECRET, 30, generation=won.generation + 1) is False
        assert await traced.touch(SECRET, 30, generation=won.generation) is True
        assert await traced.delete(SECRET, generation=won.generation + 1) is False
        assert set(await traced.owners()) == {"machine-a", "machine-z"}
        await traced.metrics()  # the gauges exported are these from now on
        gauges = telemetry.points()
        assert await traced.release("machine-a") == 1
        fake_clock.advance(1)

    spans = telemetry.finished()
    said = [
        (s.name.split()[0], s.attributes.get("session_repo.outcome")) for s in spans if s.attributes
    ]
    assert said == [
        ("heartbeat", "ok"),
        ("acquire", "won"),
        ("acquire", "lost"),
        ("lease", "hit"),
        ("lease", "miss"),
        ("touch", "miss"),
        ("touch", "ok"),
        ("delete", "miss"),
        ("owners", "ok"),
        ("release", "ok"),
    ]
    for span in spans:
        attrs = dict(span.attributes or {})
        assert span.kind is SpanKind.CLIENT
        assert attrs["db.system.name"] == system
        assert attrs["db.operation.name"] == span.name.split()[0]
    refs = [s.attributes.get("session_repo.session.ref") for s in spans if s.attributes]
    secret, unknown = session_ref(SECRET), session_ref("unknown")
    assert refs[1:8] == [secret, secret, secret, unknown, secret, secret, secret]
    assert refs[0] is refs[8] is refs[9] is None  # heartbeat, owners, release: no session
    assert spans[-1].attributes is not None
    assert spans[-1].attributes["session_repo.removed"] == 1
    assert [p.value for p in gauges["session_repo.owners"]] == [2]  # 1 session, 2 owners
    durations = {
        (p.attributes["db.operation.name"], p.attributes["session_repo.outcome"])
        for p in telemetry.points()["db.client.operation.duration"]
    }
    assert {("acquire", "won"), ("acquire", "lost"), ("heartbeat", "ok")} <= durations
    the_secret_is_nowhere(spans, telemetry.points())
