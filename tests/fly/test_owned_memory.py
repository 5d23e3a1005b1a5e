"""What a machine remembers owning, for keys of any length (by their digest: a session id
is a bearer secret, and no memory holds it past its request). The hot path makes no
storage call, a 404 on the session endpoint lets the session go, and two keys that differ
only past the 64th character stay two sessions.
"""

from __future__ import annotations

import pytest

from session_repo import MemorySessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FakeClock
from tests.fly.test_fly_middleware import ME, OTHER, SECRET, TTL, App, call, io

KEYS = ["k", "s" * 64, "l" * 65, "x" * 1024]


@pytest.fixture
def repo(fake_clock: FakeClock) -> MemorySessionRepository:
    return MemorySessionRepository(clock=fake_clock)


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def middleware(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> FlyReplayMiddleware:
    return FlyReplayMiddleware(
        app, repo, instance_id=ME, ttl=TTL, state_secret=SECRET, clock=fake_clock
    )


@pytest.mark.parametrize("key", KEYS, ids=len)
async def test_a_session_handed_out_here_is_served_from_memory_then_let_go_on_404(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    key: str,
) -> None:
    app.headers = [(b"mcp-session-id", key.encode())]
    await call(middleware)  # handed out here: bound here
    assert await repo.lookup(key) == ME
    before = await io(repo)
    for _ in range(5):
        fake_clock.advance(1)
        assert (await call(middleware, headers=[("mcp-session-id", key)])).status == 200
    assert await io(repo) == before  # from memory: no lookup, no claim
    app.status, app.headers = 404, []
    await call(middleware, headers=[("mcp-session-id", key)])
    assert await repo.lookup(key) is None


@pytest.mark.parametrize("length", [64, 65, 1024])
async def test_keys_that_differ_past_the_64th_character_are_two_sessions(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, length: int
) -> None:
    mine, theirs = "a" * (length - 1) + "1", "a" * (length - 1) + "2"
    app.headers = [(b"mcp-session-id", mine.encode())]
    await call(middleware)
    await repo.claim(theirs, OTHER, TTL)
    app.headers = []
    assert (await call(middleware, headers=[("mcp-session-id", mine)])).status == 200
    replayed = await call(middleware, headers=[("mcp-session-id", theirs)])
    assert replayed.status == 307
    assert f"instance={OTHER}" in replayed.headers["fly-replay"]
