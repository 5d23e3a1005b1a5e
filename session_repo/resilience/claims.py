"""Claims the fallback granted that lost on write-back: counted, logged, reported."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["ClaimLostListener", "ClaimLostReports"]

logger = logging.getLogger("session_repo.resilience")

ClaimLostListener = Callable[[str, str], Awaitable[None]]
"""``async def listener(ref, winner)``: the session's log reference and who holds it now."""


class ClaimLostReports:
    """The listeners told of each lost claim, each call in its own task.

    Args:
        backend: the primary's name, for the logs.
    """

    def __init__(self, backend: str) -> None:
        self.count = 0
        self._backend = backend
        self._listeners: list[ClaimLostListener] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, listener: ClaimLostListener) -> None:
        """Tell ``listener`` of every lost claim from now on.

        Args:
            listener: an async callable; what it raises is logged.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError("listener must be an async callable")
        self._listeners.append(listener)

    def report(self, ref: str, winner: str) -> None:
        """Count and log one lost claim and start telling the listeners.

        Args:
            ref: the session's log reference (never the session id).
            winner: the alloc id that holds the session on the primary.
        """
        self.count += 1
        logger.warning(
            "a claim granted by the fallback lost on write-back: session %s belongs to %s",
            ref,
            winner,
            extra=self._extra("claim_lost", session=ref, owner=winner),
        )
        for listener in self._listeners:
            task = asyncio.create_task(self._notify(listener, ref, winner))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the calls still running and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _notify(self, listener: ClaimLostListener, ref: str, winner: str) -> None:
        try:
            await listener(ref, winner)
        except Exception:  # a listener's bug must not end the write-back
            logger.exception("a claim-lost listener failed", extra=self._extra("listener_error"))

    def _extra(self, outcome: str, **more: object) -> dict[str, object]:
        return {"backend": self._backend, "operation": "write-back", "outcome": outcome, **more}
