"""Break real stores under load; the wrapper must keep every caller answered.

Each test runs writers and readers through ``ResilientSessionRepository``,
breaks the store for real (another process holding a lock, a corrupt file, a
read-only or full filesystem, a database server stopped or its connections
killed), heals it, and asserts: no exception reached a caller, health went
degraded and back to ok, and every write acknowledged during the fault is in
the store afterwards, read back by a fresh repository that never saw the fault.

Server restarts affect everything else using that server for a second or two:
each outage here is kept short, on a dedicated database or key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import (
    RedisSessionRepository,
    ResilientSessionRepository,
    SessionRepository,
    SqlSessionRepository,
)
from session_repo.backends.base import StoreFront
from tests.servers import own_database, require_server, server_url, servers_required

pytestmark = pytest.mark.slow

# Fast enough for tests: two tries 50 ms apart, then the probe from 0.1 s to 0.5 s.
TUNING: dict[str, Any] = {
    "retry_count": 2,
    "retry_delay": 0.05,
    "probe_delay": 0.1,
    "probe_max_delay": 0.5,
}
FAULTS_DB = "session_repo_faults"
REDIS_PREFIX = "session-repo-faults:"


# -- load and measurement ----------------------------------------------------------


@dataclass
class Load:
    """Writers and readers on one repository; what was acknowledged, and any error."""

    repo: SessionRepository
    name: str
    tasks: int = 6
    pause: float = 0.01
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    ops: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _running: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._running = [asyncio.create_task(self._work(n)) for n in range(self.tasks)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._running)

    async def _work(self, worker: int) -> None:
        owner = f"{self.name}-{worker}"
        n = 0
        while not self._stop.is_set():
            n += 1
            sid = f"{self.name}-{worker}-{n}"
            try:
                if n % 3 == 0:
                    winner = await self.repo.claim(sid, owner, ttl=600)
                    assert winner == owner, "a claim of a new session lost"
                else:
                    await self.repo.upsert(sid, owner, ttl=600)
                self.acked[sid] = (owner, time.monotonic())
                await self.repo.lookup(sid)
                self.ops += 2
            except Exception as exc:  # the point of these tests: none may reach a caller
                self.errors.append(exc)
            await asyncio.sleep(self.pause)


@dataclass
class Watch:
    """Polls ``health()``: when it went degraded, and when it came back."""

    repo: SessionRepository
    degraded_at: float | None = None
    recovered_at: float | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            status = (await self.repo.health()).status
            now = time.monotonic()
            if status == "degraded" and self.degraded_at is None:
                self.degraded_at = now
            if status == "ok" and self.degraded_at is not None and self.recovered_at is None:
                self.recovered_at = now
            await asyncio.sleep(0.02)

    async def until_degraded(self, timeout: float) -> None:
        await _until(lambda: self.degraded_at is not None, timeout, "health never went degraded")

    async def until_recovered(self, timeout: float) -> None:
        await _until(lambda: self.recovered_at is not None, timeout, "health never came back")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout} s")
        await asyncio.sleep(0.01)


@dataclass
class Run:
    """One fault under load, from injection to recovery."""

    repo: ResilientSessionRepository
    load: Load
    watch: Watch
    injected_at: float = 0.0
    healed_at: float = 0.0
    final_status: str = ""
    retries: int = 0

    def injected(self) -> None:
        self.injected_at = time.monotonic()

    def healed(self) -> None:
        self.healed_at = time.monotonic()


@contextlib.asynccontextmanager
async def under_load(
    primary: StoreFront, name: str, *, tuning: dict[str, Any] | None = None
) -> AsyncIterator[Run]:
    """The wrapper on ``primary``, opened, with load and a health watch running."""
    async with ResilientSessionRepository(primary, **(tuning or TUNING)) as repo:
        load = Load(repo, name)
        watch = Watch(repo)
        load.start()
        watch.start()
        run = Run(repo, load, watch)
        try:
            await asyncio.sleep(0.3)  # healthy traffic first
            yield run
            await asyncio.sleep(0.2)  # and some after recovery
        finally:
            await load.stop()
            await watch.stop()
        run.final_status = (await repo.health()).status
        run.retries = (await repo.metrics()).retries


async def assert_survived(
    run: Run, fresh: SessionRepository, *, fault: str, acked_after: float = 0.0
) -> dict[str, Any]:
    """No caller saw an error; every write acknowledged (after ``acked_after``) is stored."""
    load, watch = run.load, run.watch
    assert load.errors == [], f"{len(load.errors)} errors reached callers: {load.errors[:3]}"
    assert watch.degraded_at is not None, "the fault never degraded the store"
    assert watch.recovered_at is not None, "the store never recovered"
    assert run.final_status == "ok"
    async with fresh:
        owners = await asyncio.gather(*(fresh.lookup(sid) for sid in load.acked))
    missing = {
        sid for sid, owner in zip(load.acked, owners, strict=True) if owner != load.acked[sid][0]
    }
    checked = [sid for sid, (_, at) in load.acked.items() if at >= acked_after]
    lost = [sid for sid in checked if sid in missing]
    assert lost == [], f"{len(lost)} of {len(checked)} acknowledged writes are missing"
    figures = {
        "fault": fault,
        "ops": load.ops,
        "caller_errors": len(load.errors),
        "acknowledged": len(checked),
        "lost": len(lost),
        "outage_s": round(run.healed_at - run.injected_at, 2),
        "degrade_s": round(watch.degraded_at - run.injected_at, 2),
        "recover_s": round(watch.recovered_at - run.healed_at, 2),
        "retries": run.retries,
        # Acknowledged before the fault, dropped by the server itself (Redis, no persistence).
        "dropped_by_server": len(missing) - len(lost),
    }
    print("FAULT", json.dumps(figures))
    return figures


# -- SQLite ------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def sqlite_primary(path: Path, busy_timeout: float = 5) -> SqlSessionRepository:
    return SqlSessionRepository(sqlite_url(path), cleanup_interval=0, busy_timeout=busy_timeout)


HOLDER = """
import hashlib, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
key = hashlib.sha256(b"contested").digest()
expires = int(time.time() * 1000) + 600_000
conn.execute(
    "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES (?, ?, ?)",
    (key, "other-instance", expires),
)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def test_sqlite_locked_by_another_process(tmp_path: Path) -> None:
    """Another process holds the write lock past the busy timeout (1 s here), and binds
    a session meanwhile: its binding wins over this instance's outage claim."""
    path = tmp_path / "locked.sqlite"
    # One try: each try waits out the busy timeout while the lock is held.
    tuning = {**TUNING, "retry_count": 1}
    async with under_load(sqlite_primary(path, busy_timeout=1), "lock", tuning=tuning) as run:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), "2.5"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
            run.injected()
            await run.watch.until_degraded(8)
            assert await run.repo.claim("contested", "this-instance") == "this-instance"
            await asyncio.to_thread(holder.wait, 10)
            run.healed()
        finally:
            holder.kill()
            holder.wait()
        await run.watch.until_recovered(10)
        assert await run.repo.lookup("contested") == "other-instance"
    await assert_survived(run, sqlite_primary(path), fault="sqlite: locked by another process")


async def test_sqlite_file_corrupt_at_start(tmp_path: Path) -> None:
    """The service starts on a file that is garbage; the operator restores it."""
    path = tmp_path / "corrupt.sqlite"
    async with sqlite_primary(path) as plain:
        await plain.upsert("before", "m0")
    backup = path.read_bytes()
    path.write_bytes(os.urandom(len(backup)))
    primary = sqlite_primary(path)
    started = time.monotonic()
    async with under_load(primary, "corrupt") as run:
        run.injected_at = started
        await run.watch.until_degraded(5)
        assert "not a database" in (await run.repo.health()).detail
        await asyncio.sleep(0.5)
        path.write_bytes(backup)
        run.healed()
        await run.watch.until_recovered(10)
        assert await run.repo.lookup("before") == "m0"
    await assert_survived(run, sqlite_primary(path), fault="sqlite: file corrupt (garbage)")


async def test_sqlite_file_corrupted_while_running(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite"
    async with under_load(sqlite_primary(path), "corrupt-live") as run:
        with sqlite3.connect(path) as conn:  # everything into the main file, then ruin it
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        backup = path.read_bytes()
        path.write_bytes(os.urandom(len(backup)))
        run.injected()
        await run.watch.until_degraded(5)
        path.write_bytes(backup)
        run.healed()
        await run.watch.until_recovered(5)
    await assert_survived(run, sqlite_primary(path), fault="sqlite: file corrupted while open")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs of our own (root only); skipped, naming what is missing, if not."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"needs `mount -t tmpfs` (root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


async def test_sqlite_directory_read_only(tmp_path: Path) -> None:
    """The database's filesystem is read-only when the service starts (a real ro mount)."""
    with tmpfs(tmp_path / "ro", "8m") as mount:
        path = mount / "store.sqlite"
        async with sqlite_primary(path) as plain:
            await plain.upsert("before", "m0")
        remount(mount, "ro")
        try:
            started = time.monotonic()
            async with under_load(sqlite_primary(path), "read-only") as run:
                run.injected_at = started
                await run.watch.until_degraded(5)
                assert "Read-only" in (await run.repo.health()).detail
                await asyncio.sleep(0.5)
                remount(mount, "rw")
                run.healed()
                await run.watch.until_recovered(10)
                assert await run.repo.lookup("before") == "m0"
        finally:
            remount(mount, "rw")
        await assert_survived(run, sqlite_primary(path), fault="sqlite: read-only filesystem")


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


async def test_sqlite_files_made_immutable_while_running(tmp_path: Path) -> None:
    """The directory, database and WAL made immutable under a running process.

    (Not the -shm file: SQLite maps it, and a write fault there kills the process.)
    """
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr (e2fsprogs)")
    path = tmp_path / "immutable.sqlite"
    async with under_load(sqlite_primary(path), "immutable") as run:
        frozen = [tmp_path, path, path.with_name(path.name + "-wal")]
        try:
            chattr("+i", *frozen)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"chattr +i is not allowed here (needs root on ext4/xfs): {exc.stderr}")
        try:
            run.injected()
            await run.watch.until_degraded(5)
            await asyncio.sleep(0.5)
        finally:
            chattr("-i", *frozen)
        run.healed()
        await run.watch.until_recovered(10)
    await assert_survived(run, sqlite_primary(path), fault="sqlite: files immutable (chattr +i)")


async def test_sqlite_disk_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "16m") as mount:
        path = mount / "store.sqlite"
        filler = mount / "filler"
        async with under_load(sqlite_primary(path), "full") as run:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                with contextlib.suppress(OSError):  # ENOSPC: the disk is full
                    while True:
                        os.write(fd, b"\0" * 65536)
            finally:
                os.close(fd)
            run.injected()
            await run.watch.until_degraded(5)
            await asyncio.sleep(0.5)
            filler.unlink()
            run.healed()
            await run.watch.until_recovered(10)
        await assert_survived(run, sqlite_primary(path), fault="sqlite: disk full")


# -- servers -----------------------------------------------------------------------


def command(*argv: str) -> list[str]:
    """``argv``, if its program is here; else skip (fail where servers are required)."""
    if shutil.which(argv[0]) is None:
        reason = f"{argv[0]} is not installed here"
        if servers_required():
            pytest.fail(reason)
        pytest.skip(reason)
    return list(argv)


def sh(argv: list[str], timeout: float = 60) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=timeout)


def answers(probe: list[str]) -> bool:
    return subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode == 0


async def bring_back(probe: list[str], start: list[str], timeout: float = 60) -> float:
    """Start the server until ``probe`` answers; when it first answered.

    The start command runs in the background while ``probe`` polls, and again every
    2 s while nothing answers (an old server may still be exiting, holding its port).
    """
    deadline = time.monotonic() + timeout
    starting: subprocess.Popen[bytes] | None = None
    tried = 0.0
    try:
        while not await asyncio.to_thread(answers, probe):
            if time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(start)}: no answer after {timeout} s")
            if (starting is None or starting.poll() is not None) and time.monotonic() - tried > 2:
                tried = time.monotonic()
                starting = subprocess.Popen(
                    start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            await asyncio.sleep(0.05)
        return time.monotonic()
    finally:
        if starting is not None:
            await asyncio.to_thread(starting.wait, timeout)


def pg_cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        pytest.skip("no local PostgreSQL cluster (/etc/postgresql) to stop and start")
    return [versions[-1], "main"]


async def faults_database(name: str) -> str:
    """The URL of a dedicated database on server ``name``, schema at head, table empty."""
    return await own_database(name, FAULTS_DB)


def server_primary(url: str) -> SqlSessionRepository:
    return SqlSessionRepository(url, cleanup_interval=0, connect_timeout=2, statement_timeout=5)


@pytest.mark.server
async def test_postgresql_stopped_and_started() -> None:
    url = await faults_database("postgresql")
    cluster = pg_cluster()
    ctl = command("pg_ctlcluster", "--skip-systemctl-redirect")
    ready = command("pg_isready", "-h", "127.0.0.1", "-p", "5432")
    async with under_load(server_primary(url), "pg-restart") as run:
        try:
            run.injected()
            await asyncio.to_thread(sh, [*ctl, *cluster, "stop", "-m", "fast"])
            await run.watch.until_degraded(10)
            await asyncio.sleep(0.3)
        finally:
            run.healed_at = await bring_back(ready, [*ctl, *cluster, "start"])
        await run.watch.until_recovered(15)
    await assert_survived(run, server_primary(url), fault="postgresql: stopped and started")


async def _kill_connections(conn: AsyncConnection, server: str) -> int:
    """Terminate every other connection to the faults database; how many."""
    if server == "postgresql":
        kill = text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"
        )
        return int(await conn.scalar(kill, {"db": FAULTS_DB}) or 0)
    ids = await conn.scalars(
        text(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = :db AND id <> CONNECTION_ID() AND command <> 'Daemon'"
        ),
        {"db": FAULTS_DB},
    )
    killed = 0
    for conn_id in ids.all():
        try:
            await conn.execute(text(f"KILL {int(conn_id)}"))
            killed += 1
        except Exception:  # it may have ended by itself meanwhile
            continue
    return killed


@pytest.mark.server
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
async def test_connections_killed(server: str) -> None:
    """Every connection of this database terminated server-side, ten times in a row.

    The pool replaces a terminated connection, and a statement cut off mid-way is
    tried again on a fresh one, so this need not degrade at all; the test asserts
    nothing reached a caller and nothing was lost, whichever way it went.
    """
    url = await faults_database(server)
    killer = create_async_engine(server_url(server), poolclass=NullPool)
    killed = 0
    repo = ResilientSessionRepository(server_primary(url), **TUNING)
    async with repo:
        load = Load(repo, f"{server}-kill")
        load.start()
        try:
            await asyncio.sleep(0.3)
            for _ in range(10):
                async with killer.connect() as conn:
                    killed += await _kill_connections(conn, server)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            await load.stop()
            await killer.dispose()
        metrics = await repo.metrics()
        # Connections are made as callers need them: a round that comes while the wrapper
        # serves from its fallback can find none to kill. Most rounds find some.
        assert killed >= 5
        assert load.errors == []
        await _until_ok(repo)
    async with server_primary(url) as fresh:
        owners = await asyncio.gather(*(fresh.lookup(sid) for sid in load.acked))
    lost = [sid for sid, owner in zip(load.acked, owners, strict=True) if owner is None]
    assert lost == []
    print(
        "FAULT",
        json.dumps(
            {
                "fault": f"{server}: connections terminated (x10)",
                "ops": load.ops,
                "caller_errors": 0,
                "acknowledged": len(load.acked),
                "lost": 0,
                "killed": killed,
                "errors_absorbed": metrics.errors,
                "retries": metrics.retries,
                "degraded": metrics.fallback_active,
            }
        ),
    )


async def _until_ok(repo: SessionRepository, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (await repo.health()).status != "ok":
        assert time.monotonic() < deadline, "still degraded"
        await asyncio.sleep(0.05)


@pytest.mark.server
async def test_mariadb_restarted() -> None:
    url = await faults_database("mariadb")
    admin = command("mariadb-admin", "-h", "127.0.0.1", "-uroot")
    start = command(
        "start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"
    )
    async with under_load(server_primary(url), "mariadb-restart") as run:
        try:
            run.injected()
            await asyncio.to_thread(sh, [*admin, "shutdown"])
            await run.watch.until_degraded(10)
        finally:
            run.healed_at = await bring_back([*admin, "ping"], start)
        await run.watch.until_recovered(15)
    await assert_survived(run, server_primary(url), fault="mariadb: restarted")


def redis_primary() -> RedisSessionRepository:
    return RedisSessionRepository(
        require_server("redis"), key_prefix=REDIS_PREFIX, cleanup_interval=0
    )


@pytest.mark.server
async def test_redis_restarted() -> None:
    """Redis here runs without persistence (``--save ""``), so what it held before the
    restart is gone with it; every write acknowledged from the shutdown on comes back."""
    cli = command("redis-cli", "-h", "127.0.0.1", "-p", "6379")
    start = command(
        "redis-server",
        "--daemonize", "yes",
        "--bind", "127.0.0.1", "-::1",
        "--port", "6379",
        "--save", "",
        "--appendonly", "no",
        "--dir", "/var/lib/redis",
        "--logfile", "/var/log/redis/ci.log",
    )  # fmt: skip
    async with under_load(redis_primary(), "redis-restart") as run:
        try:
            run.injected()
            await asyncio.to_thread(sh, [*cli, "shutdown", "nosave"])
            shut_down = time.monotonic()
            await run.watch.until_degraded(10)
        finally:
            run.healed_at = await bring_back([*cli, "ping"], start)
        await run.watch.until_recovered(15)
    await assert_survived(
        run, redis_primary(), fault="redis: restarted (no persistence)", acked_after=shut_down
    )


async def test_the_soak_script_runs() -> None:
    """``benchmarks/soak.py`` in miniature, so it cannot rot: a short lock, no loss."""
    from benchmarks.soak import soak

    figures = await soak(2.5, tasks=4, fault_every=10, fault_for=0.5)
    assert figures.faults == ["sqlite write lock held by another process for 0.5 s"]
    assert figures.operations > 100
    assert (figures.caller_errors, figures.writes_lost, figures.healthy_mismatches) == (0, 0, 0)
