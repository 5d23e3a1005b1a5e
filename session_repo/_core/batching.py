"""Coalescing for network stores: the requests of one event-loop tick, one round trip.

Used by the PostgreSQL and Redis backends, whose drivers are asynchronous already
(the SQLite pipeline batches per thread hand-off instead). A caller cancelled
before its tick's batch starts is left out of it; the batch's outcome is delivered
to each caller still waiting, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from session_repo.errors import StorageError

__all__ = ["TickBatcher"]


class TickBatcher:
    """Collects the requests of one event-loop tick and runs them as one batch."""

    def __init__(self, run: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self._run = run
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, request: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((request, future))
        return future

    def _flush(self) -> None:
        batch = [item for item in self._pending if not item[1].done()]
        self._pending = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._settle(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _settle(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._run([request for request, _ in batch])
        except BaseException as exc:  # cancelled too: no caller is left waiting forever
            error = exc
            if not isinstance(exc, Exception):  # the callers were not cancelled: the batch was
                error = StorageError("the batch was cancelled before it finished", transient=True)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        while self._pending or self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
            await asyncio.sleep(0)
