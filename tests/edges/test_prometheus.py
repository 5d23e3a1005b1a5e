"""The Prometheus collector, scraped for real: on the loop, over ASGI and HTTP, from a thread."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    make_asgi_app,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

from session_repo import MemorySessionRepository, SqlSessionRepository
from session_repo.prometheus import COUNTERS, SessionStoreCollector, register
from session_repo.testing import FakeClock


def live_sessions(registry: CollectorRegistry, labels: tuple[tuple[str, str], ...]) -> float | None:
    """The ``session_repo_sessions`` gauge a scrape shows now (from the last refresh)."""
    return samples(generate_latest(registry).decode()).get(("session_repo_sessions", labels))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_reports_every_counter_gauge_and_histogram(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/m.sqlite"
    async with SqlSessionRepository(url, clock=fake_clock, cleanup_interval=0) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry)
        await repo.upsert("a", "machine-a", ttl=1)
        await repo.upsert("b", "machine-a")
        assert await repo.lookup("a") == "machine-a"
        assert await repo.lookup("zzz") is None
        fake_clock.advance(1)
        await collector.refresh()
        text = generate_latest(registry).decode()
        await collector.close()

    found = samples(text)
    sqlite = (("backend", "sqlite"),)
    assert found[("session_repo_sessions", sqlite)] == 1
    assert found[("session_repo_expired_rows", sqlite)] == 1
    assert found[("session_repo_lookups_total", sqlite)] == 2
    assert found[("session_repo_hits_total", sqlite)] == 1
    assert found[("session_repo_upserts_total", sqlite)] == 2
    assert found[("session_repo_fallback_active", sqlite)] == 0
    assert found[("session_repo_storage_bytes", sqlite)] > 0
    for field in COUNTERS:
        assert (f"session_repo_{field}_total", sqlite) in found
    lookup = (("backend", "sqlite"), ("operation", "lookup"))
    assert found[("session_repo_operation_duration_seconds_count", lookup)] == 2
    assert found[("session_repo_operation_duration_seconds_sum", lookup)] > 0
    inf = tuple(sorted({"backend": "sqlite", "operation": "lookup", "le": "+Inf"}.items()))
    assert found[("session_repo_operation_duration_seconds_bucket", inf)] == 2
    assert all(name.startswith("session_repo_") for name, _ in found)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


MEMORY = (("backend", "memory"),)


async def test_a_scrape_on_the_loops_own_thread_shows_counters_live(
    fake_clock: FakeClock,
) -> None:
    async with MemorySessionRepository(clock=fake_clock) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry)
        await repo.upsert("a", "machine-a")
        assert await repo.lookup("a") == "machine-a"
        assert await repo.lookup("zzz") is None
        await repo.claim("c", "machine-b")
        await repo.touch("a")
        await repo.delete("c")
        # generate_latest called from a coroutine: no refresh() awaited first.
        found = samples(generate_latest(registry).decode())
        assert found[("session_repo_lookups_total", MEMORY)] == 2
        assert found[("session_repo_hits_total", MEMORY)] == 1
        assert found[("session_repo_misses_total", MEMORY)] == 1
        assert found[("session_repo_upserts_total", MEMORY)] == 1
        assert found[("session_repo_claims_total", MEMORY)] == 1
        assert found[("session_repo_touches_total", MEMORY)] == 1
        assert found[("session_repo_deletes_total", MEMORY)] == 1
        assert found[("session_repo_errors_total", MEMORY)] == 0
        assert found[("session_repo_retries_total", MEMORY)] == 0
        assert found[("session_repo_fallback_active", MEMORY)] == 0
        lookup = (("backend", "memory"), ("operation", "lookup"))
        assert found[("session_repo_operation_duration_seconds_count", lookup)] == 2
        await repo.upsert("b", "machine-a")  # live: the next scrape shows it at once
        found = samples(generate_latest(registry).decode())
        assert found[("session_repo_upserts_total", MEMORY)] == 2
        await collector.close()


async def test_the_asgi_app_mounted_in_the_app_shows_counters_live(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/m.sqlite"
    async with SqlSessionRepository(url, clock=fake_clock, cleanup_interval=0) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry, refresh_interval=0.05)
        metrics_app = make_asgi_app(registry)
        for n in range(3):
            await repo.upsert(f"s{n}", "machine-a")

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
            await metrics_app(scope, receive, send)
            assert sent[0]["status"] == 200
            return samples(sent[1]["body"].decode())

        sqlite = (("backend", "sqlite"),)
        assert (await scrape())[("session_repo_upserts_total", sqlite)] == 3
        # The gauges come from the background refresh, within its interval.
        await eventually(lambda: live_sessions(registry, sqlite) == 3)
        assert (await scrape())[("session_repo_sessions", sqlite)] == 3
        await repo.delete("s0")
        await eventually(lambda: live_sessions(registry, sqlite) == 2)
        found = await scrape()
        assert found[("session_repo_sessions", sqlite)] == 2
        assert found[("session_repo_deletes_total", sqlite)] == 1
        assert found[("session_repo_storage_bytes", sqlite)] > 0
        await collector.close()


async def test_the_factorys_wrapper_shows_counters_and_outage_figures_live(
    tmp_path: Path,
) -> None:
    from session_repo import SessionStoreConfig, create_session_repository

    config = SessionStoreConfig(url=f"sqlite+aiosqlite:///{tmp_path}/w.sqlite")
    async with create_session_repository(config) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry)
        await repo.upsert("a", "machine-a")
        assert await repo.lookup("a") == "machine-a"
        sqlite = (("backend", "sqlite"),)
        found = samples(generate_latest(registry).decode())
        assert found[("session_repo_upserts_total", sqlite)] == 1
        assert found[("session_repo_lookups_total", sqlite)] == 1
        assert found[("session_repo_claims_lost_total", sqlite)] == 0
        assert found[("session_repo_journal_dropped_total", sqlite)] == 0
        assert found[("session_repo_journal_entries", sqlite)] == 0
        await collector.close()


async def test_a_scrape_from_another_thread_shows_counters_live(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry, refresh_interval=0.05)
        for n in range(5):
            await repo.upsert(f"s{n}", "machine-a")
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        assert samples(text)[("session_repo_upserts_total", MEMORY)] == 5
        await repo.delete("s0")
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        assert samples(text)[("session_repo_deletes_total", MEMORY)] == 1

        def sessions() -> float | None:
            text = generate_latest(registry).decode()
            return samples(text).get(("session_repo_sessions", MEMORY))

        await eventually(lambda: sessions() == 4)
        await collector.close()


async def test_the_refresh_ends_with_the_repository_and_a_scrape_still_answers(
    fake_clock: FakeClock,
) -> None:
    repo = MemorySessionRepository(clock=fake_clock)
    registry = CollectorRegistry()
    register(repo, registry, refresh_interval=0.01)
    await repo.upsert("s", "machine-a")
    await eventually(lambda: live_sessions(registry, MEMORY) == 1)
    (task,) = [t for t in asyncio.all_tasks() if t.get_name().startswith("session-repo prom")]
    await repo.close()
    await asyncio.wait([task], timeout=5)
    assert task.done()
    found = samples((await asyncio.to_thread(generate_latest, registry)).decode())
    assert found[("session_repo_upserts_total", MEMORY)] == 1
    assert found[("session_repo_sessions", MEMORY)] == 1  # the last value read


async def test_scraped_over_http(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry)
        await repo.claim("s", "machine-a")
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        try:
            port = server.server_port
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            )
        finally:
            server.shutdown()
            thread.join(5)
            await collector.close()
    found = samples(body.decode())
    assert found[("session_repo_claims_total", (("backend", "memory"),))] == 1


def test_register_uses_the_default_registry() -> None:
    repo = MemorySessionRepository()
    collector = register(repo)
    try:
        assert isinstance(collector, SessionStoreCollector)
        # Never opened, no loop here: zero counters, no gauge read yet, nothing breaks.
        text = generate_latest(REGISTRY).decode()
        assert "session_repo_sessions" not in text
        assert samples(text)[("session_repo_lookups_total", MEMORY)] == 0
    finally:
        REGISTRY.unregister(collector)


async def test_the_owners_gauge_counts_live_heartbeats(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock) as repo:
        registry = CollectorRegistry()
        collector = register(repo, registry)
        await repo.heartbeat("machine-a", 10)
        await repo.heartbeat("machine-b", 20)
        await collector.refresh()
        assert samples(generate_latest(registry).decode())[("session_repo_owners", MEMORY)] == 2
        fake_clock.advance(10)  # machine-a's heartbeat lapses at exactly its end
        await collector.refresh()
        found = samples(generate_latest(registry).decode())
        assert found[("session_repo_owners", MEMORY)] == 1
        assert not any("generation" in name for name, _ in found)  # no per-session token
        await repo.release("machine-b")
        await collector.refresh()
        assert samples(generate_latest(registry).decode())[("session_repo_owners", MEMORY)] == 0
        await collector.close()
