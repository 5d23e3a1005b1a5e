"""Cleanup under load (SQLite): does removing expired rows hold up the requests?

A file with N rows, half of them expired (1,000,000 and 500,000 by default),
scattered through the table. Two repositories on it, as two processes of one
service would have: one runs ``cleanup()``; through the other, 64 tasks look
up and 64 tasks upsert live sessions the whole time. First the same traffic
runs for a while without cleanup (the baseline), then during it. Reported:
upsert errors (a "database is locked" among them is the failure that matters),
lookup p99 during cleanup against the baseline's, and how long cleanup took.
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.database import build_sqlite, remove_sqlite
from benchmarks.measure import StallTicker, percentile
from benchmarks.workload import ALLOC_IDS, TTL_S, Row, digest, make_dataset, rows_of
from session_repo import SqlSessionRepository, StorageError

__all__ = ["CleanupSample", "measure_cleanup"]

WARMUP_S = 0.3


@dataclass(frozen=True)
class Phase:
    """The traffic of one phase: latencies (ms) and failures."""

    seconds: float
    lookups: int
    upserts: int
    lookup_p50_ms: float
    lookup_p99_ms: float
    upsert_p99_ms: float
    lookup_errors: int
    upsert_errors: int
    locked: int  # errors whose message (or cause's) says "database is locked"
    misses: int  # lookups of live sessions that found nothing (should be 0)
    loop_stall_ms: float


@dataclass(frozen=True)
class CleanupSample:
    """One repetition: the baseline phase, the phase during cleanup, and cleanup itself."""

    rows: int
    expired: int
    removed: int
    cleanup_s: float
    baseline: Phase
    during: Phase
    cleanup_error: str | None = None  # cleanup() itself failed (it should not)


def _is_locked(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if "database is locked" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Traffic:
    """64 lookup tasks and 64 upsert tasks on live sessions, until stopped."""

    def __init__(self, repo: SqlSessionRepository, live: list[str], tasks: int, seed: str) -> None:
        self._repo = repo
        self._live = live
        self._tasks = tasks
        self._seed = seed
        self.lookup_ns: list[int] = []
        self.upsert_ns: list[int] = []
        self.errors: dict[str, list[BaseException]] = {"lookup": [], "upsert": []}
        self.misses = 0
        self.stopped = asyncio.Event()

    async def _lookups(self, n: int) -> None:
        rng = random.Random(f"{self._seed}-lookup-{n}")
        clock = time.perf_counter_ns
        while not self.stopped.is_set():
            session_id = rng.choice(self._live)
            started = clock()
            try:
                owner = await self._repo.lookup(session_id)
            except Exception as exc:
                self.errors["lookup"].append(exc)
            else:
                self.lookup_ns.append(clock() - started)
                self.misses += owner is None
            await asyncio.sleep(0)

    async def _upserts(self, n: int) -> None:
        rng = random.Random(f"{self._seed}-upsert-{n}")
        clock = time.perf_counter_ns
        while not self.stopped.is_set():
            session_id = rng.choice(self._live)
            started = clock()
            try:
                await self._repo.upsert(session_id, rng.choice(ALLOC_IDS), TTL_S)
            except Exception as exc:
                self.errors["upsert"].append(exc)
            else:
                self.upsert_ns.append(clock() - started)
            await asyncio.sleep(0)

    def start(self) -> asyncio.Future[list[None]]:
        return asyncio.gather(
            *(self._lookups(n) for n in range(self._tasks)),
            *(self._upserts(n) for n in range(self._tasks)),
        )

    def phase(self, seconds: float, stall_ms: float) -> Phase:
        lookups = sorted(self.lookup_ns) or [0]
        upserts = sorted(self.upsert_ns) or [0]
        errors = self.errors["lookup"] + self.errors["upsert"]
        return Phase(
            seconds=seconds,
            lookups=len(self.lookup_ns),
            upserts=len(self.upsert_ns),
            lookup_p50_ms=percentile(lookups, 0.50) / 1e6,
            lookup_p99_ms=percentile(lookups, 0.99) / 1e6,
            upsert_p99_ms=percentile(upserts, 0.99) / 1e6,
            lookup_errors=len(self.errors["lookup"]),
            upsert_errors=len(self.errors["upsert"]),
            locked=sum(_is_locked(exc) for exc in errors),
            misses=self.misses,
            loop_stall_ms=stall_ms,
        )


async def _traffic_for(
    repo: SqlSessionRepository, live: list[str], tasks: int, seed: str, seconds: float
) -> Phase:
    traffic = _Traffic(repo, live, tasks, seed)
    async with StallTicker() as ticker:
        running = traffic.start()
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        traffic.stopped.set()
        await running
        elapsed = time.perf_counter() - started
    return traffic.phase(elapsed, ticker.max_stall_s * 1e3)


async def _one(
    path: Path, live: list[str], tasks: int, baseline_s: float, seed: str
) -> tuple[int, float, Phase, Phase, str | None]:
    url = f"sqlite+aiosqlite:///{path}"
    # As in every scenario: the harness's own objects (half a million session ids) out of
    # the collector's sight, so its pauses during the run are the library's.
    gc.collect()
    gc.freeze()
    try:
        return await _phases(url, live, tasks, baseline_s, seed)
    finally:
        gc.unfreeze()


async def _phases(
    url: str, live: list[str], tasks: int, baseline_s: float, seed: str
) -> tuple[int, float, Phase, Phase, str | None]:
    async with (
        SqlSessionRepository(url, cleanup_interval=0) as cleaner,
        SqlSessionRepository(url, cleanup_interval=0) as served,
    ):
        await _traffic_for(served, live, tasks, f"{seed}-warmup", min(WARMUP_S, baseline_s))
        baseline = await _traffic_for(served, live, tasks, f"{seed}-baseline", baseline_s)
        traffic = _Traffic(served, live, tasks, f"{seed}-during")
        async with StallTicker() as ticker:
            running = traffic.start()
            started = time.perf_counter()
            failure = None
            try:
                removed = await cleaner.cleanup()
            except StorageError as exc:
                removed, failure = 0, f"{type(exc).__name__}: {exc}"
            finally:
                cleanup_s = time.perf_counter() - started
                traffic.stopped.set()
                await running
        during = traffic.phase(cleanup_s, ticker.max_stall_s * 1e3)
    return removed, cleanup_s, baseline, during, failure


async def measure_cleanup(
    rows: int,
    *,
    repeat: int,
    tasks: int,
    baseline_s: float,
    seed: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> list[CleanupSample]:
    """``repeat`` runs, each on a fresh copy of a file of ``rows`` rows, half expired."""
    expired = rows // 2
    dataset = make_dataset(rows - expired, seed)
    live = [session_id for session_id, _ in dataset.sessions]
    past = int(time.time() * 1000) - TTL_S * 1000
    dead: list[Row] = [
        (digest(f"x{seed:07x}{n:024x}"), ALLOC_IDS[n % len(ALLOC_IDS)], past)
        for n in range(expired)
    ]
    template = workdir / "cleanup-template.sqlite"
    started = time.perf_counter()
    await build_sqlite(template, [*rows_of(dataset), *dead])
    del dead
    took = time.perf_counter() - started
    progress(f"cleanup: built {rows:,} rows ({expired:,} expired) in {took:.1f} s")
    samples = []
    try:
        for rep in range(repeat):
            path = workdir / f"cleanup-{rep}.sqlite"
            shutil.copyfile(template, path)
            try:
                removed, cleanup_s, baseline, during, failure = await _one(
                    path, live, tasks, baseline_s, f"{seed}-cleanup-{rep}"
                )
            finally:
                remove_sqlite(path)
            sample = CleanupSample(rows, expired, removed, cleanup_s, baseline, during, failure)
            samples.append(sample)
            progress(
                f"cleanup rep {rep + 1}/{repeat}: removed {removed:,} in {cleanup_s:.1f} s; "
                f"lookup p99 {baseline.lookup_p99_ms:.2f} ms without, "
                f"{during.lookup_p99_ms:.2f} ms during; upsert errors {during.upsert_errors} "
                f"(locked {during.locked})"
            )
    finally:
        remove_sqlite(template)
    return samples
