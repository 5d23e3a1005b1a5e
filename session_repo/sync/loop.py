"""``LoopThread``: one private event loop in a thread of its own, and blocking calls on it.

A call submits its coroutine to the loop and waits for the answer in the caller's
thread, so an error is raised there. ``close`` refuses new calls, waits for those
in flight, runs a last coroutine (the repository's ``close()``) and stops the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from session_repo.errors import RepositoryClosed

__all__ = ["THREAD_NAME", "LoopThread"]

T = TypeVar("T")

THREAD_NAME = "session-repo sync loop"


class LoopThread:
    """Runs coroutines on a private loop thread and blocks the caller for each answer.

    Args:
        timeout: bounds each call in seconds (then ``TimeoutError``, and the call is
            cancelled); ``None`` waits as long as it takes.
    """

    def __init__(self, timeout: float | None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=THREAD_NAME, daemon=True
        )
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._closed = False
        self._timeout = timeout
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result.

        Args:
            coro: the coroutine to run (closed unrun if the call is refused).

        Raises:
            RepositoryClosed: ``close()`` was called.
            RuntimeError: called from the loop's own thread (it would wait forever).
            TimeoutError: it took longer than ``timeout``; it was cancelled.
        """
        future = self._submit(coro)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        finally:
            with self._lock:
                self._pending.discard(future)

    def build(self, factory: Callable[[], T]) -> T:
        """``factory()``, called on the loop, where what it builds will run.

        Args:
            factory: builds something bound to the running loop (a repository).
        """

        async def build() -> T:
            return factory()

        return self.call(build())

    def close(self, last: Coroutine[Any, Any, None]) -> None:
        """Refuse new calls, wait for those in flight, run ``last``, stop. Idempotent.

        Args:
            last: run once the calls in flight are done (closed unrun when closing again).

        Raises:
            RuntimeError: called from the loop's own thread (it would wait forever).
        """
        with self._lock:
            if self._closed:
                last.close()
                return
            self._closed = True
            pending = set(self._pending)
        self._check_thread(last)
        concurrent.futures.wait(pending)
        try:
            asyncio.run_coroutine_threadsafe(last, self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coro.close()
                raise RepositoryClosed("SyncSessionRepository is closed")
            self._check_thread(coro)
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._pending.add(future)
        return future

    def _check_thread(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Blocking on the loop from the loop's own thread would wait forever."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncSessionRepository called from its own loop thread")
