"""Which store serves a call: the primary, tried again, else the memory fallback.

A call the primary fails is tried again while the error is transient; when the
tries run out, or at once on a permanent error, the store *degrades*: the
fallback serves, the outage is logged once and a probe watches the primary. While
the journal is written back, a session with nothing left in it is served by the
primary again, and a writer waits at most for its own session's entry in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from session_repo._core.counters import Counters
from session_repo._core.front import StoreFront
from session_repo.errors import RepositoryClosed, StorageError
from session_repo.resilience.outage import FallbackState
from session_repo.resilience.probe import Probe
from session_repo.resilience.recovery import WriteBack
from session_repo.resilience.retry import RetryPolicy
from session_repo.resilience.tokens import FallbackTokens

__all__ = ["Serving"]

logger = logging.getLogger("session_repo.resilience")

T = TypeVar("T")


class Serving:
    """The switch between the primary and the fallback: healthy, degraded or closed.

    Args:
        primary: the store served while healthy.
        state: what the fallback knows (its store is opened on degrading).
        write_back: writes the journal back once the primary answers.
        tokens: the fallback's fencing tokens, retired when the outage ends.
        counters: where errors met and retries made are counted.
        retry_count: tries of one call before the fallback serves it.
        retry_delay: first wait between tries (seconds); it doubles, with jitter.
        probe_delay: first wait before checking a failed primary again.
        probe_max_delay: the longest wait between two probes.
        on_health: given the healthy path's flag (neither degraded nor closed)
            each time it changes, so the caller can keep it where one read finds it.
    """

    def __init__(
        self,
        primary: StoreFront,
        state: FallbackState,
        write_back: WriteBack,
        tokens: FallbackTokens,
        counters: Counters,
        *,
        retry_count: int,
        retry_delay: float,
        probe_delay: float,
        probe_max_delay: float,
        on_health: Callable[[bool], None],
    ) -> None:
        self._primary = primary
        self._state = state
        self._write_back = write_back
        self._tokens = tokens
        self._on_health = on_health
        self.retry = RetryPolicy(
            retry_count, retry_delay, counters, lambda: self.degraded or self.closed
        )
        self.probe = Probe(
            primary,
            write_back,
            state,
            delay=probe_delay,
            max_delay=max(probe_max_delay, probe_delay),
            recovered=self._recovered,
        )
        self.degraded = False
        self.closed = False

    def check_open(self) -> None:
        """Raise ``RepositoryClosed`` once ``close`` was called."""
        if self.closed:
            raise RepositoryClosed("ResilientSessionRepository is closed")

    def close(self) -> None:
        """No call is served from now on."""
        self.closed = True
        self._set_healthy()

    async def serve(
        self,
        operation: str,
        key: bytes | None,
        on_primary: Callable[[], Awaitable[T]],
        on_fallback: Callable[[], Awaitable[T]],
        failed: StorageError | None = None,
    ) -> T:
        """``on_primary`` with retries while healthy, else ``on_fallback``.

        ``on_fallback`` reads and writes the memory fallback with nothing in between
        that could let another task in.

        Args:
            operation: the call's name, for the logs.
            key: the session it is about; ``None`` for an owner-level call.
            on_primary: makes one try on the primary.
            on_fallback: answers from the fallback.
            failed: the error of a first try the caller already made on the primary
                (its healthy path); the tries go on from there.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        while True:
            if failed is None:
                self.check_open()
                if self.degraded:
                    if key is not None and (writing := self._write_back.in_flight(key)) is not None:
                        await writing.wait()
                        continue
                    if not self._write_back.serves_primary(key):
                        return await on_fallback()
                try:  # the first try here, not in the retry policy: one frame less per call
                    return await on_primary()
                except StorageError as exc:
                    failed = exc
            try:
                return await self.retry.again(on_primary, failed)
            except StorageError as exc:
                failed = None
                await self.degrade(operation, exc)

    async def degrade(self, operation: str, error: StorageError) -> None:
        """``operation`` failed with ``error``: serve from the fallback until it answers.

        Args:
            operation: the call that failed, for the logs.
            error: what the primary said.
        """
        await self._state.fallback.open()
        self._write_back.recovering = False  # failing again mid write-back: the fallback serves all
        if self.degraded or self.closed:
            return
        self.degraded = True
        self._set_healthy()
        self._state.degraded()
        logger.warning(
            "%s %s failed (%s): serving from the in-memory fallback until it answers",
            self._primary.backend,
            operation,
            error,
            extra={
                "backend": self._primary.backend,
                "operation": operation,
                "outcome": "degraded",
                "transient": error.transient,
            },
        )
        self.probe.start(str(error))

    def _recovered(self) -> None:
        self._tokens.recovered()
        self.degraded = False
        self._set_healthy()

    def _set_healthy(self) -> None:
        self._on_health(not (self.degraded or self.closed))
