"""A store's life: opened once, on first use; closed once, after the calls in flight.

``close()`` refuses new calls at once, interrupts running cleanups (their callers
get ``RepositoryClosed``), stops the background cleanup loop, waits for the other
calls in flight, then releases what opening acquired. A caller cancelled while
waiting for ``close()`` gets its ``CancelledError``; the closing goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from session_repo._core.cancel import cancel_requests, reraise_swallowed
from session_repo._core.storage import Storage
from session_repo._core.translate import Classifier, storage_errors
from session_repo.errors import RepositoryClosed, StorageError

__all__ = ["Connect", "Lifecycle"]

logger = logging.getLogger("session_repo")

Connect = Callable[[contextlib.AsyncExitStack], Awaitable[Storage]]
"""Opens a backend's storage; pushes on the exit stack what closing releases."""


class Lifecycle:
    """Open, in-flight and close bookkeeping for one store.

    Args:
        name: the repository's class name, for ``RepositoryClosed``.
        backend: the store's name, for task names and logs.
        connect: opens the storage.
        classify: the backend's error table, for errors of opening and closing.
        cleanup: one background cleanup (the front's ``cleanup``).
        cleanup_interval: seconds between background cleanups; 0: none.
        guard_cancellation: watch each call for a cancellation swallowed beneath it.
    """

    def __init__(
        self,
        *,
        name: str,
        backend: str,
        connect: Connect,
        classify: Classifier,
        cleanup: Callable[[], Awaitable[int]],
        cleanup_interval: float,
        guard_cancellation: bool = True,
    ) -> None:
        self._guard = guard_cancellation
        self._name = name
        self._backend = backend
        self._connect = connect
        self._classify = classify
        self._cleanup = cleanup
        self._cleanup_interval = cleanup_interval
        self.storage: Storage | None = None
        """The open storage (``None`` before the first call and after close)."""
        self._resources: contextlib.AsyncExitStack | None = None
        self.closed = False
        self._opening: asyncio.Task[None] | None = None
        self._cleanup_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        # Calls past ``ready()`` and not yet returned: close() waits for them.
        self._in_flight = 0
        # Set when the last call in flight returns; made only while close() waits.
        self._idle: asyncio.Event | None = None
        # The storage work of running cleanup() calls: close() interrupts them.
        self._cleanups: set[asyncio.Task[int]] = set()

    def refuse(self) -> RepositoryClosed:
        """The error every call after ``close()`` raises."""
        return RepositoryClosed(f"{self._name} is closed")

    async def ready(self) -> Storage:
        """The open storage; opened on first use, refused after close.

        The open is one task that every caller waits for, shielded: a cancelled
        caller leaves it running for the others (cancelling a driver in the middle of
        its handshake or its first statement can leave a connection that never closes,
        as aiosqlite's does when stopped and then closed). A failed open is tried
        again by the next call. A call that waited for the open is refused too if
        ``close()`` came meanwhile.
        """
        if self.closed:
            raise self.refuse()
        storage = self.storage
        if storage is not None:
            return storage
        before = cancel_requests()
        opening = self._opening
        if opening is None:
            opening = asyncio.create_task(self._open(), name=f"session-repo open ({self._backend})")
            opening.add_done_callback(self._opened)
            self._opening = opening
        await asyncio.shield(opening)
        reraise_swallowed(before)
        if self.closed or self.storage is None:
            raise self.refuse()
        if self._cleanup_interval > 0 and self._cleanup_task is None:
            self._cleanup_task = asyncio.create_task(
                self._cleanup_loop(), name=f"session-repo cleanup ({self._backend})"
            )
        return self.storage

    def _opened(self, opening: asyncio.Task[None]) -> None:
        """An open ended: a failed one is forgotten (the next call opens anew)."""
        if opening.cancelled() or opening.exception() is not None:
            self._opening = None

    async def _open(self) -> None:
        resources = contextlib.AsyncExitStack()
        try:
            with storage_errors("open", self._classify):
                storage = await self._connect(resources)
        except BaseException:
            with contextlib.suppress(Exception):
                await resources.aclose()
            raise
        resources.push_async_callback(storage.close)
        self._resources = resources
        self.storage = storage

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Count a call in flight, so close() releases nothing it still uses.

        A cancellation that a driver swallowed on the way (Python 3.11's
        ``wait_for`` in redis-py loses one that lands as a reply arrives) is raised
        again here, so a cancelled call never returns as if it had not been.
        """
        before = self.enter()
        try:
            yield
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            reraise_swallowed(before, exc)
            raise
        else:
            reraise_swallowed(before)
        finally:
            self.leave()

    def enter(self) -> int:
        """Count a call in flight; the task's cancellation requests now, for the check after."""
        self._in_flight += 1
        return cancel_requests() if self._guard else -1

    def leave(self) -> None:
        """The call counted by ``enter()`` is over."""
        self._in_flight -= 1
        if not self._in_flight and self._idle is not None:
            self._idle.set()

    async def interruptible(self, work: Coroutine[Any, Any, int]) -> int:
        """Run ``work`` as a task that close() may cancel: its caller gets RepositoryClosed.

        Cancelling the caller cancels the work too and raises ``CancelledError``
        as usual; only a cancellation that came from close() becomes
        ``RepositoryClosed``.
        """
        task = asyncio.create_task(work)
        self._cleanups.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task.cancelled() and self.closed and (caller is None or not caller.cancelling()):
                raise self.refuse() from None
            raise
        finally:
            self._cleanups.discard(task)

    async def close(self) -> None:
        """Refuse new calls, interrupt cleanups, let other calls finish, then release."""
        if self._closing is None:
            self.closed = True
            self._closing = asyncio.create_task(
                self._close(), name=f"session-repo close ({self._backend})"
            )
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        for work in self._cleanups:
            work.cancel()  # its caller gets RepositoryClosed
        if self._opening is not None:  # an open in progress ends first; its callers are refused
            await asyncio.wait([self._opening])
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()
        resources, self._resources = self._resources, None
        self.storage = None
        if resources is not None:
            with storage_errors("close", self._classify):
                await resources.aclose()

    async def _cleanup_loop(self) -> None:
        extra = {"backend": self._backend, "operation": "cleanup", "outcome": "error"}
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                await self._cleanup()
            except RepositoryClosed:
                return
            except StorageError as exc:
                logger.warning("background cleanup failed: %s", exc, extra=extra)
            except Exception:  # a bug must not end cleanup for the process's lifetime
                logger.exception("background cleanup failed unexpectedly", extra=extra)
