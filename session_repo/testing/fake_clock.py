"""A clock that moves only when told to."""

from __future__ import annotations

import math

__all__ = ["FakeClock"]


class FakeClock:
    """Deterministic clock for tests: ``advance(seconds)`` and ``set(t)``.

    Args:
        start: the time it starts at, in seconds since the epoch.

    Raises:
        TypeError: ``start`` is not a number.
        ValueError: ``start`` is not finite.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = _finite(start, "start")

    def now(self) -> float:
        """The current time.

        Returns:
            Seconds since the epoch, as last set or advanced.
        """
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (never backwards).

        Args:
            seconds: how far to move, >= 0.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative or not finite.
        """
        seconds = _finite(seconds, "seconds")
        if seconds < 0:
            raise ValueError("FakeClock.advance: seconds must be >= 0")
        self._now += seconds

    def set(self, t: float) -> None:
        """Jump to ``t`` seconds since the epoch, backwards too (a clock step).

        Args:
            t: the new time, in seconds since the epoch.

        Raises:
            TypeError: ``t`` is not a number.
            ValueError: ``t`` is not finite.
        """
        self._now = _finite(t, "t")

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"FakeClock: {name} must be a number")
    if not math.isfinite(value):
        raise ValueError(f"FakeClock: {name} must be finite")
    return float(value)
