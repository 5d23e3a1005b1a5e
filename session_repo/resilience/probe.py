"""Watching a failed primary: probe with backoff, write the journal back, end the outage.

The outage ends with no await between the journal running empty and the flip,
so no write can slip into the fallback after its journal was written back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from session_repo._core.front import StoreFront
from session_repo.errors import RepositoryClosed, StorageError
from session_repo.resilience.outage import FallbackState
from session_repo.resilience.recovery import WriteBack

__all__ = ["Probe"]

logger = logging.getLogger("session_repo.resilience")


class Probe:
    """One outage's watch on the primary.

    Args:
        primary: the failed store.
        write_back: writes the journal back once the primary answers.
        state: what the fallback knows (forgotten when the outage ends).
        delay: the first wait before a probe; it doubles up to ``max_delay``.
        max_delay: the longest wait between two probes.
        recovered: called, with no await after the write-back, to end the outage.
    """

    def __init__(
        self,
        primary: StoreFront,
        write_back: WriteBack,
        state: FallbackState,
        *,
        delay: float,
        max_delay: float,
        recovered: Callable[[], None],
    ) -> None:
        self._primary = primary
        self._write_back = write_back
        self._state = state
        self._delay = delay
        self._max_delay = max_delay
        self._recovered = recovered
        self._task: asyncio.Task[None] | None = None
        self.since = 0.0
        self.last_error = ""

    def start(self, error: str) -> None:
        """An outage began with ``error``: probe until it ends."""
        self.since = time.monotonic()
        self.last_error = error
        self._task = asyncio.create_task(
            self._run(), name=f"session-repo probe ({self._primary.backend})"
        )

    def task(self) -> asyncio.Task[None] | None:
        """The probing task of the current outage, if any."""
        return self._task

    async def _run(self) -> None:
        delay = self._delay
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)
            try:
                if await self._recover():
                    return
            except RepositoryClosed:
                return
            except StorageError as exc:
                self.last_error = str(exc)
                logger.debug(
                    "write-back to %s failed: %s",
                    self._primary.backend,
                    exc,
                    extra=self._extra("error"),
                )
            except Exception:  # a bug must not leave the store degraded for good
                logger.exception(
                    "write-back to %s failed unexpectedly",
                    self._primary.backend,
                    extra=self._extra("error"),
                )

    async def _recover(self) -> bool:
        health = await self._primary.health()
        if health.status != "ok":
            self.last_error = health.detail
            return False
        written, lost = await self._write_back.run()
        # The journal is empty and nothing awaited since: flip now.
        self._recovered()
        self._state.recovered()
        logger.info(
            "%s answers again: wrote back %d writes (%d claims lost to bindings made "
            "meanwhile) after %.1f s degraded",
            self._primary.backend,
            written,
            lost,
            time.monotonic() - self.since,
            extra=self._extra("recovered", replayed=written, claims_lost=lost),
        )
        return True

    def _extra(self, outcome: str, **more: object) -> dict[str, object]:
        return {
            "backend": self._primary.backend,
            "operation": "write-back",
            "outcome": outcome,
            **more,
        }
