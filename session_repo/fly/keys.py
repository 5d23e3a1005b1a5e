"""A session key read by the user's own callable: ``FlyReplayMiddleware(key=...)``.

Beyond a header, a cookie and the HTTP+SSE query parameter, a key can be anything
the ASGI scope holds: a task id in the path, a tenant header. The callable is the
user's code, so nothing it does may fail a request: what it returns is validated
like a header's key (1..1024 characters of visible ASCII), anything else counts as
no key, and a failure is logged (its type only: a message might hold the raw key)
once a burst.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from session_repo.clock import Clock
from session_repo.fly._log import fields, logger
from session_repo.fly.request import valid_key

__all__ = ["KeyFunction", "KeyReader"]

KeyFunction = Callable[[Any], str | None]
"""``key(scope)``: a request's session key read from its ASGI scope, or None for none."""

_QUIET = 30.0  # seconds after a reported failure during which more are only counted


class KeyReader:
    """Calls a ``KeyFunction`` for each request, never raising.

    Args:
        function: the user's callable.
        clock: the time source for the quiet period of failure logs.

    Raises:
        TypeError: ``function`` is not callable, or is an ``async`` function.
    """

    __slots__ = ("_clock", "_function", "_reported_at", "_suppressed")

    def __init__(self, function: KeyFunction, clock: Clock) -> None:
        if not callable(function) or inspect.iscoroutinefunction(function):
            raise TypeError("key must be a synchronous callable: key(scope) -> str | None")
        self._function = function
        self._clock = clock
        self._reported_at: float | None = None
        self._suppressed = 0

    def read(self, scope: Any) -> str | None:
        """The request's key, validated.

        Args:
            scope: the request's ASGI scope.

        Returns:
            The key, or None when the callable gave none, gave one outside visible
            ASCII or over 1024 characters, gave something not a str, or raised.
        """
        try:
            value = self._function(scope)
        except Exception as exc:  # the user's code: never fail the request
            self._failed(f"raised {type(exc).__name__}")
            return None
        if value is None or (isinstance(value, str) and valid_key(value)):
            return value
        if isinstance(value, str):
            return None  # outside visible ASCII or too long: no key, as from a header
        if inspect.iscoroutine(value):
            value.close()  # never awaited: close it, or Python warns at collection
        self._failed(f"returned {type(value).__name__}, not str or None")
        return None

    def _failed(self, what: str) -> None:
        now = self._clock.now()
        if self._reported_at is not None and 0 <= now - self._reported_at < _QUIET:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        logger.warning(
            "the key callable %s: the request is served here as one with no session key%s",
            what,
            more,
            extra=fields("key", "key_failed", error=what),
        )
        self._reported_at, self._suppressed = now, 0
