"""A hung or locked server cannot hang a request: statements are bounded by
``statement_timeout`` and the failure is a transient ``StorageError``."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from session_repo import SqlSessionRepository, StorageError
from session_repo.backends.sql.errors import is_transient
from tests.conftest import RepoFactory, backend_params


@pytest.mark.parametrize("backend_name", backend_params("postgresql", "mariadb"))
async def test_a_row_locked_elsewhere_times_out(
    store_location: str, make_repo: RepoFactory
) -> None:
    async with make_repo(statement_timeout=1) as repo:
        await repo.upsert("held", "machine-a")
        holder = create_async_engine(store_location)
        try:
            async with holder.connect() as conn:
                await conn.begin()
                await conn.execute(text("UPDATE session_bindings SET alloc_id = 'holder'"))
                started = time.monotonic()
                with pytest.raises(StorageError) as info:
                    await repo.touch("held")
                waited = time.monotonic() - started
                await conn.rollback()
        finally:
            await holder.dispose()
        assert info.value.transient is True
        assert 0.5 < waited < 5
        assert await repo.touch("held") is True  # the pool recovered


@pytest.mark.parametrize("backend_name", backend_params("postgresql", "mariadb"))
async def test_a_slow_statement_is_cut_off(
    backend_name: str, store_location: str, make_repo: RepoFactory
) -> None:
    async with make_repo(statement_timeout=0.5) as repo:
        assert isinstance(repo, SqlSessionRepository)
        started = time.monotonic()
        sleep = "SELECT pg_sleep(5)" if backend_name == "postgresql" else "SELECT SLEEP(5)"
        async with repo.engine.connect() as conn:
            with pytest.raises((DBAPIError, TimeoutError)) as info:
                await conn.execute(text(sleep))
        assert is_transient(info.value) is True
        assert time.monotonic() - started < 3


def test_timeouts_are_validated() -> None:
    from session_repo import InvalidInput, SqlSessionRepository

    with pytest.raises(InvalidInput, match="statement_timeout"):
        SqlSessionRepository("postgresql+asyncpg://x@127.0.0.1/db", statement_timeout=0)
    with pytest.raises(TypeError, match="connect_timeout"):
        SqlSessionRepository("postgresql+asyncpg://x@127.0.0.1/db", connect_timeout="1")  # type: ignore[arg-type]
