"""The schema's first change, for real: a database full of 0001 rows upgrades to leases.

On SQLite, PostgreSQL and MariaDB: a database at revision 0001 is filled with bindings
the way the 0.x releases wrote them; the new code refuses it on a server
(``SchemaOutOfDate``) and migrates it on SQLite; after the upgrade (``session-repo
migrate`` on servers) every row is still there, live ones still answer, each has a
generation, and the generations drawn afterwards are greater. The downgrade keeps the
rows too. Then the whole contract suite (bindings and leases) runs on the upgraded
database, in a pytest of its own pointed at it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import SchemaOutOfDate, SqlSessionRepository
from session_repo.backends.sql.migrate import head_revision, schema_revision, upgrade
from session_repo.testing import FakeClock
from tests.paths import PROJECT_ROOT
from tests.servers import require_server

DB = "session_repo_upgrade"
ROWS = 3000
NOW_MS = 1_700_000_000_000
OWNERS = [f"machine-{n}" for n in range(5)]


def session_id(n: int) -> str:
    return f"old-session-{n}"


def old_rows() -> list[dict[str, object]]:
    """Bindings as 0001 kept them: every third one expired."""
    return [
        {
            "k": hashlib.sha256(session_id(n).encode()).digest(),
            "a": OWNERS[n % len(OWNERS)],
            "e": NOW_MS - 1000 if n % 3 == 0 else NOW_MS + 3_600_000,
        }
        for n in range(ROWS)
    ]


async def _recreate(admin_url: str) -> str:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
            await conn.execute(text(f"DROP DATABASE IF EXISTS {DB}{force}"))
            await conn.execute(text(f"CREATE DATABASE {DB}"))
    finally:
        await engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + DB


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.server),
        pytest.param("mariadb", marks=pytest.mark.server),
    ]
)
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at revision 0001 holding ``ROWS`` bindings; its URL."""
    name: str = request.param
    if name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite'}"
    else:
        url = await _recreate(require_server(name))
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await upgrade(engine, "0001")
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO session_bindings (session_key, alloc_id, expires_at) "
                     "VALUES (:k, :a, :e)"),
                old_rows(),
            )  # fmt: skip
        assert await schema_revision(engine) == "0001"
    finally:
        await engine.dispose()
    return url


async def _bindings(engine: AsyncEngine) -> list[tuple[bytes, str, int, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT session_key, alloc_id, expires_at, generation FROM session_bindings")
        )
        return [(bytes(k), a, e, g) for k, a, e, g in result.all()]


def _migrate_with_the_cli(url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_repo", "migrate", "--url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_a_full_0001_database_upgrades_and_keeps_its_bindings(old_database: str) -> None:
    url = old_database
    clock = FakeClock(NOW_MS / 1000)
    if url.startswith("sqlite"):
        repo = SqlSessionRepository(url, clock=clock, cleanup_interval=0)  # migrates on open
    else:
        with pytest.raises(SchemaOutOfDate, match="migrate"):
            async with SqlSessionRepository(url, clock=clock, cleanup_interval=0):
                pass
        _migrate_with_the_cli(url)
        repo = SqlSessionRepository(url, clock=clock, cleanup_interval=0)
    async with repo:
        rows = await _bindings(repo.engine)
        assert sorted((k, a, e) for k, a, e, _ in rows) == sorted(
            (r["k"], r["a"], r["e"]) for r in old_rows()
        )
        assert all(generation >= 1 for *_, generation in rows)
        highest = max(generation for *_, generation in rows)
        for n in (1, 2, 4, 5, ROWS - 1):
            assert await repo.lookup(session_id(n)) == OWNERS[n % len(OWNERS)]
            assert (await repo.acquire(session_id(n), "newcomer")).owner != "newcomer"
        assert await repo.lookup(session_id(0)) is None  # expired before the upgrade
        kept = await repo.lease(session_id(1))
        assert kept is not None
        taken = await repo.acquire(session_id(1), "newcomer", replacing=kept.owner)
        assert taken.owner == "newcomer"
        assert taken.generation > highest
        fresh = await repo.acquire("a-new-session", "newcomer")
        assert fresh.generation > taken.generation
        await repo.heartbeat("machine-2", 30)
        assert await repo.lookup(session_id(2)) == "machine-2"
        assert (await repo.metrics()).sessions == ROWS - len(range(0, ROWS, 3)) + 1


async def test_the_downgrade_keeps_the_bindings(old_database: str) -> None:
    engine = create_async_engine(old_database, poolclass=NullPool)
    alembic = [sys.executable, "-m", "alembic", "-c", str(PROJECT_ROOT / "alembic.ini")]
    env = {**os.environ, "SESSION_STORE_URL": old_database}
    try:
        await upgrade(engine)
        assert await schema_revision(engine) == head_revision()
        for step in (["downgrade", "0001"], ["upgrade", "head"], ["downgrade", "0001"]):
            done = subprocess.run(
                [*alembic, *step], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
        assert await schema_revision(engine) == "0001"
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM session_bindings"))).scalar()
        assert count == ROWS
    finally:
        await engine.dispose()


def _sqlite_template(url: str, folder: Path) -> Path:
    """The upgraded file, emptied, for each contract test to start from a copy."""
    source = Path(url.removeprefix("sqlite+aiosqlite:///"))
    template = folder / "upgraded.sqlite"
    shutil.copy(source, template)
    with sqlite3.connect(template) as conn:
        conn.execute("DELETE FROM session_bindings")
    return template


async def test_the_contract_suite_passes_on_an_upgraded_database(
    old_database: str, tmp_path: Path
) -> None:
    engine = create_async_engine(old_database, poolclass=NullPool)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    env = dict(os.environ)
    if old_database.startswith("sqlite"):
        backend = "sqlite"
        env["SESSION_REPO_TEST_SQLITE_FROM"] = str(_sqlite_template(old_database, tmp_path))
    elif old_database.startswith("postgresql"):
        backend = "postgresql"
        env["SESSION_REPO_TEST_PG_URL"] = old_database
    else:
        backend = "mariadb"
        env["SESSION_REPO_TEST_MYSQL_URL"] = old_database
    suite = ["tests/contract/test_contract.py", "tests/contract/test_leases.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suite, "-k", backend],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in summary
    assert "failed" not in summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 100, summary
