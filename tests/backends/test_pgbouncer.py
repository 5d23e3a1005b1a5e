"""PostgreSQL through PgBouncer (``.ci/pgbouncer``), with no option in the URL.

Transaction mode (127.0.0.1:6432) lends one of 5 server connections per transaction,
so the many clients here share them: a named prepared statement, a session setting
or a session advisory lock would show up on another client's transaction. Session
mode (:6433) keeps one server connection per client. A third PgBouncer in
transaction mode (:6434) ignores the library's startup parameters instead of refusing
them, as many setup guides configure it.

The migration tests drop and rebuild the schema of their own database,
``pgbouncer_migrate``, never that of the contract suite's ``pgbouncer_test``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from session_repo import SqlSessionRepository, StorageError
from session_repo.backends.sql.asyncpg_connect import unnamed_statements_class
from session_repo.backends.sql.engine import create_engine
from session_repo.backends.sql.errors import is_transient
from session_repo.backends.sql.migrate import head_revision, schema_revision, upgrade
from tests.servers import migrated_url, require_server, server_url, servers_required

pytestmark = pytest.mark.server

MODES = ["pgbouncer", "pgbouncer-session"]
IGNORING_URL = os.environ.get(
    "SESSION_REPO_TEST_PGBOUNCER_IGNORING_URL",
    "postgresql+asyncpg://postgres@127.0.0.1:6434/pgbouncer_test",
)
ROOT = Path(__file__).resolve().parents[2]


def _fresh_owner() -> str:
    """An owner no other test knows: the shared database may hold a lapsed heartbeat
    of a common name (``"a"``, ``"machine-a"``), which would make its new bindings dead."""
    return f"owner-{uuid.uuid4().hex[:12]}"


def _direct(url: str, database: str | None = None) -> str:
    """The same database on PostgreSQL itself (for what is checked behind the pooler)."""
    pooled = make_url(url)
    direct = make_url(server_url("postgresql")).set(database=database or pooled.database)
    return direct.render_as_string(hide_password=False)


def _raw_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _require_ignoring() -> str:
    migrated_url("pgbouncer")  # the same database: its schema at head
    parts = make_url(IGNORING_URL)
    try:
        with socket.create_connection((parts.host, parts.port), timeout=1.0):
            pass
    except OSError:
        reason = f"PgBouncer ignoring startup parameters not reachable at {parts.host}:{parts.port}"
        if servers_required():
            pytest.fail(f"{reason} (servers are required here)")
        pytest.skip(reason)
    return IGNORING_URL


@pytest.fixture(params=MODES)
def pooled_url(request: pytest.FixtureRequest) -> str:
    """The contract suite's database through PgBouncer, schema at head."""
    return migrated_url(str(request.param))


@pytest.fixture(params=MODES)
async def empty_db_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """``pgbouncer_migrate`` through PgBouncer, with no schema at all."""
    url = _with_database(require_server(str(request.param)), "pgbouncer_migrate")
    await _drop_schema(_direct(url))
    yield url
    await _drop_schema(_direct(url))


async def _drop_schema(direct_url: str) -> None:
    conn = await asyncpg.connect(_raw_dsn(direct_url))
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS session_bindings, session_owners, alembic_version; "
            "DROP SEQUENCE IF EXISTS session_generation"
        )
    finally:
        await conn.close()


async def _direct_fetchval(url: str, query: str) -> Any:
    conn = await asyncpg.connect(_raw_dsn(_direct(url)))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


# -- migrations ----------------------------------------------------------------------


async def test_migrations_from_many_instances_at_once(empty_db_url: str) -> None:
    """``session-repo migrate``, Alembic's own CLI and the library's upgrade, all at
    once (processes: Alembic's context is one per process): the advisory lock is held
    for each migration's transaction, so they take turns."""
    env = {**os.environ, "SESSION_STORE_URL": empty_db_url}
    commands = [
        [sys.executable, "-m", "session_repo", "migrate", "--url", empty_db_url],
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
    ]
    processes = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
        for argv in commands
    ]
    engine = create_engine(empty_db_url, pool_size=1)
    try:
        await upgrade(engine)
        for process in processes:
            output, _ = await asyncio.to_thread(process.communicate, timeout=90)
            assert process.returncode == 0, output
        assert await schema_revision(engine) == head_revision()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        await engine.dispose()
    # A transaction-level lock ends with its transaction: none is left on a server
    # connection the pooler lends to others.
    held = await _direct_fetchval(
        empty_db_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    )
    assert held == 0
    assert await _direct_fetchval(empty_db_url, "SELECT count(*) FROM session_bindings") == 0


async def test_auto_migrate_on_open_then_every_operation(empty_db_url: str) -> None:
    async with SqlSessionRepository(empty_db_url, auto_migrate=True, cleanup_interval=0) as repo:
        await repo.upsert("s-migrated", "a")
        assert await repo.lookup("s-migrated") == "a"
        assert await repo.claim("s-migrated", "b", replacing="a") == "b"
        assert await repo.touch("s-migrated") is True
        assert await repo.delete("s-migrated") is True
        assert await repo.lookup("s-migrated") is None
        assert (await repo.health()).status == "ok"
    # Opening again reads the revision (the schema check) on a fresh connection.
    async with SqlSessionRepository(empty_db_url, cleanup_interval=0) as repo:
        assert await repo.lookup("s-migrated") is None


# -- many clients on few server connections -------------------------------------------


async def test_many_concurrent_operations_share_the_server_connections(pooled_url: str) -> None:
    prefix = uuid.uuid4().hex
    # Transaction mode: 3 x 16 client connections on 5 server connections. Session
    # mode gives each client connection a server connection of its own: they must fit
    # in PgBouncer's pool (40), or the ones beyond it wait for one to be free.
    pool_size = 8 if make_url(pooled_url).port == 6432 else 4
    repos = [
        SqlSessionRepository(pooled_url, cleanup_interval=0, pool_size=pool_size) for _ in range(3)
    ]
    errors: list[BaseException] = []
    try:
        for repo in repos:
            await repo.open()

        async def client(n: int) -> None:
            repo = repos[n % len(repos)]
            session = f"{prefix}-{n}"
            try:
                for round_ in range(5):
                    await repo.upsert(session, f"a{n}-{round_}", ttl=60)
                    assert await repo.lookup(session) == f"a{n}-{round_}"
                    assert await repo.touch(session, ttl=60) is True
                assert await repo.claim(session, f"b{n}", replacing=f"a{n}-4") == f"b{n}"
                if n % 2:
                    assert await repo.delete(session) is True
            except BaseException as exc:
                errors.append(exc)
                raise

        await asyncio.gather(*(client(n) for n in range(300)), return_exceptions=True)
        assert errors == []
        found = await asyncio.gather(*(repos[0].lookup(f"{prefix}-{n}") for n in range(300)))
        assert found == [None if n % 2 else f"b{n}" for n in range(300)]
        assert await repos[1].delete_owner("b0") == 1
        metrics = await repos[2].metrics()
        assert metrics.sessions is not None
        assert metrics.sessions >= 149
    finally:
        for repo in repos:
            await repo.close()


async def test_concurrent_claims_of_one_session_have_one_winner(pooled_url: str) -> None:
    session = f"race-{uuid.uuid4().hex}"
    repos = [SqlSessionRepository(pooled_url, cleanup_interval=0, pool_size=4) for _ in range(4)]
    try:
        for repo in repos:
            await repo.open()
        answers = await asyncio.gather(
            *(repos[n % 4].claim(session, f"owner-{n}", ttl=60) for n in range(64))
        )
        assert len(set(answers)) == 1  # every caller was told the one winner
        assert answers[0].startswith("owner-")
        assert await repos[3].lookup(session) == answers[0]
    finally:
        for repo in repos:
            await repo.close()


async def test_cleanup_removes_expired_rows_through_the_pooler(pooled_url: str) -> None:
    from session_repo.testing import FakeClock

    clock = FakeClock()
    prefix = uuid.uuid4().hex
    async with SqlSessionRepository(
        pooled_url, clock=clock, cleanup_interval=0, cleanup_batch=7, cleanup_grace=2
    ) as repo:
        await asyncio.gather(*(repo.upsert(f"{prefix}-{n}", "gone", ttl=5) for n in range(30)))
        await repo.upsert(f"{prefix}-kept", "kept", ttl=3600)
        clock.advance(10)
        assert await repo.cleanup() >= 30
        assert await repo.lookup(f"{prefix}-kept") == "kept"
        assert await repo.lookup(f"{prefix}-0") is None


async def test_repositories_opened_and_closed_over_and_over(pooled_url: str) -> None:
    """The schema check and pre-pings are SQLAlchemy's statements: none is ever missing
    ("prepared statement ... does not exist") or taken ("already exists")."""

    async def one(n: int) -> str | None:
        async with SqlSessionRepository(pooled_url, cleanup_interval=0, pool_size=2) as repo:
            await repo.upsert(f"reopen-{n}", f"a{n}")
            return await repo.lookup(f"reopen-{n}")

    for _ in range(3):
        assert await asyncio.gather(*(one(n) for n in range(12))) == [f"a{n}" for n in range(12)]
    # Unnamed, every one: none stays on the server connections the pooler shares.
    conn = await asyncpg.connect(_raw_dsn(pooled_url), statement_cache_size=0)
    try:
        seen = [
            await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") for _ in range(20)
        ]
    finally:
        await conn.close()
    assert seen == [0] * 20


# -- statement_timeout ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pgbouncer", "pgbouncer-ignoring"])
async def test_a_slow_statement_is_cancelled_in_transaction_mode(mode: str) -> None:
    url = _require_ignoring() if mode == "pgbouncer-ignoring" else migrated_url("pgbouncer")
    marker = f"slow-{uuid.uuid4().hex}"
    async with SqlSessionRepository(url, cleanup_interval=0, statement_timeout=0.5) as repo:
        started = time.monotonic()
        async with repo.engine.connect() as conn:
            with pytest.raises((DBAPIError, TimeoutError)) as info:
                await conn.execute(text(f"SELECT pg_sleep(5) /* {marker} */"))
        assert time.monotonic() - started < 3
        assert is_transient(info.value) is True
        # Cancelled on the server too, not left running on a shared server connection.
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        )
        for _ in range(20):
            if await _direct_fetchval(url, query) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _direct_fetchval(url, query) == 0
        # No setting leaked to the server connections the pooler lends to others.
        conn_to_server = await asyncpg.connect(_raw_dsn(url), statement_cache_size=0)
        try:
            shown = {await conn_to_server.fetchval("SHOW statement_timeout") for _ in range(10)}
        finally:
            await conn_to_server.close()
        assert shown == {"0"}
        owner = _fresh_owner()  # the repository carries on
        await repo.upsert(marker, owner)
        assert await repo.lookup(marker) == owner


async def test_a_row_locked_elsewhere_times_out_in_transaction_mode() -> None:
    url = migrated_url("pgbouncer")
    async with SqlSessionRepository(url, cleanup_interval=0, statement_timeout=0.5) as repo:
        session = f"held-{uuid.uuid4().hex}"
        await repo.upsert(session, _fresh_owner())
        holder = await asyncpg.connect(_raw_dsn(_direct(url)))
        try:
            async with holder.transaction():
                await holder.execute("UPDATE session_bindings SET alloc_id = 'holder'")
                started = time.monotonic()
                with pytest.raises(StorageError) as info:
                    await repo.touch(session)
                waited = time.monotonic() - started
        finally:
            await holder.close()
        assert info.value.transient is True
        assert 0.3 < waited < 3
        assert await repo.touch(session) is True  # the pool recovered


# -- how the engine reads the pooler ---------------------------------------------------


def _fast_path_driver_settings(repo: SqlSessionRepository) -> Any:
    async def read() -> tuple[int, float | None]:
        async with repo.engine.connect() as sa_conn:
            conn: Any = (await sa_conn.get_raw_connection()).driver_connection
            return conn._stmt_cache.get_max_size(), conn._config.command_timeout

    return read()


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?prepared_statement_cache_size=0",
        "?statement_cache_size=0",
        "?prepared_statement_cache_size=0&statement_cache_size=0",
    ],
)
async def test_statement_cache_options_work_through_the_pooler(query: str) -> None:
    url = migrated_url("pgbouncer") + query
    async with SqlSessionRepository(url, cleanup_interval=0, statement_timeout=4) as repo:
        owner = _fresh_owner()
        await asyncio.gather(*(repo.upsert(f"opt-{n}", owner) for n in range(40)))
        assert await asyncio.gather(*(repo.lookup(f"opt-{n}") for n in range(40))) == [owner] * 40
        assert await repo.claim("opt-0", "b", replacing=owner) == "b"
        # Unnamed statements, bounded by the client at the statement timeout.
        assert await _fast_path_driver_settings(repo) == (0, 4)


async def test_a_pooler_that_ignores_startup_parameters_is_found_too() -> None:
    url = _require_ignoring()
    async with SqlSessionRepository(url, cleanup_interval=0, statement_timeout=4) as repo:
        owner = _fresh_owner()
        await asyncio.gather(*(repo.upsert(f"ign-{n}", owner) for n in range(40)))
        assert await asyncio.gather(*(repo.lookup(f"ign-{n}") for n in range(40))) == [owner] * 40
        assert await _fast_path_driver_settings(repo) == (0, 4)


async def test_statements_are_kept_unnamed_and_survive_errors() -> None:
    """Behind a pooler each statement with arguments is kept, unnamed, so a call is one
    round trip; one that fails is prepared afresh on the next call."""
    url = migrated_url("pgbouncer")
    async with (
        SqlSessionRepository(url, cleanup_interval=0) as repo,
        repo.engine.connect() as sa_conn,
    ):
        conn: Any = (await sa_conn.get_raw_connection()).driver_connection
        assert isinstance(conn, unnamed_statements_class())
        assert [await conn.fetchval("SELECT $1::int + 1", n) for n in range(20)] == list(
            range(1, 21)
        )
        assert conn.kept == ["SELECT $1::int + 1"]
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.fetchval("SELECT 1 / $1::int", 0)
        assert await conn.fetchval("SELECT 1 / $1::int", 1) == 1
        update = "UPDATE session_bindings SET alloc_id = alloc_id WHERE session_key = $1"
        assert await conn.execute(update, b"no-such-key") == "UPDATE 0"
        row = await conn.fetchrow("SELECT $1::text AS a, $2::int AS b", "x", 2)
        assert (row["a"], row["b"]) == ("x", 2)
        assert await conn.fetch("SELECT generate_series(1, $1::int)", 3) == [(1,), (2,), (3,)]
        await conn.executemany(update, [(b"k1",), (b"k2",)])
        assert await conn.execute("SELECT 1") == "SELECT 1"  # no arguments: simple query


async def test_postgresql_itself_keeps_named_statements_and_server_timeouts() -> None:
    """Reached directly, nothing changes: asyncpg's statement cache, the server's bounds."""
    url = migrated_url("postgresql")
    async with SqlSessionRepository(url, cleanup_interval=0, statement_timeout=4) as repo:
        await repo.lookup("direct")
        size, command_timeout = await _fast_path_driver_settings(repo)
        assert size > 0
        assert command_timeout == 5
        async with repo.engine.connect() as sa_conn:
            driver = (await sa_conn.get_raw_connection()).driver_connection
            assert type(driver) is asyncpg.Connection
        async with repo.engine.connect() as conn:
            shown = (await conn.execute(text("SHOW statement_timeout"))).scalar()
        assert shown == "4s"
