"""``python -m benchmarks.soak --seconds 60 [--postgres]``: mixed load while the store breaks.

Many tasks claim, look up, touch, rebind and delete their own sessions through
``ResilientSessionRepository`` for a fixed time, while faults are injected on a
schedule: another process holding the SQLite write lock past the busy timeout,
or (``--postgres``) the PostgreSQL cluster stopped and started again and every
connection killed. At the end every acknowledged write is checked against a
fresh repository that never saw a fault. Printed: operations done, errors seen
by callers (must be 0), time degraded, acknowledged writes lost (must be 0).

Each task owns its sessions, so the expected final state is exact: the last
acknowledged write to each session decides its owner (or its absence).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from session_repo import ResilientSessionRepository, SqlSessionRepository

__all__ = ["Figures", "main", "soak"]

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_DATABASE = "session_repo_soak"

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@dataclass
class Figures:
    """What one soak run measured."""

    store: str
    seconds: float
    tasks: int
    operations: int = 0
    caller_errors: int = 0
    faults: list[str] = field(default_factory=list)
    degraded_s: float = 0.0
    outages: int = 0
    acknowledged_writes: int = 0
    writes_lost: int = 0
    degraded_misses: int = 0
    healthy_mismatches: int = 0
    retries: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


class Soak:
    """The load, the health watch and the expected state."""

    def __init__(self, repo: ResilientSessionRepository, tasks: int, seed: int) -> None:
        self.repo = repo
        self.tasks = tasks
        self.random = random.Random(seed)
        self.expected: dict[str, str | None] = {}
        self.errors: list[BaseException] = []
        self.latencies: list[float] = []
        self.operations = 0
        self.acknowledged = 0
        self.degraded_misses = 0
        self.healthy_mismatches = 0
        self.degraded_s = 0.0
        self.outages = 0
        self.stopping = asyncio.Event()

    async def _call(self, work: Awaitable[Any]) -> tuple[bool, Any]:
        started = time.perf_counter()
        try:
            result = await work
        except Exception as exc:  # counted: the figure that must stay 0
            self.errors.append(exc)
            return False, None
        finally:
            self.latencies.append(time.perf_counter() - started)
            self.operations += 1
        return True, result

    async def worker(self, worker: int) -> None:
        owner = f"soak-{worker}"
        mine: list[str] = []
        serial = 0
        rng = random.Random(self.random.random())
        while not self.stopping.is_set():
            roll = rng.random()
            if roll < 0.3 or not mine:  # a new session: claim it
                serial += 1
                sid = f"soak-{worker}-{serial}"
                ok, winner = await self._call(self.repo.claim(sid, owner, ttl=3600))
                if ok:
                    assert winner == owner, "a claim of a new session lost"
                    mine.append(sid)
                    self._acked(sid, owner)
            else:
                sid = rng.choice(mine)
                if roll < 0.8:
                    before = self._degraded()
                    ok, found = await self._call(self.repo.lookup(sid))
                    if ok and found != self.expected[sid]:
                        if before or self._degraded():
                            self.degraded_misses += 1  # the fallback knows only the outage
                        else:
                            self.healthy_mismatches += 1  # must stay 0
                elif roll < 0.9:
                    await self._call(self.repo.touch(sid, ttl=3600))
                elif roll < 0.95:
                    other = f"soak-{worker}-moved"
                    ok, _ = await self._call(self.repo.upsert(sid, other, ttl=3600))
                    if ok:
                        self._acked(sid, other)
                else:
                    ok, _ = await self._call(self.repo.delete(sid))
                    if ok:
                        self._acked(sid, None)
                        mine.remove(sid)
            await asyncio.sleep(rng.uniform(0, 0.004))

    def _acked(self, sid: str, owner: str | None) -> None:
        self.expected[sid] = owner
        self.acknowledged += 1

    def _degraded(self) -> bool:
        # Exact and without I/O, unlike health(): only to tell expected misses from wrong answers.
        return self.repo.counters().fallback_active

    async def watch(self) -> None:
        """Time spent degraded, by polling health (as a monitor would)."""
        last = time.monotonic()
        degraded = False
        while not self.stopping.is_set():
            await asyncio.sleep(0.05)
            status = (await self.repo.health()).status
            now = time.monotonic()
            if degraded:
                self.degraded_s += now - last
            if status == "degraded" and not degraded:
                self.outages += 1
            degraded = status == "degraded"
            last = now


# -- faults ------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_lock(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline() != "locked\n":
            raise RuntimeError("the lock holder did not start")
        yield holder
    finally:
        holder.wait(seconds + 10)


async def sqlite_fault(path: Path, seconds: float) -> str:
    with sqlite_lock(path, seconds) as holder:
        await asyncio.to_thread(holder.wait, seconds + 10)
    return f"sqlite write lock held by another process for {seconds:g} s"


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


async def _answers(*argv: str) -> bool:
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=False)
    return done.returncode == 0


async def pg_restart(pause: float) -> str:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    ctl = ("pg_ctlcluster", "--skip-systemctl-redirect", version, "main")
    try:
        await asyncio.to_thread(_sh, *ctl, "stop", "-m", "fast")
        await asyncio.sleep(pause)
    finally:  # always bring it back
        for _ in range(60):
            if await _answers("pg_isready", "-h", "127.0.0.1", "-p", "5432"):
                break
            with contextlib.suppress(subprocess.CalledProcessError):
                await asyncio.to_thread(_sh, *ctl, "start")
            await asyncio.sleep(0.5)
    return f"postgresql stopped for {pause:g} s and started"


async def pg_kill_connections() -> str:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(PG_URL, poolclass=NullPool)
    killed = 0
    try:
        for _ in range(5):
            async with engine.connect() as conn:
                killed += int(
                    await conn.scalar(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": PG_DATABASE},
                    )
                    or 0
                )
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()
    return f"postgresql: {killed} connections terminated"


async def pg_database() -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    admin = create_async_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": PG_DATABASE}
            )
            if not exists:
                await conn.execute(text(f"CREATE DATABASE {PG_DATABASE}"))
    finally:
        await admin.dispose()
    url = make_url(PG_URL).set(database=PG_DATABASE).render_as_string(hide_password=False)
    repo = SqlSessionRepository(url, auto_migrate=True, cleanup_interval=0)
    async with repo, repo.engine.begin() as conn:
        await conn.execute(text("DELETE FROM session_bindings"))
    return url


# -- the run -----------------------------------------------------------------------


async def soak(
    seconds: float,
    *,
    tasks: int = 32,
    postgres: bool = False,
    fault_every: float = 20.0,
    fault_for: float = 7.0,
    retry_count: int = 1,
    seed: int = 1,
) -> Figures:
    """Run the load and the fault schedule; check every acknowledged write at the end."""
    with tempfile.TemporaryDirectory(prefix="session-repo-soak-") as tmp:
        path = Path(tmp) / "soak.sqlite"
        url = await pg_database() if postgres else f"sqlite+aiosqlite:///{path}"

        def primary() -> SqlSessionRepository:
            return SqlSessionRepository(url, cleanup_interval=0, connect_timeout=2)

        figures = Figures(
            store="postgresql" if postgres else "sqlite", seconds=seconds, tasks=tasks
        )
        faults: list[Callable[[], Awaitable[str]]]
        if postgres:
            faults = [lambda: pg_restart(min(fault_for, 2)), pg_kill_connections]
        else:
            faults = [lambda: sqlite_fault(path, fault_for)]
        repo = ResilientSessionRepository(primary(), retry_count=retry_count)
        async with repo:
            run = Soak(repo, tasks, seed)
            load = [asyncio.create_task(run.worker(n)) for n in range(tasks)]
            watch = asyncio.create_task(run.watch())
            started = time.monotonic()
            next_fault = started + min(5.0, seconds / 4)
            n = 0
            while time.monotonic() - started < seconds:
                if time.monotonic() >= next_fault:
                    figures.faults.append(await faults[n % len(faults)]())
                    n += 1
                    next_fault += fault_every
                await asyncio.sleep(0.05)
            run.stopping.set()
            await asyncio.gather(*load, watch)
            for _ in range(600):  # let the last outage end (a minute at most)
                if (await repo.health()).status == "ok":
                    break
                await asyncio.sleep(0.1)
            figures.retries = (await repo.metrics()).retries
        async with primary() as fresh:
            sids = list(run.expected)
            found = await asyncio.gather(*(fresh.lookup(sid) for sid in sids))
        figures.writes_lost = sum(
            1 for sid, owner in zip(sids, found, strict=True) if owner != run.expected[sid]
        )
    latencies = sorted(run.latencies) or [0.0]
    figures.operations = run.operations
    figures.caller_errors = len(run.errors)
    figures.degraded_s = round(run.degraded_s, 1)
    figures.outages = run.outages
    figures.acknowledged_writes = run.acknowledged
    figures.degraded_misses = run.degraded_misses
    figures.healthy_mismatches = run.healthy_mismatches
    figures.p50_ms = round(latencies[len(latencies) // 2] * 1000, 2)
    figures.p99_ms = round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
    figures.max_ms = round(latencies[-1] * 1000, 1)
    return figures


def render(figures: Figures) -> str:
    lines = [
        f"soak: {figures.store}, {figures.seconds:.0f} s, {figures.tasks} tasks",
        *(f"  fault: {fault}" for fault in figures.faults),
        f"operations done:            {figures.operations}"
        f" ({figures.operations / figures.seconds:.0f}/s)",
        f"errors seen by callers:     {figures.caller_errors}",
        f"time degraded:              {figures.degraded_s} s in {figures.outages} outage(s)",
        f"acknowledged writes:        {figures.acknowledged_writes}",
        f"acknowledged writes lost:   {figures.writes_lost}",
        f"lookups missed (degraded):  {figures.degraded_misses}",
        f"wrong lookups (healthy):    {figures.healthy_mismatches}",
        f"retries:                    {figures.retries}",
        f"latency p50 / p99 / max:    {figures.p50_ms} / {figures.p99_ms} / {figures.max_ms} ms",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60, help="how long to run (60)")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent callers (32)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="PostgreSQL (stopped and started, connections killed) instead of SQLite",
    )
    parser.add_argument("--fault-every", type=float, default=20, help="seconds between faults")
    parser.add_argument("--fault-for", type=float, default=7, help="how long a lock is held")
    parser.add_argument(
        "--retry-count",
        type=int,
        default=1,
        help="tries per call (1: each SQLite try waits out the 5 s busy timeout)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = asyncio.run(
        soak(
            args.seconds,
            tasks=args.tasks,
            postgres=args.postgres,
            fault_every=args.fault_every,
            fault_for=args.fault_for,
            retry_count=args.retry_count,
        )
    )
    print(json.dumps(asdict(figures)) if args.json else render(figures))
    failed = figures.caller_errors or figures.writes_lost or figures.healthy_mismatches
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
