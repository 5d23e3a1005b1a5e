"""The front every backend shares: the contract on top of a ``Storage``.

A backend gives ``StoreFront`` a ``connect`` that opens its ``Storage``
(``session_repo._core.storage``). The front validates each call once, hashes the
session id, reads the clock, and runs the storage call opened lazily and counted
in flight (``session_repo._core.lifecycle``), timed, and with any driver error
translated once into ``StorageError`` by the backend's own error table.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

from session_repo._core.cancel import reraise_swallowed
from session_repo._core.counters import Counters
from session_repo._core.inputs import (
    DEFAULT_TTL_MS,
    Ttl,
    check_alloc_id,
    check_generation,
    check_session_id,
    non_negative_seconds,
    positive_int,
    ttl_ms,
)
from session_repo._core.keys import session_key
from session_repo._core.lifecycle import Connect, Lifecycle
from session_repo._core.storage import Gauges, LeaseRow, Storage
from session_repo._core.translate import Classifier, is_transient, storage_errors, translate
from session_repo.clock import Clock, SystemClock
from session_repo.errors import SessionRepoError, StorageError
from session_repo.lease import Lease
from session_repo.metrics import Health, Latency, SessionStoreMetrics

__all__ = ["Connect", "StoreFront"]  # Connect: from the lifecycle

logger = logging.getLogger("session_repo")

T = TypeVar("T")


class StoreFront:
    """Lifecycle and bookkeeping around a backend's ``Storage``.

    The library's own parts (the resilient wrapper, the CLI, Prometheus) use the
    declared members below, never a backend's private ones: ``backend``,
    ``clock``, ``default_ttl_ms``, ``cleanup_interval``, ``cleanup_batch``,
    ``now_ms()``, ``open()``, ``run()``, ``counters()``, ``latencies()``.

    Args:
        clock: where time comes from; ``None`` for ``SystemClock``.
        default_ttl: the ttl (seconds or ``timedelta``) used when a call passes ``None``.
        cleanup_interval: seconds between background cleanups; 0 turns them off.
        cleanup_batch: the most rows one cleanup batch removes.
        classify: the backend's error table: whether a driver error is transient.
        connect: opens the storage, pushing on the given exit stack what ``close()``
            releases; called once, on first use.
        backend: the store's name in health, metrics and logs.
        guard_cancellation: watch each call for a cancellation a driver swallowed
            (redis-py has done it) and raise it again; ``False`` for a storage whose
            calls cannot swallow one (no driver beneath), which saves two lookups of
            the current task per call.

    Raises:
        TypeError: an argument has the wrong type.
        InvalidInput: an argument is out of range.
    """

    def __init__(
        self,
        *,
        connect: Connect,
        backend: str,
        clock: Clock | None,
        default_ttl: Ttl,
        cleanup_interval: float = 0,
        cleanup_batch: int = 5000,
        classify: Classifier = is_transient,
        guard_cancellation: bool = True,
    ) -> None:
        self.backend = backend
        """The store's name in health, metrics and logs (``"sqlite"``, ``"redis"``, ...)."""
        self._clock: Clock = clock if clock is not None else SystemClock()
        # The system clock read straight from ``time`` (one Python call less per operation).
        self._seconds = time.time if type(self._clock) is SystemClock else self._clock.now
        self._default_ttl_ms = ttl_ms(default_ttl, DEFAULT_TTL_MS)
        self._cleanup_interval = non_negative_seconds("cleanup_interval", cleanup_interval)
        self._cleanup_batch = positive_int("cleanup_batch", cleanup_batch)
        self._classify = classify
        self._counters = Counters()
        self._gauges = Gauges(0, 0, None)
        self._life = Lifecycle(
            name=type(self).__name__,
            backend=backend,
            connect=connect,
            classify=classify,
            cleanup=self.cleanup,
            cleanup_interval=self._cleanup_interval,
            guard_cancellation=guard_cancellation,
        )
        self._ready = self._life.ready
        self._busy = self._life.busy

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    # -- what the library's own parts use ------------------------------------

    @property
    def clock(self) -> Clock:
        """Where this store's time comes from."""
        return self._clock

    @property
    def default_ttl_ms(self) -> int:
        """A binding's life, in milliseconds, when a call gives no ttl."""
        return self._default_ttl_ms

    @property
    def cleanup_interval(self) -> float:
        """Seconds between background cleanups (0: none)."""
        return self._cleanup_interval

    @property
    def cleanup_batch(self) -> int:
        """The most rows one cleanup batch removes."""
        return self._cleanup_batch

    def now_ms(self) -> int:
        """The clock's now, in whole milliseconds (the unit storage compares)."""
        return math.floor(self._seconds() * 1000)

    async def open(self) -> None:
        """Open now (``async with`` and the first call do it too); idempotent.

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store could not be opened.
        """
        await self._ready()

    async def run(self, operation: str, work: Callable[[Storage], Awaitable[T]]) -> T:
        """Run ``work`` on the open storage as one operation of this store.

        Opened lazily, counted in flight (``close()`` waits for it), timed under
        ``operation``'s name, and a driver error becomes a ``StorageError`` (by this
        backend's error table) exactly here. For the library's own parts (the
        resilient wrapper's write-back), which hold digests, not session ids.

        Args:
            operation: the operation's name in latencies and errors (``"claim"``).
            work: given the storage; its result is returned.

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        life = self._life
        storage = life.storage
        if storage is None or life.closed:
            storage = await life.ready()
        # Inline, not context managers: this is every call's path.
        before = life.enter()
        started = time.perf_counter()
        try:
            result = await work(storage)
        except asyncio.CancelledError:
            raise
        except SessionRepoError as exc:
            if isinstance(exc, StorageError):
                self._failed(operation, started, exc)
            reraise_swallowed(before, exc)
            raise
        except Exception as exc:  # total: no driver error reaches the caller untranslated
            error = translate(exc, operation, self._classify)
            self._failed(operation, started, error)
            reraise_swallowed(before, error)
            raise error from exc
        except BaseException as exc:
            reraise_swallowed(before, exc)
            raise
        finally:
            life.leave()
        self._counters.observe(operation, time.perf_counter() - started)
        if before >= 0:  # -1: a store whose calls cannot swallow a cancellation
            reraise_swallowed(before)
        return result

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Refuse new calls, interrupt cleanups, let other calls finish, then release.

        Idempotent; every later call raises ``RepositoryClosed``. A caller cancelled
        while waiting here gets its ``CancelledError``; the closing goes on without
        it (shielded), and a later ``close()`` waits for it.
        """
        await self._life.close()

    # -- the contract ----------------------------------------------------

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
        now = self.now_ms()
        await self.run("upsert", lambda s: s.upsert(key, owner, now + life, now))
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
        now = self.now_ms()
        owner = await self.run("lookup", lambda s: s.lookup(key, now))
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
        key, owner, expires, now = self._claiming(session_id, alloc_id, ttl, replacing)
        winner = await self.run("claim", lambda s: s.claim(key, owner, expires, now, replacing))
        self._counters.claims += 1
        return winner

    def _claiming(
        self, session_id: str, alloc_id: str, ttl: Ttl | None, replacing: str | None
    ) -> tuple[bytes, str, int, int]:
        """A claim's or an acquire's checked inputs: (key, owner, expires_at ms, now ms)."""
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        if replacing is not None:
            check_alloc_id(replacing, "replacing")
        life = ttl_ms(ttl, self._default_ttl_ms)
        now = self.now_ms()
        return key, owner, now + life, now

    async def acquire(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> Lease:
        """``claim``, answering the winner's lease: the caller won iff ``owner == alloc_id``.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for ``default_ttl``.
            replacing: an owner whose live binding this claim may take over.

        Returns:
            The lease after the call: the caller's (with a new generation if it took
                the session over) or the holder's, unchanged.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key, owner, expires, now = self._claiming(session_id, alloc_id, ttl, replacing)
        row = await self.run("acquire", lambda s: s.acquire(key, owner, expires, now, replacing))
        self._counters.claims += 1
        return Lease.from_ms(*row)

    async def lease(self, session_id: str) -> Lease | None:
        """``lookup`` with the generation and expiry; the expiry is not extended.

        Args:
            session_id: the client's session key.

        Returns:
            The live binding's lease, or ``None`` if there is none (also when its
                owner's heartbeat lapsed).

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        now = self.now_ms()
        row: LeaseRow | None = await self.run("lease", lambda s: s.lease(key, now))
        self._counters.looked_up(None if row is None else row.owner)
        return None if row is None else Lease.from_ms(*row)

    async def touch(
        self, session_id: str, ttl: Ttl | None = None, *, generation: int | None = None
    ) -> bool:
        """Extend a live binding to now + ttl, keeping its owner and generation.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for ``default_ttl``.
            generation: if given, extend only while the live binding has it.

        Returns:
            ``True`` if a live binding was extended, ``False`` if there is none (or
                its generation is not ``generation``).

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        life = ttl_ms(ttl, self._default_ttl_ms)
        if generation is not None:
            check_generation(generation)
        now = self.now_ms()
        touched = await self.run("touch", lambda s: s.touch(key, now + life, now, generation))
        self._counters.touches += 1
        return touched

    async def delete(self, session_id: str, *, generation: int | None = None) -> bool:
        """Remove ``session_id``'s binding; without a live one, a no-op.

        Args:
            session_id: the client's session key.
            generation: if given, remove only while the live binding has it.

        Returns:
            ``True`` if a live binding was removed.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        key = session_key(check_session_id(session_id))
        if generation is not None:
            check_generation(generation)
        now = self.now_ms()
        deleted = await self.run("delete", lambda s: s.delete(key, now, generation))
        if deleted:  # ``deletes`` counts bindings removed, as in ``delete_owner``
            self._counters.deletes += 1
        return deleted

    async def heartbeat(self, alloc_id: str, ttl: Ttl) -> None:
        """``alloc_id`` is alive until now + ttl; its bindings die when this lapses.

        A heartbeat after a lapse does not revive what the lapse killed: the owner
        acquires those sessions anew, with new generations.

        Args:
            alloc_id: the instance that is alive.
            ttl: how long it counts as alive without another heartbeat.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        owner = check_alloc_id(alloc_id)
        life = ttl_ms(ttl, self._default_ttl_ms)
        now = self.now_ms()
        await self.run("heartbeat", lambda s: s.heartbeat(owner, now + life, now))

    async def release(self, alloc_id: str) -> int:
        """An owner leaves cleanly: its heartbeat and every binding of it are removed.

        Args:
            alloc_id: the instance that leaves.

        Returns:
            How many live bindings it held.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        owner = check_alloc_id(alloc_id)
        now = self.now_ms()
        removed = await self.run("release", lambda s: s.release(owner, now))
        self._counters.deletes += removed
        return removed

    async def owners(self) -> dict[str, datetime]:
        """The owners with a live heartbeat, and when each lapses.

        Returns:
            Alloc id to the end of its heartbeat (timezone-aware UTC).

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        now = self.now_ms()
        ends = await self.run("owners", lambda s: s.owners(now))
        return {owner: datetime.fromtimestamp(end / 1000, UTC) for owner, end in ends.items()}

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
        now = self.now_ms()
        removed = await self.run("delete_owner", lambda s: s.delete_owner(owner, now))
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
        now = self._clock.now()
        removed = await self.run(
            "cleanup",
            lambda s: self._life.interruptible(
                s.cleanup(math.floor(now * 1000), self._cleanup_batch)
            ),
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

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since the repository was created, and gauges read from the store now.

        Returns:
            A snapshot of the counters and gauges.

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed.
        """
        now = self.now_ms()
        self._gauges = await self.run("metrics", lambda s: s.gauges(now))
        return self.counters()

    def counters(self) -> SessionStoreMetrics:
        """The counters now, with the gauges the last ``metrics()`` read (zero before).

        No I/O and no await, so it can be read from any thread (a Prometheus scrape)
        while the repository works on its event loop.
        """
        sessions, expired, size, owners = self._gauges
        return self._counters.snapshot(
            sessions=sessions, expired=expired, storage_bytes=size, owners=owners
        )

    async def health(self) -> Health:
        """Whether the store answers; a storage failure is ``"down"``, never raised.

        Returns:
            ``"ok"`` with a short detail, or ``"down"`` with the error.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        try:
            storage = await self._ready()
            with self._busy(), storage_errors("health check", self._classify):
                detail = await storage.ping()
        except StorageError as exc:
            return Health("down", self.backend, str(exc))
        return Health("ok", self.backend, detail)

    def _failed(self, operation: str, started: float, exc: StorageError) -> None:
        """Count and time a failed operation, and say so at debug level."""
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

    def latencies(self) -> dict[str, Latency]:
        """Per-operation latency histograms since open (copies; for metrics exporters).

        Returns:
            The operation's name (``"lookup"``, ``"claim"``, ...) to its histogram.
        """
        histograms = dict(self._counters.latency)  # one copy: another thread may be adding
        return {
            name: Latency(list(h.counts), h.total, h.failures) for name, h in histograms.items()
        }
