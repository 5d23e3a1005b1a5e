"""One table: a real driver error for each case, and whether it is worth another try.

Every error here is produced for real: by SQLite on a locked, corrupt, read-only
or full file, by the operating system, or by a live PostgreSQL, MariaDB or Redis
(server-raised codes come from the server itself: ``RAISE .. USING ERRCODE`` and
``SIGNAL .. SET MYSQL_ERRNO``). Only Redis states we cannot reach safely on a
shared server (loading, read-only replica, out of memory) are built from the
driver's own classes with the server's real reply text.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import SchemaOutOfDate, SqlSessionRepository, StorageError
from session_repo.backends.redis.errors import is_transient as redis_is_transient
from session_repo.backends.sql.errors import (
    CONFLICT_ATTEMPTS,
    refused_by_server,
    retry_conflicts,
    storage_errors,
)
from session_repo.backends.sql.errors import is_transient as sql_is_transient
from tests.servers import migrated_url, require_server, server_url

Make = Callable[[Path], Awaitable[BaseException]]


@dataclass(frozen=True)
class Case:
    name: str
    make: Make
    transient: bool
    server: bool = False


async def raised(work: Callable[[], Awaitable[Any]] | Callable[[], Any]) -> BaseException:
    """The exception ``work`` raises (it must raise)."""
    try:
        result = work()
        if asyncio.iscoroutine(result):
            await result
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- SQLite ----------------------------------------------------------------------


def sqlite_db(tmp_path: Path, rows: int = 0) -> Path:
    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x TEXT NOT NULL UNIQUE)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"{i:0100d}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


async def sqlite_locked(tmp_path: Path) -> BaseException:
    path = sqlite_db(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        blocked = sqlite3.connect(path, timeout=0)
        return await raised(lambda: blocked.execute("INSERT INTO t VALUES ('x')"))
    finally:
        holder.execute("ROLLBACK")


async def sqlite_locked_via_sqlalchemy(tmp_path: Path) -> BaseException:
    path = sqlite_db(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
    try:

        async def write() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES ('x')"))

        return await raised(write)
    finally:
        await engine.dispose()
        holder.execute("ROLLBACK")


async def sqlite_interrupted(tmp_path: Path) -> BaseException:
    conn = sqlite3.connect(sqlite_db(tmp_path), check_same_thread=False)
    timer = threading.Timer(0.05, conn.interrupt)
    timer.start()
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    try:
        return await raised(lambda: conn.execute(endless).fetchall())
    finally:
        timer.cancel()


async def sqlite_not_a_database(tmp_path: Path) -> BaseException:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(os.urandom(8192))
    return await raised(lambda: sqlite3.connect(path).execute("SELECT * FROM t"))


async def sqlite_malformed(tmp_path: Path) -> BaseException:
    path = sqlite_db(tmp_path, rows=2000)
    with path.open("r+b") as file:  # keep the header and the schema, ruin the b-trees
        file.seek(4096 * 2)
        file.write(b"\xff" * 4096 * 20)
    scan = "SELECT sum(length(x)) FROM t NOT INDEXED"
    return await raised(lambda: sqlite3.connect(path).execute(scan).fetchall())


async def sqlite_read_only(tmp_path: Path) -> BaseException:
    path = sqlite_db(tmp_path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return await raised(lambda: conn.execute("INSERT INTO t VALUES ('x')"))


async def sqlite_cannot_open(tmp_path: Path) -> BaseException:
    return await raised(lambda: sqlite3.connect(tmp_path / "missing-dir" / "t.sqlite"))


async def sqlite_full(tmp_path: Path) -> BaseException:
    conn = sqlite3.connect(sqlite_db(tmp_path))
    conn.execute("PRAGMA max_page_count = 3")
    rows = [(f"{i:0500d}",) for i in range(100)]
    return await raised(lambda: conn.executemany("INSERT INTO t VALUES (?)", rows))


async def sqlite_no_table(tmp_path: Path) -> BaseException:
    return await raised(lambda: sqlite3.connect(sqlite_db(tmp_path)).execute("SELECT * FROM nope"))


async def sqlite_constraint(tmp_path: Path) -> BaseException:
    conn = sqlite3.connect(sqlite_db(tmp_path))
    return await raised(lambda: conn.execute("INSERT INTO t VALUES (NULL)"))


async def sqlalchemy_pool_timeout(tmp_path: Path) -> BaseException:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{sqlite_db(tmp_path)}", pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    try:
        async with engine.connect():
            return await raised(engine.connect().__aenter__)
    finally:
        await engine.dispose()


async def schema_behind(tmp_path: Path) -> BaseException:
    repo = SqlSessionRepository(f"sqlite+aiosqlite:///{tmp_path}/new.sqlite", auto_migrate=False)
    try:
        exc = await raised(lambda: repo.lookup("s"))
    finally:
        await repo.close()
    assert isinstance(exc, SchemaOutOfDate)
    return exc


# -- the operating system ----------------------------------------------------------


async def os_refused(tmp_path: Path) -> BaseException:
    return await raised(lambda: socket.create_connection(("127.0.0.1", closed_port()), timeout=1))


async def os_timeout(tmp_path: Path) -> BaseException:
    return await raised(lambda: asyncio.wait_for(asyncio.sleep(1), 0.01))


async def os_permission_denied(tmp_path: Path) -> BaseException:
    return await raised(lambda: open("/proc/1/environ", "w"))


async def os_disk_full(tmp_path: Path) -> BaseException:
    def write() -> None:
        fd = os.open("/dev/full", os.O_WRONLY)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)

    return await raised(write)


async def os_read_only(tmp_path: Path) -> BaseException:
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {done.stderr.strip()}")
    try:
        return await raised(lambda: (mount / "f").write_bytes(b"x"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- PostgreSQL ----------------------------------------------------------------------


async def pg(*statements: str, url: str | None = None) -> BaseException:
    engine = create_async_engine(url or require_server("postgresql"), poolclass=NullPool)

    async def run() -> None:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))

    try:
        return await raised(run)
    finally:
        await engine.dispose()


def pg_raise(code: str) -> Make:
    return lambda _: pg(f"DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$")


async def pg_terminated(tmp_path: Path) -> BaseException:
    engine = create_async_engine(require_server("postgresql"), poolclass=NullPool)
    try:
        async with engine.connect() as victim, engine.connect() as killer:
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar()
            await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await asyncio.sleep(0.1)
            return await raised(lambda: victim.execute(text("SELECT 1")))
    finally:
        await engine.dispose()


async def asyncpg_terminated(tmp_path: Path) -> BaseException:
    """The PostgreSQL hot path's own driver, without SQLAlchemy in between."""
    import asyncpg

    dsn = pg_url(drivername="postgresql")
    victim = await asyncpg.connect(dsn)
    killer = await asyncpg.connect(dsn)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
        await asyncio.sleep(0.1)
        return await raised(lambda: victim.fetchval("SELECT 1"))
    finally:
        await killer.close()
        victim.terminate()


async def asyncpg_mid_protocol(tmp_path: Path) -> BaseException:
    """What asyncpg's pool raises for a connection the server cut mid-operation (seen
    when connections are killed under load); built with the driver's real message."""
    from asyncpg.exceptions import InternalClientError

    return InternalClientError("cannot switch to state 15; another operation (2) is in progress")


def pg_url(**parts: Any) -> str:
    from sqlalchemy.engine import make_url

    require_server("postgresql")
    return make_url(server_url("postgresql")).set(**parts).render_as_string(hide_password=False)


# -- MariaDB ---------------------------------------------------------------------------


async def my(*statements: str, url: str | None = None) -> BaseException:
    engine = create_async_engine(url or migrated_url("mariadb"), poolclass=NullPool)

    async def run() -> None:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))

    try:
        return await raised(run)
    finally:
        await engine.dispose()


def my_signal(errno: int, state: str = "HY000") -> Make:
    return lambda _: my(f"SIGNAL SQLSTATE '{state}' SET MYSQL_ERRNO = {errno}, MESSAGE_TEXT = 'x'")


async def my_killed(tmp_path: Path) -> BaseException:
    engine = create_async_engine(require_server("mariadb"), poolclass=NullPool)
    try:
        async with engine.connect() as victim, engine.connect() as killer:
            thread = (await victim.execute(text("SELECT CONNECTION_ID()"))).scalar()
            await killer.execute(text(f"KILL {int(thread or 0)}"))
            await asyncio.sleep(0.1)
            return await raised(lambda: victim.execute(text("SELECT 1")))
    finally:
        await engine.dispose()


def my_url(**parts: Any) -> str:
    from sqlalchemy.engine import make_url

    require_server("mariadb")
    return make_url(server_url("mariadb")).set(**parts).render_as_string(hide_password=False)


# -- Redis -------------------------------------------------------------------------------


async def redis_call(*command: Any, port: int | None = None, **options: Any) -> BaseException:
    import redis.asyncio as aioredis

    url = require_server("redis")
    if port is not None:
        url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url, **options)
    try:
        return await raised(lambda: client.execute_command(*command))
    finally:
        await client.aclose()


async def redis_wrong_type(tmp_path: Path) -> BaseException:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(require_server("redis"))
    key = "session-repo-translate:list"
    try:
        await client.rpush(key, "x")
        return await raised(lambda: client.get(key))
    finally:
        await client.delete(key)
        await client.aclose()


def redis_reply(name: str, reply: str) -> Make:
    async def make(_: Path) -> BaseException:
        from redis import exceptions

        error: BaseException = getattr(exceptions, name)(reply)
        return error

    return make


CASES = [
    # SQLite: busy and interrupted are worth another try; a broken file is not.
    Case("sqlite-locked", sqlite_locked, True),
    Case("sqlite-locked-via-sqlalchemy", sqlite_locked_via_sqlalchemy, True),
    Case("sqlite-interrupted", sqlite_interrupted, True),
    Case("sqlite-not-a-database", sqlite_not_a_database, False),
    Case("sqlite-malformed", sqlite_malformed, False),
    Case("sqlite-read-only", sqlite_read_only, False),
    Case("sqlite-cannot-open", sqlite_cannot_open, False),
    Case("sqlite-disk-full", sqlite_full, False),
    Case("sqlite-no-such-table", sqlite_no_table, False),
    Case("sqlite-constraint", sqlite_constraint, False),
    Case("sqlalchemy-pool-timeout", sqlalchemy_pool_timeout, True),
    Case("schema-out-of-date", schema_behind, False),
    # The operating system.
    Case("os-connection-refused", os_refused, True),
    Case("os-timeout", os_timeout, True),
    Case("os-permission-denied", os_permission_denied, False),
    Case("os-disk-full", os_disk_full, False),
    Case("os-read-only-filesystem", os_read_only, False),
    # PostgreSQL.
    Case("pg-serialization-failure", pg_raise("40001"), True, server=True),
    Case("pg-deadlock", pg_raise("40P01"), True, server=True),
    Case("pg-lock-not-available", pg_raise("55P03"), True, server=True),
    Case("pg-cannot-connect-now", pg_raise("57P03"), True, server=True),
    Case("pg-too-many-connections", pg_raise("53300"), True, server=True),
    Case(
        "pg-statement-timeout",
        lambda _: pg("SET statement_timeout = 20", "SELECT pg_sleep(2)"),
        True,
        server=True,
    ),
    Case("pg-terminated", pg_terminated, True, server=True),
    Case("asyncpg-terminated", asyncpg_terminated, True, server=True),
    Case("asyncpg-mid-protocol", asyncpg_mid_protocol, True),
    Case(
        "pg-connection-refused",
        lambda _: pg("SELECT 1", url=pg_url(port=closed_port())),
        True,
        server=True,
    ),
    Case("pg-disk-full", pg_raise("53100"), False, server=True),
    Case("pg-data-corrupted", pg_raise("XX001"), False, server=True),
    Case("pg-missing-table", lambda _: pg("SELECT * FROM no_such_table"), False, server=True),
    Case(
        "pg-read-only-transaction",
        lambda _: pg("SET TRANSACTION READ ONLY", "CREATE TEMP TABLE t (x int)"),
        False,
        server=True,
    ),
    Case(
        "pg-unique-violation",
        lambda _: pg("CREATE TEMP TABLE t (x int PRIMARY KEY)", "INSERT INTO t VALUES (1), (1)"),
        False,
        server=True,
    ),
    Case(
        "pg-unknown-role",
        lambda _: pg("SELECT 1", url=pg_url(username="no_such_role")),
        False,
        server=True,
    ),
    # MariaDB.
    Case("mariadb-deadlock", my_signal(1213, "40001"), True, server=True),
    Case("mariadb-lock-wait-timeout", my_signal(1205), True, server=True),
    Case("mariadb-query-interrupted", my_signal(1317, "70100"), True, server=True),
    Case(
        "mariadb-statement-timeout",
        lambda _: my("SET SESSION max_statement_time = 0.02", "SELECT SLEEP(2)"),
        True,
        server=True,
    ),
    Case("mariadb-killed-connection", my_killed, True, server=True),
    Case(
        "mariadb-connection-refused",
        lambda _: my("SELECT 1", url=my_url(port=closed_port())),
        True,
        server=True,
    ),
    Case("mariadb-table-full", my_signal(1114), False, server=True),
    Case("mariadb-missing-table", lambda _: my("SELECT * FROM no_such_table"), False, server=True),
    Case(
        "mariadb-read-only-transaction",
        lambda _: my(
            "START TRANSACTION READ ONLY", "DELETE FROM session_bindings WHERE alloc_id = '-'"
        ),
        False,
        server=True,
    ),
    Case(
        "mariadb-access-denied",
        lambda _: my("SELECT 1", url=my_url(username="no_such_user")),
        False,
        server=True,
    ),
    # Redis.
    Case(
        "redis-connection-refused",
        lambda _: redis_call("PING", port=closed_port()),
        True,
        server=True,
    ),
    Case(
        "redis-timeout",
        lambda _: redis_call("BLPOP", "session-repo-translate:none", 1, socket_timeout=0.05),
        True,
        server=True,
    ),
    Case("redis-loading", redis_reply("BusyLoadingError", "Redis is loading the dataset"), True),
    Case(
        "redis-read-only-replica",
        redis_reply("ReadOnlyError", "You can't write against a read only replica."),
        True,
    ),
    Case("redis-wrong-type", redis_wrong_type, False, server=True),
    Case("redis-auth", lambda _: redis_call("AUTH", "nobody", "wrong"), False, server=True),
    Case(
        "redis-out-of-memory",
        redis_reply("OutOfMemoryError", "command not allowed when used memory > 'maxmemory'"),
        False,
    ),
]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.name, marks=[pytest.mark.server] if case.server else [])
        for case in CASES
    ],
)
async def test_classification(case: Case, tmp_path: Path) -> None:
    """Each backend's error table, as its front applies it."""
    error = await case.make(tmp_path)
    if case.name.startswith("redis"):
        assert redis_is_transient(error) is case.transient, f"{type(error).__name__}: {error}"
        return
    with pytest.raises(StorageError) as info, storage_errors("test"):
        raise error
    translated = info.value
    if not case.name.startswith("schema"):  # the library's own errors pass as they are
        assert str(translated).startswith("test failed: ")
    assert translated.transient is case.transient, f"{type(error).__name__}: {error}"
    if case.name.startswith("os"):  # the OS's errors mean the same to every backend
        assert redis_is_transient(error) is sql_is_transient(error) is case.transient


async def test_storage_errors_chains_the_driver_error(tmp_path: Path) -> None:
    cause = await sqlite_locked(tmp_path)
    with pytest.raises(StorageError) as info, storage_errors("upsert"):
        raise cause
    assert info.value.transient is True
    assert info.value.__cause__ is cause
    assert str(info.value).startswith("upsert failed: database is locked")


# -- a refused statement against a lost answer (the fast paths' raw connections) -----


async def _raw_mariadb() -> Any:
    import asyncmy
    from sqlalchemy.engine import make_url

    url = make_url(require_server("mariadb"))
    return await asyncmy.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        db=url.database,
        autocommit=True,
    )


async def _raw_postgresql() -> Any:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(require_server("postgresql")).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


@pytest.mark.server
async def test_a_statement_the_server_refused_wrote_nothing_and_may_be_sent_again() -> None:
    mariadb = await _raw_mariadb()
    try:
        async with mariadb.cursor() as cursor:
            error = await raised(lambda: cursor.execute("SIGNAL SQLSTATE '45000'"))
    finally:
        mariadb.close()
    assert refused_by_server(error), repr(error)
    postgresql = await _raw_postgresql()
    try:
        error = await raised(lambda: postgresql.fetchval("SELECT 1 / 0"))
    finally:
        await postgresql.close()
    assert refused_by_server(error), repr(error)


@pytest.mark.server
async def test_a_statement_whose_answer_was_lost_is_never_taken_as_refused() -> None:
    victim, killer = await _raw_mariadb(), await _raw_mariadb()
    try:
        async with victim.cursor() as cursor, killer.cursor() as kill:
            await cursor.execute("SELECT CONNECTION_ID()")
            (thread,) = await cursor.fetchone()
            running = asyncio.ensure_future(cursor.execute("SELECT SLEEP(5)"))
            await asyncio.sleep(0.2)
            await kill.execute(f"KILL {int(thread)}")
            error = await raised(lambda: asyncio.wait_for(running, 10))
    finally:
        victim.close()
        killer.close()
    assert not refused_by_server(error), repr(error)
    postgresql = await _raw_postgresql()
    running = asyncio.ensure_future(postgresql.fetchval("SELECT pg_sleep(5)"))
    await asyncio.sleep(0.2)
    postgresql.terminate()  # the socket closes under the running statement
    error = await raised(lambda: asyncio.wait_for(running, 10))
    assert not refused_by_server(error), repr(error)


@pytest.mark.server
async def test_a_deadlock_is_tried_again_and_nothing_else_is() -> None:
    """``retry_conflicts`` on real server-raised errors: 1213 (deadlock) and 1644."""
    conn = await _raw_mariadb()
    calls: list[str] = []

    def failing(errors: list[str]) -> Callable[[], Awaitable[Any]]:
        async def attempt() -> Any:
            calls.append("try")
            async with conn.cursor() as cursor:
                if len(calls) <= len(errors):
                    number, state = errors[len(calls) - 1].split("/")
                    await cursor.execute(
                        f"SIGNAL SQLSTATE '{state}' SET MYSQL_ERRNO = {number}, MESSAGE_TEXT = 'x'"
                    )
                await cursor.execute("SELECT 7")
                return (await cursor.fetchone())[0]

        return attempt

    try:
        assert await retry_conflicts(failing(["1213/40001", "1213/40001"])) == 7
        assert len(calls) == 3
        calls.clear()
        attempt = failing(["1213/40001"])
        assert await retry_conflicts(lambda: attempt()) == 7  # as the fast paths call it
        assert len(calls) == 2
        calls.clear()
        with pytest.raises(Exception, match="x") as info:
            await retry_conflicts(failing(["1644/45000", "1213/40001"]))
        assert info.value.args[0] == 1644
        assert len(calls) == 1
        calls.clear()
        with pytest.raises(Exception, match="x"):
            await retry_conflicts(failing(["1213/40001"] * (CONFLICT_ATTEMPTS + 1)))
        assert len(calls) == CONFLICT_ATTEMPTS
    finally:
        conn.close()
