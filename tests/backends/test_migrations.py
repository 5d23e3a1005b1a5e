"""Alembic owns the schema: upgrade, check (no drift) and downgrade on every SQL dialect,
run exactly as a user runs them (`alembic ...` at the repo root, URL from SESSION_STORE_URL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from session_repo import SchemaOutOfDate, SqlSessionRepository
from session_repo.backends.sql.migrate import head_revision
from tests.paths import PROJECT_ROOT
from tests.servers import require_server

ROOT = PROJECT_ROOT
ALEMBIC = str(Path(sys.executable).with_name("alembic"))
DB = "session_repo_migrations"


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


async def _recreate(url: str) -> str:
    """A fresh, empty database next to the test database; returns its URL."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
            else:
                await conn.execute(text(f"DROP DATABASE IF EXISTS {DB}"))
            await conn.execute(text(f"CREATE DATABASE {DB}"))
    finally:
        await engine.dispose()
    return _with_database(url, DB)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.server),
        pytest.param("mariadb", marks=pytest.mark.server),
    ]
)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/migrations.sqlite"
        return
    yield asyncio.run(_recreate(require_server(request.param)))


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SESSION_STORE_URL": url}
    return subprocess.run(
        [ALEMBIC, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_upgrade_check_downgrade(fresh_url: str) -> None:
    up = alembic(fresh_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert {"session_bindings", "alembic_version"} <= tables(fresh_url)

    check = alembic(fresh_url, "check")
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    current = alembic(fresh_url, "current")
    assert f"{head_revision()} (head)" in current.stdout

    down = alembic(fresh_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert "session_bindings" not in tables(fresh_url)

    again = alembic(fresh_url, "upgrade", "head")
    assert again.returncode == 0, again.stderr
    assert "session_bindings" in tables(fresh_url)


def test_offline_sql_names_the_table(fresh_url: str) -> None:
    offline = alembic(fresh_url, "upgrade", "head", "--sql")
    assert offline.returncode == 0, offline.stderr
    assert "CREATE TABLE session_bindings" in offline.stdout
    assert "CREATE INDEX ix_session_bindings_expires_at" in offline.stdout
    assert "session_bindings" not in tables(fresh_url)  # printed, not run


def test_concurrent_upgrades_do_not_collide(fresh_url: str) -> None:
    env = {**os.environ, "SESSION_STORE_URL": fresh_url}
    runs = [
        subprocess.Popen(
            [ALEMBIC, "upgrade", "head"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    check = alembic(fresh_url, "check")
    assert check.returncode == 0, check.stderr


async def test_server_schema_behind_refuses_to_open(fresh_url: str) -> None:
    repo = SqlSessionRepository(fresh_url, cleanup_interval=0)
    if fresh_url.startswith("sqlite"):
        async with repo:  # SQLite upgrades itself on open
            assert await repo.claim("s", "a") == "a"
        return
    with pytest.raises(SchemaOutOfDate, match="session-repo migrate") as info:
        await repo.lookup("s")
    assert info.value.transient is False
    await repo.close()
    async with SqlSessionRepository(fresh_url, auto_migrate=True, cleanup_interval=0) as migrated:
        assert await migrated.claim("s", "a") == "a"
    async with SqlSessionRepository(fresh_url, cleanup_interval=0) as opened:
        assert await opened.lookup("s") == "a"


async def test_unknown_newer_revision_refuses(fresh_url: str) -> None:
    async with SqlSessionRepository(fresh_url, auto_migrate=True, cleanup_interval=0):
        pass
    engine = create_async_engine(fresh_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    finally:
        await engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="newer"):
        async with SqlSessionRepository(fresh_url, auto_migrate=True, cleanup_interval=0):
            pass
