"""``SyncSessionRepository``: the repository for blocking code (WSGI, Flask, scripts).

Every call runs the async repository on one private event loop in one thread of its
own, and blocks until it is done: errors are raised in the caller, and what was
written is there when the call returns (nothing is fired and forgotten). Any number
of threads may call at once. ``close()`` (or leaving ``with``) refuses new calls,
waits for the ones in flight, closes the repository and stops the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from session_repo.contract import SessionRepository, Ttl
from session_repo.errors import RepositoryClosed
from session_repo.factory import create_session_repository
from session_repo.metrics import Health, SessionStoreMetrics

__all__ = ["SyncSessionRepository"]

T = TypeVar("T")


class SyncSessionRepository:
    """Blocking facade over a ``SessionRepository``; the same methods, not ``async``.

    Args:
        repository: the async repository to drive, or a function that builds one
            (called on the private loop); ``None`` builds the ``SESSION_STORE_*`` one.
        timeout: bounds each call in seconds (then ``TimeoutError``, and the call
            is cancelled); ``None`` waits as long as it takes.
    """

    def __init__(
        self,
        repository: SessionRepository | Callable[[], SessionRepository] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="session-repo sync loop", daemon=True
        )
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._closed = False
        self._timeout = timeout
        self._thread.start()
        if repository is None:
            repository = create_session_repository
        if isinstance(repository, SessionRepository):
            self.repository: SessionRepository = repository
        else:  # a factory: build it on the loop, where it will run
            self.repository = self._call(_build(repository))

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> Self:
        """Open now (checks or applies the schema) instead of on first use.

        Returns:
            This facade, so ``repo = SyncSessionRepository().open()`` works.

        Raises:
            RepositoryClosed: the facade was closed.
            StorageError: the store could not be opened.
        """
        self._call(self.repository.__aenter__())
        return self

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Wait for calls in flight, close the repository, stop the loop thread. Idempotent.

        Raises:
            RuntimeError: called from the facade's own loop thread (it would wait forever).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = set(self._pending)
        self._check_thread()
        concurrent.futures.wait(pending)
        try:
            asyncio.run_coroutine_threadsafe(self.repository.close(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    # -- the contract, blocking -----------------------------------------------------

    def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        """Bind or rebind ``session_id`` to ``alloc_id``, blocking until written.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that owns the session from now on.
            ttl: how long the binding lives; ``None`` for the repository's default.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        self._call(self.repository.upsert(session_id, alloc_id, ttl))

    def lookup(self, session_id: str) -> str | None:
        """The owner of a live binding, or ``None``, blocking.

        Args:
            session_id: the client's session key.

        Returns:
            The owner's alloc id, or ``None`` when there is no live binding.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.lookup(session_id))

    def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        """Atomically take a session unless another owner holds it, blocking.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the repository's default.
            replacing: an owner whose live binding this claim may take over.

        Returns:
            ``alloc_id`` if the caller won, else the owner that holds the session.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.claim(session_id, alloc_id, ttl, replacing=replacing))

    def touch(self, session_id: str, ttl: Ttl | None = None) -> bool:
        """Extend a live binding to now + ttl, blocking; ``False`` if there is none.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the repository's default.

        Returns:
            Whether there was a live binding to extend.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.touch(session_id, ttl))

    def delete(self, session_id: str) -> bool:
        """Remove a live binding, blocking; ``True`` if there was one.

        Args:
            session_id: the client's session key.

        Returns:
            Whether a live binding was removed.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.delete(session_id))

    def delete_owner(self, alloc_id: str) -> int:
        """Remove every binding of an instance that is gone, blocking; how many live ones.

        Args:
            alloc_id: the instance whose bindings go.

        Returns:
            How many live bindings were removed.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.delete_owner(alloc_id))

    def cleanup(self) -> int:
        """Remove all expired rows, blocking; how many.

        Returns:
            How many expired rows were removed.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.cleanup())

    def metrics(self) -> SessionStoreMetrics:
        """The repository's counters and gauges, blocking.

        Returns:
            The repository's ``SessionStoreMetrics``.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.metrics())

    def health(self) -> Health:
        """The repository's health, blocking.

        Returns:
            The repository's ``Health``.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.health())

    # -- running on the loop ----------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self._submit(coro)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        finally:
            with self._lock:
                self._pending.discard(future)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coro.close()
                raise RepositoryClosed("SyncSessionRepository is closed")
            self._check_thread(coro)
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._pending.add(future)
        return future

    def _check_thread(self, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        """Blocking on the loop from the loop's own thread would wait forever."""
        if threading.current_thread() is self._thread:
            if coro is not None:
                coro.close()
            raise RuntimeError("SyncSessionRepository called from its own loop thread")


async def _build(factory: Callable[[], SessionRepository]) -> SessionRepository:
    return factory()
