"""Who blocks the event loop, and for how long: each callback, timed.

The stall ticker measures how late the loop wakes it, which on a shared
machine includes the time the loop's thread waited for a core. This times
each callback the loop runs (task steps included) from inside: its wall time
(which counts waiting on a lock or disk in the loop's thread, and being
preempted by another process) and its thread CPU time (``time.thread_time``:
work done in the loop's thread only, whatever else the machine runs). Timing
every callback costs a few microseconds each, so this runs as its own short
pass, apart from the throughput figures.
"""

from __future__ import annotations

import asyncio.events
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["CallbackClock", "LongestCallback"]


@dataclass(frozen=True)
class LongestCallback:
    subject: str
    op: str
    concurrency: int
    cpu_ms: float  # the most CPU time one callback spent in the loop's thread
    wall_ms: float  # the longest one callback took, waits and preemption included
    callbacks: int  # how many callbacks ran in the scenario


class CallbackClock:
    """``with CallbackClock() as clock:`` ... ``clock.longest_cpu_s``, ``clock.longest_wall_s``."""

    def __init__(self) -> None:
        self.longest_cpu_s = 0.0
        self.longest_wall_s = 0.0
        self.callbacks = 0
        self._active = False
        self._original: Callable[[Any], None] | None = None

    def __enter__(self) -> CallbackClock:
        original = self._original = asyncio.events.Handle._run
        cpu, wall = time.thread_time, time.perf_counter
        meter = self

        def timed_run(handle: Any) -> None:
            cpu_start, wall_start = cpu(), wall()
            original(handle)
            # The callback that leaves the block goes on with the caller's own work: not counted.
            if meter._active:
                meter.callbacks += 1
                meter.longest_cpu_s = max(meter.longest_cpu_s, cpu() - cpu_start)
                meter.longest_wall_s = max(meter.longest_wall_s, wall() - wall_start)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        if self._original is not None:
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign,assignment]
            self._original = None
