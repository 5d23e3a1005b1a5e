"""SQL backends, hardened: URL options, total error translation, file modes,
``synchronous=FULL``, and no password in any message or repr."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, Pool

from session_repo import (
    ConfigError,
    InvalidInput,
    SessionStoreConfig,
    SqlSessionRepository,
    StorageError,
    create_session_repository,
)
from session_repo.backends.sql.engine import parse_url
from session_repo.backends.sql.errors import storage_errors
from session_repo.config import mask_url
from tests.servers import migrated_url

# -- 1. a postgresql+asyncpg URL's options reach the fast path as SQLAlchemy reads them --


def _pg_with(query: str) -> str:
    base = migrated_url("postgresql")
    return f"{base}{'&' if '?' in base else '?'}{query}"


@pytest.mark.server
@pytest.mark.parametrize(
    "query",
    [
        "prepared_statement_cache_size=0",
        "command_timeout=7",
        "ssl=disable",
        "statement_cache_size=0",
        "prepared_statement_cache_size=0&statement_cache_size=0&ssl=disable",
    ],
)
async def test_url_options_work_on_every_operation(query: str) -> None:
    async with SqlSessionRepository(_pg_with(query), cleanup_interval=0) as repo:
        await repo.upsert("s-url-option", "a")
        assert await repo.lookup("s-url-option") == "a"
        assert await repo.claim("s-url-option", "b", replacing="a") == "b"
        assert await repo.touch("s-url-option")
        assert await repo.delete("s-url-option")
        assert (await repo.health()).status == "ok"


@pytest.mark.server
async def test_url_options_are_the_fast_paths_connection_settings() -> None:
    url = _pg_with("command_timeout=7&statement_cache_size=0")
    async with SqlSessionRepository(url, cleanup_interval=0) as repo:
        await repo.lookup("s-url-option")
        # The fast path runs on the engine's own pool: it holds what it checked out.
        assert repo.engine.pool.checkedout() >= 1  # type: ignore[attr-defined]
        async with repo.engine.connect() as sa_conn:  # a connection made like the fast path's
            conn: Any = (await sa_conn.get_raw_connection()).driver_connection
            assert conn._config.command_timeout == 7  # asyncpg's own settings
            assert conn._stmt_cache.get_max_size() == 0
            # The library's own bounds still apply.
            assert await conn.fetchval("SHOW statement_timeout") == "30s"


@pytest.mark.parametrize(
    "query", ["no_such_option=1", "ssl_mode=require", "timeout=soon", "command_timeout=-1"]
)
def test_a_wrong_url_option_is_a_config_error(query: str) -> None:
    with pytest.raises(ConfigError) as info:
        SqlSessionRepository(f"postgresql+asyncpg://app:hunter22@db.invalid/x?{query}")
    assert query.split("=")[0] in str(info.value)
    assert "hunter22" not in str(info.value)


# -- 2. nothing but the library's own errors leaves an operation --------------------------


@pytest.mark.server
async def test_a_driver_type_error_becomes_a_permanent_storage_error() -> None:
    # asyncpg.connect() raises TypeError for an argument it does not take.
    engine = create_async_engine(migrated_url("postgresql"), connect_args={"no_such_argument": 1})
    repo = SqlSessionRepository(engine, cleanup_interval=0)
    try:
        with pytest.raises(StorageError) as info:
            await repo.lookup("s-driver-error")
        assert not info.value.transient
        assert isinstance(info.value.__cause__, TypeError)
    finally:
        await repo.close()
        await engine.dispose()


@contextlib.contextmanager
def on_sqlite_checkout(action: Callable[[sqlite3.Connection], None]) -> Iterator[None]:
    """Run ``action`` on every stdlib sqlite3 connection checked out of any SQLAlchemy
    pool meanwhile (the SQLite pipeline's, on the thread that will use it)."""

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            action(dbapi_connection)

    event.listen(Pool, "checkout", checkout)
    try:
        yield
    finally:
        event.remove(Pool, "checkout", checkout)


async def test_a_sqlite_driver_error_becomes_a_storage_error(tmp_path: Path) -> None:
    def deny(action: int, *_args: Any) -> int:
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_READ else sqlite3.SQLITE_OK

    path = tmp_path / "s.sqlite"
    async with SqlSessionRepository(f"sqlite+aiosqlite:///{path}", cleanup_interval=0):
        pass  # the file and its schema exist now
    repo = SqlSessionRepository(f"sqlite+aiosqlite:///{path}", cleanup_interval=0)
    # The pipeline's readers connect as it opens: each is refused every read.
    with on_sqlite_checkout(lambda conn: conn.set_authorizer(deny)):
        await repo.open()
    async with repo:
        with pytest.raises(StorageError) as info:
            await repo.lookup("s-denied")
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
        assert str(info.value).startswith("lookup failed: ")
        assert not info.value.transient


@pytest.mark.parametrize(
    "error", [TypeError("bad arg"), RuntimeError("loop glue"), KeyError("x"), AttributeError("y")]
)
def test_storage_errors_is_total(error: Exception) -> None:
    with pytest.raises(StorageError) as info, storage_errors("lookup"):
        raise error
    assert info.value.__cause__ is error
    assert not info.value.transient
    assert str(info.value).startswith("lookup failed")


@pytest.mark.parametrize(
    "error", [InvalidInput("bad id"), asyncio.CancelledError(), KeyboardInterrupt()]
)
def test_storage_errors_lets_input_errors_and_cancellation_through(
    error: BaseException,
) -> None:
    with pytest.raises(type(error)) as info, storage_errors("lookup"):
        raise error
    assert info.value is error


@pytest.mark.server
async def test_a_cancelled_operation_is_cancelled_not_translated() -> None:
    async with SqlSessionRepository(migrated_url("postgresql"), cleanup_interval=0) as repo:
        task = asyncio.create_task(repo.claim("s-cancelled", "a"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(InvalidInput):
            await repo.upsert("", "a")


# -- 3. a new SQLite file and its -wal and -shm are 0600 whatever the umask ----------------


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def _modes(path: Path) -> dict[str, int]:
    return {
        suffix: stat.S_IMODE(Path(f"{path}{suffix}").stat().st_mode)
        for suffix in ("", "-wal", "-shm")
    }


@pytest.mark.parametrize("mask", [0o022, 0o000, 0o277])
@pytest.mark.parametrize("given", ["url", "engine"])
async def test_new_sqlite_files_are_owner_only(tmp_path: Path, mask: int, given: str) -> None:
    path = tmp_path / "new" / "s.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    with umask(mask):
        engine = create_async_engine(url) if given == "engine" else None
        repo = SqlSessionRepository(engine or url, cleanup_interval=0)
        async with repo:
            await repo.upsert("s-mode", "a")
            async with repo.engine.connect() as conn:  # the engine's own connection too
                await conn.exec_driver_sql("SELECT 1")
            assert _modes(path) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
        if engine is not None:
            await engine.dispose()


# -- 4. synchronous=FULL on every connection the library opens ---------------------------


async def _synchronous_everywhere(repo: SqlSessionRepository) -> set[int]:
    """``synchronous`` on the engine's connections and on the pipeline's.

    Opens ``repo`` (the readers connect as it opens) and closes it.
    """
    pipeline: list[int] = []
    with on_sqlite_checkout(
        lambda conn: pipeline.append(conn.execute("PRAGMA synchronous").fetchone()[0])
    ):
        async with repo:
            await repo.lookup("s-sync")
            await repo.upsert("s-sync", "a")  # the writer connects on first use
            async with repo.engine.connect() as conn:
                seen = {(await conn.exec_driver_sql("PRAGMA synchronous")).scalar()}
    assert len(pipeline) >= 3  # the reader, the loop's own reader, the writer
    return {int(value) for value in [*seen, *pipeline] if value is not None}


@pytest.mark.parametrize(("mode", "number"), [("FULL", 2), ("NORMAL", 1)])
@pytest.mark.parametrize("given", ["url", "engine"])
async def test_sqlite_synchronous_on_every_connection(
    tmp_path: Path, mode: str, number: int, given: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    engine = create_async_engine(url) if given == "engine" else None
    repo = SqlSessionRepository(
        engine or url,
        cleanup_interval=0,
        sqlite_synchronous=mode,  # type: ignore[arg-type]
    )
    assert await _synchronous_everywhere(repo) == {number}
    if engine is not None:
        await engine.dispose()


async def test_sqlite_synchronous_env_reaches_the_repository(tmp_path: Path) -> None:
    config = SessionStoreConfig.from_env(
        {
            "SESSION_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/s.sqlite",
            "SESSION_STORE_SQLITE_SYNCHRONOUS": "FULL",
            "SESSION_STORE_FALLBACK": "none",
        }
    )
    repo = create_session_repository(config)
    assert isinstance(repo, SqlSessionRepository)
    assert await _synchronous_everywhere(repo) == {2}


@pytest.mark.parametrize("value", ["OFF", "full", "EXTRA", 2])
def test_a_bad_sqlite_synchronous_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="sqlite_synchronous"):
        SqlSessionRepository("sqlite+aiosqlite:///x.sqlite", sqlite_synchronous=value)  # type: ignore[arg-type]


# -- 5. a password never shows ------------------------------------------------------------

passwords = st.text(min_size=6, max_size=30).filter(lambda p: p.strip() == p and "\x00" not in p)


def _shown_everywhere(url: str) -> list[str]:
    """Every text the library makes of ``url``: errors, reprs, health detail."""
    shown = [mask_url(url)]
    for build in (
        lambda: SessionStoreConfig(url=url),
        lambda: SessionStoreConfig.from_env({"SESSION_STORE_URL": url}),
        lambda: SqlSessionRepository(url),
        lambda: create_session_repository(SessionStoreConfig(url=url)),
    ):
        try:
            shown.append(repr(build()))
        except Exception as exc:
            shown.append(f"{type(exc).__name__}: {exc}")
    return shown


def _leaks(password: str, texts: list[str]) -> list[str]:
    return [t for t in texts if password in t or quote(password, safe="") in t]


# URL shapes, each given the password as escaped and as raw text.
SHAPES = [
    "postgresql+asyncpg://app:{encoded}@db.internal:5432/app",
    "postgres://app:{encoded}@db.internal/app",  # as hosts hand it out
    "ftp://app:{encoded}@db.internal/app",
    "app:{encoded}@db.internal",  # no scheme at all
    "postgresql+asyncpg://app:{raw}@db.internal/app",  # not escaped
    "app:{raw}@db.internal",
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(password=passwords)
def test_a_password_never_shows(password: str) -> None:
    encoded = quote(password, safe="")
    for shape in SHAPES:
        url = shape.format(encoded=encoded, raw=password)
        texts = _shown_everywhere(url)
        # A password that the library's texts spell anyway ("asyncp") proves nothing.
        if _leaks(password, _shown_everywhere(shape.format(encoded="PW", raw="PW"))):
            continue
        assert not _leaks(password, texts), (url, _leaks(password, texts))


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:secret9@host/db",
        "app:secret9@host",
        "postgresql+asyncpg://app:sec@ret9@host/db",
        "mysql+asyncmy://app:secret9@host/db?no_such=1",
        "postgresql+asyncpg://app:secret9@host/db?no_such=1",
    ],
)
def test_known_shapes_never_show_the_password(url: str) -> None:
    texts = _shown_everywhere(url)
    assert not [t for t in texts if "secret9" in t or "ret9" in t], texts
    assert any("***" in t for t in texts)


@pytest.mark.parametrize(
    ("given", "read_as"),
    [
        ("postgres://app@db.internal:5432/app", "postgresql+asyncpg://app@db.internal:5432/app"),
        ("postgresql://app@db/app?sslmode=require", "postgresql+asyncpg://app@db/app?ssl=require"),
        (
            "postgresql+asyncpg://app@db/app?sslmode=disable&ssl=require",
            "postgresql+asyncpg://app@db/app?ssl=require",
        ),
        ("mysql://root@db:3306/app", "mysql+asyncmy://root@db:3306/app"),
        ("mariadb://root@db/app", "mariadb+asyncmy://root@db/app"),
        ("sqlite:///data/s.sqlite", "sqlite+aiosqlite:///data/s.sqlite"),
        ("mysql+asyncmy://root@db/app", "mysql+asyncmy://root@db/app"),
    ],
)
def test_urls_as_hosts_hand_them_out_are_read_with_the_async_driver(
    given: str, read_as: str
) -> None:
    assert parse_url(given).render_as_string(hide_password=False) == read_as


@pytest.mark.server
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
async def test_a_driverless_url_serves_the_contract(server: str) -> None:
    """``postgres://..?sslmode=disable`` (Fly Postgres's DATABASE_URL) and ``mysql://..``."""
    url = make_url(migrated_url(server))
    if server == "postgresql":
        given = url.set(drivername="postgres").update_query_dict({"sslmode": "disable"})
    else:
        given = url.set(drivername="mysql")
    environ = {
        "SESSION_STORE_URL_FROM": "DATABASE_URL",
        "DATABASE_URL": given.render_as_string(hide_password=False),
    }
    async with create_session_repository(SessionStoreConfig.from_env(environ)) as repo:
        await repo.upsert("host-url-session", "machine-a")
        assert await repo.lookup("host-url-session") == "machine-a"
        assert await repo.claim("host-url-session", "machine-b") == "machine-a"
        assert await repo.delete("host-url-session") is True
        assert (await repo.health()).status == "ok"


@pytest.mark.server
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
async def test_closing_after_the_server_dropped_idle_connections_raises_nothing(
    server: str,
) -> None:
    url = migrated_url(server)
    repo = SqlSessionRepository(url, cleanup_interval=0)
    await asyncio.gather(*(repo.lookup(f"idle-{n}") for n in range(20)))  # open a few
    killer = create_async_engine(url, poolclass=NullPool)
    try:
        async with killer.connect() as conn:
            if server == "postgresql":
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            else:
                ids = await conn.scalars(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND id <> CONNECTION_ID() AND command = 'Sleep'"
                    )
                )
                for conn_id in ids.all():
                    with contextlib.suppress(Exception):
                        await conn.execute(text(f"KILL {int(conn_id)}"))
    finally:
        await killer.dispose()
    await asyncio.sleep(0.2)
    await repo.close()  # the dropped connections are forgotten, not an error
