"""The FastAPI example (``@inject``, ``Provide[Container.repository]``) on Fly machines.

``tests/project/test_examples.py`` covers the app on its own. Here it runs behind
``FlyReplayMiddleware`` inside ``FlyProxySimulator``: the lifespan reaches the app
through the middleware, so the container's resources open when the machine starts
and close when it stops (and a restart gets a fresh container); and the repository
the endpoints are injected with is the one the middleware routes by.

dependency-injector wires a container into the module's endpoints, so one process
runs one wired container: one machine of the example per simulator, as on Fly.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from session_repo import MemorySessionRepository, RepositoryClosed, SqlSessionRepository
from session_repo.container import Container
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FakeClock, FlyProxySimulator
from tests.paths import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
API, WORKER = "a9a9a9a9a9a9a9", "f0f0f0f0f0f0f0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SESSION_STORE_") or name.startswith("FLY_"):
            monkeypatch.delenv(name)


def fastapi_example() -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("fastapi_app")


async def worker(scope: Any, receive: Any, send: Any) -> None:
    """Another machine's app: answers with its name."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": WORKER.encode()})


async def test_the_containers_resources_follow_the_machines_lifespan(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.sqlite'}"
    containers: list[Container] = []

    def machine(machine_id: str) -> Any:
        container = Container()
        container.config.from_dict({"url": url})
        containers.append(container)
        app = fastapi_example().create_app(container)
        return FlyReplayMiddleware(app, SqlSessionRepository(url), instance_id=machine_id)

    async with FlyProxySimulator(machine, [API]) as sim:
        first = await containers[0].repository()  # opened by the lifespan, through the middleware
        assert isinstance(getattr(first, "primary", first), SqlSessionRepository)
        async with httpx.AsyncClient(transport=sim.transport(), base_url="http://api.test") as c:
            claim = await c.post("/sessions/s-1/claim", json={"alloc_id": WORKER})
            assert claim.json() == {"owner": WORKER, "won": True}
            assert (await c.get("/health")).json() == {"status": "ok", "backend": "sqlite"}
            await sim.stop(API)  # the lifespan shutdown closes the container's resources
            with pytest.raises(RepositoryClosed):
                await first.lookup("s-1")
            await sim.start(API)  # a new process: a new container, wired and opened again
            assert len(containers) == 2
            second = await containers[1].repository()
            assert second is not first
            assert (await c.get("/sessions/s-1")).json() == {"owner": WORKER}


async def test_bindings_made_through_the_injected_repository_route_requests(
    fake_clock: FakeClock,
) -> None:
    shared = MemorySessionRepository(clock=fake_clock)  # the store both machines use

    def machine(machine_id: str) -> Any:
        if machine_id == WORKER:
            return FlyReplayMiddleware(worker, shared, instance_id=WORKER)
        container = Container()
        container.repository.override(providers.Object(shared))  # one line, as documented
        app = fastapi_example().create_app(container)
        return FlyReplayMiddleware(app, shared, instance_id=API, clock=fake_clock)

    choices = iter([API, API, API, WORKER])
    async with (
        FlyProxySimulator(machine, [API, WORKER], chooser=lambda running: next(choices)) as sim,
        httpx.AsyncClient(transport=sim.transport(), base_url="http://api.test") as client,
    ):
        # An endpoint, with the repository injected, hands session s-1 to the worker...
        answer = await client.post("/sessions/s-1/claim", json={"alloc_id": WORKER})
        assert answer.json() == {"owner": WORKER, "won": True}
        # ...so the API machine's middleware replays s-1's requests there,
        response = await client.get("/health", headers={"mcp-session-id": "s-1"})
        assert response.text == WORKER
        assert sim.deliveries[-1].replays == 1
        # while requests without a session stay where they land.
        assert (await client.get("/health")).json()["backend"] == "memory"
        # The worker's middleware reads the same binding: s-1 is its own, served there.
        assert (await client.get("/anything", headers={"mcp-session-id": "s-1"})).text == WORKER
        assert sim.deliveries[-1].replays == 0
