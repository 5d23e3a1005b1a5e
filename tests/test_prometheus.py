"""The Prometheus collector, scraped for real: from a registry, over HTTP, from another thread."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from session_repo import MemorySessionRepository, SqlSessionRepository
from session_repo.prometheus import COUNTERS, SessionStoreCollector, register
from session_repo.testing import FakeClock


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


async def test_a_scrape_from_another_thread_reads_a_fresh_snapshot(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock) as repo:
        registry = CollectorRegistry()
        register(repo, registry)  # created on this loop: scrapes ask it for a snapshot
        for n in range(5):
            await repo.upsert(f"s{n}", "machine-a")
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        assert samples(text)[("session_repo_sessions", (("backend", "memory"),))] == 5
        await repo.delete("s0")
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        assert samples(text)[("session_repo_sessions", (("backend", "memory"),))] == 4


async def test_scraped_over_http(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock) as repo:
        registry = CollectorRegistry()
        register(repo, registry)
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
    found = samples(body.decode())
    assert found[("session_repo_claims_total", (("backend", "memory"),))] == 1


def test_register_uses_the_default_registry() -> None:
    repo = MemorySessionRepository()
    collector = register(repo)
    try:
        assert isinstance(collector, SessionStoreCollector)
        # Never opened, no loop here: nothing to report yet, and nothing breaks.
        assert "session_repo_sessions" not in generate_latest(REGISTRY).decode()
    finally:
        REGISTRY.unregister(collector)
