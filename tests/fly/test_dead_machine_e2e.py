"""A machine dies; its sessions' next requests are served by live machines at once.

Three machines share one store (a memory repository, or a SQLite file with one
repository per machine), all on one fake clock; their heartbeats run on it. Sessions
are made on machine A, then A is killed: its lifespan never runs shutdown and its
heartbeat task stops with it, so nothing releases its bindings. Within one heartbeat
ttl of the kill its heartbeat lapses, and the next request for one of its sessions is
served by the machine it lands on, with no ``fly-replay`` followed and no replay
``timeout`` waited out; the app there answers 404, as for any session it does not
hold (the client re-initializes). Before the lapse the same request is replayed to
the dead machine and comes back with ``fly-replay-failed`` after Fly's ``timeout``:
what every such request cost without heartbeats.

Then the other way round: a machine whose own heartbeat could not be renewed (the
store failed under it) stops trusting its memory of what it owns. When another
machine took a session meanwhile, its next request there is replayed to the new
owner, not served from memory; when none did, it takes the session again (after a
heartbeat, so the binding is live) and goes back to its no-I/O fast path.

In replay-cache mode Fly's proxy may also hold a cached route to the dead machine for
each of its sessions. The simulator drops a route whose machine is not running and
load-balances the request as a miss; after the lapse, the machine it lands on serves
it, as in plain mode: no replay, no wait, and no new route to the dead machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from session_repo import MemorySessionRepository, SessionRepository, SqlSessionRepository
from session_repo.testing import FakeClock
from tests.fly.heartbeat_fleet import TTL, A, B, C, Flaky, Fleet, client, create, simulator

START = 2_000_000.0
Store = tuple[SessionRepository, Callable[[str], SessionRepository]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Store]:
    """A probe repository, and each machine's repository, on one store."""
    if request.param == "memory":
        shared = MemorySessionRepository(clock=clock)
        yield shared, lambda machine: shared
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.sqlite'}"
    repos = {
        m: SqlSessionRepository(url, clock=clock, cleanup_interval=0) for m in (A, B, C, "probe")
    }
    try:
        for repo in repos.values():
            await repo.lookup("warm-up")  # opens it (and migrates the file once)
        yield repos["probe"], repos.__getitem__
    finally:
        for repo in repos.values():
            await repo.close()


async def test_a_dead_machines_session_is_served_elsewhere_within_one_ttl_with_no_replay(
    store: Store, clock: FakeClock
) -> None:
    probe, repositories = store
    fleet, lb = Fleet(repositories, clock), [A]
    sim = simulator(fleet, lb)
    async with sim, client(sim) as http:
        sessions = [await create(http) for _ in range(3)]
        assert [await probe.lookup(s) for s in sessions] == [A, A, A]
        await fleet.ticker.advance(14)  # A last heartbeat at +10
        lapse = (await probe.owners())[A].timestamp()
        await sim.stop(A, graceful=False)  # killed: no shutdown, no release
        killed_at = clock.now()
        assert fleet.ticker.sleeping == 2  # A's heartbeat task died with it
        assert fleet.events.count((A, "shutdown")) == 0
        assert 0 < lapse - killed_at <= TTL
        await fleet.ticker.advance(lapse - killed_at)  # within one heartbeat ttl of the kill
        assert set(await probe.owners()) == {B, C}
        lb[0] = B
        answer = await http.post("/mcp", headers={"mcp-session-id": sessions[0]})
        assert answer.status_code == 404  # B does not hold it: the client re-initializes
        assert answer.json() == {"machine": B, "session": sessions[0]}
        served = sim.deliveries[-1]
        assert (served.served_by, served.replays, served.fell_back, served.waited) == (
            B,
            0,
            False,
            0.0,
        )
        lb[0] = C  # and so for each of A's sessions, wherever it lands
        answer = await http.post("/mcp", headers={"mcp-session-id": sessions[1]})
        assert (answer.status_code, sim.deliveries[-1].replays) == (404, 0)
        fresh = await create(http)  # the client starts over on a live machine
        assert await probe.lookup(fresh) == C
    assert sim.replays == 0
    assert sim.fallbacks == 0


async def test_before_the_lapse_the_same_request_waits_out_a_replay_to_the_dead_machine(
    store: Store, clock: FakeClock
) -> None:
    _, repositories = store
    fleet, lb = Fleet(repositories, clock), [A]
    sim = simulator(fleet, lb)
    async with sim, client(sim) as http:
        sid = await create(http)
        await sim.stop(A, graceful=False)
        lb[0] = B
        answer = await http.post("/mcp", headers={"mcp-session-id": sid})
        assert answer.status_code == 404
        served = sim.deliveries[-1]
        assert (served.served_by, served.replays, served.fell_back, served.waited) == (
            B,
            0,
            True,
            5.0,  # Fly tried the dead machine for the replay's whole timeout first
        )


async def test_after_its_own_heartbeat_lapsed_a_machine_replays_a_session_taken_meanwhile(
    clock: FakeClock,
) -> None:
    repo = MemorySessionRepository(clock=clock)
    flaky = Flaky(repo)
    fleet, lb = Fleet(lambda machine: flaky if machine == A else repo, clock), [A]
    sim = simulator(fleet, lb)
    async with sim, client(sim) as http:
        sid = await create(http)
        key = {"mcp-session-id": sid}
        assert (await http.post("/mcp", headers=key)).status_code == 200  # A's fast path
        flaky.down = True  # A's heartbeats fail from now on
        await fleet.ticker.advance(TTL)  # A's lapses at +30
        assert set(await repo.owners()) == {B, C}
        assert await repo.claim(sid, B) == B  # B takes the free session
        flaky.down = False  # the store is back; A's task has not beaten again yet
        served_before = len(fleet.servers[A].served)
        answer = await http.post("/mcp", headers=key)
        assert answer.json()["machine"] == B  # replayed to the new owner
        assert len(fleet.servers[A].served) == served_before  # A's app never saw it
        last = sim.deliveries[-1]
        assert (last.origin, last.served_by, last.replays) == (A, B, 1)
        assert A in await repo.owners()  # A heartbeated before it asked


async def test_after_its_own_lapse_a_machine_takes_back_a_free_session_then_does_no_io(
    clock: FakeClock,
) -> None:
    repo = MemorySessionRepository(clock=clock)
    flaky = Flaky(repo)
    fleet, lb = Fleet(lambda machine: flaky if machine == A else repo, clock), [A]
    sim = simulator(fleet, lb)
    async with sim, client(sim) as http:
        sid = await create(http)
        key = {"mcp-session-id": sid}
        flaky.down = True
        await fleet.ticker.advance(TTL)
        assert await repo.lookup(sid) is None  # dead with A's heartbeat
        flaky.down = False
        answer = await http.post("/mcp", headers=key)
        assert answer.json()["machine"] == A  # nobody took it: A serves it again
        assert await repo.lookup(sid) == A  # bound live: A heartbeated before it claimed
        before = await repo.metrics()
        for _ in range(3):
            assert (await http.post("/mcp", headers=key)).status_code == 200
        after = await repo.metrics()
        assert (after.lookups, after.claims) == (before.lookups, before.claims)  # no I/O


# -- replay-cache mode: Fly's proxy holds routes to the machine that died -------------------------


async def test_in_cache_mode_a_cached_route_to_a_dead_machine_is_dropped_and_served_live(
    store: Store, clock: FakeClock
) -> None:
    probe, repositories = store
    fleet, lb = Fleet(repositories, clock, replay_cache=True), [A]
    sim = simulator(fleet, lb)
    cache = sim.replay_cache
    assert cache is not None
    async with sim, client(sim) as http:
        sessions = [await create(http) for _ in range(3)]
        lb[0] = B
        for sid in sessions:  # landing on B: a bare replay to A, which the proxy caches
            answer = await http.post("/mcp", headers={"mcp-session-id": sid})
            assert answer.json() == {"machine": A, "session": sid}
        assert [cache.target(s) for s in sessions] == [A, A, A]
        assert (await http.post("/mcp", headers={"mcp-session-id": sessions[0]})).status_code == 200
        hit = sim.deliveries[-1]
        assert (hit.origin, hit.served_by, hit.replays, hit.cache) == (A, A, 0, "hit")
        await fleet.ticker.advance(14)  # A last heartbeat at +10
        lapse = (await probe.owners())[A].timestamp()
        await sim.stop(A, graceful=False)  # killed: no shutdown, no release
        killed_at = clock.now()
        assert fleet.ticker.sleeping == 2  # A's heartbeat task died with it
        await fleet.ticker.advance(lapse - killed_at)  # within one heartbeat ttl of the kill
        assert set(await probe.owners()) == {B, C}
        # The proxy still holds an unexpired route to A for each session; A is gone. The
        # simulator drops a route whose machine is not running and load-balances the
        # request as a miss; where it lands, the store names no live owner: served there.
        assert [cache.target(s) for s in sessions] == [A, A, A]
        answer = await http.post("/mcp", headers={"mcp-session-id": sessions[0]})
        assert answer.status_code == 404  # B does not hold it: the client re-initializes
        assert answer.json() == {"machine": B, "session": sessions[0]}
        served = sim.deliveries[-1]
        assert (served.origin, served.served_by, served.replays, served.fell_back) == (
            B,
            B,
            0,
            False,
        )
        assert (served.waited, served.cache) == (0.0, "miss")
        assert (cache.gone, cache.target(sessions[0])) == (1, None)
        assert await probe.lookup(sessions[0]) is None  # a 404 binds nothing
        lb[0] = C  # and so for each of A's sessions, wherever it lands
        answer = await http.post("/mcp", headers={"mcp-session-id": sessions[1]})
        assert answer.json() == {"machine": C, "session": sessions[1]}
        last = sim.deliveries[-1]
        assert (last.served_by, last.replays, last.waited, last.cache) == (C, 0, 0.0, "miss")
        assert cache.gone == 2
        fresh = await create(http)  # the client starts over on a live machine
        assert await probe.lookup(fresh) == C
    assert sim.replays == cache.stored == 3  # only the replays that made A's routes
    assert sim.fallbacks == 0
