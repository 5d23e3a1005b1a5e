"""Machines for the heartbeat tests: a small stateful server behind the middleware each.

``Server`` keeps its sessions in its own memory, as an MCP server does: a ``POST``
with no session key makes one (``mcp-session-id`` in the answer), a request with a
key it holds is answered 200, one it does not hold 404 (what MCP's server says for
an unknown session). It runs its own lifespan and records it. ``Fleet`` builds one
per machine, on the heartbeat's fake time (``Ticker``), in either replay mode, and
``Flaky`` is a real memory repository whose heartbeats can be made to fail, or to
hang, for a while.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from session_repo import SessionRepository, StorageError
from session_repo.contract import Ttl
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FakeClock, FlyProxySimulator, ReplayCacheRule
from tests.fly.ticks import Ticker

A, B, C = "a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3"
TTL = 30.0  # the heartbeat's
SECRET = "heartbeat-test-secret"
# fly.toml's rule in replay-cache mode (docs/fly.md): Fly's proxy caches replays per session
CACHE_RULE = ReplayCacheRule("/mcp", 300, "header", "mcp-session-id")


class Server:
    """One machine's app: sessions in memory, its lifespan recorded in ``events``."""

    def __init__(self, machine: str, events: list[tuple[str, str]]) -> None:
        self.machine = machine
        self.sessions: set[str] = set()
        self.served: list[str | None] = []  # the session key of each request it served
        self.events = events
        self.fail_startup = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await receive()
        key = dict(scope["headers"]).get(b"mcp-session-id")
        session = key.decode() if key is not None else None
        self.served.append(session)
        headers = [(b"content-type", b"application/json")]
        if session is None and scope["method"] == "POST":
            session = uuid.uuid4().hex
            self.sessions.add(session)
            headers.append((b"mcp-session-id", session.encode()))
        status = 200 if session in self.sessions else (404 if session else 400)
        body = json.dumps({"machine": self.machine, "session": session}).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            self.events.append((self.machine, kind))
            if kind == "startup" and self.fail_startup:
                await send({"type": "lifespan.startup.failed", "message": "boom"})
                return
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return


class Fleet:
    """Builds each machine: a ``Server`` behind the middleware, heartbeating on ``ticker``.

    Args:
        repositories: each machine's repository (one shared object, or one each on a
            shared file).
        clock: the fake clock of the store and the middleware.
        replay_cache: the middleware's replay-cache mode (bare, cacheable replays).
    """

    def __init__(
        self,
        repositories: Callable[[str], SessionRepository],
        clock: FakeClock,
        *,
        replay_cache: bool = False,
    ) -> None:
        self.repositories = repositories
        self.clock = clock
        self.replay_cache = replay_cache
        self.ticker = Ticker(clock)
        self.events: list[tuple[str, str]] = []
        self.servers: dict[str, Server] = {}
        self.options: dict[str, Any] = {}

    def __call__(self, machine: str) -> Any:
        server = self.servers[machine] = Server(machine, self.events)
        return FlyReplayMiddleware(
            server,
            self.repositories(machine),
            instance_id=machine,
            ttl=600,
            clock=self.clock,
            state_secret=SECRET,
            heartbeat_ttl=TTL,
            sleep=self.ticker.sleep,
            replay_cache=self.replay_cache,
            **self.options,
        )


def pick(lb: list[str]) -> Callable[[Any], str]:
    """A load balancer that sends each new request to ``lb[0]``."""
    return lambda running: lb[0]


def simulator(fleet: Fleet, lb: list[str], machines: list[str] | None = None) -> FlyProxySimulator:
    """The proxy in front of ``fleet``; with its replay cache (``CACHE_RULE``, on the
    fleet's clock) when the fleet is in replay-cache mode."""
    rules = [CACHE_RULE] if fleet.replay_cache else None
    return FlyProxySimulator(
        fleet, machines or [A, B, C], chooser=pick(lb), replay_cache=rules, clock=fleet.clock
    )


def client(sim: FlyProxySimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://app.fly.test")


async def create(http: httpx.AsyncClient) -> str:
    answer = await http.post("/mcp")
    assert answer.status_code == 200
    return answer.headers["mcp-session-id"]


class Flaky:
    """A real repository whose heartbeats fail while ``down``, or wait while ``hold`` is set.

    Everything else goes straight to the repository inside.
    """

    def __init__(self, inner: SessionRepository) -> None:
        self.inner = inner
        self.down = False
        self.hold: asyncio.Event | None = None
        self.heartbeats = 0  # attempts
        self.released: list[str] = []

    async def heartbeat(self, alloc_id: str, ttl: Ttl) -> None:
        self.heartbeats += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise StorageError("heartbeat failed: the store is unreachable", transient=True)
        await self.inner.heartbeat(alloc_id, ttl)

    async def release(self, alloc_id: str) -> int:
        self.released.append(alloc_id)
        return await self.inner.release(alloc_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
