"""The files under ``docs/examples/`` run and do what the docs say."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from dependency_injector import providers

from session_repo import (
    MemorySessionRepository,
    RepositoryClosed,
    ResilientSessionRepository,
    SqlSessionRepository,
)
from session_repo.container import Container
from session_repo.testing import FakeClock
from tests.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
EXAMPLES = ROOT / "docs" / "examples"


def example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` the way ``uvicorn name:app`` would."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SESSION_STORE_"):
            monkeypatch.delenv(name)


# -- FastAPI + Container ------------------------------------------------------


async def test_fastapi_app_over_http_on_a_sqlite_file(tmp_path: Path) -> None:
    fastapi_app = example("fastapi_app")
    url = f"sqlite+aiosqlite:///{tmp_path}/sessions.sqlite"
    container = Container()
    container.config.from_dict({"url": url})
    app = fastapi_app.create_app(container)
    transport = httpx.ASGITransport(app=app)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        repo = await container.repository()
        assert isinstance(repo, ResilientSessionRepository)
        assert isinstance(repo.primary, SqlSessionRepository)

        response = await client.post("/sessions/s-1/claim", json={"alloc_id": "machine-a"})
        assert response.status_code == 200
        assert response.json() == {"owner": "machine-a", "won": True}
        response = await client.post("/sessions/s-1/claim", json={"alloc_id": "machine-b"})
        assert response.json() == {"owner": "machine-a", "won": False}
        response = await client.post(
            "/sessions/s-1/claim", json={"alloc_id": "machine-b", "replacing": "machine-a"}
        )
        assert response.json() == {"owner": "machine-b", "won": True}
        await client.post("/sessions/s-2/claim", json={"alloc_id": "machine-b"})

        response = await client.get("/sessions/s-1")
        assert (response.status_code, response.json()) == (200, {"owner": "machine-b"})
        assert (await client.delete("/sessions/s-1")).status_code == 204
        assert (await client.delete("/sessions/s-1")).status_code == 404
        assert (await client.get("/sessions/s-1")).status_code == 404
        assert (await client.get("/sessions/unknown")).status_code == 404

        response = await client.get("/health")
        assert response.json() == {"status": "ok", "backend": "sqlite"}

    # The lifespan closed the repository; what was written is in the file.
    with pytest.raises(RepositoryClosed):
        await repo.lookup("s-2")
    async with SqlSessionRepository(url) as reopened:
        assert await reopened.lookup("s-2") == "machine-b"
        assert await reopened.lookup("s-1") is None


async def test_fastapi_app_with_the_repository_overridden(fake_clock: FakeClock) -> None:
    fastapi_app = example("fastapi_app")
    container = Container()
    container.repository.override(providers.Object(MemorySessionRepository(clock=fake_clock)))
    app = fastapi_app.create_app(container)
    transport = httpx.ASGITransport(app=app)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        body = {"alloc_id": "machine-a", "ttl": 30}
        assert (await client.post("/sessions/s/claim", json=body)).json()["won"] is True
        fake_clock.advance(30)  # the binding expires on the injected clock
        assert (await client.get("/sessions/s")).status_code == 404
        response = await client.post("/sessions/s/claim", json={"alloc_id": "machine-b"})
        assert response.json() == {"owner": "machine-b", "won": True}
        assert (await client.get("/health")).json()["backend"] == "memory"


async def test_fastapi_app_rejects_bad_input_without_echoing_the_session_id() -> None:
    fastapi_app = example("fastapi_app")
    container = Container()
    container.config.from_dict({"url": "memory://"})
    app = fastapi_app.create_app(container)
    transport = httpx.ASGITransport(app=app)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        response = await client.get("/sessions/secret-token%01")  # a control character
        assert response.status_code == 422
        assert "control characters" in response.text
        assert "secret-token" not in response.text
        response = await client.post("/sessions/s/claim", json={"alloc_id": "has space"})
        assert response.status_code == 422
        assert "alloc_id" in response.text
        assert (await client.get("/sessions/s")).status_code == 404  # nothing was written


# -- the quick start ----------------------------------------------------------


def test_quickstart_runs_and_prints_what_the_readme_says() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "owner: machine-a",
        "claim: machine-a",
        "claim: machine-b",
        "touch: True",
        "expired: None",
        "machine-a gone: 1",
        "cleaned: 1",
        "live: 1",
    ]
    assert not list(ROOT.glob("sessions.sqlite*"))  # it used a temporary directory


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_docs_show_the_quickstart_file_verbatim(page: str) -> None:
    source = (EXAMPLES / "quickstart.py").read_text()
    assert source.strip() in (ROOT / page).read_text()


# -- the service layer ----------------------------------------------------------


async def test_service_layer_with_fakes_passed_in(fake_clock: FakeClock) -> None:
    service_layer = example("service_layer")
    shared = MemorySessionRepository(clock=fake_clock)
    a = service_layer.bootstrap(repository=shared, instance_id="machine-a")
    b = service_layer.bootstrap(repository=shared, instance_id="machine-b")

    assert await a.place("s-1") == "machine-a"
    assert await b.place("s-1") == "machine-a"  # a holds it: b sends the request there
    assert await a.is_local("s-1")
    assert not await b.is_local("s-1")

    fake_clock.advance(a.ttl)  # a's claim lapses
    assert await b.place("s-1") == "machine-b"
    assert await a.take_over("s-1", dead_owner="machine-a") == "machine-b"  # b was first
    assert await a.take_over("s-1", dead_owner="machine-b") == "machine-a"
    assert await b.place("s-2") == "machine-b"
    assert await b.retire() == 1  # s-2; s-1 is a's now
    assert await shared.lookup("s-2") is None
    assert await shared.lookup("s-1") == "machine-a"


def test_service_layer_bootstrap_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    service_layer = example("service_layer")
    monkeypatch.setenv("SESSION_STORE_URL", "memory://")
    monkeypatch.setenv("FLY_MACHINE_ID", "148ed193b95089")
    placement = service_layer.bootstrap()
    assert isinstance(placement.repository, MemorySessionRepository)
    assert placement.instance_id == "148ed193b95089"


# -- fencing tokens -------------------------------------------------------------


async def test_fencing_example_refuses_the_stalled_owner() -> None:
    fencing = example("fencing")
    said = await fencing.main()
    assert said[0].startswith("b took over with generation")
    assert "refused" in said[1]
    assert said[2].endswith("machine-b")


def test_fencing_store_catches_a_stale_generation() -> None:
    store = example("fencing").FencedStore()
    store.write("s", "new", 5)
    with pytest.raises(example("fencing").StaleOwner):
        store.write("s", "old", 4)
    assert store.data == {"s": "new"}
