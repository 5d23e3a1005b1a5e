"""``ResilientSessionRepository`` and leases: the healthy path, the fallback, write-back.

Driven through ``BreakableStore`` (tests/resilience/test_resilient.py): the real memory
storage under a ``StoreFront`` whose calls fail while told to. A real SQLite file
locked by another process is at the end.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from session_repo import (
    InvalidInput,
    Lease,
    ResilientSessionRepository,
    SessionRepository,
    SqlSessionRepository,
)
from session_repo.testing import FakeClock
from tests.resilience.test_resilient import (
    CORRUPT,
    DOWN,
    FAST,
    BreakableStore,
    healthy,
    journaled,
    wait_for,
)


@pytest.fixture
def store(fake_clock: FakeClock) -> BreakableStore:
    return BreakableStore(clock=fake_clock)


@pytest.fixture
async def repo(store: BreakableStore) -> Any:
    async with ResilientSessionRepository(store, **FAST) as wrapped:
        yield wrapped


async def degrade(repo: ResilientSessionRepository, store: BreakableStore) -> None:
    store.error = DOWN
    assert (await repo.health()).status == "degraded"


async def recover(repo: ResilientSessionRepository, store: BreakableStore) -> None:
    store.error = None
    await wait_for(lambda: healthy(repo))


async def bump_generations(store: BreakableStore, n: int = 50) -> None:
    """Move the primary's generation counter far from the fallback's."""
    for _ in range(n):
        await store.acquire("bump", "x")
        await store.delete("bump")


# -- healthy ---------------------------------------------------------------------


async def test_healthy_lease_calls_go_to_the_primary(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    assert isinstance(repo, SessionRepository)
    await bump_generations(store)
    lease = await repo.acquire("s1", "m1")
    held = await store.lease("s1")
    assert held is not None
    assert lease == held  # the primary's generation
    assert await repo.fallback.lease("s1") is None
    assert await repo.lease("s1") == held
    assert (await repo.acquire("s1", "m2")).owner == "m1"
    assert await repo.touch("s1", generation=lease.generation + 1) is False
    assert await repo.touch("s1", generation=lease.generation) is True
    assert await repo.delete("s1", generation=lease.generation + 1) is False
    assert await store.lookup("s1") == "m1"

    await repo.heartbeat("m1", 30)
    assert set(await store.owners()) == {"m1"}
    assert set(await repo.owners()) == {"m1"}
    assert (await repo.metrics()).owners == 1
    assert await repo.release("m1") == 1
    assert await store.lookup("s1") is None
    assert await store.owners() == {}
    metrics = await repo.metrics()
    assert (metrics.owners, metrics.errors, metrics.fallback_active) == (0, 0, False)


async def test_a_transient_error_on_a_lease_call_is_retried(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    store.fail_next = 2
    lease = await repo.acquire("s1", "m1")
    assert await store.lease("s1") == lease
    store.fail_next = 2
    await repo.heartbeat("m1", 30)
    assert "m1" in await store.owners()
    metrics = await repo.metrics()
    assert (metrics.retries, metrics.fallback_active) == (4, False)


# -- degraded --------------------------------------------------------------------


async def test_degraded_leases_come_from_the_fallback(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await bump_generations(store)
    primary_lease = await repo.acquire("s1", "m1")
    await degrade(repo, store)
    seeded = await repo.lease("s1")  # the warm session keeps routing
    assert seeded is not None
    assert seeded.owner == "m1"
    assert seeded == await repo.fallback.lease("s1")  # the fallback's own generation
    assert seeded.generation != primary_lease.generation
    # A token the primary issued is not the fallback's: refused, nothing written.
    assert await repo.touch("s1", generation=primary_lease.generation) is False
    assert await repo.delete("s1", generation=primary_lease.generation) is False
    assert await journaled(repo) == 0
    assert await repo.touch("s1", generation=seeded.generation) is True
    assert await journaled(repo) == 1

    won = await repo.acquire("s2", "m1")
    assert won == await repo.fallback.lease("s2")
    assert (await repo.acquire("s2", "m2")).owner == "m1"  # a loss: not journaled
    await repo.heartbeat("m1", 30)
    assert set(await repo.owners()) == {"m1"}
    metrics = await repo.metrics()
    assert (metrics.fallback_active, metrics.owners, metrics.journal_entries) == (True, 1, 3)


async def test_a_conditional_delete_is_journaled_only_if_it_acted(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.upsert("s1", "m1")
    await degrade(repo, store)
    lease = await repo.lease("s1")
    assert lease is not None
    assert await repo.delete("s1", generation=lease.generation + 1) is False
    assert await journaled(repo) == 0
    assert await repo.delete("s1", generation=lease.generation) is True
    assert await journaled(repo) == 1
    await recover(repo, store)
    assert await store.lookup("s1") is None  # written back as a plain delete


async def test_input_errors_raise_before_any_io_while_degraded(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    for degraded in (False, True):
        if degraded:
            store.error = CORRUPT
            await repo.heartbeat("m1", 30)
            assert (await repo.metrics()).fallback_active
        entries = await journaled(repo)  # (metrics read the primary while healthy)
        calls = store.calls
        with pytest.raises(TypeError):
            await repo.touch("s", generation="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await repo.delete("s", generation=True)
        with pytest.raises(InvalidInput):
            await repo.delete("s", generation=0)
        with pytest.raises(InvalidInput):
            await repo.heartbeat("m1", 0)
        with pytest.raises(InvalidInput):
            await repo.release("")
        with pytest.raises(InvalidInput):
            await repo.acquire("s", "m1", replacing="x y")
        with pytest.raises(InvalidInput):
            await repo.lease("bad\x00id")
        assert store.calls == calls
        assert repo.counters().journal_entries == entries


# -- write-back ------------------------------------------------------------------


async def test_outage_heartbeats_and_acquires_are_written_back(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await degrade(repo, store)
    await repo.heartbeat("m1", 10)
    won = await repo.acquire("s1", "m1")
    fake_clock.advance(5)
    await repo.heartbeat("m1", 30)  # folded: only the latest is written back
    assert await journaled(repo) == 2
    await recover(repo, store)
    ends = await store.owners()
    assert list(ends) == ["m1"]
    assert ends["m1"].timestamp() == pytest.approx(fake_clock.now() + 30, abs=0.01)
    lease = await store.lease("s1")
    assert lease is not None
    assert lease.owner == "m1"
    assert lease.expires_at == won.expires_at  # the claim, with its own expiry
    assert await repo.lease("s1") == lease  # after write-back the primary's generation counts


async def test_a_heartbeat_is_written_back_before_the_bindings(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    """The primary's heartbeat of m1 lapsed before the outage; m1 beat and acquired in
    the fallback. Written back claim first, the claim would be dead on arrival."""
    await repo.heartbeat("m1", 1)
    fake_clock.advance(2)
    await degrade(repo, store)
    await repo.heartbeat("m1", 30)
    await repo.acquire("s1", "m1")
    assert await repo.lookup("s1") == "m1"
    await recover(repo, store)
    assert await store.lookup("s1") == "m1"


async def test_an_owner_that_lapsed_on_the_primary_takes_its_sessions_back(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    """The outage outlasts m1's heartbeat on the primary while the fallback takes its
    renewals: its heartbeat comes back as a new incarnation there, and its sessions,
    dead there but alive as far as m1 was told, are claimed back (one was taken)."""
    await repo.heartbeat("m1", 10)
    await repo.acquire("s1", "m1")
    await repo.acquire("s2", "m1")
    await degrade(repo, store)
    for _ in range(4):
        fake_clock.advance(5)
        await repo.heartbeat("m1", 10)
    assert await repo.lookup("s1") == "m1"
    store.error = None
    assert (await store.acquire("s2", "m2")).owner == "m2"  # m1 is dead there
    await wait_for(lambda: healthy(repo))
    assert await store.lookup("s1") == "m1"
    assert await store.lookup("s2") == "m2"
    assert (await repo.metrics()).claims_lost == 1


async def test_a_heartbeat_that_lapsed_during_the_outage_is_not_written_back(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await repo.heartbeat("m1", 30)
    await repo.acquire("s1", "m1")
    await degrade(repo, store)
    await repo.heartbeat("m1", 1)  # shortened, then lapsed: s1 dies in the fallback
    fake_clock.advance(2)
    assert await repo.owners() == {}
    assert await repo.lookup("s1") is None
    await recover(repo, store)
    assert set(await store.owners()) == {"m1"}  # the primary's own heartbeat, untouched
    assert await store.lookup("s1") == "m1"


async def test_release_during_an_outage(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await repo.heartbeat("m1", 30)
    await repo.acquire("s1", "m1")
    await repo.acquire("s2", "m1")
    await repo.acquire("s3", "m2")
    await degrade(repo, store)
    assert await repo.release("m1") == 2  # the warm sessions, counted in the fallback
    assert await repo.lookup("s1") is None
    assert await repo.lookup("s3") == "m2"
    assert await repo.owners() == {}
    await repo.heartbeat("m1", 30)  # back after the release: written after it
    await repo.acquire("s4", "m1")
    await recover(repo, store)
    assert [await store.lookup(s) for s in ("s1", "s2", "s3", "s4")] == [None, None, "m2", "m1"]
    assert set(await store.owners()) == {"m1"}


async def test_a_released_owner_after_recovery_is_not_served_by_the_next_outage(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.acquire("s1", "m1")
    await repo.release("m1")
    await degrade(repo, store)
    assert await repo.lookup("s1") is None


# -- the warm cache never serves a dead owner ------------------------------------


async def test_an_owner_whose_heartbeat_lapsed_is_not_seeded(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await repo.heartbeat("m1", 5)
    await repo.acquire("s1", "m1")
    await repo.upsert("s2", "m2")  # never heartbeats: lives by its ttl
    fake_clock.advance(6)
    await degrade(repo, store)
    assert await repo.lookup("s1") is None
    assert await repo.lease("s1") is None
    assert await repo.lookup("s2") == "m2"
    assert (await repo.acquire("s1", "m3")).owner == "m3"


async def test_a_seeded_owner_dies_in_the_fallback_when_its_heartbeat_lapses(
    repo: ResilientSessionRepository, store: BreakableStore, fake_clock: FakeClock
) -> None:
    await repo.heartbeat("m1", 10)
    await repo.acquire("s1", "m1", ttl=600)
    await degrade(repo, store)
    assert await repo.lookup("s1") == "m1"
    fake_clock.advance(11)
    assert await repo.lookup("s1") is None


async def test_an_owner_the_primary_no_longer_lists_is_forgotten(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await repo.heartbeat("m1", 30)
    await repo.acquire("s1", "m1")
    await store.release("m1")  # another instance saw it go
    assert await repo.owners() == {}
    await degrade(repo, store)
    assert await repo.lookup("s1") is None


# -- cancellation ----------------------------------------------------------------


async def test_a_cancelled_lease_call_during_an_outage_raises_cancelled_error(
    store: BreakableStore,
) -> None:
    async def cancelled(call: Any) -> None:
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)

    async with ResilientSessionRepository(store, **{**FAST, "retry_delay": 1.0}) as repo:
        store.fail_next = 1  # the retry waits a second: cancelled while it waits
        await cancelled(repo.acquire("s1", "m1"))
        store.fail_next = 1
        await cancelled(repo.heartbeat("m1", 30))
        store.fail_next = 0
        await degrade(repo, store)
        await repo.acquire("s1", "m1")
        store.error, store.gate = None, asyncio.Event()
        await wait_for(lambda: asyncio.sleep(0, store.held == 1))  # s1's entry, being written
        await cancelled(repo.acquire("s1", "m2"))  # waits for that write
        await cancelled(repo.lease("s1"))
        store.gate.set()
        store.gate = None
        await wait_for(lambda: healthy(repo))
        assert await store.lookup("s1") == "m1"


# -- a real SQLite file, locked by another process -------------------------------

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.mark.slow
async def test_leases_through_a_locked_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    tuning = {"retry_count": 1, "retry_delay": 0.01, "probe_delay": 0.1, "probe_max_delay": 0.3}
    async with ResilientSessionRepository(
        SqlSessionRepository(url, busy_timeout=0.3), **tuning
    ) as repo:
        await repo.heartbeat("m1", 60)
        before = await repo.acquire("s1", "m1")
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), "2"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
            await repo.heartbeat("m1", 60)  # the lock holds it: served by the fallback
            assert (await repo.health()).status == "degraded"
            assert (await repo.lease("s1")) is not None
            won = await repo.acquire("s2", "m1")
            assert won.owner == "m1"
            assert await repo.release("m2") == 0
            await asyncio.to_thread(holder.wait, 10)
        finally:
            holder.kill()
            holder.wait()
        await wait_for(lambda: healthy(repo), timeout=10)
        after = await repo.lease("s1")
        assert after is not None
        assert after.generation == before.generation
    async with SqlSessionRepository(url) as fresh:
        assert set(await fresh.owners()) == {"m1"}
        s2 = await fresh.lease("s2")
        assert s2 is not None
        assert s2.owner == "m1"


# -- fencing tokens never cross between the stores -------------------------------


async def test_a_stale_primary_token_never_acts_on_the_fallback(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    stale = await repo.acquire("s1", "m1")  # generation 1 on a fresh primary
    assert (await store.acquire("s1", "m2", replacing="m1")).owner == "m2"
    assert await repo.lookup("s1") == "m2"  # warm: m2 holds it
    await degrade(repo, store)
    assert await repo.lookup("s1") == "m2"  # seeded: generation 1 of a fresh fallback
    assert await repo.delete("s1", generation=stale.generation) is False
    assert await repo.touch("s1", generation=stale.generation) is False
    assert await repo.lookup("s1") == "m2"
    assert await journaled(repo) == 0


async def test_a_fallback_token_never_acts_on_the_primary(
    repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await degrade(repo, store)
    ours = await repo.acquire("s1", "m1")  # generation 1 of a fresh fallback
    store.error = None
    theirs = await store.acquire("s1", "m2")  # another instance, meanwhile: generation 1 too
    assert theirs.generation == ours.generation
    await wait_for(lambda: healthy(repo))
    assert (await repo.metrics()).claims_lost == 1
    assert await repo.delete("s1", generation=ours.generation) is False
    assert await repo.touch("s1", generation=ours.generation) is False
    assert await repo.lease("s1") == theirs
    assert await repo.delete("s1", generation=ours.generation) is False  # still m2's, still refused
    assert await store.lookup("s1") == "m2"


# -- one call answered two ways: claim/acquire, lookup/lease ---------------------
#
# Each pair shares its served path (the tries after a failed first one, the fallback);
# what differs is what each answers and keeps. Pinned here per call, healthy and retried.

SERVED = ("claim", "acquire", "lookup", "lease")


def call_of(repo: ResilientSessionRepository, name: str) -> Callable[..., Awaitable[Any]]:
    """``repo``'s call ``name`` as ``call(session_id, alloc_id=..., **options)``."""
    if name in ("claim", "acquire"):
        return getattr(repo, name)  # type: ignore[no-any-return]
    read = getattr(repo, name)
    return lambda session_id, *_, **__: read(session_id)


def owner_of(answer: str | Lease | None) -> str | None:
    return answer.owner if isinstance(answer, Lease) else answer


@pytest.mark.parametrize("name", SERVED)
async def test_a_retried_or_degraded_call_keeps_its_own_name(
    name: str,
    repo: ResilientSessionRepository,
    store: BreakableStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="session_repo")
    call = call_of(repo, name)
    store.fail_next = 1
    await call("s1", "m1")
    latencies = {op: (t.count, t.failures) for op, t in repo.latencies().items() if op in SERVED}
    assert latencies == {name: (2, 1)}  # timed under its own name, the retry too
    takes = name in ("claim", "acquire")
    metrics = await repo.metrics()
    assert (metrics.claims, metrics.lookups, metrics.retries) == ((1, 0, 1) if takes else (0, 1, 1))
    store.error = DOWN
    await call("s1", "m1")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (warning.operation, warning.outcome) == (name, "degraded")  # type: ignore[attr-defined]
    fallback = {op for op in repo.fallback.latencies() if op in SERVED}
    assert fallback == ({name, "lookup"} if takes else {name})  # (a take reads the owner first)


@pytest.mark.parametrize("name", ["claim", "acquire"])
async def test_an_outage_take_of_ones_own_session_is_journaled_only_if_it_replaces_itself(
    name: str, repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    take = call_of(repo, name)
    assert owner_of(await take("s1", "m1")) == "m1"
    await degrade(repo, store)
    assert owner_of(await take("s1", "m1")) == "m1"  # seeded, already its own: no change
    assert await journaled(repo) == 0
    assert owner_of(await take("s1", "m1", replacing="m1")) == "m1"  # renewed: a write
    assert await journaled(repo) == 1
    assert owner_of(await take("s2", "m2")) == "m2"
    assert owner_of(await take("s2", "m1")) == "m2"  # lost: nothing to write back
    assert await journaled(repo) == 2


@pytest.mark.parametrize("retried", [False, True], ids=["healthy", "retried"])
@pytest.mark.parametrize("name", ["claim", "acquire"])
async def test_a_take_keeps_in_the_warm_cache_what_it_answered(
    name: str,
    retried: bool,
    repo: ResilientSessionRepository,
    store: BreakableStore,
    fake_clock: FakeClock,
) -> None:
    take = call_of(repo, name)

    async def taken(session_id: str, ttl: int = 600, replacing: str | None = None) -> Any:
        store.fail_next = 1 if retried else 0  # retried: answered on the served path
        return owner_of(await take(session_id, "me", ttl, replacing=replacing))

    assert await taken("kept", ttl=30) == "me"
    assert await taken("kept") == "me"  # already ours: the binding keeps its expiry
    assert await taken("renewed", ttl=30) == "me"
    assert await taken("renewed", replacing="me") == "me"
    await store.upsert("theirs", "other", ttl=30)
    assert await taken("theirs") == "other"
    assert (await repo.metrics()).retries == (5 if retried else 0)
    fake_clock.advance(31)
    store.error = DOWN
    # A claim's other winner comes with no expiry: kept for the default ttl, as a
    # lookup's answer is; an acquire's comes with its lease's.
    theirs = "other" if name == "claim" else None
    assert [await repo.lookup(s) for s in ("kept", "renewed", "theirs")] == [None, "me", theirs]


@pytest.mark.parametrize("retried", [False, True], ids=["healthy", "retried"])
@pytest.mark.parametrize("name", ["lookup", "lease"])
async def test_a_read_keeps_in_the_warm_cache_what_it_answered(
    name: str,
    retried: bool,
    repo: ResilientSessionRepository,
    store: BreakableStore,
    fake_clock: FakeClock,
) -> None:
    read = call_of(repo, name)

    async def owner(session_id: str) -> str | None:
        store.fail_next = 1 if retried else 0  # retried: answered on the served path
        return owner_of(await read(session_id))

    await store.upsert("short", "m1", ttl=30)  # another instance's, unknown here
    await store.upsert("long", "m1", ttl=60)
    await repo.upsert("gone", "m1")
    await store.delete("gone")  # behind this instance's back
    assert [await owner(s) for s in ("short", "long", "gone")] == ["m1", "m1", None]
    assert (await repo.metrics()).retries == (3 if retried else 0)
    fake_clock.advance(31)
    store.error = DOWN
    # A lookup's owner comes with no expiry: kept for the default ttl; a lease with its own.
    short = "m1" if name == "lookup" else None
    assert [await repo.lookup(s) for s in ("short", "long", "gone")] == [short, "m1", None]


@pytest.mark.parametrize("retried", [False, True], ids=["healthy", "retried"])
@pytest.mark.parametrize("name", SERVED)
async def test_only_a_lease_the_primary_answers_retires_a_fallback_token(
    name: str, retried: bool, repo: ResilientSessionRepository, store: BreakableStore
) -> None:
    await degrade(repo, store)
    ours = await repo.acquire("s1", "m1")  # generation 1 of a fresh fallback
    await recover(repo, store)  # written back: generation 1 of a fresh primary, m1's too
    assert await store.lease("s1") == ours
    assert await repo.touch("s1", generation=ours.generation) is False  # a fallback token
    store.fail_next = 1 if retried else 0
    assert owner_of(await call_of(repo, name)("s1", "m1")) == "m1"
    retired = name in ("acquire", "lease")  # it saw the generation: (1, m1) names this binding
    assert await repo.touch("s1", generation=ours.generation) is retired
