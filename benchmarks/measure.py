"""Running one scenario: N tasks share a list of operations until it or the time runs out.

Each task awaits one operation, records its latency, then yields to the loop
once (``sleep(0)``), as a request handler would before its next request; the
yield is outside the measured latency and costs every subject the same. A
ticker task sleeping 1 ms meanwhile records how late the loop wakes it: the
loop's longest stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from benchmarks.callbacks import CallbackClock

__all__ = ["Result", "Sample", "StallTicker", "percentile", "run_scenario"]

Op = Callable[..., Awaitable[Any]]
Check = Callable[[tuple[str, ...], Any], bool]

TICK_S = 0.001


@dataclass(frozen=True)
class Sample:
    """One scenario, one repetition."""

    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    loop_stall_ms: float
    wrong: int  # results that were not what the workload guarantees (should be 0)


@dataclass
class Result:
    """One subject in one scenario: every repetition's sample and their medians."""

    subject: str
    op: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)

    def median(self, metric: str) -> float:
        values: list[float] = [getattr(sample, metric) for sample in self.samples]
        return statistics.median(values)

    @property
    def wrong(self) -> int:
        return sum(sample.wrong for sample in self.samples)


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an ascending sequence (q in 0..1)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class StallTicker:
    """``async with StallTicker() as t:`` ... ``t.max_stall_s``: the loop's worst lateness."""

    def __init__(self, interval: float = TICK_S) -> None:
        self.interval = interval
        self.max_stall_s = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        interval = self.interval
        last = time.perf_counter()
        while True:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            self.max_stall_s = max(self.max_stall_s, now - last - interval)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> StallTicker:
        self._task = asyncio.create_task(self._tick(), name="benchmark stall ticker")
        await asyncio.sleep(0)  # let it take its first timestamp
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_scenario(
    op: Op,
    work: Sequence[tuple[str, ...]],
    *,
    concurrency: int,
    max_seconds: float,
    check: Check | None = None,
    callbacks: CallbackClock | None = None,
) -> Sample:
    """Run ``op(*args)`` over ``work`` from ``concurrency`` tasks; stop at the end or the time.

    With ``callbacks``, every callback the loop runs meanwhile is timed (see
    ``benchmarks.callbacks``); that costs time, so throughput figures come
    from runs without it.
    """
    latencies: list[int] = []
    record = latencies.append
    total = len(work)
    cursor = 0
    wrong = 0

    async def worker() -> None:
        nonlocal cursor, wrong
        clock = time.perf_counter_ns
        while cursor < total and clock() < deadline_ns:
            args = work[cursor]
            cursor += 1
            started = clock()
            result = await op(*args)
            record(clock() - started)
            if check is not None and not check(args, result):
                wrong += 1
            await asyncio.sleep(0)

    # Collect now, and keep the harness's own objects (work lists, preloaded data) out of
    # the collector's sight, so the pauses it causes during the run are the subject's.
    gc.collect()
    gc.freeze()
    try:
        async with StallTicker() as ticker:
            with callbacks or contextlib.nullcontext():
                started = time.perf_counter_ns()
                deadline_ns = started + int(max_seconds * 1e9)
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                elapsed = (time.perf_counter_ns() - started) / 1e9
    finally:
        gc.unfreeze()
    latencies.sort()
    done = len(latencies)
    return Sample(
        ops=done,
        seconds=elapsed,
        ops_per_s=done / elapsed,
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p99_ms=percentile(latencies, 0.99) / 1e6,
        max_ms=latencies[-1] / 1e6,
        loop_stall_ms=ticker.max_stall_s * 1e3,
        wrong=wrong,
    )
