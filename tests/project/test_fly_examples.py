"""The Fly.io examples in ``docs/examples/`` run as written: three machines, both replay modes.

Each example (FastAPI, Starlette, Litestar, and the MCP SDK's own Starlette app) is
built once per machine by ``FlyProxySimulator``, each machine on its own repository
over one shared SQLite file, and the simulator runs each machine's ASGI lifespan: the
example's own (which opens the repository) with the middleware's heartbeat after it
and its release before the app's shutdown. The counters (and MCP's ``count`` tool)
live only in one machine's memory, so a count that goes 1, 2, 3... proves every
request reached the machine that created the session. The ``fly.toml`` files are
parsed and checked against what each replay mode needs.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from session_repo import MemorySessionRepository, SqlSessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FlyProxySimulator
from tests.paths import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
PLAIN_TOML = EXAMPLES / "fly.toml"
CACHE_TOML = EXAMPLES / "fly.replay-cache.toml"
WEB = ["fastapi_fly_app", "starlette_app", "litestar_app"]
HEADER = "session-id"  # the web examples' session header
SECRET = "examples-replay-secret"
BASE = "http://127.0.0.1:8080"  # the MCP SDK checks the Host (DNS rebinding)
COUNTER_RULE = {"path_prefix": "/counter", "ttl_seconds": 300, "type": "header", "name": HEADER}


def example(name: str) -> ModuleType:
    """``docs/examples/<name>.py``, imported as ``uvicorn`` would from that folder."""
    if name == "litestar_app":
        pytest.importorskip("litestar")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        return tomllib.load(file)


def cache_rules(config: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = (
        config["http_service"].get("http_options", {}).get("replay_cache", [])
    )
    return rules


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SESSION_REPO_REPLAY_CACHE", "SESSION_REPO_HEARTBEAT_TTL", "FLY_APP_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fly.sqlite'}"


@pytest.fixture
async def probe(store_url: str) -> AsyncIterator[SqlSessionRepository]:
    """The shared store, seen from outside the machines."""
    async with SqlSessionRepository(store_url, cleanup_interval=0) as repo:
        yield repo


def fleet(
    module: ModuleType, store_url: str, *, cache: bool, rule: dict[str, Any], seed: int = 7
) -> FlyProxySimulator:
    """Three machines, each the example's app on its own repository over the shared file."""

    def machine(machine_id: str) -> Any:
        repository = SqlSessionRepository(store_url, cleanup_interval=0)
        return module.create_app(
            repository, instance_id=machine_id, state_secret=SECRET, replay_cache=cache
        )

    header = rule["name"]
    return FlyProxySimulator(
        machine, 3, seed=seed, session_header=header, replay_cache=[rule] if cache else None
    )


def client(sim: FlyProxySimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url=BASE)


async def assert_healthy_everywhere(sim: FlyProxySimulator) -> None:
    async with client(sim) as http:
        answers = [await http.get("/healthz") for _ in range(9)]
    assert {(a.status_code, a.json()["status"], a.json()["backend"]) for a in answers} == {
        (200, "ok", "sqlite")
    }
    assert len({d.served_by for d in sim.deliveries[-9:]}) > 1  # every machine answers it


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan around the block, as a server would."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


# -- FastAPI, Starlette, Litestar ---------------------------------------------------------


@pytest.mark.parametrize("cache", [False, True], ids=["plain", "replay-cache"])
@pytest.mark.parametrize("name", WEB)
async def test_a_session_is_served_by_its_machine_which_heartbeats_and_releases(
    name: str, cache: bool, store_url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(example(name), store_url, cache=cache, rule=COUNTER_RULE) as sim:
        assert set(await probe.owners()) == set(sim.machine_ids)  # heartbeats from startup
        async with client(sim) as http:
            created = await http.post("/counter")
            assert created.status_code == 201
            sid, home = created.headers[HEADER], created.json()["machine"]
            assert sim.creator(sid) == home
            assert await probe.lookup(sid) == home
            for count in range(1, 13):  # the counter lives in home's memory only
                answer = await http.post("/counter", headers={HEADER: sid})
                assert answer.json() == {"machine": home, "count": count}
            assert (await http.get("/counter", headers={HEADER: sid})).json()["count"] == 12
            assert sim.misrouted == 0
            if cache:
                assert sim.replay_cache is not None
                assert sim.replay_cache.hits > 0  # later requests went straight home
            else:
                assert sim.replays > 0  # some landed elsewhere and were replayed
            await assert_healthy_everywhere(sim)

            await sim.stop(home)  # graceful: the middleware releases home before the app stops
            assert set(await probe.owners()) == set(sim.machine_ids) - {home}
            assert await probe.lookup(sid) is None
            gone = await http.post("/counter", headers={HEADER: sid})
            assert gone.status_code == 404  # the session died with its machine's memory
    assert await probe.owners() == {}  # every machine released itself


@pytest.mark.parametrize("name", WEB)
async def test_delete_ends_the_session_and_its_binding(
    name: str, store_url: str, probe: SqlSessionRepository
) -> None:
    async with (
        fleet(example(name), store_url, cache=False, rule=COUNTER_RULE, seed=3) as sim,
        client(sim) as http,
    ):
        sid = (await http.post("/counter")).headers[HEADER]
        assert await probe.lookup(sid) is not None
        assert (await http.delete("/counter", headers={HEADER: sid})).status_code == 204
        assert await probe.lookup(sid) is None
        assert (await http.get("/counter", headers={HEADER: sid})).status_code == 404
        assert (await http.get("/counter")).status_code == 400  # no session at all
        assert sim.misrouted == 0


@pytest.mark.parametrize("name", [*WEB, "mcp_fly_server"])
async def test_the_example_reads_the_store_and_the_machine_from_the_environment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_STORE_URL", "memory://")
    monkeypatch.setenv("SESSION_STORE_FALLBACK", "none")
    monkeypatch.setenv("FLY_MACHINE_ID", "148ed193b95089")
    app = example(name).create_app()
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        health = await http.get("/healthz")
        assert (health.status_code, health.json()["backend"]) == (200, "memory")
        if name != "mcp_fly_server":
            assert (await http.post("/counter")).json()["machine"] == "148ed193b95089"
    after = await http_after_shutdown(app)
    assert after == 503  # the app's own shutdown closed the repository


async def http_after_shutdown(app: Any) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        return (await http.get("/healthz")).status_code


# -- the MCP SDK's own Starlette app -------------------------------------------------------


def mcp_rule() -> dict[str, Any]:
    (rule,) = cache_rules(toml(CACHE_TOML))
    return rule


@asynccontextmanager
async def mcp_client(sim: FlyProxySimulator) -> AsyncIterator[tuple[Client, list[str]]]:
    """The SDK's client (initialize handshake: a session) through the simulator."""
    sessions: list[str] = []

    async def on_response(response: httpx2.Response) -> None:
        session = response.headers.get("mcp-session-id")
        if session and session not in sessions:
            sessions.append(session)

    http = httpx2.AsyncClient(
        transport=sim.transport(httpx2), base_url=BASE, timeout=30,
        event_hooks={"response": [on_response]},
    )  # fmt: skip
    transport = streamable_http_client(f"{BASE}/mcp", http_client=http)
    async with http, Client(transport, mode="legacy") as mcp:
        yield mcp, sessions


async def tool(mcp: Client, name: str) -> Any:
    result = await mcp.call_tool(name, {})
    assert not result.is_error, result
    return result.structured_content["result"]


@pytest.mark.parametrize("cache", [False, True], ids=["plain", "replay-cache"])
async def test_the_mcp_server_keeps_its_sessions_home_heartbeats_and_releases(
    cache: bool, store_url: str, probe: SqlSessionRepository
) -> None:
    module = example("mcp_fly_server")
    async with fleet(module, store_url, cache=cache, rule=mcp_rule(), seed=5) as sim:
        assert set(await probe.owners()) == set(sim.machine_ids)
        async with mcp_client(sim) as (mcp, sessions):
            home = await tool(mcp, "whoami")
            (session,) = sessions
            assert sim.creator(session) == home
            assert await probe.lookup(session) == home
            for calls in range(1, 9):
                assert await tool(mcp, "count") == calls  # state only home has
                assert await tool(mcp, "whoami") == home
        assert await probe.lookup(session) is None  # the client's DELETE ended it
        assert sim.misrouted == 0
        if cache:
            assert sim.replay_cache is not None
            assert sim.replay_cache.hits > 0
        else:
            assert sim.replays > 0
        await assert_healthy_everywhere(sim)
        await sim.stop(home)
        assert set(await probe.owners()) == set(sim.machine_ids) - {home}
    assert await probe.owners() == {}


# -- fly.toml, one per replay mode ------------------------------------------------------


@pytest.mark.parametrize("path", [PLAIN_TOML, CACHE_TOML], ids=["plain", "replay-cache"])
def test_each_fly_toml_deploys_what_the_middleware_needs(path: Path) -> None:
    config = toml(path)
    service = config["http_service"]
    assert service["internal_port"] == 8080  # the port uvicorn listens on (docs/fly.md)
    assert service["auto_stop_machines"] == "off"  # a stopped machine takes its sessions
    assert service["min_machines_running"] >= 2
    (check,) = service["checks"]
    assert (check["method"], check["path"]) == ("GET", "/healthz")  # the examples' health
    assert config["kill_signal"] in ("SIGINT", "SIGTERM")  # uvicorn shuts down on both
    assert config["kill_timeout"] > 10  # longer than the Dockerfile's graceful shutdown
    assert config["deploy"]["release_command"] == "session-repo migrate"
    env = config["env"]
    assert all(isinstance(value, str) for value in env.values())  # Fly: strings only
    assert not any(name.startswith("FLY_") for name in env)  # Fly reserves FLY_*
    assert not {"SESSION_STORE_URL", "SESSION_REPO_REPLAY_SECRET"} & set(env)  # secrets
    source = "".join(p.read_text() for p in (PROJECT_ROOT / "session_repo").rglob("*.py"))
    assert all(f'"{name}"' in source for name in env), "a variable the library never reads"


def test_the_release_command_exists() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_repo", "migrate", "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_plain_mode_has_no_replay_cache_rule_and_cache_mode_one_on_the_session_header() -> None:
    plain, cached = toml(PLAIN_TOML), toml(CACHE_TOML)
    assert cache_rules(plain) == []  # a signed replay can never be cached
    (rule,) = cache_rules(cached)
    assert rule["type"] == "header"
    assert rule["name"].lower() == "mcp-session-id"  # the header the middleware routes by
    assert rule["path_prefix"] == "/mcp"  # the MCP SDK's endpoint
    ttl_ms = int(cached["env"]["SESSION_STORE_TTL_MS"])
    assert 10 <= rule["ttl_seconds"] <= ttl_ms / 1000  # Fly's minimum; not past a binding


@pytest.mark.parametrize(("path", "mode"), [(PLAIN_TOML, False), (CACHE_TOML, True)])
async def test_the_env_of_each_file_puts_the_middleware_in_its_mode(
    path: Path, mode: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in toml(path)["env"].items():
        monkeypatch.setenv(name, value)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    middleware = FlyReplayMiddleware(app, MemorySessionRepository(), instance_id="m1")
    assert middleware.replay_cache is mode


def test_the_files_differ_only_where_the_modes_do() -> None:
    """Everything but the mode (its variable, the rule, the comments) is the same file."""
    plain, cached = toml(PLAIN_TOML), toml(CACHE_TOML)
    cached["http_service"].pop("http_options")
    for config in (plain, cached):
        config["env"].pop("SESSION_REPO_REPLAY_CACHE")
    assert plain == cached
