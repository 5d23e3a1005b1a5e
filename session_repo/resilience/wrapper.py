"""``ResilientSessionRepository``: the store is never the reason a request fails.

Healthy, every call goes to the primary; a transient ``StorageError`` is tried
again (tenacity: exponential backoff with jitter, an async sleep), and every
answer is remembered in a bounded warm cache. When the tries run out, or at once
on a permanent error, the wrapper *degrades*: it serves from an in-process memory
fallback, seeded per session from the warm cache so known sessions keep routing,
says so in ``health()`` and ``metrics()``, logs it once, and journals every write
that changed something (folded: about one entry per session, bounded).

A probe task watches the primary with backoff; when it answers, the journal is
written back, each entry exactly once (it leaves the journal as it is applied;
one that fails goes back to its front). Meanwhile a session with nothing left to
write back is served by the primary again, and a writer waits at most for its own
session's entry in flight, one round trip. A claim the fallback granted that loses
on write-back is counted (``claims_lost``) and reported to the claim-lost
listeners. Service flips back to the primary with no await between the journal
running empty and the flip.

Not covered, by design: a process that dies while degraded loses the writes it
has not written back (the journal lives in memory, like the fallback).
"""

from __future__ import annotations

import asyncio
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

from session_repo._core.cancel import cancel_requests, reraise_swallowed
from session_repo._core.counters import Counters
from session_repo._core.front import StoreFront
from session_repo._core.inputs import Ttl, check_alloc_id, check_session_id, ttl_ms
from session_repo._core.keys import log_ref, session_key
from session_repo.backends.memory import MemorySessionRepository
from session_repo.contract import SessionRepository
from session_repo.errors import InvalidInput, RepositoryClosed, StorageError
from session_repo.metrics import Health, Latency, SessionStoreMetrics
from session_repo.resilience.journal import Entry, Journal, Write, write_back
from session_repo.resilience.warm import WarmCache

__all__ = ["ClaimLostListener", "ResilientSessionRepository"]

logger = logging.getLogger("session_repo.resilience")

T = TypeVar("T")
ClaimLostListener = Callable[[str, str], Awaitable[None]]
"""``async def listener(ref, winner)``: the session's log reference and who holds it now."""

# The longest wait between two tries of one call, whatever retry_delay says.
MAX_RETRY_WAIT = 5.0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exc.transient


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if value < 1:
        raise InvalidInput(f"{name} must be >= 1")
    return value


class ResilientSessionRepository:
    """A primary store with retries, a warm memory fallback, and exact write-back.

    Args:
        primary: one of this library's backends (it writes back through their hooks).
        fallback: the store served while degraded; a ``MemorySessionRepository`` on
            the primary's clock by default.
        retry_count: tries of one call before the fallback serves it.
        retry_delay: first wait between tries (seconds); it doubles, with jitter.
        probe_delay: first wait before checking a failed primary again; it doubles
            up to ``probe_max_delay``.
        probe_max_delay: the longest wait between two probes.
        journal_max: outage writes kept for write-back (sessions, about one entry
            each); beyond it a write is served but not kept, and counted.
        warm_sessions: sessions whose last answer is kept to seed the fallback.
        on_claim_lost: called for each outage claim that lost on write-back.

    Raises:
        TypeError: ``primary`` is not one of this library's backends, ``fallback``
            is not a ``MemorySessionRepository``, or a number has the wrong type.
        InvalidInput: ``fallback`` is ``primary``, or a number is out of range.
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
        journal_max: int = 100_000,
        warm_sessions: int = 100_000,
        on_claim_lost: ClaimLostListener | None = None,
    ) -> None:
        if not isinstance(primary, StoreFront):
            raise TypeError(
                "primary must be a session_repo backend (SqlSessionRepository, "
                f"RedisSessionRepository, ...), not {type(primary).__name__}"
            )
        if fallback is None:
            fallback = MemorySessionRepository(
                clock=primary.clock,
                default_ttl=primary.default_ttl_ms / 1000,
                cleanup_interval=primary.cleanup_interval,
            )
        elif not isinstance(fallback, MemorySessionRepository):
            raise TypeError(
                f"fallback must be a MemorySessionRepository, not {type(fallback).__name__}"
            )
        if fallback is primary:
            raise InvalidInput("fallback must not be the primary itself")
        retry_count = _positive_int("retry_count", retry_count)
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
        if on_claim_lost is not None and not callable(on_claim_lost):
            raise TypeError("on_claim_lost must be an async callable")
        self._primary: StoreFront = primary
        self._fallback = fallback
        self._retry_count = retry_count
        self._retry_delay = float(retry_delay)
        self._probe_delay = float(probe_delay)
        self._probe_max_delay = max(float(probe_max_delay), self._probe_delay)
        self._counters = Counters()
        self._journal = Journal(_positive_int("journal_max", journal_max))
        self._warm = WarmCache(_positive_int("warm_sessions", warm_sessions))
        self._seeded: set[bytes] = set()  # sessions the fallback holds this outage
        self._inflight: dict[bytes, asyncio.Event] = {}  # entries being written back
        self._listeners: list[ClaimLostListener] = [] if on_claim_lost is None else [on_claim_lost]
        self._notices: set[asyncio.Task[None]] = set()
        self._claims_lost = 0
        self._gauges: tuple[int, int, int | None] = (0, 0, None)  # as ``metrics()`` last read
        self._dropped_logged = False
        self._degraded = False
        self._recovering = False  # writing back: sessions with no entry use the primary
        self._degraded_since = 0.0
        self._last_error = ""
        self._opened = False
        self._closed = False
        self._probe_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"ResilientSessionRepository({self._primary!r})"

    @property
    def backend(self) -> str:
        """The primary's name (``"sqlite"``, ``"redis"``, ...)."""
        return self._primary.backend

    @property
    def primary(self) -> StoreFront:
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

    def add_claim_lost_listener(self, listener: ClaimLostListener) -> None:
        """Call ``listener(ref, winner)`` for each outage claim that loses on write-back.

        Args:
            listener: an async callable given the session's log reference (never the
                session id) and the alloc id that holds the session now. It runs in
                its own task; what it raises is logged.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError("listener must be an async callable")
        self._listeners.append(listener)

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_open()
        if not self._opened:
            self._opened = True
            # Open now, so a primary that is down at start degrades at once.
            await self._serve("open", None, self._primary.open, _nothing)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the probe and the listeners' tasks, and close both stores; idempotent."""
        if self._closed:
            return
        self._closed = True
        before = cancel_requests()
        tasks = [t for t in (self._probe_task, *self._notices) if t is not None]
        self._probe_task = None
        for task in tasks:
            task.cancel()
        # Their cancellations are theirs; a cancellation of close() itself is raised below.
        await asyncio.gather(*tasks, return_exceptions=True)
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
        reraise_swallowed(before)

    def _check_open(self) -> None:
        if self._closed:
            raise RepositoryClosed("ResilientSessionRepository is closed")

    # -- the contract ----------------------------------------------------

    def _now_ms(self) -> int:
        return self._primary.now_ms()

    async def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        """Bind or rebind ``session_id`` to ``alloc_id``; journaled while degraded.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that owns the session from now on.
            ttl: how long the binding lives; ``None`` for the primary's default.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        life = ttl_ms(ttl, self._primary.default_ttl_ms)

        async def on_primary() -> None:
            now = self._now_ms()
            await self._primary.upsert(session_id, owner, ttl)
            self._answered(key, owner, now + life)

        async def on_fallback() -> None:
            now = self._now_ms()
            before = await self._seeded_owner(key, now)
            await self._fallback.run("upsert", lambda s: s.upsert(key, owner, now + life))
            self._journaled("upsert", key, before, owner, now + life)

        await self._serve("upsert", key, on_primary, on_fallback)
        self._counters.upserts += 1

    async def lookup(self, session_id: str) -> str | None:
        """The owner of a live binding; while degraded, as the fallback knows it.

        Args:
            session_id: the client's session key.

        Returns:
            The owning alloc id, or ``None`` if there is no live binding.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))

        async def on_primary() -> str | None:
            now = self._now_ms()
            owner = await self._primary.lookup(session_id)
            self._seen(key, owner, now)
            return owner

        async def on_fallback() -> str | None:
            return await self._seeded_owner(key, self._now_ms())

        owner = await self._serve("lookup", key, on_primary, on_fallback)
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
        """Atomically take a session unless another owner holds it.

        A claim the fallback grants is written back as a claim: if another
        instance bound the session on the primary meanwhile, that binding wins
        (counted in ``claims_lost``, reported to the claim-lost listeners).

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the primary's default.
            replacing: an owner whose live binding this claim may take over.

        Returns:
            ``alloc_id`` if the caller won, else the owner that holds the session.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        if replacing is not None:
            check_alloc_id(replacing, "replacing")
        life = ttl_ms(ttl, self._primary.default_ttl_ms)

        async def on_primary() -> str:
            now = self._now_ms()
            winner = await self._primary.claim(session_id, owner, ttl, replacing=replacing)
            known = self._warm.get(key, now)
            if winner != owner or (known and known[0] == owner and replacing != owner):
                self._seen(key, winner, now)  # lost, or already ours: nothing changed
            else:
                self._answered(key, owner, now + life)
            return winner

        async def on_fallback() -> str:
            now = self._now_ms()
            before = await self._seeded_owner(key, now)
            winner = await self._fallback.run(
                "claim", lambda s: s.claim(key, owner, now + life, now, replacing)
            )
            if winner == owner and (before != owner or replacing == owner):
                self._journaled("claim", key, before, owner, now + life)
            return winner

        winner = await self._serve("claim", key, on_primary, on_fallback)
        self._counters.claims += 1
        return winner

    async def touch(self, session_id: str, ttl: Ttl | None = None) -> bool:
        """Extend a live binding to now + ttl, keeping its owner.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the primary's default.

        Returns:
            ``True`` if a live binding was extended, ``False`` if there is none.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        life = ttl_ms(ttl, self._primary.default_ttl_ms)

        async def on_primary() -> bool:
            now = self._now_ms()
            touched = await self._primary.touch(session_id, ttl)
            if touched:
                self._warm.renew(key, now + life)
                self._seeded.discard(key)
            else:
                self._answered(key, None, now)
            return touched

        async def on_fallback() -> bool:
            now = self._now_ms()
            before = await self._seeded_owner(key, now)
            touched = await self._fallback.run("touch", lambda s: s.touch(key, now + life, now))
            if touched and before is not None:
                self._journaled("touch", key, before, before, now + life)
            return touched

        touched = await self._serve("touch", key, on_primary, on_fallback)
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
        """
        key = session_key(check_session_id(session_id))

        async def on_primary() -> bool:
            now = self._now_ms()
            deleted = await self._primary.delete(session_id)
            self._answered(key, None, now)
            return deleted

        async def on_fallback() -> bool:
            now = self._now_ms()
            before = await self._seeded_owner(key, now)
            deleted = await self._fallback.run("delete", lambda s: s.delete(key, now))
            if deleted:
                self._journaled("delete", key, before, "", 0)
            return deleted

        deleted = await self._serve("delete", key, on_primary, on_fallback)
        if deleted:
            self._counters.deletes += 1
        return deleted

    async def delete_owner(self, alloc_id: str) -> int:
        """Remove every binding of an instance that is gone.

        Args:
            alloc_id: the instance whose bindings go.

        Returns:
            How many live bindings were removed from the store serving now.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        owner = check_alloc_id(alloc_id)

        async def on_primary() -> int:
            removed = await self._primary.delete_owner(owner)
            self._warm.forget_owner(owner)
            return removed

        async def on_fallback() -> int:
            if not self._journal.record_delete_owner(owner):
                self._dropped()
            now = self._now_ms()
            for key in self._warm.keys_of(owner):  # its known sessions: each one cleared
                if await self._seeded_owner(key, now) == owner:
                    self._journaled("delete", key, owner, "", 0)
            self._warm.forget_owner(owner)
            return await self._fallback.run("delete_owner", lambda s: s.delete_owner(owner, now))

        removed = await self._serve("delete_owner", None, on_primary, on_fallback)
        self._counters.deletes += removed
        return removed

    async def cleanup(self) -> int:
        """Remove expired rows from the store serving now, batch by batch.

        Returns:
            How many expired rows were removed.

        Raises:
            RepositoryClosed: the repository was closed.
        """

        async def on_fallback() -> int:
            now = self._primary.clock.now()
            removed = await self._fallback.run(
                "cleanup", lambda s: s.cleanup(math.floor(now * 1000), self._primary.cleanup_batch)
            )
            self._counters.cleaned += removed
            self._counters.last_cleanup_at = datetime.fromtimestamp(now, UTC)
            return removed

        return await self._serve("cleanup", None, self._primary.cleanup, on_fallback)

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since open (whichever store served) and the serving store's gauges.

        A primary that cannot count right now gives zero gauges, not an error.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        self._check_open()
        self._gauges = (0, 0, None)
        if self._degraded:
            self._gauges = await self._fallback.run("gauges", lambda s: s.gauges(self._now_ms()))
        else:
            try:
                gauges = await self._primary.metrics()
            except StorageError:
                self._counters.errors += 1
            else:
                self._gauges = (gauges.sessions, gauges.expired, gauges.storage_bytes)
        return self.counters()

    def counters(self) -> SessionStoreMetrics:
        """The counters now, with the gauges the last ``metrics()`` read (zero before).

        No I/O and no await, so a Prometheus scrape can read it from any thread.
        """
        own = self._counters
        primary = self._primary.counters()
        last = [t for t in (own.last_cleanup_at, primary.last_cleanup_at) if t is not None]
        sessions, expired, size = self._gauges
        return dataclasses.replace(
            own.snapshot(
                sessions=sessions,
                expired=expired,
                storage_bytes=size,
                fallback_active=self._degraded,
            ),
            cleaned=own.cleaned + primary.cleaned,
            last_cleanup_at=max(last, default=None),
            claims_lost=self._claims_lost,
            journal_entries=len(self._journal) + len(self._inflight),
            journal_dropped=self._journal.dropped,
        )

    async def health(self) -> Health:
        """The primary's health; "degraded" while the fallback serves.

        A primary that does not answer here degrades the wrapper at once.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        self._check_open()
        dropped = self._journal.dropped
        lost = f"; {dropped} outage writes were not kept (journal full)" if dropped else ""
        if not self._degraded:
            health = await self._primary.health()
            if health.status == "ok":
                return dataclasses.replace(health, detail=health.detail + lost) if lost else health
            await self._degrade("health", StorageError(health.detail, transient=True))
        waited = time.monotonic() - self._degraded_since
        return Health(
            "degraded",
            self._primary.backend,
            f"serving from the in-memory fallback for {waited:.1f} s, "
            f"{len(self._journal) + len(self._inflight)} writes to write back{lost}; "
            f"last error: {self._last_error}",
        )

    # -- what the fallback knows -----------------------------------------

    def _answered(self, key: bytes, owner: str | None, expires_at: int) -> None:
        """Remember the primary's answer; while degraded, the fallback re-seeds from it."""
        self._warm.put(key, owner, expires_at)
        if self._degraded:
            self._seeded.discard(key)

    def _seen(self, key: bytes, owner: str | None, now: int) -> None:
        """An answer with no expiry (a lookup, a claim's other winner)."""
        self._warm.seen(key, owner, now, now + self._primary.default_ttl_ms)
        if self._degraded:
            self._seeded.discard(key)

    async def _seeded_owner(self, key: bytes, now: int) -> str | None:
        """The fallback's owner of ``key``, seeded from the warm cache on first use."""
        if key not in self._seeded:
            self._seeded.add(key)
            row = self._warm.get(key, now)
            if row is None:
                await self._fallback.run("delete", lambda s: s.delete(key, now))
            else:
                await self._fallback.run("upsert", lambda s: s.upsert(key, *row))
        return await self._fallback.run("lookup", lambda s: s.lookup(key, now))

    def _journaled(
        self, write: Write, key: bytes, before: str | None, owner: str, expires_at: int
    ) -> None:
        if not self._journal.record(write, key, before, owner, expires_at):
            self._dropped()

    def _dropped(self) -> None:
        if not self._dropped_logged:
            self._dropped_logged = True
            logger.error(
                "the outage journal is full (%d sessions): later writes are served from "
                "the fallback but will not be written back to %s",
                self._journal.max_entries,
                self._primary.backend,
                extra=self._extra("journal", "full"),
            )

    # -- healthy or degraded ---------------------------------------------

    async def _serve(
        self,
        operation: str,
        key: bytes | None,
        on_primary: Callable[[], Awaitable[T]],
        on_fallback: Callable[[], Awaitable[T]],
    ) -> T:
        """``on_primary`` with retries while healthy, else ``on_fallback``.

        ``on_fallback`` reads and writes the memory fallback with nothing in
        between that could let another task in. While the journal is written back,
        a session with nothing left in it is served by the primary again, and one
        whose entry is being written waits for that write.
        """
        while True:
            self._check_open()
            if self._degraded:
                if key is not None and (writing := self._inflight.get(key)) is not None:
                    await writing.wait()
                    continue
                if not (
                    self._recovering
                    and key is not None
                    and key not in self._journal
                    and not self._journal.owner_entries
                ):
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
        await self._fallback.open()
        self._recovering = False  # failing again mid write-back: the fallback serves all
        if self._degraded or self._closed:
            return
        self._degraded = True
        self._degraded_since = time.monotonic()
        self._dropped_logged = False
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
        try:
            written, lost = await self._write_back()
        finally:
            self._recovering = False
        # The journal is empty and nothing awaited since: flip now.
        self._degraded = False
        self._seeded.clear()
        self._fallback.clear()
        logger.info(
            "%s answers again: wrote back %d writes (%d claims lost to bindings made "
            "meanwhile) after %.1f s degraded",
            self._primary.backend,
            written,
            lost,
            time.monotonic() - self._degraded_since,
            extra=self._extra("write-back", "recovered", replayed=written, claims_lost=lost),
        )
        return True

    async def _write_back(self) -> tuple[int, int]:
        """Write the journal back, batch by batch; each entry leaves it as it is applied.

        An entry that fails goes back to the journal's front and ends this try
        (the probe tries again); the rest of its batch stays written.
        """
        written = lost = 0
        while self._journal:
            batch = self._journal.take_batch()
            writing = asyncio.Event()
            for entry in batch:
                self._inflight[entry.key] = writing
            outcomes: list[str | BaseException | None] = [RepositoryClosed("unsent")] * len(batch)
            try:
                await self._primary.open()
                now = self._now_ms()
                outcomes = await asyncio.gather(
                    *(write_back(self._primary, entry, now) for entry in batch),
                    return_exceptions=True,
                )
            finally:
                failure = self._settle(batch, outcomes)
                for entry in batch:
                    del self._inflight[entry.key]
                writing.set()
            if failure is not None:
                raise failure
            # A batch went through: sessions with nothing to write back may use the
            # primary again (not before: one that reads but cannot write holds no one).
            self._recovering = True
            written += len(batch)
            lost += sum(
                entry.kind == "claim" and winner is not None and winner != entry.owner
                for entry, winner in zip(batch, outcomes, strict=True)
            )
        return written, lost

    def _settle(
        self, batch: list[Entry], outcomes: list[str | BaseException | None]
    ) -> BaseException | None:
        """Put failed entries back, remember what the rest wrote; the first failure."""
        failure: BaseException | None = None
        for entry, outcome in reversed(list(zip(batch, outcomes, strict=True))):
            if isinstance(outcome, BaseException):
                self._journal.put_back(entry)
                failure = outcome
            elif entry.kind == "owner":
                self._warm.forget_owner(entry.owner)
            elif entry.kind == "claim" and outcome is not None and outcome != entry.owner:
                self._claim_lost(entry, outcome)
            elif entry.kind == "clear" or entry.expires_at <= self._now_ms():
                self._warm.put(entry.key, None, 0)
            else:  # what the fallback says now is what the primary holds
                owner = entry.basis if entry.kind == "keep" else entry.owner
                self._warm.put(entry.key, owner, entry.expires_at)
        return failure

    def _claim_lost(self, entry: Entry, winner: str) -> None:
        self._claims_lost += 1
        self._seen(entry.key, winner, self._now_ms())
        ref = log_ref(entry.key)
        logger.warning(
            "a claim granted by the fallback lost on write-back: session %s belongs to %s",
            ref,
            winner,
            extra=self._extra("write-back", "claim_lost", session=ref, owner=winner),
        )
        for listener in self._listeners:
            task = asyncio.create_task(self._notify(listener, ref, winner))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)

    async def _notify(self, listener: ClaimLostListener, ref: str, winner: str) -> None:
        try:
            await listener(ref, winner)
        except Exception:  # a listener's bug must not end the write-back
            logger.exception(
                "a claim-lost listener failed", extra=self._extra("write-back", "listener_error")
            )

    def _extra(self, operation: str, outcome: str, **more: object) -> dict[str, object]:
        return {
            "backend": self._primary.backend,
            "operation": operation,
            "outcome": outcome,
            **more,
        }


async def _nothing() -> None:
    return None
