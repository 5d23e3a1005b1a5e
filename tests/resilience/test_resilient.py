"""``ResilientSessionRepository``: retries, the fallback, the journal and write-back.

The wrapper's logic is driven here through ``BreakableStore``: the real memory
storage under a ``StoreFront``, whose calls raise a ``StorageError`` while told to (a fault
injector, as a failing driver would, after translation). Real databases being
broken for real are in tests/resilience/test_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from session_repo import (
    InvalidInput,
    MemorySessionRepository,
    NullSessionRepository,
    RedisSessionRepository,
    RepositoryClosed,
    ResilientSessionRepository,
    SessionRepository,
    SessionStoreConfig,
    SqlSessionRepository,
    StorageError,
    create_session_repository,
)
from session_repo.backends.base import Gauges, StoreFront
from session_repo.backends.memory import MemoryStorage
from session_repo.resilience.journal import WRITE_BACK_BATCH as BATCH
from session_repo.testing import FakeClock
from tests.paths import PROJECT_ROOT

FAST = {"retry_delay": 0.001, "probe_delay": 0.01, "probe_max_delay": 0.05}


class BreakableStorage(MemoryStorage):
    """The memory backend's storage, failing on demand as ``store`` says."""

    def __init__(self, store: BreakableStore) -> None:
        super().__init__(100_000)
        self.store = store

    async def upsert(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        await self.store.fault(write=True)
        await super().upsert(key, alloc_id, expires_at, now)

    async def lookup(self, key: bytes, now: int) -> str | None:
        await self.store.fault()
        return await super().lookup(key, now)

    async def claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        await self.store.fault(write=True)  # (the memory claim is its acquire: one fault)
        return (await MemoryStorage.acquire(self, key, alloc_id, expires_at, now, replacing)).owner

    async def acquire(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> Any:  # LeaseRow (not on a public path)
        await self.store.fault(write=True)
        return await super().acquire(key, alloc_id, expires_at, now, replacing)

    async def lease(self, key: bytes, now: int) -> Any:  # LeaseRow | None
        await self.store.fault()
        return await super().lease(key, now)

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        await self.store.fault(write=True)
        return await super().touch(key, expires_at, now, generation)

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        await self.store.fault(write=True)
        return await super().delete(key, now, generation)

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        await self.store.fault(write=True)
        await super().heartbeat(alloc_id, expires_at, now)

    async def release(self, alloc_id: str, now: int) -> int:
        await self.store.fault(write=True)
        return await super().release(alloc_id, now)

    async def owners(self, now: int) -> dict[str, int]:
        await self.store.fault()
        return await super().owners(now)

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        await self.store.fault(write=True)
        return await super().delete_owner(alloc_id, now)

    async def cleanup(self, now: int, batch: int) -> int:
        await self.store.fault()
        return await super().cleanup(now, batch)

    async def gauges(self, now: int) -> Gauges:
        await self.store.fault()
        return await super().gauges(now)

    async def ping(self) -> str:
        await self.store.fault()
        return await super().ping()


class BreakableStore(StoreFront):
    """A store on ``BreakableStorage``, with the knobs that break it.

    ``error`` fails every call while set; ``fail_next`` fails that many calls
    with a transient error; ``gate`` (an Event) holds every write until set;
    ``write_error`` fails writes only (reads still work).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(
            connect=self._open,
            backend="breakable",
            **{"default_ttl": 600, "clock": None, **options},
        )
        self.storage = BreakableStorage(self)
        self.error: StorageError | None = None
        self.fail_next = 0
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.held = 0
        self.write_error: StorageError | None = None

    async def _open(self, resources: contextlib.AsyncExitStack) -> BreakableStorage:
        return self.storage

    async def fault(self, *, write: bool = False) -> None:
        self.calls += 1
        if write and self.gate is not None:
            self.held += 1
            await self.gate.wait()
            self.held -= 1
        if write and self.write_error is not None:
            await asyncio.sleep(0.1)  # as a busy database does before giving up
            raise self.write_error
        if self.fail_next:
            self.fail_next -= 1
            raise StorageError("injected: connection reset", transient=True)
        if self.error is not None:
            raise self.error


DOWN = StorageError("injected: connection refused", transient=True)
CORRUPT = StorageError("injected: file is not a database", transient=False)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> float:
    """Poll until ``condition()`` holds; how long it took."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def healthy(repo: ResilientSessionRepository) -> bool:
    return (await repo.health()).status == "ok"


@pytest.fixture
def store(fake_clock: FakeClock) -> BreakableStore:
    return BreakableStore(clock=fake_clock)


@pytest.fixture
async def repo(store: BreakableStore) -> Any:
    async with ResilientSessionRepository(store, **FAST) as wrapped:
        yield wrapped


# -- healthy ---------------------------------------------------------------------


async def test_healthy_calls_go_to_the_primary(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    assert isinstance(repo, SessionRepository)
    assert repo.primary is store
    await repo.upsert("s1", "m1")
    assert await repo.claim("s1", "m2") == "m1"
    assert await repo.touch("s1") is True
    assert await store.lookup("s1") == "m1"  # written to the primary itself
    assert await repo.fallback.lookup("s1") is None
    assert await repo.delete("s1") is True
    metrics = await repo.metrics()
    assert (metrics.upserts, metrics.claims, metrics.touches, metrics.deletes) == (1, 1, 1, 1)
    assert metrics.fallback_active is False
    assert (await repo.health()).status == "ok"
    assert (await repo.health()).backend == "breakable"


async def test_a_transient_error_is_retried_and_counted(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.fail_next = 2  # three tries by default: the third succeeds
    await repo.upsert("s1", "m1")
    assert await store.lookup("s1") == "m1"
    metrics = await repo.metrics()
    assert (metrics.retries, metrics.errors, metrics.fallback_active) == (2, 2, False)


async def test_retries_back_off_exponentially_without_blocking(store: BreakableStore) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async with ResilientSessionRepository(store, retry_count=3, retry_delay=0.05) as repo:
        store.fail_next = 2
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        await repo.upsert("s1", "m1")
        waited = time.monotonic() - started
        task.cancel()
    # Waits: 0.05 then 0.1, each plus up to 0.05 of jitter.
    assert 0.15 <= waited < 1.0
    assert ticks >= 10  # the loop kept running while the call waited


async def test_a_permanent_error_degrades_at_once(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.error = CORRUPT
    await repo.upsert("s1", "m1")
    assert store.calls == 1  # no retry for a permanent error
    metrics = await repo.metrics()
    assert (metrics.retries, metrics.fallback_active) == (0, True)
    assert await repo.lookup("s1") == "m1"  # from the fallback


async def test_exhausted_retries_degrade_and_log_once(
    repo: ResilientSessionRepository, store: BreakableStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="session_repo")
    store.error = DOWN
    secrets = [f"secret-session-{i}" for i in range(20)]
    await asyncio.gather(*(repo.upsert(sid, "m1") for sid in secrets))
    assert store.calls <= 3 * len(secrets)
    health = await repo.health()
    assert health.status == "degraded"
    assert health.backend == "breakable"
    assert "20 writes to write back" in health.detail
    assert (await repo.metrics()).fallback_active is True
    for sid in secrets:
        assert await repo.lookup(sid) == "m1"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    record = warnings[0]
    assert record.name == "session_repo.resilience"
    assert (record.backend, record.operation, record.outcome) == ("breakable", "upsert", "degraded")  # type: ignore[attr-defined]

    store.error = None
    await wait_for(lambda: healthy(repo))
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert infos[0].outcome == "recovered"  # type: ignore[attr-defined]
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        assert "secret-session" not in text


async def test_health_notices_a_primary_that_is_down(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.error = DOWN
    health = await repo.health()
    assert health.status == "degraded"
    assert "connection refused" in health.detail
    store.error = None
    await wait_for(lambda: healthy(repo))


async def test_input_errors_raise_and_write_nothing(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    for degraded in (False, True):
        store.error = CORRUPT if degraded else None
        if degraded:
            await repo.upsert("trigger", "m1")
            assert (await repo.metrics()).fallback_active
        calls = store.calls
        with pytest.raises(InvalidInput):
            await repo.upsert("bad\x00id", "m1")
        with pytest.raises(InvalidInput):
            await repo.claim("s", "has space")
        with pytest.raises(InvalidInput):
            await repo.touch("s", ttl=0)
        with pytest.raises(TypeError):
            await repo.upsert("s", "m1", ttl=True)
        with pytest.raises(TypeError):
            await repo.delete(b"s")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            await repo.delete_owner("")
        with pytest.raises(InvalidInput):
            await repo.claim("s", "m1", replacing="x y")
        assert store.calls == calls
    assert (await repo.metrics()).journal_entries == 1  # only the valid write that degraded it


# -- write-back ------------------------------------------------------------------


async def journaled(repo: ResilientSessionRepository) -> int:
    return (await repo.metrics()).journal_entries


async def test_outage_writes_are_written_back_in_order(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.upsert("before-touched", "m1", ttl=10)
    await repo.upsert("before-deleted", "m1")
    await repo.upsert("owned-by-gone", "gone")
    store.error = DOWN
    await repo.upsert("rebound", "m1")
    await repo.delete("rebound")
    await repo.upsert("rebound", "m2")  # the last word: m2
    await repo.claim("claimed", "m3")
    assert await repo.touch("before-touched", ttl=500) is True  # warm: the fallback knows it
    assert await repo.delete("before-deleted") is True
    assert await repo.delete_owner("gone") == 1
    await repo.upsert("after-gone", "gone")  # after the delete_owner: stays
    assert await repo.touch("never-seen") is False  # changes nothing: not journaled
    assert await repo.delete("never-seen") is False
    # rebound, claimed, before-touched, before-deleted, owned-by-gone (cleared),
    # delete_owner(gone), after-gone
    assert await journaled(repo) == 7

    store.error = None
    await wait_for(lambda: healthy(repo))
    assert await journaled(repo) == 0
    assert await store.lookup("rebound") == "m2"
    assert await store.lookup("claimed") == "m3"
    assert await store.lookup("before-deleted") is None
    assert await store.lookup("owned-by-gone") is None
    assert await store.lookup("after-gone") == "gone"
    store.clock.advance(100)  # type: ignore[attr-defined]
    assert await store.lookup("before-touched") == "m1"  # the touch reached the primary
    assert repo.fallback.bindings() == []  # cleared on recovery
    assert (await repo.metrics()).fallback_active is False


async def test_a_hot_session_is_one_entry_and_one_write(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.error = DOWN
    await repo.upsert("hot", "m1")
    for _ in range(3000):
        assert await repo.touch("hot", ttl=60) is True
    assert await journaled(repo) == 1
    store.error = None
    calls = store.calls
    await wait_for(lambda: healthy(repo))
    # pings, plus a single write for 3,001 outage writes
    writes = store.calls - calls - (await repo.metrics()).lookups
    assert writes <= 10
    assert await store.lookup("hot") == "m1"


async def test_the_journal_is_bounded_and_says_what_it_dropped(
    store: BreakableStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="session_repo")
    async with ResilientSessionRepository(store, journal_max=3, **FAST) as repo:
        store.error = DOWN
        for i in range(5):
            await repo.upsert(f"s{i}", "m1")
        await repo.upsert("s0", "m2")  # folds into its entry: nothing more dropped
        metrics = await repo.metrics()
        assert (metrics.journal_entries, metrics.journal_dropped) == (3, 2)
        assert "2 outage writes were not kept" in (await repo.health()).detail
        assert [r.outcome for r in caplog.records] == ["full"]  # type: ignore[attr-defined]
        assert await repo.lookup("s4") == "m1"  # still served while degraded
        store.error = None
        await wait_for(lambda: healthy(repo))
        assert await store.lookup("s0") == "m2"
        assert await store.lookup("s4") is None  # the dropped write, as counted
        assert "2 outage writes were not kept" in (await repo.health()).detail


async def test_the_warm_fallback_still_routes_known_sessions(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.upsert("written", "m1")
    await store.upsert("seen", "m2")  # another instance wrote it; this one looked it up
    assert await repo.lookup("seen") == "m2"
    assert await repo.claim("claimed-elsewhere", "me") == "me"
    await store.upsert("claimed-elsewhere", "other")
    assert await repo.claim("claimed-elsewhere", "me") == "other"
    store.error = DOWN
    assert await repo.lookup("written") == "m1"
    assert await repo.lookup("seen") == "m2"
    assert await repo.claim("claimed-elsewhere", "me") == "other"  # the winner it was told
    assert await repo.lookup("unknown") is None
    assert await journaled(repo) == 0  # reads and lost claims write nothing back


async def test_an_answer_given_during_the_outage_is_never_contradicted(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await store.upsert("unseen", "m1", ttl=30)  # this instance never heard of it
    await store.upsert("unseen-2", "m1", ttl=30)
    store.error = DOWN
    assert await repo.touch("unseen", ttl=600) is False
    assert await repo.delete("unseen-2") is False
    store.error = None
    await wait_for(lambda: healthy(repo))
    fake_clock.advance(31)  # the touch answered False must not have extended it
    assert await store.lookup("unseen") is None
    fake_clock.set(fake_clock.now() - 31)
    assert await store.lookup("unseen-2") == "m1"  # the delete answered False deleted nothing


async def test_an_expired_outage_write_still_removes_what_it_replaced(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await repo.upsert("replaced", "old", ttl=600)
    store.error = DOWN
    await repo.upsert("replaced", "new", ttl=1)
    await repo.upsert("short", "m1", ttl=1)
    await repo.upsert("long", "m1", ttl=60)
    fake_clock.advance(2)
    store.error = None
    await wait_for(lambda: healthy(repo))
    assert await store.lookup("replaced") is None  # the old binding does not come back
    assert await store.lookup("short") is None
    assert await store.lookup("long") == "m1"


async def test_a_claim_that_lost_in_the_fallback_is_not_written_back(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    store.error = DOWN
    await repo.upsert("s", "m1", ttl=1)
    assert await repo.claim("s", "m2", ttl=60) == "m1"  # lost: m2 was told m1 owns it
    fake_clock.advance(2)  # m1's binding expires before the write-back
    store.error = None
    await wait_for(lambda: healthy(repo))
    assert await repo.lookup("s") is None  # not silently given to m2


async def test_a_binding_made_meanwhile_wins_and_the_loser_is_told(
    store: BreakableStore, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[tuple[str, str]] = []
    both_told = asyncio.Event()

    async def listener(ref: str, winner: str) -> None:
        told.append((ref, winner))
        if len(told) == 2:
            both_told.set()

    async def broken(ref: str, winner: str) -> None:
        raise RuntimeError("a listener's bug")

    async with ResilientSessionRepository(store, on_claim_lost=listener, **FAST) as repo:
        repo.add_claim_lost_listener(broken)
        repo.add_claim_lost_listener(listener)
        store.error = DOWN
        assert await repo.claim("contested", "this-instance") == "this-instance"
        assert await repo.lookup("contested") == "this-instance"
        store.error = None
        await store.claim("contested", "other-instance")  # another instance, on the primary
        await wait_for(lambda: healthy(repo))
        assert await repo.lookup("contested") == "other-instance"
        await asyncio.wait_for(both_told.wait(), 5)
        ref = told[0][0]
        assert told == [(ref, "other-instance")] * 2
        assert len(ref) == 12  # a log reference, not the id
        assert "contested" not in ref
        assert (await repo.metrics()).claims_lost == 1
    assert "a claim-lost listener failed" in caplog.text


async def test_an_entry_is_applied_once_even_when_its_batch_partly_fails(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.upsert("ours", "m1")
    store.error = DOWN
    assert await repo.delete("ours") is True
    await repo.upsert("fails-once", "m1")
    original = store.storage.upsert
    failed: list[bytes] = []

    async def first_fails(key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        if not failed:
            failed.append(key)
            raise StorageError("injected: deadlock", transient=True)
        await original(key, alloc_id, expires_at, now)

    deletes = 0
    original_claim = store.storage.claim

    async def counting_claim(
        key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str:
        nonlocal deletes
        deletes += alloc_id == "m1" and expires_at == now  # the conditional removal
        return await original_claim(key, alloc_id, expires_at, now, replacing)

    store.storage.upsert = first_fails  # type: ignore[method-assign]
    store.storage.claim = counting_claim  # type: ignore[method-assign]
    store.error = None
    await wait_for(lambda: asyncio.sleep(0, bool(failed)))
    # Between the two tries another instance claims the session this one deleted.
    assert await store.claim("ours", "other") == "other"
    await wait_for(lambda: healthy(repo))
    assert await store.lookup("ours") == "other"  # never deleted a second time
    assert await store.lookup("fails-once") == "m1"
    assert deletes == 1


async def test_a_session_with_nothing_to_write_back_uses_the_primary_meanwhile(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.error = DOWN
    sessions = BATCH + 44  # two batches: a full one, then 44
    for i in range(sessions):
        await repo.upsert(f"s{i}", "m1")
    store.error = None
    await wait_for(lambda: healthy(repo))  # warm-up: one full outage and write-back

    store.error = DOWN
    for i in range(sessions):
        await repo.upsert(f"s{i}", "m2")
    await repo.upsert("pending", "m2")
    store.gate = asyncio.Event()
    store.error = None
    await wait_for(lambda: asyncio.sleep(0, store.held == BATCH))  # the first batch, held
    waiting = asyncio.create_task(repo.upsert("s0", "m3"))  # its entry is being written
    await asyncio.sleep(0.02)
    assert not waiting.done()
    assert await repo.lookup("pending") == "m2"  # still journaled: served by the fallback
    await repo.upsert("pending", "m4")  # folds into its entry
    assert await journaled(repo) == sessions + 1  # a batch in flight, 45 waiting, no more
    store.gate.set()
    store.gate = None
    await waiting
    await wait_for(lambda: healthy(repo))
    assert await store.lookup("s0") == "m3"  # after its entry, never before
    assert await store.lookup(f"s{sessions - 1}") == "m2"
    assert await store.lookup("pending") == "m4"


async def test_a_store_that_reads_but_cannot_write_holds_no_writer(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.write_error = StorageError("injected: database is locked", transient=True)
    await repo.upsert("s0", "m1")  # pings still pass: every probe tries a write-back
    for i in range(1, 30):
        started = time.monotonic()
        await repo.upsert(f"s{i}", "m1")
        # A held writer would wait out a write-back try, which takes 0.1 s here.
        assert time.monotonic() - started < 0.09
        await asyncio.sleep(0.01)
    assert (await repo.metrics()).fallback_active is True
    store.write_error = None
    await wait_for(lambda: healthy(repo))
    assert await store.lookup("s29") == "m1"


async def test_a_failed_write_back_keeps_only_what_was_not_written(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.error = DOWN
    for i in range(5):
        await repo.upsert(f"s{i}", "m1")
    store.error = None
    store.fail_next = 3  # three more failures (probes or write-back), then it answers
    await wait_for(lambda: healthy(repo))
    for i in range(5):
        assert await store.lookup(f"s{i}") == "m1"

    store.error = DOWN
    for i in range(5):
        await repo.upsert(f"t{i}", "m2")

    # Let the ping pass, then fail every write after the first two, for good.
    original = store.storage.upsert
    written: list[bytes] = []

    async def third_fails(key: bytes, alloc_id: str, expires_at: int, now: int) -> None:
        if len(written) >= 2:
            raise CORRUPT
        written.append(key)
        await original(key, alloc_id, expires_at, now)

    store.storage.upsert = third_fails  # type: ignore[method-assign]
    store.error = None
    await asyncio.sleep(0.2)
    assert (await repo.health()).status == "degraded"
    assert len(written) == 2
    assert await journaled(repo) == 3  # the two written left the journal
    store.storage.upsert = original  # type: ignore[method-assign]
    await wait_for(lambda: healthy(repo))
    for i in range(5):
        assert await store.lookup(f"t{i}") == "m2"


async def test_degraded_lookups_and_metrics_come_from_the_fallback(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.upsert("old", "m1")
    store.error = DOWN
    await repo.upsert("new", "m2")
    assert await repo.lookup("old") == "m1"  # the warm cache: what the primary said
    assert await repo.lookup("new") == "m2"
    assert await repo.lookup("unknown") is None
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.fallback_active) == (2, True)
    assert (metrics.lookups, metrics.hits, metrics.misses) == (3, 2, 1)
    assert await repo.cleanup() == 0


async def test_metrics_never_raise_a_storage_error(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.upsert("s", "m")
    store.error = DOWN
    metrics = await repo.metrics()  # the primary cannot count: counters only
    assert (metrics.sessions, metrics.upserts, metrics.fallback_active) == (0, 1, False)
    assert metrics.errors == 1


# -- lifecycle -------------------------------------------------------------------


async def test_lazy_open_and_idempotent_close(store: BreakableStore) -> None:
    repo = ResilientSessionRepository(store, **FAST)
    await repo.upsert("s", "m")  # opens on first use
    assert await repo.lookup("s") == "m"
    store.error = DOWN
    await repo.upsert("t", "m")
    probes = [t for t in asyncio.all_tasks() if "probe" in t.get_name()]
    assert len(probes) == 1  # degraded: the primary is being probed
    await repo.close()
    await repo.close()
    assert probes[0].done()
    for closed in (store, repo.fallback):
        with pytest.raises(RepositoryClosed):
            await closed.lookup("s")
    for call in (repo.lookup("s"), repo.upsert("s", "m"), repo.metrics(), repo.health()):
        with pytest.raises(RepositoryClosed):
            await call


async def test_a_primary_down_at_start_degrades_and_recovers(store: BreakableStore) -> None:
    store.error = DOWN
    async with ResilientSessionRepository(store, **FAST) as repo:
        assert (await repo.health()).status == "degraded"
        await repo.upsert("s", "m")
        store.error = None
        await wait_for(lambda: healthy(repo))
        assert await store.lookup("s") == "m"


def test_arguments_are_checked(store: BreakableStore) -> None:
    with pytest.raises(TypeError, match="primary"):
        ResilientSessionRepository(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fallback"):
        ResilientSessionRepository(store, NullSessionRepository())
    with pytest.raises(TypeError, match="fallback"):
        ResilientSessionRepository(store, store)  # type: ignore[arg-type]
    memory = MemorySessionRepository()
    with pytest.raises(InvalidInput, match="itself"):
        ResilientSessionRepository(memory, memory)
    with pytest.raises(InvalidInput, match="retry_count"):
        ResilientSessionRepository(store, retry_count=0)
    with pytest.raises(TypeError, match="retry_delay"):
        ResilientSessionRepository(store, retry_delay="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="probe_delay"):
        ResilientSessionRepository(store, probe_delay=0)


async def test_default_fallback_shares_the_primary_clock(fake_clock: FakeClock) -> None:
    primary = BreakableStore(clock=fake_clock, default_ttl=5)
    async with ResilientSessionRepository(primary, **FAST) as repo:
        assert repo.fallback.clock is fake_clock
        primary.error = DOWN
        await repo.upsert("s", "m")  # default ttl: the primary's 5 s
        fake_clock.advance(4.999)
        assert await repo.lookup("s") == "m"
        fake_clock.advance(0.001)
        assert await repo.lookup("s") is None


# -- the factory -----------------------------------------------------------------


def test_factory_wraps_stores_that_can_fail(tmp_path: Path) -> None:
    config = SessionStoreConfig(
        url=f"sqlite+aiosqlite:///{tmp_path}/s.sqlite",
        retry_count=5,
        retry_delay=0.25,
        max_sessions=7,
    )
    repo = create_session_repository(config)
    assert isinstance(repo, ResilientSessionRepository)
    assert isinstance(repo.primary, SqlSessionRepository)
    assert (repo.retry_count, repo.retry_delay, repo.fallback.max_sessions) == (5, 0.25, 7)
    redis = create_session_repository(SessionStoreConfig(url="redis://127.0.0.1:6379/0"))
    assert isinstance(redis, ResilientSessionRepository)
    assert isinstance(redis.primary, RedisSessionRepository)


async def test_the_warm_cache_is_bounded_by_max_sessions(store: BreakableStore) -> None:
    async with ResilientSessionRepository(store, warm_sessions=2, **FAST) as repo:
        for sid in ("oldest", "older", "newest"):
            await repo.upsert(sid, "m1")
        store.error = DOWN
        assert await repo.lookup("oldest") is None  # out of the cache: unknown now
        assert await repo.lookup("older") == "m1"
        assert await repo.lookup("newest") == "m1"


async def test_the_warm_cache_lets_the_least_recently_changed_session_go_first(
    fake_clock: FakeClock,
) -> None:
    # A lookup that finds what the cache knows does not reorder it (that would cost
    # every healthy lookup a random memory write); a write, or a new owner, does.
    async def known_in_outage(
        *writes: Callable[[ResilientSessionRepository], Awaitable[Any]],
    ) -> list[str | None]:
        store = BreakableStore(clock=fake_clock)
        async with ResilientSessionRepository(store, warm_sessions=2, **FAST) as repo:
            await repo.upsert("first", "m1")
            await repo.upsert("second", "m1")
            for write in writes:
                await write(repo)
            await repo.upsert("third", "m1")  # over the bound: the oldest goes
            store.error = DOWN
            return [await repo.lookup(s) for s in ("first", "second", "third")]

    assert await known_in_outage(lambda r: r.lookup("first")) == [None, "m1", "m1"]
    assert await known_in_outage(lambda r: r.upsert("first", "m2")) == ["m2", None, "m1"]

    async def taken_elsewhere(repo: ResilientSessionRepository) -> None:
        await repo.primary.upsert("first", "m3")  # another instance took it
        assert await repo.lookup("first") == "m3"  # a new owner: kept as the newest

    assert await known_in_outage(taken_elsewhere) == ["m3", None, "m1"]


async def test_a_lookup_keeps_the_expiry_a_write_gave(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await repo.upsert("short", "m1", ttl=30)
    assert await repo.lookup("short") == "m1"  # no expiry in this answer: the write's stays
    await store.upsert("seen", "m1", ttl=30)
    assert await repo.lookup("seen") == "m1"  # unknown before: kept for the default ttl
    fake_clock.advance(31)
    store.error = DOWN
    assert await repo.lookup("short") is None
    assert await repo.lookup("seen") == "m1"


async def test_a_claim_of_ones_own_session_keeps_its_expiry_unless_it_replaces_itself(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    assert await repo.claim("kept", "me", ttl=30) == "me"
    assert await repo.claim("kept", "me", ttl=600) == "me"  # already ours: nothing changed
    assert await repo.claim("renewed", "me", ttl=30) == "me"
    assert await repo.claim("renewed", "me", ttl=600, replacing="me") == "me"
    fake_clock.advance(31)
    assert [await store.lookup(s) for s in ("kept", "renewed")] == [None, "me"]
    store.error = DOWN  # the warm fallback knows the same
    assert [await repo.lookup(s) for s in ("kept", "renewed")] == [None, "me"]


async def test_calls_after_close_raise_and_reach_no_store(store: BreakableStore) -> None:
    repo = ResilientSessionRepository(store, **FAST)
    await repo.upsert("s1", "m1")
    await repo.close()
    calls = store.calls
    for call in (
        repo.lookup("s1"),
        repo.upsert("s1", "m1"),
        repo.claim("s1", "m1"),
        repo.touch("s1"),
        repo.delete("s1"),
    ):
        with pytest.raises(RepositoryClosed):
            await call
    assert store.calls == calls


def test_factory_leaves_memory_null_and_no_fallback_unwrapped(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    assert isinstance(
        create_session_repository(SessionStoreConfig(url=url, fallback="none")),
        SqlSessionRepository,
    )
    assert isinstance(
        create_session_repository(SessionStoreConfig(url="memory://")), MemorySessionRepository
    )
    assert isinstance(
        create_session_repository(SessionStoreConfig(enabled=False)), NullSessionRepository
    )


async def test_a_delete_owner_orders_the_writes_around_it(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.error = DOWN
    await repo.upsert("a", "m1")
    await repo.upsert("b", "m1")
    await repo.upsert("a", "m2")  # folds into a's entry
    assert await repo.delete_owner("m1") == 1  # b
    await repo.upsert("c", "m1")  # after it: stays
    assert await journaled(repo) == 4  # a, b (cleared), the delete_owner, c
    store.error = None
    await wait_for(lambda: healthy(repo))
    assert [await store.lookup(s) for s in "abc"] == ["m2", None, "m1"]


async def test_a_cancelled_call_raises_cancelled_error(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    async def cancelled_while_held(call: Awaitable[None]) -> None:
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)

    store.gate = asyncio.Event()
    await cancelled_while_held(repo.upsert("s", "m1"))  # healthy: the primary holds it
    store.gate.set()
    store.error, store.gate, store.held = DOWN, None, 0  # (the cancelled write left held at 1)
    await repo.upsert("s", "m1")
    store.error, store.gate = None, asyncio.Event()
    await wait_for(lambda: asyncio.sleep(0, store.held == 1))  # s's entry, being written
    await cancelled_while_held(repo.upsert("s", "m2"))  # waits for that write
    store.gate.set()
    store.gate = None
    await wait_for(lambda: healthy(repo))
    assert await store.lookup("s") == "m1"


class SwallowingStorage(BreakableStorage):
    """A driver that swallows a cancellation while it pings (as redis-py has done)."""

    async def ping(self) -> str:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            return "swallowed"
        return "ok"


class SwallowingStore(BreakableStore):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.storage = SwallowingStorage(self)


async def test_a_cancellation_swallowed_beneath_is_raised_again(fake_clock: FakeClock) -> None:
    store = SwallowingStore(clock=fake_clock)
    async with ResilientSessionRepository(store, **FAST) as repo:
        polls = 0

        async def poll() -> None:
            nonlocal polls
            while True:
                polls += 1
                await repo.health()

        task = asyncio.create_task(poll())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        assert polls == 1


def test_the_reliability_page_example_runs() -> None:
    page = (PROJECT_ROOT / "docs" / "reliability.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # builds, opens nothing
    repo = namespace["repo"]
    assert isinstance(repo, ResilientSessionRepository)
    assert isinstance(repo.primary, SqlSessionRepository)
    assert isinstance(repo.fallback, MemorySessionRepository)
    assert (repo.retry_count, repo.retry_delay) == (3, 0.1)


async def test_the_backend_kit_example_runs() -> None:
    page = PROJECT_ROOT / "docs" / "reference" / "backend-kit.md"
    code = page.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    async with namespace["repo"] as repo:
        assert await repo.claim("s", "m1") == "m1"
        assert await repo.lookup("s") == "m1"
        assert (await repo.health()).backend == "mine"
