"""A writer killed with SIGKILL mid-load loses nothing it acknowledged.

A child process writes bindings from several tasks through the factory's
repository (as an application would) and prints the number of each write the
moment the repository acknowledged it. The parent kills it with SIGKILL while
writes are in flight, twice on the same store, and checks after each kill that
every acknowledged write is there and the store is intact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from session_repo import SqlSessionRepository
from tests.resilience.test_faults import faults_database

pytestmark = pytest.mark.slow

CHILD = """
import asyncio, sys
from session_repo import SessionStoreConfig, create_session_repository

async def main(url, round_):
    config = SessionStoreConfig(url=url, cleanup_interval=0, auto_migrate=True)
    async with create_session_repository(config) as repo:
        async def writer(worker):
            n = 0
            while True:
                number = round_ * 10_000_000 + worker * 100_000 + n
                sid, owner = f"crash-{number}", f"machine-{worker}"
                if n % 2:
                    await repo.upsert(sid, owner, ttl=3600)
                else:
                    assert await repo.claim(sid, owner, ttl=3600) == owner
                sys.stdout.write(f"{number}\\n")
                sys.stdout.flush()
                n += 1
        await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

# Acknowledged writes to wait for before the kill.
KILL_AFTER = 400


def run_and_kill(url: str, round_: int) -> set[int]:
    """Start a writer, SIGKILL it after ``KILL_AFTER`` acks; every number it acked."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(round_)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: set[int] = set()
    try:
        for line in child.stdout:
            acked.add(int(line))
            if len(acked) >= KILL_AFTER:
                os.kill(child.pid, signal.SIGKILL)
                break
        # Lines already in the pipe were acknowledged before the kill: they count.
        acked.update(int(line) for line in child.stdout.read().split())
    finally:
        child.kill()
        stderr = child.stderr.read() if child.stderr is not None else ""
        child.wait()
    assert child.returncode == -signal.SIGKILL, stderr
    assert len(acked) >= KILL_AFTER, stderr
    return acked


async def missing(url: str, acked: set[int]) -> list[int]:
    async with SqlSessionRepository(url, cleanup_interval=0) as repo:
        owners = await asyncio.gather(*(repo.lookup(f"crash-{n}") for n in acked))
    return [
        n
        for n, owner in zip(acked, owners, strict=True)
        if owner != f"machine-{n // 100_000 % 100}"
    ]


async def test_sqlite_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    everything: set[int] = set()
    for round_ in range(2):
        acked = await asyncio.to_thread(run_and_kill, url, round_)
        everything |= acked
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert await missing(url, everything) == []


@pytest.mark.server
async def test_postgresql_survives_sigkill() -> None:
    url = await faults_database("postgresql")
    everything: set[int] = set()
    for round_ in range(2):
        everything |= await asyncio.to_thread(run_and_kill, url, round_)
        assert await missing(url, everything) == []
