"""Lifecycle races on real stores: close() while opening, during cleanup, and cancellation.

Memory, a SQLite file and the shared Redis (a prefix of its own per test). Each
race must end cleanly: the interrupted caller gets ``RepositoryClosed``, nothing
raises ``AttributeError``, no task is left running, and a cancelled call always
ends in ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from session_repo import (
    MemorySessionRepository,
    RedisSessionRepository,
    RepositoryClosed,
    SqlSessionRepository,
)
from session_repo.backends.base import StoreFront
from session_repo.backends.memory import MemoryStorage
from tests.conftest import backend_params
from tests.servers import require_server

Build = Callable[..., StoreFront]


def other_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running besides the test's own."""
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and not t.done()]


@pytest.fixture(params=backend_params("memory", "sqlite", "redis"))
async def build(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Build]:
    """``build(**options)``: a new, unopened repository on this test's own store."""
    name: str = request.param
    prefix = f"session-repo-races:{uuid.uuid4().hex}:"
    made: list[StoreFront] = []

    def make(**options: Any) -> StoreFront:
        options.setdefault("cleanup_interval", 0)
        repo: StoreFront
        if name == "memory":
            repo = MemorySessionRepository(max_sessions=100_000, **options)
        elif name == "sqlite":
            repo = SqlSessionRepository(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite'}", **options)
        else:
            repo = RedisSessionRepository(require_server("redis"), key_prefix=prefix, **options)
        made.append(repo)
        return repo

    yield make
    for repo in made:
        await repo.close()
    if name == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(require_server("redis"))
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()


async def fill(repo: StoreFront, count: int, ttl: float) -> None:
    for start in range(0, count, 500):
        stop = min(start + 500, count)
        await asyncio.gather(*(repo.upsert(f"s{n}", "m", ttl=ttl) for n in range(start, stop)))


# Memory opens without awaiting: there is no moment to close in.
@pytest.mark.parametrize("build", backend_params("sqlite", "redis"), indirect=True)
async def test_close_while_the_first_call_is_opening(build: Build) -> None:
    repo = build(cleanup_interval=60)
    first = asyncio.create_task(repo.lookup("s"))
    second = asyncio.create_task(repo.upsert("s", "m"))  # waits for the same open
    await asyncio.sleep(0)
    assert not first.done()  # the first call is opening the store
    await repo.close()
    for call in (first, second):
        with pytest.raises(RepositoryClosed):
            await call
    assert other_tasks() == []  # no cleanup task started behind close()'s back
    with pytest.raises(RepositoryClosed):
        await repo.lookup("s")


async def test_a_caller_cancelled_at_any_step_of_the_open_leaves_it_to_finish(build: Build) -> None:
    """The open is shared work: cancelling the call that started it cancels that call
    only (cancelling a driver mid-handshake can leave a connection that never closes)."""
    for steps in range(8):
        repo = build(cleanup_interval=60)
        first = asyncio.create_task(repo.lookup("s"))
        for _ in range(steps):
            await asyncio.sleep(0)
        first.cancel()
        outcome = (await asyncio.gather(first, return_exceptions=True))[0]
        assert outcome is None or isinstance(outcome, asyncio.CancelledError), (steps, outcome)
        async with asyncio.timeout(10):
            await repo.upsert("s", "m")  # the open the first call began, finished
            assert await repo.lookup("s") == "m"
            await repo.close()
        assert other_tasks() == [], steps


async def test_a_cancelled_caller_never_cancels_the_open_itself() -> None:
    """Through a front whose open takes a few steps: one open, never interrupted."""
    opens: list[str] = []

    async def connect(resources: contextlib.AsyncExitStack) -> MemoryStorage:
        opens.append("started")
        try:
            for _ in range(5):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            opens.append("cancelled")
            raise
        opens.append("done")
        return MemoryStorage(1000)

    repo = StoreFront(connect=connect, backend="memory", clock=None, default_ttl=600)
    first = asyncio.create_task(repo.lookup("s"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(repo.upsert("s", "m"))  # joins the open in progress
    await second
    assert opens == ["started", "done"]
    assert await repo.lookup("s") == "m"
    await repo.close()
    assert other_tasks() == []


async def test_close_at_every_step_of_the_first_open(build: Build) -> None:
    for steps in range(8):
        repo = build(cleanup_interval=60)
        call = asyncio.create_task(repo.claim("s", "m"))
        for _ in range(steps):
            await asyncio.sleep(0)
        await repo.close()
        outcome = (await asyncio.gather(call, return_exceptions=True))[0]
        assert outcome == "m" or isinstance(outcome, RepositoryClosed), (steps, outcome)
        assert other_tasks() == [], steps


async def test_close_during_cleanup_interrupts_it(build: Build) -> None:
    repo = build(cleanup_batch=3)
    rows = 50_000 if isinstance(repo, MemorySessionRepository) else 3000
    await fill(repo, rows, ttl=0.05)
    await repo.upsert("long", "m", ttl=60)
    await asyncio.sleep(0.2)
    cleaning = asyncio.create_task(repo.cleanup())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not cleaning.done()
    await repo.close()
    with pytest.raises(RepositoryClosed):
        await cleaning
    assert other_tasks() == []


async def test_close_stops_a_background_cleanup_in_the_middle(build: Build) -> None:
    repo = build(cleanup_interval=0.01, cleanup_batch=3)
    rows = 50_000 if isinstance(repo, MemorySessionRepository) else 3000
    await fill(repo, rows, ttl=0.05)
    await asyncio.sleep(0.2)  # expired, and the background cleanup is at work
    await repo.close()
    assert other_tasks() == []
    assert repo.counters().cleaned < rows + 1  # reading counters after close is fine


async def _operations(repo: StoreFront, rng: random.Random) -> None:
    """A random mix of every public call, forever (until cancelled)."""
    calls: list[Callable[[], Coroutine[Any, Any, object]]] = [
        lambda: repo.upsert(f"s{rng.randrange(50)}", f"m{rng.randrange(3)}"),
        lambda: repo.lookup(f"s{rng.randrange(50)}"),
        lambda: repo.claim(f"s{rng.randrange(50)}", "m0", replacing="m1"),
        lambda: repo.touch(f"s{rng.randrange(50)}"),
        lambda: repo.delete(f"s{rng.randrange(50)}"),
        lambda: repo.delete_owner(f"m{rng.randrange(3)}"),
        repo.cleanup,
        repo.metrics,
        repo.health,
    ]
    while True:
        await rng.choice(calls)()


async def test_a_cancelled_call_always_ends_in_cancelled_error(build: Build) -> None:
    rng = random.Random(20261201)
    repo = build(cleanup_interval=0.005)
    for round_ in range(60):
        workers = [asyncio.create_task(_operations(repo, rng)) for _ in range(4)]
        singles = [
            asyncio.create_task(call)
            for call in (repo.lookup("s1"), repo.cleanup(), repo.delete_owner("m1"))
        ]
        for _ in range(rng.randrange(1, 30)):
            await asyncio.sleep(0 if rng.random() < 0.8 else 0.001)
        cancelled = [task for task in workers + singles if task.cancel()]
        _, pending = await asyncio.wait(workers + singles, timeout=5)
        assert not pending, f"round {round_}: a cancelled call did not end"
        for task in cancelled:
            assert task.cancelled(), f"round {round_}: {task.exception()!r} instead"
    assert await repo.lookup("nobody") is None  # still works
    await repo.close()
    assert other_tasks() == []


async def test_a_cancelled_close_still_closes(build: Build) -> None:
    repo = build(cleanup_interval=0.005, cleanup_batch=3)
    rows = 50_000 if isinstance(repo, MemorySessionRepository) else 3000
    await fill(repo, rows, ttl=0.05)
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(repo.close())
    await asyncio.sleep(0)
    assert closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await repo.close()  # waits for the closing that went on
    assert other_tasks() == []
    with pytest.raises(RepositoryClosed):
        await repo.lookup("s1")
