"""Cookie keys: a plain Starlette app with its own session cookie, on three machines.

``docs/examples/fly_cookie_app.py`` keeps each shopping cart in one machine's memory
and sets a ``sid`` cookie; ``FlyReplayMiddleware(cookie="sid")``, added through
Starlette's ``middleware=[...]``, routes by it. httpx clients keep their cookies like a
browser, through ``FlyProxySimulator``; the machines share a SQLite file.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_repo import MemorySessionRepository, SqlSessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FlyProxySimulator
from tests.paths import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from fly_cookie_app import create_app  # noqa: E402

SECRET = "cookie-replay-secret"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'carts.sqlite'}"


@pytest.fixture
async def probe(url: str) -> AsyncIterator[SqlSessionRepository]:
    async with SqlSessionRepository(url, cleanup_interval=0) as repo:
        yield repo


def fleet(url: str, seed: int = 1) -> FlyProxySimulator:
    def machine(machine_id: str) -> Any:
        repository = SqlSessionRepository(url, cleanup_interval=0)
        return create_app(repository, instance_id=machine_id, state_secret=SECRET)

    return FlyProxySimulator(machine, 3, seed=seed, session_header="x-none")


def browser(sim: FlyProxySimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://shop.fly.test")


def test_the_middleware_is_added_the_starlette_way() -> None:
    app = create_app(MemorySessionRepository(), instance_id="148ed193b95089")
    (fly,) = app.user_middleware
    assert fly.cls is FlyReplayMiddleware
    assert fly.kwargs["cookie"] == "sid"


async def test_a_cart_stays_on_the_machine_that_set_its_cookie(
    url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(url) as sim, browser(sim) as client:
        login = await client.post("/login")
        assert login.status_code == 201
        home = login.json()["machine"]
        sid = client.cookies["sid"]
        assert await probe.lookup(sid) == home  # learned from Set-Cookie
        for n in range(20):
            answer = (await client.post(f"/cart/item-{n}")).json()
            assert answer["machine"] == home
            assert answer["items"] == [f"item-{i}" for i in range(n + 1)]  # all in one memory
        assert (await client.get("/cart")).json()["machine"] == home
        assert sim.replays > 5
        assert all(d.served_by == home for d in sim.deliveries)

        assert (await client.delete("/session")).status_code == 204
        assert await probe.lookup(sid) is None  # DELETE answered 2xx: unbound
        assert "sid" not in client.cookies
        assert (await client.get("/cart")).status_code == 401


async def test_a_404_for_an_unrelated_path_leaves_the_cart_where_it_is(
    url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(url, seed=5) as sim, browser(sim) as client:
        home = (await client.post("/login")).json()["machine"]
        sid = client.cookies["sid"]
        await client.post("/cart/apple")
        for _ in range(5):  # a browser asks for these with the session cookie
            assert (await client.get("/favicon.ico")).status_code == 404
            assert (await client.get("/robots.txt")).status_code == 404
        assert await probe.lookup(sid) == home  # the 404s were not about the session
        assert (await client.get("/cart")).json() == {"machine": home, "items": ["apple"]}
        assert all(d.served_by == home for d in sim.deliveries)


async def test_a_stale_cookie_for_a_crashed_machine_is_unbound_and_login_starts_over(
    url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(url, seed=2) as sim, browser(sim) as client:
        home = (await client.post("/login")).json()["machine"]
        sid = client.cookies["sid"]
        await sim.stop(home, graceful=False)  # the cart is gone; the binding is not
        assert await probe.lookup(sid) == home
        response = await client.get("/cart")
        assert response.status_code == 404  # unknown session, said by a live machine
        assert sim.deliveries[-1].fell_back  # Fly could not reach the owner
        assert await probe.lookup(sid) is None
        new_home = (await client.post("/login")).json()["machine"]
        assert new_home != home
        assert (await client.post("/cart/x")).json() == {"machine": new_home, "items": ["x"]}


async def test_a_clean_stop_releases_every_binding_of_the_machine(
    url: str, probe: SqlSessionRepository
) -> None:
    async with fleet(url, seed=3) as sim:
        clients = [browser(sim) for _ in range(9)]
        homes = [(await c.post("/login")).json()["machine"] for c in clients]
        victim = homes[0]
        await sim.stop(victim)  # the app's lifespan calls delete_owner
        assert await probe.delete_owner(victim) == 0
        for client, home in zip(clients, homes, strict=True):
            status = (await client.get("/cart")).status_code
            assert status == (404 if home == victim else 200)
            await client.aclose()


async def test_ten_browsers_at_once_each_keep_their_cart_home(url: str) -> None:
    async def shop(sim: FlyProxySimulator, n: int) -> None:
        async with browser(sim) as client:
            home = (await client.post("/login")).json()["machine"]
            for i in range(10):
                answer = (await client.post(f"/cart/{n}-{i}")).json()
                assert answer == {"machine": home, "items": [f"{n}-{j}" for j in range(i + 1)]}

    async with fleet(url, seed=4) as sim:
        await asyncio.gather(*(shop(sim, n) for n in range(10)))
        assert sim.replays > 20
        assert all(d.status < 400 for d in sim.deliveries)
