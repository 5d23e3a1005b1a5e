"""The middleware's heartbeat: from lifespan startup to shutdown, every third of its ttl.

Each test runs machines in ``FlyProxySimulator`` on a real ``MemorySessionRepository``
and a fake clock; the heartbeat task sleeps on that clock (``Ticker``), so every
heartbeat lands at its exact time. What is checked: the period and the expiry the
store keeps (``owners()``), the release at shutdown, the app's own lifespan passed
through untouched (its failures too), no heartbeat off Fly, a store that fails or
hangs under the heartbeat (requests still served, the task keeps going, a crash
still stops it), the ``heartbeat_ttl`` setting and its environment variable, and a
Starlette app whose own lifespan opens and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from session_repo import InvalidInput, MemorySessionRepository, SqlSessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FakeClock, FlyProxySimulator
from tests.fly.heartbeat_fleet import TTL, A, B, Flaky, Fleet, client, create, simulator
from tests.fly.ticks import Ticker

START = 1_000_000.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLY_MACHINE_ID", "FLY_ALLOC_ID", "SESSION_REPO_HEARTBEAT_TTL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def repo(clock: FakeClock) -> MemorySessionRepository:
    return MemorySessionRepository(clock=clock)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="session_repo.fly")
    return caplog


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_it_heartbeats_at_startup_then_every_third_of_the_ttl_and_releases_at_shutdown(
    repo: MemorySessionRepository, clock: FakeClock
) -> None:
    fleet = Fleet(lambda machine: repo, clock)
    sim = simulator(fleet, [A])
    await sim.start(A)
    assert await repo.owners() == {A: at(START + TTL)}  # before it served anything
    async with client(sim) as http:
        sid = await create(http)
    await fleet.ticker.advance(TTL / 3)
    assert await repo.owners() == {A: at(START + TTL / 3 + TTL)}
    await fleet.ticker.advance(TTL)
    assert fleet.ticker.asked == [TTL / 3] * 5  # renewed at +10, +20, +30, +40, sleeping
    assert await repo.owners() == {A: at(START + 4 * TTL / 3 + TTL)}
    assert await repo.lookup(sid) == A
    await sim.stop(A)
    assert await repo.owners() == {}  # released: its heartbeat, and its sessions
    assert await repo.lookup(sid) is None
    assert fleet.ticker.sleeping == 0
    assert fleet.events == [(A, "startup"), (A, "shutdown")]  # the app's own lifespan ran


async def test_the_apps_startup_failure_is_reported_as_before_and_nothing_heartbeats(
    repo: MemorySessionRepository, clock: FakeClock
) -> None:
    fleet = Fleet(lambda machine: repo, clock)
    sim = simulator(fleet, [A])

    def failing(machine: str) -> Any:
        app = fleet(machine)
        fleet.servers[machine].fail_startup = True
        return app

    sim = FlyProxySimulator(failing, [A])
    with pytest.raises(RuntimeError, match="app startup failed: boom"):
        await sim.start(A)
    assert await repo.owners() == {}
    assert fleet.ticker.sleeping == 0


async def test_an_app_that_raises_in_its_lifespan_raises_through_the_middleware(
    repo: MemorySessionRepository, clock: FakeClock
) -> None:
    async def no_lifespan(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("this app does not do lifespan")

    middleware = FlyReplayMiddleware(no_lifespan, repo, instance_id=A, clock=clock)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    with pytest.raises(RuntimeError, match="does not do lifespan"):
        await middleware(scope, inbox.get, inbox.put)  # as uvicorn's "auto" expects
    assert await repo.owners() == {}


async def test_off_fly_the_lifespan_passes_untouched_and_nothing_heartbeats(
    repo: MemorySessionRepository, clock: FakeClock
) -> None:
    fleet = Fleet(lambda machine: repo, clock)

    def off_fly(machine: str) -> Any:
        fleet(machine)  # the server, recorded
        server = fleet.servers[machine]
        return FlyReplayMiddleware(server, repo, clock=clock, sleep=fleet.ticker.sleep)

    async with FlyProxySimulator(off_fly, [A]):
        assert await repo.owners() == {}
        assert fleet.ticker.sleeping == 0
    assert fleet.events == [(A, "startup"), (A, "shutdown")]


async def test_a_failing_heartbeat_never_fails_a_request_nor_stops_the_task(
    repo: MemorySessionRepository, clock: FakeClock, logs: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(repo)
    flaky.down = True  # from the first heartbeat on
    fleet = Fleet(lambda machine: flaky, clock)
    sim = simulator(fleet, [A], [A])
    async with sim, client(sim) as http:  # startup completes all the same
        assert fleet.events == [(A, "startup")]
        sid = await create(http)
        for _ in range(3):
            await fleet.ticker.advance(TTL / 3)
            answer = await http.post("/mcp", headers={"mcp-session-id": sid})
            assert answer.status_code == 200
            assert answer.json()["machine"] == A
        assert fleet.ticker.asked == [TTL / 3] * 4  # the task tried at +10, +20, +30: alive
        assert fleet.ticker.sleeping == 1
        assert await repo.owners() == {}
        flaky.down = False
        await fleet.ticker.advance(TTL / 3)  # retried the next period: it is back
        assert await repo.owners() == {A: at(clock.now() + TTL)}
        assert (await http.post("/mcp", headers={"mcp-session-id": sid})).status_code == 200
    failed = [r for r in logs.records if "heartbeat of machine" in r.getMessage()]
    warned = [r for r in failed if r.levelno == logging.WARNING]
    assert "heartbeat of machine a1a1a1a1a1a1a1 failed (StorageError" in warned[0].getMessage()
    assert len([r for r in warned if "failed" in r.getMessage()]) == 1  # one burst, one warning
    assert any(
        re.search(r"renewed after \d+ failed attempts", r.getMessage()) for r in logs.records
    )
    assert not any(sid in r.getMessage() or sid in repr(r.__dict__) for r in logs.records)


async def test_a_crash_during_a_hung_heartbeat_stops_it_and_releases_nothing(
    repo: MemorySessionRepository, clock: FakeClock
) -> None:
    flaky = Flaky(repo)
    fleet = Fleet(lambda machine: flaky, clock)
    sim = simulator(fleet, [A], [A, B])
    await sim.start()
    flaky.hold = asyncio.Event()  # the next heartbeat hangs in the store
    clock.advance(TTL / 3)
    assert fleet.ticker.wake() == 2
    while flaky.heartbeats < 4:  # two at startup, two now
        await asyncio.sleep(0.001)
    assert fleet.ticker.sleeping == 0  # both are stuck in the store
    await asyncio.wait_for(sim.stop(A, graceful=False), 5)  # the cancellation goes through
    flaky.hold.set()
    for _ in range(100):
        if fleet.ticker.sleeping == 1:
            break
        await asyncio.sleep(0.01)
    assert fleet.ticker.sleeping == 1  # B's task carries on; A's is gone
    assert flaky.released == []
    assert set(await repo.owners()) == {A, B}  # A's lapses in its own time
    await sim.stop(B)
    assert flaky.released == [B]


async def test_a_graceful_stop_during_a_hung_heartbeat_still_releases(
    repo: MemorySessionRepository, clock: FakeClock
) -> None:
    flaky = Flaky(repo)
    fleet = Fleet(lambda machine: flaky, clock)
    sim = simulator(fleet, [A], [A])
    await sim.start()
    flaky.hold = asyncio.Event()
    clock.advance(TTL / 3)
    assert fleet.ticker.wake() == 1
    while flaky.heartbeats < 2:
        await asyncio.sleep(0.001)
    await asyncio.wait_for(sim.stop(A), 5)  # the hung heartbeat is cancelled, not awaited
    assert flaky.released == [A]
    assert await repo.owners() == {}
    assert fleet.events == [(A, "startup"), (A, "shutdown")]


@pytest.mark.parametrize(
    ("setting", "env", "period"),
    [(12, None, 4.0), (timedelta(seconds=1.5), None, 0.5), (None, "9", 3.0), (None, None, 10.0)],
)
async def test_heartbeat_ttl_from_the_argument_or_the_environment(
    repo: MemorySessionRepository,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    setting: Any,
    env: str | None,
    period: float,
) -> None:
    if env is not None:
        monkeypatch.setenv("SESSION_REPO_HEARTBEAT_TTL", env)
    ticker = Ticker(clock)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    def machine(machine_id: str) -> Any:
        return FlyReplayMiddleware(
            app,
            repo,
            instance_id=machine_id,
            clock=clock,
            heartbeat_ttl=setting,
            sleep=ticker.sleep,
        )

    async with FlyProxySimulator(machine, [A]):
        await ticker.advance(period)
        assert ticker.asked == [period, period]
        assert await repo.owners() == {A: at(START + period + 3 * period)}


@pytest.mark.parametrize(
    ("setting", "env", "error"),
    [
        (0, None, InvalidInput),
        (-1, None, InvalidInput),
        (float("nan"), None, InvalidInput),
        (True, None, TypeError),
        ("30", None, TypeError),
        (None, "soon", InvalidInput),
        (None, "inf", InvalidInput),
    ],
)
def test_a_bad_heartbeat_ttl_is_refused(
    repo: MemorySessionRepository,
    monkeypatch: pytest.MonkeyPatch,
    setting: Any,
    env: str | None,
    error: type[Exception],
) -> None:
    if env is not None:
        monkeypatch.setenv("SESSION_REPO_HEARTBEAT_TTL", env)

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(error):
        FlyReplayMiddleware(app, repo, instance_id=A, heartbeat_ttl=setting)


async def test_a_starlette_app_that_opens_and_closes_the_store_in_its_lifespan(
    clock: FakeClock, tmp_path: Path
) -> None:
    """The release runs before the app's own shutdown closes the store, the first heartbeat
    after its startup opened it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.sqlite'}"
    ticker = Ticker(clock)
    opened: list[str] = []

    def machine(machine_id: str) -> Any:
        store = SqlSessionRepository(url, clock=clock, cleanup_interval=0)

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with store:
                opened.append(machine_id)
                yield

        async def hello(request: Request) -> Response:
            return Response("hi", headers={"mcp-session-id": "s-" + machine_id})

        fly = Middleware(
            FlyReplayMiddleware,
            repository=store,
            instance_id=machine_id,
            clock=clock,
            heartbeat_ttl=TTL,
            sleep=ticker.sleep,
        )
        return Starlette(routes=[Route("/", hello)], middleware=[fly], lifespan=lifespan)

    async with SqlSessionRepository(url, clock=clock, cleanup_interval=0) as probe:
        sim = FlyProxySimulator(machine, [A, B], chooser=lambda running: A)
        async with sim, client(sim) as http:
            assert opened == [A, B]
            assert set(await probe.owners()) == {A, B}
            assert (await http.get("/")).status_code == 200
            assert await probe.lookup("s-" + A) == A
            await ticker.advance(TTL / 3)
            assert (await probe.owners())[A] == at(START + TTL / 3 + TTL)
            await sim.stop(A)
            assert set(await probe.owners()) == {B}  # released while the store was open
            assert await probe.lookup("s-" + A) is None
