"""The dependency-injector ``Container``: env read at init, overrides, lifecycle."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dependency_injector import providers

from session_repo import (
    ConfigError,
    MemorySessionRepository,
    NullSessionRepository,
    RepositoryClosed,
    ResilientSessionRepository,
    SessionRepository,
    SqlSessionRepository,
)
from session_repo.container import Container
from session_repo.testing import FakeClock


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets itself are seen."""
    for name in list(os.environ):
        if name.startswith("SESSION_STORE_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def container() -> AsyncIterator[Container]:
    container = Container()
    yield container
    await container.shutdown_resources()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/sessions.sqlite"


async def test_env_is_read_at_init_not_at_import_or_construction(
    container: Container, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SESSION_STORE_URL", sqlite_url(tmp_path))
    await container.init_resources()
    repo = await container.repository()
    assert isinstance(repo, ResilientSessionRepository)
    assert isinstance(repo.primary, SqlSessionRepository)
    await container.shutdown_resources()

    monkeypatch.setenv("SESSION_STORE_URL", "memory://")
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "1500")
    await container.init_resources()
    assert isinstance(await container.repository(), MemorySessionRepository)
    assert container.settings().ttl == 1.5


async def test_config_overrides_the_environment(
    container: Container, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SESSION_STORE_URL", sqlite_url(tmp_path))
    monkeypatch.setenv("SESSION_STORE_MAX_SESSIONS", "7")
    container.config.from_dict({"url": "memory://", "ttl": 5})
    await container.init_resources()
    assert isinstance(await container.repository(), MemorySessionRepository)
    settings = container.settings()
    assert (settings.url, settings.ttl, settings.max_sessions) == ("memory://", 5, 7)
    assert not (tmp_path / "sessions.sqlite").exists()


async def test_unknown_config_key_is_a_config_error(container: Container) -> None:
    container.config.from_dict({"url": "memory://", "tll": 5})
    with pytest.raises(ConfigError, match="tll"):
        await container.init_resources()


async def test_bad_config_value_is_a_config_error(container: Container) -> None:
    container.config.from_dict({"url": "memory://", "ttl": -1})
    with pytest.raises(ConfigError, match="ttl"):
        await container.init_resources()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_clock_override_reaches_the_repository(
    container: Container, tmp_path: Path, fake_clock: FakeClock, backend: str
) -> None:
    url = "memory://" if backend == "memory" else sqlite_url(tmp_path)
    container.config.from_dict({"url": url})
    container.clock.override(providers.Object(fake_clock))
    await container.init_resources()
    repo = await container.repository()
    start = fake_clock.now()
    await repo.upsert("s", "machine-a", ttl=10)
    fake_clock.set(start + 9.999)
    assert await repo.lookup("s") == "machine-a"
    fake_clock.set(start + 10)  # now == expires_at: expired
    assert await repo.lookup("s") is None


async def test_repository_override_is_one_line(
    container: Container, monkeypatch: pytest.MonkeyPatch, fake_clock: FakeClock
) -> None:
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "not a number")  # never read: overridden
    repo = MemorySessionRepository(clock=fake_clock)
    container.repository.override(providers.Object(repo))
    await container.init_resources()
    assert await container.repository() is repo
    await (await container.repository()).upsert("s", "machine-a")
    await container.shutdown_resources()
    # The container did not open it, so it does not close it: the test owns it.
    assert await repo.lookup("s") == "machine-a"
    await repo.close()


async def test_init_opens_and_shutdown_closes(container: Container, tmp_path: Path) -> None:
    container.config.from_dict({"url": sqlite_url(tmp_path)})
    await container.init_resources()
    # Opened by init, before any call: the schema is already there.
    with sqlite3.connect(tmp_path / "sessions.sqlite") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "session_bindings" in tables
    repo = await container.repository()
    assert isinstance(repo, SessionRepository)
    assert await repo.claim("s", "machine-a") == "machine-a"

    await container.shutdown_resources()
    with pytest.raises(RepositoryClosed):
        await repo.lookup("s")
    await container.shutdown_resources()  # a second shutdown is harmless

    await container.init_resources()  # a fresh repository on the same file
    again = await container.repository()
    assert again is not repo
    assert await again.lookup("s") == "machine-a"


async def test_disabled_gives_the_null_repository(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_STORE_ENABLED", "false")
    await container.init_resources()
    repo = await container.repository()
    assert isinstance(repo, NullSessionRepository)
    await repo.upsert("s", "machine-a")
    assert await repo.lookup("s") is None


async def test_bad_env_value_is_a_config_error_at_init(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "ten")
    with pytest.raises(ConfigError, match="SESSION_STORE_TTL_MS"):
        await container.init_resources()
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "10000")
    monkeypatch.setenv("SESSION_STORE_URL", "memory://")
    await container.init_resources()  # a failed init leaves nothing half-built
    assert isinstance(await container.repository(), MemorySessionRepository)


def test_the_library_never_imports_the_container() -> None:
    code = (
        "import sys, session_repo, session_repo.testing, session_repo.backends.sql.migrate\n"
        "print(sorted(m for m in sys.modules if m == 'session_repo.container'"
        " or m.startswith('dependency_injector')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
