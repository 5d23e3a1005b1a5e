"""Write-back after an outage: how long does a writer wait while the journal drains?

A SQLite file behind ``ResilientSessionRepository``. Another process's connection
takes the file's write lock (a real fault: ``BEGIN EXCLUSIVE``); 64 writer tasks
keep writing, to many sessions and to a few hot ones (one upsert, then touches),
so the journal fills with the outage's writes. Then the lock is let go, and the
writers go on while the wrapper writes the journal back. Reported: journal
entries at the end of the outage against the writes made during it (folding),
how long the write-back took, and each writer's worst and p99 wait during it,
against the same writers on the healthy store before the outage.

    python -m benchmarks.write_back [--outage-s 3] [--sessions 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import percentile
from session_repo import ResilientSessionRepository, SqlSessionRepository

__all__ = ["WriteBackSample", "measure_write_back"]

HOT = 8  # sessions that take a touch on almost every write


@dataclass(frozen=True)
class WriteBackSample:
    """One outage and its write-back."""

    outage_writes: int
    journal_entries: int
    write_back_s: float
    baseline_worst_ms: float  # the same writers on the healthy store, before the outage
    baseline_p99_ms: float
    writes_during: int
    worst_wait_ms: float
    p99_wait_ms: float
    p50_wait_ms: float
    lost: int  # acknowledged writes the primary does not hold afterwards (should be 0)


async def measure_write_back(
    outage_s: float = 3.0, sessions: int = 20_000, tasks: int = 64
) -> WriteBackSample:
    """One outage of ``outage_s`` seconds, then its write-back, measured.

    Args:
        outage_s: how long the file stays locked.
        sessions: distinct sessions the writers write to (besides the hot ones).
        tasks: writer tasks.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "write-back.sqlite"
        primary = SqlSessionRepository(
            f"sqlite+aiosqlite:///{path}", busy_timeout=0.05, cleanup_interval=0
        )
        repo = ResilientSessionRepository(
            primary, retry_count=1, probe_delay=0.05, probe_max_delay=0.2
        )
        async with repo:
            await repo.upsert("warm-up", "m0")
            lock = sqlite3.connect(path, timeout=5, isolation_level=None)
            expected: dict[str, str] = {}
            phase = "baseline"
            waits: list[float] = []
            baseline: list[float] = []
            outage_writes = 0
            stop = asyncio.Event()

            async def writer(n: int) -> None:
                nonlocal outage_writes
                rng = random.Random(n)
                while not stop.is_set():
                    if rng.random() < 0.5:
                        sid, owner = f"hot-{rng.randrange(HOT)}", "m1"
                        started = time.perf_counter()
                        if sid in expected:
                            await repo.touch(sid, ttl=3600)
                        else:
                            await repo.upsert(sid, owner, ttl=3600)
                    else:
                        # each of these sessions has one writer: its last write is known
                        sid = f"s-{n}-{rng.randrange(max(1, sessions // tasks))}"
                        owner = f"m{rng.randrange(1, 5)}"
                        started = time.perf_counter()
                        await repo.upsert(sid, owner, ttl=3600)
                    if sid.startswith("s-"):
                        expected[sid] = owner
                    else:
                        expected.setdefault(sid, owner)
                    if phase == "outage":
                        outage_writes += 1
                    else:
                        (baseline if phase == "baseline" else waits).append(
                            time.perf_counter() - started
                        )
                    await asyncio.sleep(0)

            workers = [asyncio.create_task(writer(n)) for n in range(tasks)]
            await asyncio.sleep(outage_s / 2)
            phase = "outage"
            lock.execute("BEGIN EXCLUSIVE")
            await asyncio.sleep(outage_s)
            entries = (await repo.metrics()).journal_entries
            phase = "write-back"
            started = time.perf_counter()
            lock.execute("COMMIT")
            lock.close()
            while (await repo.health()).status != "ok":  # noqa: ASYNC110 (polling the store)
                await asyncio.sleep(0.001)
            write_back_s = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*workers)
            lost = sum([await primary.lookup(sid) != owner for sid, owner in expected.items()])
    ms = sorted(w * 1000 for w in waits)
    before = sorted(w * 1000 for w in baseline)
    return WriteBackSample(
        baseline_worst_ms=before[-1] if before else 0.0,
        baseline_p99_ms=percentile(before, 0.99) if before else 0.0,
        outage_writes=outage_writes,
        journal_entries=entries,
        write_back_s=write_back_s,
        writes_during=len(ms),
        worst_wait_ms=ms[-1] if ms else 0.0,
        p99_wait_ms=percentile(ms, 0.99) if ms else 0.0,
        p50_wait_ms=percentile(ms, 0.5) if ms else 0.0,
        lost=lost,
    )


def report(sample: WriteBackSample) -> str:
    """The sample as a Markdown table."""
    rows = [
        ("writes during the outage", f"{sample.outage_writes:,}"),
        ("journal entries at its end", f"{sample.journal_entries:,}"),
        ("write-back took", f"{sample.write_back_s * 1000:.0f} ms"),
        ("writes during the write-back", f"{sample.writes_during:,}"),
        ("writer wait p50 / p99 / worst", (
            f"{sample.p50_wait_ms:.2f} / {sample.p99_wait_ms:.2f} / "
            f"{sample.worst_wait_ms:.2f} ms"
        )),
        ("same writers before the outage: p99 / worst", (
            f"{sample.baseline_p99_ms:.2f} / {sample.baseline_worst_ms:.2f} ms"
        )),
        ("acknowledged writes lost", str(sample.lost)),
    ]  # fmt: skip
    lines = ["| write-back after an outage | |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=3.0)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args(argv)
    sample = asyncio.run(measure_write_back(args.outage_s, args.sessions, args.tasks))
    print(report(sample))
    return 0 if sample.lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
