"""The background cleanup task: runs on its own, stops on close, survives failures."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from session_repo import SessionRepository, SqlSessionRepository
from session_repo.testing import FakeClock
from tests.conftest import RepoFactory

TASK_PREFIX = "session-repo cleanup"
INTERVAL = 0.05


def cleanup_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(TASK_PREFIX)]


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_background_task_removes_expired_rows(
    make_repo: RepoFactory, expiry_clock: FakeClock
) -> None:
    async with make_repo(cleanup_interval=INTERVAL) as repo:
        for n in range(4):
            await repo.upsert(f"short-{n}", "machine-a", ttl=1)
        await repo.upsert("long", "machine-a", ttl=100)
        expiry_clock.advance(2)
        deadline = time.monotonic() + 5
        while (await repo.metrics()).cleaned == 0:
            assert time.monotonic() < deadline, "the background task never cleaned"
            await asyncio.sleep(0.01)
        # A fresh snapshot: the one that first saw the count may have read its gauges
        # while that cleanup was still deleting.
        metrics = await repo.metrics()
        assert (metrics.cleaned, metrics.sessions, metrics.expired) == (4, 1, 0)
        assert metrics.last_cleanup_at is not None
        assert await repo.lookup("long") == "machine-a"


async def test_interval_zero_starts_no_task(make_repo: RepoFactory) -> None:
    async with make_repo(cleanup_interval=0) as repo:
        await repo.upsert("s", "machine-a")
        await asyncio.sleep(INTERVAL * 2)
        assert cleanup_tasks() == []
        assert (await repo.metrics()).last_cleanup_at is None


async def test_close_cancels_and_awaits_the_task(make_repo: RepoFactory) -> None:
    repo = make_repo(cleanup_interval=INTERVAL)
    async with repo:
        (task,) = cleanup_tasks()
        await asyncio.sleep(INTERVAL * 3)  # let it run a few rounds
        assert not task.done()
    assert task.done()  # cancelled, or ended by the cleanup that close() interrupted
    assert cleanup_tasks() == []


async def test_lazy_open_starts_the_task_and_close_stops_it(make_repo: RepoFactory) -> None:
    repo = make_repo(cleanup_interval=INTERVAL)
    assert cleanup_tasks() == []
    await repo.lookup("s")  # opens
    (task,) = cleanup_tasks()
    await repo.close()
    assert task.done()
    assert cleanup_tasks() == []


async def _wait_for_warnings(caplog: pytest.LogCaptureFixture, count: int) -> None:
    def warnings() -> int:
        return sum(
            1
            for r in caplog.records
            if r.levelno == logging.WARNING and "background cleanup failed" in r.getMessage()
        )

    await eventually(lambda: warnings() >= count)


async def test_a_failing_cleanup_is_logged_and_the_loop_keeps_going(
    tmp_path: Path, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="session_repo")
    path = tmp_path / "store.sqlite"
    secret = "SECRET-SESSION-ID-77"
    repo: SessionRepository = SqlSessionRepository(
        f"sqlite+aiosqlite:///{path}", clock=fake_clock, cleanup_interval=INTERVAL
    )
    async with repo:
        await repo.upsert(secret, "machine-a", ttl=1)
        with sqlite3.connect(path) as other:
            other.execute("ALTER TABLE session_bindings RENAME TO moved_away")
        await _wait_for_warnings(caplog, 2)  # failed twice: the loop goes on
        (task,) = cleanup_tasks()
        with sqlite3.connect(path) as other:
            other.execute("ALTER TABLE moved_away RENAME TO session_bindings")
        fake_clock.advance(2)
        deadline = time.monotonic() + 5
        while (metrics := await repo.metrics()).cleaned == 0:
            assert time.monotonic() < deadline, "cleanup never recovered"
            await asyncio.sleep(0.01)
        assert metrics.cleaned == 1
        assert metrics.errors >= 2
        assert cleanup_tasks() == [task]
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert record.name.startswith("session_repo")
