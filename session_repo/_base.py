"""What every backend shares: input checks, lifecycle, counters, background cleanup.

A backend subclasses ``BackendBase`` and implements the ``_do_*`` hooks, which
take already-validated values: the session digest, alloc ids, and integer
milliseconds from the repository's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from session_repo._cancel import cancel_requests, reraise_swallowed
from session_repo._inputs import Ttl, check_alloc_id, check_session_id, ttl_ms
from session_repo._keys import session_key
from session_repo.clock import Clock, SystemClock
from session_repo.errors import InvalidInput, RepositoryClosed, StorageError
from session_repo.metrics import Counters, Health, Latency, SessionStoreMetrics

__all__ = ["BackendBase"]

logger = logging.getLogger("session_repo")

DEFAULT_TTL_MS = 600_000


class BackendBase(ABC):
    """Lifecycle and bookkeeping around a backend's storage hooks.

    Args:
        clock: where time comes from; ``None`` for ``SystemClock``.
        default_ttl: the ttl (seconds or ``timedelta``) used when a call passes ``None``.
        cleanup_interval: seconds between background cleanups; 0 turns them off.
        cleanup_batch: the most rows one cleanup batch removes.

    Raises:
        TypeError: an argument has the wrong type.
        InvalidInput: an argument is out of range.
    """

    backend: str

    def __init__(
        self,
        *,
        clock: Clock | None,
        default_ttl: Ttl,
        cleanup_interval: float = 0,
        cleanup_batch: int = 5000,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._default_ttl_ms = ttl_ms(default_ttl, DEFAULT_TTL_MS)
        if isinstance(cleanup_interval, bool) or not isinstance(cleanup_interval, int | float):
            raise TypeError("cleanup_interval must be a number of seconds")
        if not math.isfinite(cleanup_interval) or cleanup_interval < 0:
            raise InvalidInput("cleanup_interval must be finite and >= 0 (0 turns it off)")
        if isinstance(cleanup_batch, bool) or not isinstance(cleanup_batch, int):
            raise TypeError("cleanup_batch must be an int")
        if cleanup_batch < 1:
            raise InvalidInput("cleanup_batch must be >= 1")
        self._cleanup_interval = float(cleanup_interval)
        self._cleanup_batch = cleanup_batch
        self._counters = Counters()
        self._gauges: tuple[int, int, int | None] = (0, 0, None)
        self._opened = False
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._cleanup_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        # Calls past ``_ready()`` and not yet returned: close() waits for them.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # The storage work of running cleanup() calls: close() interrupts them.
        self._cleanups: set[asyncio.Task[int]] = set()

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _refuse(self) -> RepositoryClosed:
        return RepositoryClosed(f"{type(self).__name__} is closed")

    async def _ready(self) -> None:
        """Open on first use; refuse after close (also a call that waited for the open)."""
        if self._closed:
            raise self._refuse()
        if self._opened:
            return
        before = cancel_requests()
        async with self._open_lock:
            if not self._opened:
                if self._closed:
                    raise self._refuse()
                await self._do_open()
                self._opened = True  # close(), waiting for this lock, closes it
            reraise_swallowed(before)
            if self._closed:
                raise self._refuse()
            if self._cleanup_interval > 0 and self._cleanup_task is None:
                self._cleanup_task = asyncio.create_task(
                    self._cleanup_loop(), name=f"session-repo cleanup ({self.backend})"
                )

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Count a call in flight, so close() releases nothing it still uses.

        A cancellation that a driver swallowed on the way (Python 3.11's
        ``wait_for`` in redis-py loses one that lands as a reply arrives) is raised
        again here, so a cancelled call never returns as if it had not been.
        """
        before = cancel_requests()
        self._in_flight += 1
        self._idle.clear()
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
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def close(self) -> None:
        """Refuse new calls, interrupt cleanups, let other calls finish, then release.

        Idempotent; every later call raises ``RepositoryClosed``. A caller cancelled
        while waiting here gets its ``CancelledError``; the closing goes on without
        it (shielded), and a later ``close()`` waits for it.
        """
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.create_task(
                self._close(), name=f"session-repo close ({self.backend})"
            )
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        for work in self._cleanups:
            work.cancel()  # its caller gets RepositoryClosed
        async with self._open_lock:  # an open in progress ends first; its caller is refused
            task, self._cleanup_task = self._cleanup_task, None
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
            await self._idle.wait()
            if self._opened:
                self._opened = False
                await self._do_close()

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                await self.cleanup()
            except RepositoryClosed:
                return
            except StorageError as exc:
                logger.warning(
                    "background cleanup failed: %s",
                    exc,
                    extra={"backend": self.backend, "operation": "cleanup", "outcome": "error"},
                )
            except Exception:  # a bug must not end cleanup for the process's lifetime
                logger.exception(
                    "background cleanup failed unexpectedly",
                    extra={"backend": self.backend, "operation": "cleanup", "outcome": "error"},
                )

    # -- the contract ----------------------------------------------------

    def _now_ms(self) -> int:
        return math.floor(self._clock.now() * 1000)

    async def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        """Bind or rebind ``session_id`` to ``alloc_id``, whoever owns it; expiry = now + ttl.

        Args:
            session_id: the client's session key (stored only as its digest).
            alloc_id: the instance that owns the session from now on.
            ttl: how long the binding lives; ``None`` for ``default_ttl``.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        life = ttl_ms(ttl, self._default_ttl_ms)
        await self._ready()
        with self._busy(), self._counting("upsert"):
            await self._do_upsert(key, owner, self._now_ms() + life)
        self._counters.upserts += 1

    async def lookup(self, session_id: str) -> str | None:
        """The owner of ``session_id``'s live binding; the expiry is not extended.

        Args:
            session_id: the client's session key.

        Returns:
            The owning alloc id, or ``None`` if there is no live binding.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        await self._ready()
        with self._busy(), self._counting("lookup"):
            owner = await self._do_lookup(key, self._now_ms())
        self._counters.looked_up(owner)
        return owner

    async def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        """Atomically take a session unless another owner holds a live binding.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for ``default_ttl``.
            replacing: an owner whose live binding this claim may take over.

        Returns:
            ``alloc_id`` if the caller won, else the owner that holds the session
                (then nothing changed).

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        if replacing is not None:
            check_alloc_id(replacing, "replacing")
        life = ttl_ms(ttl, self._default_ttl_ms)
        await self._ready()
        now = self._now_ms()
        with self._busy(), self._counting("claim"):
            winner = await self._do_claim(key, owner, now + life, now, replacing)
        self._counters.claims += 1
        return winner

    async def touch(self, session_id: str, ttl: Ttl | None = None) -> bool:
        """Extend a live binding to now + ttl, keeping its owner.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for ``default_ttl``.

        Returns:
            ``True`` if a live binding was extended, ``False`` if there is none.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        life = ttl_ms(ttl, self._default_ttl_ms)
        await self._ready()
        now = self._now_ms()
        with self._busy(), self._counting("touch"):
            touched = await self._do_touch(key, now + life, now)
        self._counters.touches += 1
        return touched

    async def delete(self, session_id: str) -> bool:
        """Remove ``session_id``'s binding; without a live one, a no-op.

        Args:
            session_id: the client's session key.

        Returns:
            ``True`` if a live binding was removed.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        await self._ready()
        with self._busy(), self._counting("delete"):
            deleted = await self._do_delete(key, self._now_ms())
        if deleted:  # ``deletes`` counts bindings removed, as in ``delete_owner``
            self._counters.deletes += 1
        return deleted

    async def delete_owner(self, alloc_id: str) -> int:
        """Remove every binding of an instance that is gone.

        Args:
            alloc_id: the instance whose bindings go.

        Returns:
            How many live bindings were removed (0 if it owned none).

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        owner = check_alloc_id(alloc_id)
        await self._ready()
        with self._busy(), self._counting("delete_owner"):
            removed = await self._do_delete_owner(owner, self._now_ms())
        self._counters.deletes += removed
        return removed

    async def cleanup(self) -> int:
        """Remove all expired rows, ``cleanup_batch`` at a time.

        Returns:
            How many expired rows were removed.

        Raises:
            RepositoryClosed: the repository was closed, also while this call ran.
            StorageError: the store failed.
        """
        await self._ready()
        now = self._clock.now()
        with self._busy(), self._counting("cleanup"):
            removed = await self._interruptible(
                self._do_cleanup(math.floor(now * 1000), self._cleanup_batch)
            )
        self._counters.cleaned += removed
        self._counters.last_cleanup_at = datetime.fromtimestamp(now, UTC)
        if removed:
            logger.debug(
                "cleanup removed %d expired bindings",
                removed,
                extra={
                    "backend": self.backend,
                    "operation": "cleanup",
                    "outcome": "ok",
                    "removed": removed,
                },
            )
        return removed

    async def _interruptible(self, work: Coroutine[Any, Any, int]) -> int:
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
            if task.cancelled() and self._closed and (caller is None or not caller.cancelling()):
                raise self._refuse() from None
            raise
        finally:
            self._cleanups.discard(task)

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since the repository was created, and gauges read from the store now.

        Returns:
            A snapshot of the counters and gauges.

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        await self._ready()
        with self._busy(), self._counting("metrics"):
            self._gauges = await self._do_gauges(self._now_ms())
        return self.counters()

    def counters(self) -> SessionStoreMetrics:
        """The counters now, with the gauges the last ``metrics()`` read (zero before).

        No I/O and no await, so it can be read from any thread (a Prometheus scrape)
        while the repository works on its event loop.
        """
        sessions, expired, size = self._gauges
        return self._counters.snapshot(sessions=sessions, expired=expired, storage_bytes=size)

    async def health(self) -> Health:
        """Whether the store answers; a storage failure is ``"down"``, never raised.

        Returns:
            ``"ok"`` with a short detail, or ``"down"`` with the error.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        try:
            await self._ready()
            with self._busy():
                detail = await self._do_ping()
        except StorageError as exc:
            return Health("down", self.backend, str(exc))
        return Health("ok", self.backend, detail)

    @contextlib.contextmanager
    def _counting(self, operation: str) -> Iterator[None]:
        """Count a storage failure and time the operation, whatever its outcome."""
        started = time.perf_counter()
        try:
            yield
        except StorageError as exc:
            elapsed = time.perf_counter() - started
            self._counters.errors += 1
            self._counters.observe(operation, elapsed, failed=True)
            logger.debug(
                "%s failed: %s",
                operation,
                exc,
                extra={
                    "backend": self.backend,
                    "operation": operation,
                    "outcome": "error",
                    "transient": exc.transient,
                    "duration": elapsed,
                },
            )
            raise
        self._counters.observe(operation, time.perf_counter() - started)

    def latencies(self) -> dict[str, Latency]:
        """Per-operation latency histograms since open (copies; for metrics exporters).

        Returns:
            The operation's name (``"lookup"``, ``"claim"``, ...) to its histogram.
        """
        histograms = dict(self._counters.latency)  # one copy: another thread may be adding
        return {
            name: Latency(list(h.counts), h.total, h.failures) for name, h in histograms.items()
        }

    # -- what a backend implements ----------------------------------------

    @abstractmethod
    async def _do_open(self) -> None: ...

    @abstractmethod
    async def _do_close(self) -> None: ...

    @abstractmethod
    async def _do_upsert(self, key: bytes, alloc_id: str, expires_at: int) -> None: ...

    @abstractmethod
    async def _do_lookup(self, key: bytes, now: int) -> str | None: ...

    @abstractmethod
    async def _do_claim(
        self, key: bytes, alloc_id: str, expires_at: int, now: int, replacing: str | None
    ) -> str: ...

    @abstractmethod
    async def _do_touch(self, key: bytes, expires_at: int, now: int) -> bool: ...

    @abstractmethod
    async def _do_delete(self, key: bytes, now: int) -> bool: ...

    @abstractmethod
    async def _do_delete_owner(self, alloc_id: str, now: int) -> int: ...

    @abstractmethod
    async def _do_cleanup(self, now: int, batch: int) -> int: ...

    @abstractmethod
    async def _do_gauges(self, now: int) -> tuple[int, int, int | None]:
        """(live bindings, expired rows present, storage bytes or None)."""

    @abstractmethod
    async def _do_ping(self) -> str:
        """Check the store answers; a short detail for ``health()``."""
