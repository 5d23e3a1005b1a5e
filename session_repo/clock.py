"""Where time comes from, so tests can own it."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Source of the current time; expiry is decided by this clock only."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock (``time.time``)."""

    __slots__ = ()

    def now(self) -> float:
        """Seconds since the epoch, from ``time.time()``."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"
