"""Coalescing: requests that arrive together travel as one batch, one round trip.

One mechanism for every backend that batches. ``Batcher(run)`` collects the
requests made in one event-loop tick and runs them as one batch; with
``overlap=False`` only one batch runs at a time, and what arrives meanwhile
goes in the next (the SQLite pipeline's threads: one batch per thread hand-off).

Each caller gets its own outcome: ``run`` returns one result per request, in
order, where an exception instance fails only its own caller; an exception
raised by ``run`` fails the whole batch. A caller cancelled before its batch
starts is left out of it. A batch that is itself cancelled fails its waiting
callers with a transient ``StorageError`` instead of leaving them waiting. Each
batch runs as a task named ``BATCH_TASK_NAME``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from session_repo.errors import StorageError

__all__ = ["BATCH_TASK_NAME", "Batcher", "TickBatcher"]

BATCH_TASK_NAME = "session-repo batch"

Run = Callable[[list[Any]], Awaitable[list[Any]]]
Alone = Callable[[Any], Awaitable[Any]]
Waiting = list[tuple[Any, "asyncio.Future[Any]"]]


class Batcher:
    """Collects requests and runs them in batches of at most ``max_batch``.

    Args:
        run: given the requests of one batch, returns one outcome per request (a
            result, or an exception instance for that request alone).
        max_batch: the most requests one batch carries.
        overlap: start each tick's batch at once (True), or one batch at a time,
            the next made of what arrived meanwhile (False).
        alone: runs one request by itself, for ``call()`` when nothing else is
            queued or running (a plain statement, no list); ``run`` on a batch of
            one when not given.
    """

    def __init__(
        self,
        run: Run,
        *,
        max_batch: int = 1 << 30,
        overlap: bool = True,
        alone: Alone | None = None,
    ) -> None:
        self._run = run
        self._alone = alone
        self._max_batch = max_batch
        self._overlap = overlap
        self._pending: Waiting = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        self._direct = 0  # calls running alone, in their callers' tasks

    async def call(self, request: Any) -> Any:
        """``request``'s outcome, alone and at once when nothing else is queued or running.

        One request needs no batch: it runs in the caller's own task, with no hand-off
        to a batch task and back (what a request made one at a time pays for nothing).
        Otherwise it joins the next batch, as ``submit``.

        Args:
            request: what ``run`` is given for this caller.

        Raises:
            BaseException: what ``run`` raised, or the outcome it gave for this request.
        """
        if self._pending or self._running or self._direct:
            return await self.submit(request)
        self._direct += 1
        try:
            if self._alone is not None:
                return await self._alone(request)
            (outcome,) = await self._run([request])
        finally:
            self._direct -= 1
            if self._pending and not self._scheduled:  # those that came meanwhile go next
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit(self, request: Any) -> asyncio.Future[Any]:
        """Queue ``request`` for a batch soon.

        Args:
            request: what ``run`` is given for this caller.

        Returns:
            A future for this request's outcome.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((request, future))
        if not self._scheduled and (self._overlap or not (self._running or self._direct)):
            self._scheduled = True
            loop.call_soon(self._flush)  # the rest of this tick's requests join the batch
        return future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            batch = [item for item in self._pending[: self._max_batch] if not item[1].done()]
            del self._pending[: self._max_batch]
            if batch:
                task = asyncio.get_running_loop().create_task(
                    self._settle(batch), name=BATCH_TASK_NAME
                )
                self._running.add(task)
                task.add_done_callback(self._done)
                if not self._overlap:
                    return

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._overlap and self._pending and not self._scheduled:
            self._flush()

    async def _settle(self, batch: Waiting) -> None:
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

    def idle(self) -> bool:
        """Whether no request is queued and none is running."""
        return not (self._pending or self._running or self._direct)

    async def drain(self) -> None:
        """Wait until every queued and running batch has finished."""
        while self._pending or self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
            await asyncio.sleep(0)


TickBatcher = Batcher
"""The network stores' name for it: the requests of one tick, one round trip."""
