"""End to end: the official MCP SDK, server and client, on three machines behind Fly's proxy.

Each machine runs ``docs/examples/mcp_fly_server.py`` (MCP's Streamable HTTP server,
stateful, wrapped in ``FlyReplayMiddleware``) as its own app object with its own
machine id; the machines share one store, a SQLite file or a PostgreSQL database
(``session_repo_fly``). ``FlyProxySimulator`` stands in for Fly's proxy: it picks a
random machine for every request and follows ``fly-replay``. The SDK's own client
talks to it through the simulator's streaming transport (httpx2, as the SDK uses).

A request served by a machine that does not hold the session would fail: MCP
answers 404 for a session it does not know. So every successful call is already
proof of routing; the tests also check ``whoami`` against the machine that created
the session, a per-session counter kept only in that machine's memory, and the
simulator's own record of who answered what.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import SqlSessionRepository
from session_repo.testing import FlyProxySimulator
from tests.paths import PROJECT_ROOT
from tests.servers import clear_sql_table, require_server

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from mcp_fly_server import create_app  # noqa: E402

BASE = "http://127.0.0.1:8080"
SECRET = "e2e-replay-secret"
FLY_DB = "session_repo_fly"


# -- the shared store -------------------------------------------------------------------


async def _create_fly_database(admin_url: str) -> str:
    """``session_repo_fly`` on the test server, created once, schema at head."""
    engine = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": FLY_DB}
            )
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{FLY_DB}"'))
    finally:
        await engine.dispose()
    url = make_url(admin_url).set(database=FLY_DB).render_as_string(hide_password=False)
    async with SqlSessionRepository(url, auto_migrate=True, cleanup_interval=0):
        pass
    return url


@functools.cache
def _fly_database(admin_url: str) -> str:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _create_fly_database(admin_url)).result()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)],
)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fly.sqlite'}"
    url = _fly_database(require_server("postgresql"))
    await clear_sql_table(url)
    return url


@pytest.fixture
async def probe(store_url: str) -> AsyncIterator[SqlSessionRepository]:
    """The store seen from outside the machines."""
    async with SqlSessionRepository(store_url, cleanup_interval=0) as repo:
        yield repo


def fleet(store_url: str, *, secret: str | None = SECRET, seed: int = 5) -> FlyProxySimulator:
    """Three machines, each the example app on its own repository over the shared store."""

    def machine(machine_id: str) -> Any:
        repository = SqlSessionRepository(store_url, cleanup_interval=0)
        return create_app(repository, instance_id=machine_id, state_secret=secret)

    return FlyProxySimulator(machine, 3, seed=seed)


# -- the MCP client -----------------------------------------------------------------------


@dataclass
class Wire:
    """What one client's HTTP traffic showed: its session id and protocol version."""

    session_ids: list[str] = field(default_factory=list)
    protocol_version: str | None = None

    @property
    def session(self) -> str:
        return self.session_ids[-1]


@asynccontextmanager
async def mcp_client(
    sim: FlyProxySimulator, mode: str = "legacy"
) -> AsyncIterator[tuple[Client, Wire]]:
    """The SDK's client over Streamable HTTP, connected, through the simulator.

    ``legacy`` is the initialize handshake, which opens a session (``Mcp-Session-Id``);
    the SDK's default, ``auto``, speaks the stateless 2026-07-28 protocol to a server
    that can, and then there is no session at all.
    """
    wire = Wire()

    async def on_request(request: httpx2.Request) -> None:
        wire.protocol_version = request.headers.get("mcp-protocol-version", wire.protocol_version)

    async def on_response(response: httpx2.Response) -> None:
        session = response.headers.get("mcp-session-id")
        if session and session not in wire.session_ids:
            wire.session_ids.append(session)

    http = httpx2.AsyncClient(
        transport=sim.transport(httpx2),
        base_url=BASE,
        timeout=30,
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    transport = streamable_http_client(f"{BASE}/mcp", http_client=http)
    async with http, Client(transport, mode=mode) as client:
        yield client, wire


async def tool(client: Client, name: str) -> Any:
    result = await client.call_tool(name, {})
    assert not result.is_error, result
    return result.structured_content["result"]


def raw_call(wire: Wire, name: str = "whoami", **extra: str) -> dict[str, str]:
    """Headers for a hand-made ``tools/call`` in ``wire``'s session."""
    return {
        "mcp-session-id": wire.session,
        "mcp-protocol-version": wire.protocol_version or "",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        **extra,
    }


def rpc(name: str, padding: int = 0) -> bytes:
    params: dict[str, Any] = {"name": name, "arguments": {}}
    if padding:
        params["_meta"] = {"padding": "x" * padding}
    return json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    ).encode()


def result_of(body: str) -> Any:
    """The tool's answer from a JSON-RPC reply sent as SSE (or plain JSON)."""
    for line in body.splitlines():
        if line.startswith("data:") and line[5:].strip():
            return json.loads(line[5:])["result"]["structuredContent"]["result"]
    return json.loads(body)["result"]["structuredContent"]["result"]


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


def served(sim: FlyProxySimulator, session_id: str) -> list[Any]:
    return [d for d in sim.deliveries if d.session == digest(session_id)]


# -- the tests ---------------------------------------------------------------------------------


async def test_every_call_is_served_by_the_machine_that_created_the_session(
    store_url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(store_url) as sim:
        async with mcp_client(sim) as (client, wire):
            home = await tool(client, "whoami")
            assert home in sim.machine_ids
            assert sim.creator(wire.session) == home
            assert await probe.lookup(wire.session) == home
            for calls in range(1, 31):
                assert await tool(client, "whoami") == home
                assert await tool(client, "count") == calls  # state only home has
            assert wire.session_ids == [wire.session]  # one session throughout
        deliveries = served(sim, wire.session)
        assert {d.served_by for d in deliveries} == {home}
        assert all(d.status < 400 for d in deliveries)
        replayed = [d for d in deliveries if d.origin != home]
        assert len(replayed) > 10  # random placement: about two in three
        assert sim.replays == sum(d.replays for d in replayed) == len(replayed)
        assert sim.misrouted == 0
        # The client ended its session (DELETE): its binding went with it.
        assert deliveries[-1].method in ("DELETE", "GET")
        assert await probe.lookup(wire.session) is None


@pytest.mark.parametrize("graceful", [True, False], ids=["stopped", "crashed"])
async def test_a_stopped_machines_clients_get_404_and_carry_on_elsewhere(
    store_url: str, probe: SqlSessionRepository, graceful: bool
) -> None:
    async with fleet(store_url, seed=11) as sim, AsyncExitStack() as stack:
        clients = []
        for _ in range(6):
            client, wire = await stack.enter_async_context(mcp_client(sim))
            clients.append((client, wire, await tool(client, "whoami")))
        homes = [home for _, _, home in clients]
        victim = max(set(homes), key=homes.count)
        assert 0 < homes.count(victim) < len(clients)

        await sim.stop(victim, graceful=graceful)

        for client, wire, home in clients:
            if home != victim:
                assert await tool(client, "whoami") == home  # untouched
                continue
            with pytest.raises(MCPError, match="Session not found"):  # MCP's 404
                await tool(client, "whoami")
            assert await probe.lookup(wire.session) is None
            async with mcp_client(sim) as (again, rewire):  # re-initialize
                new_home = await tool(again, "whoami")
                assert new_home != victim
                assert [await tool(again, "whoami") for _ in range(5)] == [new_home] * 5
                assert sim.creator(rewire.session) == new_home
        assert await probe.delete_owner(victim) == 0  # nothing of the victim's was left
        if not graceful:  # only Fly's fallback told the others the machine was gone
            assert sim.fallbacks >= homes.count(victim)
        assert sim.misrouted == 0


async def test_a_spoofed_fly_replay_src_does_not_skip_routing_when_a_secret_is_set(
    store_url: str,
) -> None:
    async with fleet(store_url, seed=3) as sim, mcp_client(sim) as (client, wire):
        home = await tool(client, "whoami")
        other = next(m for m in sim.machine_ids if m != home)
        now = int(time.time())
        spoofs = [
            f"instance={other};region=iad;t={now * 1_000_000}",
            f"instance={other};state=v1.{now}.{'A' * 43}",
            f"instance={home};state=forged",
        ]
        async with httpx2.AsyncClient(transport=sim.transport(httpx2), base_url=BASE) as raw:
            for spoof in spoofs * 4:
                headers = raw_call(wire, **{"fly-replay-src": spoof})
                response = await raw.post("/mcp", content=rpc("whoami"), headers=headers)
                assert response.status_code == 200
                assert result_of(response.text) == home
        spoofed = served(sim, wire.session)[-12:]
        assert {d.served_by for d in spoofed} == {home}
        assert any(d.origin != home and d.replays == 1 for d in spoofed)
        assert sim.misrouted == 0


async def test_without_a_secret_a_spoofed_fly_replay_src_does_skip_routing(
    store_url: str,
) -> None:
    """The risk docs/fly.md describes: the request lands where it should not (404)."""
    async with fleet(store_url, secret=None, seed=3) as sim, mcp_client(sim) as (client, wire):
        home = await tool(client, "whoami")
        async with httpx2.AsyncClient(transport=sim.transport(httpx2), base_url=BASE) as raw:
            headers = raw_call(wire, **{"fly-replay-src": "instance=anything"})
            statuses = [
                (await raw.post("/mcp", content=rpc("whoami"), headers=headers)).status_code
                for _ in range(12)
            ]
        assert 404 in statuses  # answered by a machine that does not hold the session
        assert sim.misrouted == statuses.count(404)
        assert await tool(client, "whoami") == home  # the session itself is unharmed


async def test_a_2_mb_post_for_a_session_elsewhere_is_refused_with_409_not_replayed(
    store_url: str,
) -> None:
    async with fleet(store_url, seed=4) as sim, mcp_client(sim) as (client, wire):
        home = await tool(client, "whoami")
        big = rpc("whoami", padding=2_000_000)
        assert len(big) > 2_000_000
        async with httpx2.AsyncClient(transport=sim.transport(httpx2), base_url=BASE) as raw:
            answers = []
            for _ in range(12):
                response = await raw.post("/mcp", content=big, headers=raw_call(wire))
                answers.append((sim.deliveries[-1], response))
        refused = [(d, r) for d, r in answers if d.origin != home]
        assert refused  # some landed elsewhere
        for delivery, response in refused:
            assert response.status_code == 409
            assert response.json()["error"] == "request_not_replayable"
            assert delivery.served_by == delivery.origin
            assert delivery.replays == 0
        at_home = [r for d, r in answers if d.origin == home]
        assert all(r.status_code == 200 and result_of(r.text) == home for r in at_home)
        assert sim.refused == 0  # the proxy never had to refuse: the middleware did first
        assert await tool(client, "whoami") == home


async def test_twenty_clients_at_once_each_stay_home(
    store_url: str, probe: SqlSessionRepository
) -> None:
    async def one_client(sim: FlyProxySimulator) -> tuple[str, str]:
        async with mcp_client(sim) as (client, wire):
            home = await tool(client, "whoami")
            for calls in range(1, 9):
                assert await tool(client, "count") == calls
                assert await tool(client, "whoami") == home
            assert await probe.lookup(wire.session) == home
            return wire.session, home

    async with fleet(store_url, seed=9) as sim:
        results = await asyncio.gather(*(one_client(sim) for _ in range(20)))
        assert len({session for session, _ in results}) == 20
        assert {home for _, home in results} == set(sim.machine_ids)  # all three took some
        for session, home in results:
            assert sim.creator(session) == home
            assert {d.served_by for d in served(sim, session)} == {home}
        keyed = [d for d in sim.deliveries if d.session is not None]
        assert all(d.status < 400 for d in keyed)
        assert sim.misrouted == 0
        assert sim.replays > 100
    assert (await probe.metrics()).sessions == 0  # every client ended its session


async def test_a_stateless_2026_client_carries_no_session_and_needs_no_affinity(
    store_url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(store_url, seed=6) as sim, mcp_client(sim, mode="auto") as (client, wire):
        answered = {await tool(client, "whoami") for _ in range(20)}
        refused = await client.call_tool("count", {})
        assert refused.is_error
        assert "needs a session" in refused.content[0].text
    assert wire.session_ids == []  # no Mcp-Session-Id: nothing to route by
    assert len(answered) > 1  # any machine may answer any request
    assert sim.replays == 0
    assert all(d.session is None for d in sim.deliveries)
    assert (await probe.metrics()).sessions == 0


def test_the_example_builds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_STORE_URL", "memory://")
    monkeypatch.setenv("FLY_MACHINE_ID", "148ed193b95089")
    monkeypatch.setenv("FLY_APP_NAME", "my-mcp")
    app: Callable[..., Any] = create_app()
    fly = app.user_middleware[0]
    assert fly.kwargs["instance_id"] == "148ed193b95089"
    assert type(fly.kwargs["repository"]).__name__ == "MemorySessionRepository"
