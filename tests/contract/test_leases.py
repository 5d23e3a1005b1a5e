"""Leases, once, against every backend: generations, conditional ops, heartbeats.

The rules are the contract's "Leases" section. Boundaries are checked on the fake
clock (a heartbeat lapses at exactly its end, as a binding does); the real-time
cases at the end run on every backend, Redis included, whose keys expire by the
server's own clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from session_repo import InvalidInput, Lease, SessionRepository, SystemClock
from session_repo.testing import FakeClock
from session_repo.testing.plugin import FAKE_CLOCK_START as T0
from tests.conftest import BACKENDS, RepoFactory, backend_params
from tests.contract.test_contract import just_before

SID = "lease-session-1"


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# -- acquire and lease -------------------------------------------------------


async def test_acquire_answers_the_winners_lease(repo: SessionRepository) -> None:
    won = await repo.acquire(SID, "machine-a", 30)
    assert isinstance(won, Lease)
    assert won.owner == "machine-a"
    assert won.generation >= 1
    assert won.expires_at == at(T0 + 30)
    assert await repo.lease(SID) == won
    assert await repo.lookup(SID) == "machine-a"


async def test_a_losing_acquire_sees_the_holder_and_changes_nothing(
    repo: SessionRepository,
) -> None:
    held = await repo.acquire(SID, "machine-a", 30)
    lost = await repo.acquire(SID, "machine-b", 90)
    assert lost == held
    assert await repo.lease(SID) == held


async def test_the_same_owner_keeps_its_generation(repo: SessionRepository) -> None:
    first = await repo.acquire(SID, "machine-a", 30)
    assert (await repo.acquire(SID, "machine-a", 60)).generation == first.generation
    await repo.upsert(SID, "machine-a", 60)
    assert await repo.touch(SID, 90)
    again = await repo.acquire(SID, "machine-a", 30, replacing="machine-a")
    assert again.generation == first.generation
    lease = await repo.lease(SID)
    assert lease is not None
    assert lease.generation == first.generation


async def test_a_new_owner_gets_a_greater_generation(repo: SessionRepository) -> None:
    first = await repo.acquire(SID, "machine-a", 30)
    taken = await repo.acquire(SID, "machine-b", 30, replacing="machine-a")
    assert taken.owner == "machine-b"
    assert taken.generation > first.generation
    await repo.upsert(SID, "machine-c")
    third = await repo.lease(SID)
    assert third is not None
    assert third.owner == "machine-c"
    assert third.generation > taken.generation


async def test_claim_and_lookup_agree_with_leases(repo: SessionRepository) -> None:
    assert await repo.claim(SID, "machine-a") == "machine-a"
    assert await repo.claim(SID, "machine-b") == "machine-a"
    lease = await repo.lease(SID)
    assert lease is not None
    assert lease.owner == "machine-a"
    assert await repo.lease("no-such-session") is None


async def test_generations_keep_rising_across_deletes(repo: SessionRepository) -> None:
    seen = []
    for owner in ("machine-a", "machine-a", "machine-b", "machine-a"):
        seen.append((await repo.acquire(SID, owner)).generation)
        assert await repo.delete(SID)
    assert seen == sorted(set(seen)), seen


async def test_generations_keep_rising_across_expiry_and_cleanup(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    first = await repo.acquire(SID, "machine-a", 10)
    expiry_clock.set(T0 + 10)
    assert await repo.lease(SID) is None
    again = await repo.acquire(SID, "machine-a", 10)
    assert again.generation > first.generation  # bound anew, even by the same owner
    expiry_clock.set(T0 + 20)
    assert await repo.cleanup() >= 1
    third = await repo.acquire(SID, "machine-a", 10)
    assert third.generation > again.generation


# -- conditional touch and delete --------------------------------------------


async def test_touch_with_the_live_generation_extends(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    lease = await repo.acquire(SID, "machine-a", 10)
    assert await repo.touch(SID, 60, generation=lease.generation)
    just_before(expiry_clock, T0 + 60)
    assert await repo.lookup(SID) == "machine-a"


async def test_touch_with_a_stale_generation_changes_nothing(repo: SessionRepository) -> None:
    old = await repo.acquire(SID, "machine-a", 10)
    new = await repo.acquire(SID, "machine-b", 10, replacing="machine-a")
    assert not await repo.touch(SID, 600, generation=old.generation)
    assert await repo.lease(SID) == new
    assert not await repo.touch("no-such-session", 600, generation=new.generation)


async def test_delete_with_a_stale_generation_keeps_the_binding(repo: SessionRepository) -> None:
    old = await repo.acquire(SID, "machine-a")
    new = await repo.acquire(SID, "machine-b", replacing="machine-a")
    assert not await repo.delete(SID, generation=old.generation)
    assert await repo.lease(SID) == new
    assert await repo.delete(SID, generation=new.generation)
    assert await repo.lease(SID) is None
    assert not await repo.delete(SID, generation=new.generation)


@pytest.mark.parametrize("bad", [True, "1", 1.0])
async def test_a_generation_of_the_wrong_type_is_refused(
    repo: SessionRepository, bad: object
) -> None:
    await repo.upsert(SID, "machine-a")
    with pytest.raises(TypeError, match="generation"):
        await repo.touch(SID, 600, generation=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generation"):
        await repo.delete(SID, generation=bad)  # type: ignore[arg-type]
    assert await repo.lookup(SID) == "machine-a"


@pytest.mark.parametrize("bad", [0, -1, 2**63])
async def test_a_generation_out_of_range_is_refused(repo: SessionRepository, bad: int) -> None:
    await repo.upsert(SID, "machine-a")
    with pytest.raises(InvalidInput, match="generation"):
        await repo.touch(SID, 600, generation=bad)
    with pytest.raises(InvalidInput, match="generation"):
        await repo.delete(SID, generation=bad)
    assert await repo.lookup(SID) == "machine-a"


# -- heartbeats ----------------------------------------------------------------


async def test_owners_lists_live_heartbeats(repo: SessionRepository) -> None:
    assert await repo.owners() == {}
    await repo.heartbeat("machine-a", 30)
    await repo.heartbeat("machine-b", timedelta(seconds=60))
    assert await repo.owners() == {"machine-a": at(T0 + 30), "machine-b": at(T0 + 60)}
    assert (await repo.metrics()).owners == 2


async def test_an_owner_that_never_heartbeats_keeps_its_bindings_by_their_ttl(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-b", 5)  # someone else's heartbeat changes nothing here
    await repo.acquire(SID, "machine-a", 100)
    expiry_clock.set(T0 + 50)
    assert await repo.lookup(SID) == "machine-a"


async def test_a_heartbeat_lapses_at_exactly_its_end(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-a", 10)
    lease = await repo.acquire(SID, "machine-a", 600)
    just_before(expiry_clock, T0 + 10)
    assert await repo.lease(SID) == lease
    assert "machine-a" in await repo.owners()
    expiry_clock.set(T0 + 10)
    assert await repo.lookup(SID) is None
    assert await repo.lease(SID) is None
    assert await repo.owners() == {}
    assert not await repo.touch(SID, 600)
    assert not await repo.delete(SID)


async def test_a_dead_owners_session_is_free_with_a_new_generation(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-a", 10)
    old = await repo.acquire(SID, "machine-a", 600)
    expiry_clock.set(T0 + 10)
    new = await repo.acquire(SID, "machine-b", 600)
    assert new.owner == "machine-b"
    assert new.generation > old.generation
    assert await repo.claim("other-session", "machine-b") == "machine-b"


async def test_renewed_heartbeats_keep_bindings_alive(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-a", 10)
    lease = await repo.acquire(SID, "machine-a", 600)
    for step in range(1, 6):
        expiry_clock.set(T0 + step * 9)
        await repo.heartbeat("machine-a", 10)
    expiry_clock.set(T0 + 50)
    assert await repo.lease(SID) == lease


async def test_a_lapse_is_final_for_the_bindings_it_killed(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-a", 10)
    old = await repo.acquire(SID, "machine-a", 600)
    expiry_clock.set(T0 + 11)
    await repo.upsert("written-while-dead", "machine-a", 600)
    await repo.heartbeat("machine-a", 10)  # back, as a new incarnation
    assert await repo.lookup(SID) is None
    assert await repo.lookup("written-while-dead") is None
    again = await repo.acquire(SID, "machine-a", 600)
    assert again.owner == "machine-a"
    assert again.generation > old.generation
    assert await repo.lookup(SID) == "machine-a"


async def test_release_drops_the_heartbeat_and_the_bindings(repo: SessionRepository) -> None:
    await repo.heartbeat("machine-a", 30)
    await repo.heartbeat("machine-b", 30)
    for n in range(3):
        await repo.acquire(f"a-{n}", "machine-a")
    await repo.acquire("b-0", "machine-b")
    assert await repo.release("machine-a") == 3
    assert await repo.owners() == {"machine-b": at(T0 + 30)}
    assert [await repo.lookup(f"a-{n}") for n in range(3)] == [None] * 3
    assert await repo.lookup("b-0") == "machine-b"
    assert await repo.release("machine-a") == 0
    assert await repo.release("never-seen") == 0


async def test_release_without_heartbeats_removes_bindings(repo: SessionRepository) -> None:
    await repo.upsert(SID, "machine-a")
    assert await repo.release("machine-a") == 1
    assert await repo.lookup(SID) is None


async def test_delete_owner_leaves_the_heartbeat(repo: SessionRepository) -> None:
    await repo.heartbeat("machine-a", 30)
    await repo.upsert(SID, "machine-a")
    assert await repo.delete_owner("machine-a") == 1
    assert "machine-a" in await repo.owners()


async def test_metrics_count_a_dead_owners_bindings_as_not_live(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-a", 10)
    await repo.upsert("s-a", "machine-a", 600)
    await repo.upsert("s-b", "machine-b", 600)
    before = await repo.metrics()
    assert (before.sessions, before.owners) == (2, 1)
    expiry_clock.set(T0 + 10)
    after = await repo.metrics()
    assert (after.sessions, after.expired, after.owners) == (1, 1, 0)


async def test_cleanup_removes_a_dead_owners_bindings_for_good(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.heartbeat("machine-a", 10)
    for n in range(3):
        await repo.upsert(f"s-{n}", "machine-a", 600)
    expiry_clock.set(T0 + 10)
    assert await repo.cleanup() == 3
    await repo.heartbeat("machine-a", 10)
    assert [await repo.lookup(f"s-{n}") for n in range(3)] == [None] * 3
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.expired, metrics.owners) == (0, 0, 1)


async def test_heartbeat_input_is_checked_before_anything_is_written(
    repo: SessionRepository,
) -> None:
    with pytest.raises(InvalidInput, match="alloc_id"):
        await repo.heartbeat("has space", 30)
    with pytest.raises(TypeError, match="alloc_id"):
        await repo.heartbeat(7, 30)  # type: ignore[arg-type]
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="ttl"):
            await repo.heartbeat("machine-a", ttl)
    with pytest.raises(TypeError, match="ttl"):
        await repo.heartbeat("machine-a", True)
    with pytest.raises(InvalidInput, match="alloc_id"):
        await repo.release("")
    assert await repo.owners() == {}


# -- shared stores and real time -----------------------------------------------


@pytest.mark.parametrize(
    "backend_name",
    backend_params(*(name for name, b in BACKENDS.items() if b.shares_store)),
)
async def test_other_instances_see_heartbeats_and_generations(make_repo: RepoFactory) -> None:
    async with make_repo() as one, make_repo() as two:
        await one.heartbeat("machine-a", 10)
        lease = await one.acquire(SID, "machine-a", 600)
        assert await two.lease(SID) == lease
        assert "machine-a" in await two.owners()
        taken = await two.acquire(SID, "machine-b", 600, replacing="machine-a")
        assert taken.owner == "machine-b"
        assert taken.generation > lease.generation
        assert not await one.touch(SID, 600, generation=lease.generation)
        assert not await one.delete(SID, generation=lease.generation)
        assert await one.lease(SID) == taken
        assert await one.release("machine-a") == 0
        assert await two.owners() == {}


async def test_a_heartbeat_lapses_in_real_time(make_repo: RepoFactory) -> None:
    async with make_repo(clock=SystemClock()) as repo:
        await repo.heartbeat("machine-a", 0.3)
        old = await repo.acquire(SID, "machine-a", 600)
        assert await repo.lookup(SID) == "machine-a"
        await asyncio.sleep(0.45)
        assert await repo.lookup(SID) is None
        assert await repo.owners() == {}
        await repo.heartbeat("machine-a", 30)
        assert await repo.lookup(SID) is None  # the lapse was final
        new = await repo.acquire(SID, "machine-b", 600)
        assert new.owner == "machine-b"
        assert new.generation > old.generation
        assert await repo.release("machine-b") == 1
