"""The health endpoint answers as orchestrators expect: 200 ok, 503 down."""

from __future__ import annotations

from pathlib import Path

import httpx

from session_repo import MemorySessionRepository, SqlSessionRepository
from session_repo.asgi import health_app


async def get(app: object, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, "/healthz")


async def test_ok_is_200_with_the_health_as_json() -> None:
    async with MemorySessionRepository() as repo:
        response = await get(health_app(repo))
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["backend"] == "memory"
    assert response.headers["cache-control"] == "no-store"


async def test_an_unreachable_store_is_503(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    repo = SqlSessionRepository(f"sqlite+aiosqlite:///{blocker}/sub/db.sqlite")
    response = await get(health_app(repo))
    await repo.close()
    assert response.status_code == 503
    assert response.json()["status"] == "down"
    assert "a-file" in response.json()["detail"]


async def test_closed_is_503_and_head_has_no_body() -> None:
    repo = MemorySessionRepository()
    await repo.close()
    response = await get(health_app(repo))
    assert response.status_code == 503
    head = await get(health_app(MemorySessionRepository()), "HEAD")
    assert head.status_code == 200
    assert head.content == b""


async def test_other_methods_are_405() -> None:
    response = await get(health_app(MemorySessionRepository()), "POST")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_degraded_answers_as_configured(tmp_path: Path) -> None:
    from session_repo import ResilientSessionRepository

    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    primary = SqlSessionRepository(f"sqlite+aiosqlite:///{path}", cleanup_interval=0)
    async with ResilientSessionRepository(primary, retry_count=1, retry_delay=0) as repo:
        serving = await get(health_app(repo))
        strict = await get(health_app(repo, degraded_status=503))
    assert (serving.status_code, serving.json()["status"]) == (200, "degraded")
    assert (strict.status_code, strict.json()["status"]) == (503, "degraded")
