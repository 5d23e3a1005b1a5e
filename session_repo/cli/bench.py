"""``session-repo bench``: how fast is this store, from here?

A quick in-process measurement of ``lookup`` and ``upsert`` on the configured
store: throughput and p50/p99 latency at each concurrency. It writes only its
own random sessions, under an owner of its own, and deletes them when done.
The full comparison against raw drivers lives in ``benchmarks/``.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from session_repo._core.inputs import positive_int
from session_repo.cli.output import PROGRESS_EVERY
from session_repo.cli.store import backend_name
from session_repo.contract import SessionRepository

__all__ = ["Measurement", "run_bench"]

PRELOAD_CONCURRENCY = 32
YIELD_EVERY = 64  # operations between explicit yields to the event loop
STRIDE = 7919  # a prime: walks the preloaded sessions in a scattered order


@dataclass(frozen=True, slots=True)
class Measurement:
    """One operation at one concurrency; latencies in seconds.

    Args:
        operation: "lookup" or "upsert".
        concurrency: how many tasks ran the operation at once.
        ops: how many operations were measured.
        seconds: wall time for all of them.
        p50: the median latency.
        p99: the 99th percentile latency.
    """

    operation: str
    concurrency: int
    ops: int
    seconds: float
    p50: float
    p99: float

    @property
    def per_second(self) -> float:
        """Throughput: operations per second of wall time."""
        return self.ops / self.seconds if self.seconds > 0 else math.inf


async def run_bench(
    repo: SessionRepository,
    *,
    sessions: int,
    ops: int,
    concurrency: Sequence[int],
    out: TextIO,
    progress: TextIO | None = None,
) -> list[Measurement]:
    """Preload ``sessions`` bindings, measure, print a table on ``out``, clean up.

    The bindings are random sessions under an owner of their own, deleted at the end
    even when a measurement fails.

    Args:
        repo: the repository to measure.
        sessions: how many bindings to preload.
        ops: operations per measurement.
        concurrency: one measurement of each operation per number of tasks given.
        out: where the table goes.
        progress: where progress lines go (a terminal), or None for none.

    Returns:
        The measurements, lookup then upsert for each concurrency in order.

    Raises:
        TypeError: ``sessions``, ``ops`` or a concurrency is not an ``int``.
        InvalidInput: one of them is < 1.
        StorageError: the store failed.
    """
    positive_int("sessions", sessions)
    positive_int("ops", ops)
    for tasks in concurrency:
        positive_int("concurrency", tasks)
    run = secrets.token_hex(4)
    owner = f"bench-{run}"
    stride = STRIDE if math.gcd(STRIDE, sessions) == 1 else 1

    def session(n: int) -> str:
        return f"bench-{run}-{n}"

    def pick(i: int) -> str:
        return session((i * stride) % sessions)

    async def preload(n: int) -> None:
        await repo.upsert(session(n), owner)

    operations: dict[str, Callable[[int], Awaitable[object]]] = {
        "lookup": lambda i: repo.lookup(pick(i)),
        "upsert": lambda i: repo.upsert(pick(i), owner),
    }
    results: list[Measurement] = []
    try:
        await _each(sessions, PRELOAD_CONCURRENCY, preload, progress, "preload")
        for tasks in concurrency:
            for operation, call in operations.items():
                label = f"{operation} x{tasks}"
                latencies, seconds = await _each(ops, tasks, call, progress, label)
                latencies.sort()
                p50, p99 = _rank(latencies, 0.50), _rank(latencies, 0.99)
                results.append(Measurement(operation, tasks, ops, seconds, p50, p99))
    finally:
        await repo.delete_owner(owner)
    _table(repo, sessions, results, out)
    return results


async def _each(
    ops: int,
    concurrency: int,
    call: Callable[[int], Awaitable[object]],
    progress: TextIO | None,
    label: str,
) -> tuple[list[float], float]:
    """Run ``call(0..ops-1)`` on ``concurrency`` tasks; (latencies, wall seconds)."""
    latencies: list[float] = []
    numbers = iter(range(ops))
    next_report = 0.0

    async def worker() -> None:
        nonlocal next_report
        for i in numbers:  # one shared iterator: each number is taken once
            started = time.perf_counter()
            await call(i)
            finished = time.perf_counter()
            latencies.append(finished - started)
            if progress is not None and finished >= next_report:
                next_report = finished + PROGRESS_EVERY
                progress.write(f"\r{label}: {len(latencies)}/{ops}")
                progress.flush()
            if i % YIELD_EVERY == 0:  # an in-process store never suspends: let Ctrl-C in
                await asyncio.sleep(0)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, ops)):
            group.create_task(worker())
    seconds = time.perf_counter() - started
    if progress is not None:
        progress.write("\r\x1b[K")
        progress.flush()
    return latencies, seconds


def _rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(math.ceil(q * len(ordered)) - 1, 0))]


def _table(repo: SessionRepository, sessions: int, results: list[Measurement], out: TextIO) -> None:
    print(f"session-repo bench: {backend_name(repo)}, {sessions} sessions preloaded", file=out)
    print(
        f"{'operation':<10}{'tasks':>7}{'ops':>8}{'ops/s':>11}{'p50 ms':>9}{'p99 ms':>9}", file=out
    )
    for r in results:
        print(
            f"{r.operation:<10}{r.concurrency:>7}{r.ops:>8}{r.per_second:>11.0f}"
            f"{r.p50 * 1000:>9.3f}{r.p99 * 1000:>9.3f}",
            file=out,
        )
