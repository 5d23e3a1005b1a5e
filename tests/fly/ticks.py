"""A ``sleep`` that follows a ``FakeClock``, so heartbeat tasks run on test time.

``Ticker.sleep`` is what the middleware's heartbeat task waits with: it returns once
the fake clock has moved on by the seconds asked. ``Ticker.advance`` moves the clock
from one due wake-up to the next, wakes the sleepers due, and waits (in real time,
bounded) until each woken task has gone back to sleep, so every heartbeat lands at its
exact fake time and has been written when ``advance`` returns, whatever the backend.
"""

from __future__ import annotations

import asyncio
import time

from session_repo.testing import FakeClock

__all__ = ["Ticker"]

_SETTLE = 5.0  # real seconds a woken task may take to sleep again (a SQLite write, say)


class Ticker:
    """Sleepers on a fake clock.

    Args:
        clock: the fake clock the sleepers follow.

    Attributes:
        asked: every duration passed to ``sleep``, in order.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.asked: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        """Return once ``clock`` has moved on by ``seconds``."""
        self.asked.append(seconds)
        future = asyncio.get_running_loop().create_future()
        entry = (self.clock.now() + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    @property
    def sleeping(self) -> int:
        """How many tasks are waiting in ``sleep`` now."""
        return sum(1 for _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, waking each sleeper at its due time."""
        end = self.clock.now() + seconds
        while True:
            due = [until for until, f in self._sleepers if not f.done() and until <= end]
            if not due:
                break
            self.clock.set(max(self.clock.now(), min(due)))
            calls, woken = len(self.asked), self.wake()
            deadline = time.monotonic() + _SETTLE
            while len(self.asked) < calls + woken and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
        self.clock.set(end)

    def wake(self) -> int:
        """Wake the sleepers due now, without waiting for them to sleep again.

        Returns:
            How many were woken.
        """
        now = self.clock.now()
        woken = [f for until, f in self._sleepers if not f.done() and until <= now]
        for future in woken:
            future.set_result(None)
        return len(woken)
