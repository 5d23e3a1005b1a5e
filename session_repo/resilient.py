"""``ResilientSessionRepository``: the store is never the reason a request fails.

Healthy, every call goes to the primary; a transient ``StorageError`` is tried
again (tenacity: exponential backoff with jitter, an async sleep). When the
tries run out, or at once on a permanent error, the wrapper *degrades*: it
serves from an in-process memory fallback, says so in ``health()`` and
``metrics()``, logs it once, and journals every write. The journal keeps what
the storage hooks take (the session digest, alloc ids, absolute expiry in ms),
never a session id. A probe task watches the primary with backoff; when it
answers, the journal is replayed in order, each entry with its own semantics
(an outage claim loses to a live binding another instance made meanwhile), and
service flips back to the primary with no await between the journal running
empty and the flip, so no write can slip between them.

Not covered, by design: a process that dies while degraded loses the writes it
has not replayed yet (the journal lives in memory, like the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from session_repo._base import BackendBase
from session_repo._inputs import Ttl, check_alloc_id, check_session_id, ttl_ms
from session_repo._journal import WRITE_BACK_BATCH, Entry, Journal, write_back
from session_repo._keys import session_key
from session_repo.errors import InvalidInput, RepositoryClosed, StorageError
from session_repo.memory import MemorySessionRepository
from session_repo.metrics import Counters, Health, Latency, SessionStoreMetrics
from session_repo.repository import SessionRepository

__all__ = ["ResilientSessionRepository"]

logger = logging.getLogger("session_repo.resilient")

T = TypeVar("T")

# The longest wait between two tries of one call, whatever retry_delay says.
MAX_RETRY_WAIT = 5.0
# New writes wait for the write-back once this few entries are left, or after this long.
DRAIN_AT = 4 * WRITE_BACK_BATCH
DRAIN_AFTER = 2.0
_WRITES = frozenset({"upsert", "claim", "touch", "delete", "delete_owner"})


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exc.transient


class ResilientSessionRepository:
    """A primary store with retries, a memory fallback, and write-back on recovery.

    ``primary`` must be one of this library's backends (it replays through
    their storage hooks). ``fallback`` defaults to a ``MemorySessionRepository``
    on the primary's clock. ``probe_delay`` is the first wait before checking a
    failed primary again; it doubles up to ``probe_max_delay``.
    """

    def __init__(
        self,
        primary: SessionRepository,
        fallback: SessionRepository | None = None,
        *,
        retry_count: int = 3,
        retry_delay: float = 0.1,
        probe_delay: float = 0.2,
        probe_max_delay: float = 10.0,
    ) -> None:
        if not isinstance(primary, BackendBase):
            raise TypeError(
                "primary must be a session_repo backend (SqlSessionRepository, "
                f"RedisSessionRepository, ...), not {type(primary).__name__}"
            )
        if fallback is None:
            fallback = MemorySessionRepository(
                clock=primary._clock,
                default_ttl=primary._default_ttl_ms / 1000,
                cleanup_interval=primary._cleanup_interval,
            )
        elif not isinstance(fallback, MemorySessionRepository):
            raise TypeError(
                f"fallback must be a MemorySessionRepository, not {type(fallback).__name__}"
            )
        if fallback is primary:
            raise InvalidInput("fallback must not be the primary itself")
        if isinstance(retry_count, bool) or not isinstance(retry_count, int):
            raise TypeError("retry_count must be an int")
        if retry_count < 1:
            raise InvalidInput("retry_count must be >= 1")
        for name, value in (
            ("retry_delay", retry_delay),
            ("probe_delay", probe_delay),
            ("probe_max_delay", probe_max_delay),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds")
            if not math.isfinite(value) or value < 0 or (name != "retry_delay" and value == 0):
                rule = ">= 0" if name == "retry_delay" else "> 0"
                raise InvalidInput(f"{name} must be finite and {rule} seconds")
        self._primary: BackendBase = primary
        self._fallback = fallback
        self._retry_count = retry_count
        self._retry_delay = float(retry_delay)
        self._probe_delay = float(probe_delay)
        self._probe_max_delay = max(float(probe_max_delay), self._probe_delay)
        self._counters = Counters()
        self._journal = Journal()
        self._degraded = False
        self._degraded_since = 0.0
        self._last_error = ""
        self._opened = False
        self._closed = False
        self._probe_task: asyncio.Task[None] | None = None
        # Set while the write-back drains the journal's end; writes wait on it.
        self._draining: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"ResilientSessionRepository({self._primary!r})"

    @property
    def primary(self) -> BackendBase:
        """The store served while healthy."""
        return self._primary

    @property
    def fallback(self) -> MemorySessionRepository:
        """The in-process store served while the primary is failing."""
        return self._fallback

    @property
    def retry_count(self) -> int:
        """Tries of one call before the fallback serves it."""
        return self._retry_count

    @property
    def retry_delay(self) -> float:
        """First wait between tries (seconds); it doubles, with jitter."""
        return self._retry_delay

    def latencies(self) -> dict[str, Latency]:
        """The primary's per-operation latency histograms (for metrics exporters)."""
        return self._primary.latencies()

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_open()
        if not self._opened:
            self._opened = True
            # Open now, so a primary that is down at start degrades at once.
            await self._serve("open", self._primary._ready, _nothing)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the probe and close both stores; idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._journal:
            logger.warning(
                "closing while degraded: %d writes were never written back to %s",
                len(self._journal),
                self._primary.backend,
                extra=self._extra("close", "writes_lost"),
            )
        try:
            await self._primary.close()
        except Exception:  # closing must finish (and close the fallback) whatever the driver says
            logger.warning(
                "closing %s failed",
                self._primary.backend,
                exc_info=True,
                extra=self._extra("close", "error"),
            )
        finally:
            await self._fallback.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RepositoryClosed("ResilientSessionRepository is closed")

    # -- the contract ----------------------------------------------------

    def _now_ms(self) -> int:
        return self._primary._now_ms()

    async def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        life = ttl_ms(ttl, self._primary._default_ttl_ms)

        async def on_fallback() -> None:
            expires_at = self._now_ms() + life
            self._journal.append(Entry("upsert", key, owner, expires_at))
            await self._fallback._do_upsert(key, owner, expires_at)

        await self._serve(
            "upsert", lambda: self._primary.upsert(session_id, owner, ttl), on_fallback
        )
        self._counters.upserts += 1

    async def lookup(self, session_id: str) -> str | None:
        key = session_key(check_session_id(session_id))
        owner = await self._serve(
            "lookup",
            lambda: self._primary.lookup(session_id),
            lambda: self._fallback._do_lookup(key, self._now_ms()),
        )
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
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        if replacing is not None:
            check_alloc_id(replacing, "replacing")
        life = ttl_ms(ttl, self._primary._default_ttl_ms)

        async def on_primary() -> str:
            return await self._primary.claim(session_id, owner, ttl, replacing=replacing)

        async def on_fallback() -> str:
            now = self._now_ms()
            entry = Entry("claim", key, owner, now + life, replacing)
            self._journal.append(entry)
            winner = await self._fallback._do_claim(key, owner, now + life, now, replacing)
            entry.void = winner != owner
            return winner

        winner = await self._serve("claim", on_primary, on_fallback)
        self._counters.claims += 1
        return winner

    async def touch(self, session_id: str, ttl: Ttl | None = None) -> bool:
        key = session_key(check_session_id(session_id))
        life = ttl_ms(ttl, self._primary._default_ttl_ms)

        async def on_fallback() -> bool:
            now = self._now_ms()
            self._journal.append(Entry("touch", key, expires_at=now + life))
            return await self._fallback._do_touch(key, now + life, now)

        touched = await self._serve(
            "touch", lambda: self._primary.touch(session_id, ttl), on_fallback
        )
        self._counters.touches += 1
        return touched

    async def delete(self, session_id: str) -> bool:
        key = session_key(check_session_id(session_id))

        async def on_fallback() -> bool:
            self._journal.append(Entry("delete", key))
            return await self._fallback._do_delete(key, self._now_ms())

        deleted = await self._serve("delete", lambda: self._primary.delete(session_id), on_fallback)
        if deleted:
            self._counters.deletes += 1
        return deleted

    async def delete_owner(self, alloc_id: str) -> int:
        owner = check_alloc_id(alloc_id)

        async def on_fallback() -> int:
            self._journal.append(Entry("delete_owner", alloc_id=owner))
            return await self._fallback._do_delete_owner(owner, self._now_ms())

        removed = await self._serve(
            "delete_owner", lambda: self._primary.delete_owner(owner), on_fallback
        )
        self._counters.deletes += removed
        return removed

    async def cleanup(self) -> int:
        async def on_fallback() -> int:
            now = self._primary._clock.now()
            removed = await self._fallback._do_cleanup(
                math.floor(now * 1000), self._primary._cleanup_batch
            )
            self._counters.cleaned += removed
            self._counters.last_cleanup_at = datetime.fromtimestamp(now, UTC)
            return removed

        return await self._serve("cleanup", self._primary.cleanup, on_fallback)

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since open (whichever store served) and the serving store's gauges.

        A primary that cannot count right now gives zero gauges, not an error.
        """
        self._check_open()
        sessions = expired = 0
        size: int | None = None
        if self._degraded:
            sessions, expired, size = await self._fallback._do_gauges(self._now_ms())
        else:
            try:
                gauges = await self._primary.metrics()
            except StorageError:
                self._counters.errors += 1
            else:
                sessions, expired, size = gauges.sessions, gauges.expired, gauges.storage_bytes
        own = self._counters
        primary = self._primary._counters
        last = [t for t in (own.last_cleanup_at, primary.last_cleanup_at) if t is not None]
        return dataclasses.replace(
            own.snapshot(
                sessions=sessions,
                expired=expired,
                storage_bytes=size,
                fallback_active=self._degraded,
            ),
            cleaned=own.cleaned + primary.cleaned,
            last_cleanup_at=max(last, default=None),
        )

    async def health(self) -> Health:
        """The primary's health; "degraded" while the fallback serves."""
        self._check_open()
        if not self._degraded:
            health = await self._primary.health()
            if health.status == "ok":
                return health
            await self._degrade("health", StorageError(health.detail, transient=True))
        waited = time.monotonic() - self._degraded_since
        return Health(
            "degraded",
            self._primary.backend,
            f"serving from the in-memory fallback for {waited:.1f} s, "
            f"{len(self._journal)} writes to write back; last error: {self._last_error}",
        )

    # -- healthy or degraded ---------------------------------------------

    async def _serve(
        self,
        operation: str,
        on_primary: Callable[[], Awaitable[T]],
        on_fallback: Callable[[], Awaitable[T]],
    ) -> T:
        """``on_primary`` with retries while healthy, else ``on_fallback``.

        ``on_fallback`` journals before its first await, so the check of the
        state and the journal entry happen with nothing in between. While the
        write-back drains its last entries, writes wait for it to end.
        """
        while True:
            self._check_open()
            if self._degraded:
                if self._draining is not None and operation in _WRITES:
                    await self._draining.wait()  # the write-back is ending: then the primary
                    continue
                return await on_fallback()
            try:
                return await self._with_retries(on_primary)
            except StorageError as exc:
                await self._degrade(operation, exc)

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        try:  # the first try outside tenacity: the healthy path pays nothing for it
            return await call()
        except StorageError as exc:
            self._counters.errors += 1
            if not exc.transient or self._retry_count == 1 or self._degraded:
                raise
            first: StorageError | None = exc  # tenacity's attempt 1 is this one
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=self._stop,
            wait=wait_exponential(multiplier=self._retry_delay, max=MAX_RETRY_WAIT)
            + wait_random(0, self._retry_delay),
            before_sleep=self._count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:
                    error, first = first, None
                    raise error
                try:
                    return await call()
                except StorageError:
                    self._counters.errors += 1
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _stop(self, state: RetryCallState) -> bool:
        # Another call already gave up on the primary: stop trying it.
        return state.attempt_number >= self._retry_count or self._degraded or self._closed

    def _count_retry(self, state: RetryCallState) -> None:
        self._counters.retries += 1

    async def _degrade(self, operation: str, error: StorageError) -> None:
        await self._fallback._ready()
        if self._degraded or self._closed:
            return
        self._degraded = True
        self._degraded_since = time.monotonic()
        self._last_error = str(error)
        logger.warning(
            "%s %s failed (%s): serving from the in-memory fallback until it answers",
            self._primary.backend,
            operation,
            error,
            extra=self._extra(operation, "degraded", transient=error.transient),
        )
        self._probe_task = asyncio.create_task(
            self._probe(), name=f"session-repo probe ({self._primary.backend})"
        )

    # -- recovery --------------------------------------------------------

    async def _probe(self) -> None:
        """Check the primary with backoff until the journal is written back."""
        delay = self._probe_delay
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._probe_max_delay)
            try:
                if await self._recover():
                    return
            except RepositoryClosed:
                return
            except StorageError as exc:
                self._last_error = str(exc)
                logger.debug(
                    "write-back to %s failed: %s",
                    self._primary.backend,
                    exc,
                    extra=self._extra("write-back", "error"),
                )
            except Exception:  # a bug must not leave the store degraded for good
                logger.exception(
                    "write-back to %s failed unexpectedly",
                    self._primary.backend,
                    extra=self._extra("write-back", "error"),
                )

    async def _recover(self) -> bool:
        health = await self._primary.health()
        if health.status != "ok":
            self._last_error = health.detail
            return False
        replayed, lost = await self._write_back()
        # The journal is empty and nothing awaited since: flip now.
        self._degraded = False
        self._fallback.clear()
        logger.info(
            "%s answers again: wrote back %d writes (%d claims lost to bindings made "
            "meanwhile) after %.1f s degraded",
            self._primary.backend,
            replayed,
            lost,
            time.monotonic() - self._degraded_since,
            extra=self._extra("write-back", "recovered", replayed=replayed, claims_lost=lost),
        )
        return True

    async def _write_back(self) -> tuple[int, int]:
        """Replay the journal in order; entries leave it only once written.

        Entries for different sessions go together (the backends batch them); two
        for one session never share a batch, and a ``delete_owner`` goes alone.
        Writes made meanwhile are journaled too, so a fast writer could outrun the
        replay: once a batch has gone through and the journal is short (or the
        replay has run ``DRAIN_AFTER`` seconds), new writes wait for the end
        instead, and then go to the primary. (Not before a batch has gone through:
        a primary that reads but cannot write must not hold writers up.)
        """
        journal = self._journal
        replayed = lost = 0
        started = time.monotonic()
        written = False
        try:
            while journal:
                if (
                    written
                    and self._draining is None
                    and (len(journal) <= DRAIN_AT or time.monotonic() - started > DRAIN_AFTER)
                ):
                    self._draining = asyncio.Event()
                batch = journal.next_batch()
                await self._primary._ready()
                now = self._now_ms()
                live = [entry for entry in batch if not entry.void]
                outcomes = await asyncio.gather(
                    *(write_back(self._primary, entry, now) for entry in live),
                    return_exceptions=True,
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome  # the batch stays journaled: replaying is idempotent
                replayed += sum(outcome is not None for outcome in outcomes)
                lost += sum(outcome is False for outcome in outcomes)
                journal.drop(len(batch))
                written = True
            return replayed, lost
        finally:
            # Waiting writes resume after the caller's flip (no await before it) or,
            # if the replay failed, find the store still degraded.
            draining, self._draining = self._draining, None
            if draining is not None:
                draining.set()

    def _extra(self, operation: str, outcome: str, **more: object) -> dict[str, object]:
        return {
            "backend": self._primary.backend,
            "operation": operation,
            "outcome": outcome,
            **more,
        }


async def _nothing() -> None:
    return None
