"""``create_session_repository`` picks the backend the configuration names."""

from __future__ import annotations

from pathlib import Path

import pytest

from session_repo import (
    ConfigError,
    MemorySessionRepository,
    NullSessionRepository,
    ResilientSessionRepository,
    SessionRepository,
    SessionStoreConfig,
    SqlSessionRepository,
    create_session_repository,
)
from session_repo.testing import FakeClock


async def test_disabled_gives_null() -> None:
    repo = create_session_repository(SessionStoreConfig(enabled=False))
    assert isinstance(repo, NullSessionRepository)
    async with repo:
        await repo.upsert("s", "a")
        assert await repo.lookup("s") is None
        assert await repo.claim("s", "a") == "a"
        health = await repo.health()
        assert health.backend == "null"
        assert "disabled" in health.detail


async def test_memory_url_gives_memory(fake_clock: FakeClock) -> None:
    config = SessionStoreConfig(url="memory://", ttl=5, max_sessions=2)
    repo = create_session_repository(config, clock=fake_clock)
    assert isinstance(repo, MemorySessionRepository)
    assert isinstance(repo, SessionRepository)
    async with repo:
        await repo.upsert("a", "m")
        await repo.upsert("b", "m")
        await repo.upsert("c", "m")  # evicts "a", the least recently used
        assert await repo.lookup("a") is None
        fake_clock.advance(5)
        assert await repo.lookup("c") is None  # the configured ttl applies


async def test_memory_path_gives_memory() -> None:
    config = SessionStoreConfig.from_env({"SESSION_STORE_PATH": ":memory:"})
    assert isinstance(create_session_repository(config), MemorySessionRepository)


async def test_sqlite_url_gives_sql(tmp_path: Path, fake_clock: FakeClock) -> None:
    config = SessionStoreConfig(url=f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", ttl=3)
    repo = create_session_repository(config, clock=fake_clock)
    assert isinstance(repo, ResilientSessionRepository)
    assert isinstance(repo.primary, SqlSessionRepository)
    assert isinstance(repo.fallback, MemorySessionRepository)
    async with repo:
        await repo.upsert("a", "m")
        fake_clock.advance(2.999)
        assert await repo.lookup("a") == "m"
        fake_clock.advance(0.001)
        assert await repo.lookup("a") is None


async def test_reads_environment_when_no_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SESSION_STORE_URL", raising=False)
    monkeypatch.setenv("SESSION_STORE_PATH", str(tmp_path / "env.sqlite"))
    repo = create_session_repository()
    assert isinstance(repo, ResilientSessionRepository)
    assert isinstance(repo.primary, SqlSessionRepository)
    async with repo:
        await repo.upsert("a", "m")
    assert (tmp_path / "env.sqlite").exists()


def test_unknown_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="oracle"):
        SqlSessionRepository("oracle+oracledb://u@h/x")


def test_redis_url_gives_redis() -> None:
    from session_repo import RedisSessionRepository

    repo = create_session_repository(SessionStoreConfig(url="redis://127.0.0.1:6379/0"))
    assert isinstance(repo, ResilientSessionRepository)
    assert isinstance(repo.primary, RedisSessionRepository)


def test_fallback_none_leaves_the_backend_unwrapped(tmp_path: Path) -> None:
    config = SessionStoreConfig(url=f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", fallback="none")
    assert isinstance(create_session_repository(config), SqlSessionRepository)


def test_retry_settings_reach_the_wrapper(tmp_path: Path) -> None:
    config = SessionStoreConfig(
        url=f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", retry_count=5, retry_delay=0.25
    )
    repo = create_session_repository(config)
    assert isinstance(repo, ResilientSessionRepository)
    assert (repo.retry_count, repo.retry_delay) == (5, 0.25)


async def test_journal_max_reaches_the_wrapper(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # a SQLite store under a file can never open
    config = SessionStoreConfig(
        url=f"sqlite+aiosqlite:///{tmp_path}/a-file/s.sqlite",
        journal_max=7,
        retry_count=1,
        retry_delay=0,
    )
    repo = create_session_repository(config)
    assert isinstance(repo, ResilientSessionRepository)
    async with repo:
        for n in range(9):  # nine sessions written while degraded: seven are kept
            await repo.upsert(f"s{n}", "machine-a")
        metrics = await repo.metrics()
    assert metrics.fallback_active
    assert (metrics.journal_entries, metrics.journal_dropped) == (7, 2)


async def test_sqlite_synchronous_reaches_the_connections(tmp_path: Path) -> None:
    config = SessionStoreConfig(
        url=f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", sqlite_synchronous="FULL", fallback="none"
    )
    repo = create_session_repository(config)
    assert isinstance(repo, SqlSessionRepository)
    async with repo, repo.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
