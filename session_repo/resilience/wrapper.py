"""``ResilientSessionRepository``: the store is never the reason a request fails.

Inputs are checked and the session id hashed once, here; healthy, every call
goes to the primary's storage through its declared ``run()`` (timed and
translated there, as the primary's own calls are), and every answer is remembered
in a bounded warm cache. A transient ``StorageError`` is tried again (tenacity:
exponential backoff with jitter, an async sleep). When the tries run out, or at
once on a permanent error, the wrapper *degrades* (``serving``): it serves from an
in-process memory fallback, seeded per session from the warm cache so known
sessions keep routing, says so in ``health()`` and ``metrics()``, logs it once,
and journals every write that changed something (``session_calls``,
``owner_calls``). A probe watches the primary; when it answers, the journal is
written back, each entry exactly once (``recovery``), and service flips back to
the primary with no await between the journal running empty and the flip. A claim
the fallback granted that loses on write-back is counted (``claims_lost``) and
reported to the claim-lost listeners.

Leases while degraded (issue 14): ``acquire`` and ``lease`` are answered by the
fallback, with the fallback's own generations: a fencing token issued while
degraded is good only against the fallback, and once a win is written back the
primary's generation is the one that counts. The two never mix (``tokens``).

Not covered, by design: a process that dies while degraded loses the writes it
has not written back (the journal lives in memory, like the fallback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from session_repo._core.cancel import cancel_requests, reraise_swallowed
from session_repo._core.counters import Counters
from session_repo._core.front import StoreFront
from session_repo._core.inputs import (
    Ttl,
    check_alloc_id,
    check_generation,
    check_session_id,
    non_negative_seconds,
    positive_int,
    positive_seconds,
    ttl_ms,
)
from session_repo._core.keys import session_key
from session_repo._core.storage import Gauges, LeaseRow
from session_repo.backends.memory import MemorySessionRepository
from session_repo.contract import SessionRepository
from session_repo.errors import InvalidInput, StorageError
from session_repo.lease import Lease
from session_repo.metrics import Health, Latency, SessionStoreMetrics
from session_repo.resilience.answers import ACQUIRE, CLAIM, LEASE, LOOKUP
from session_repo.resilience.claims import ClaimLostListener, ClaimLostReports
from session_repo.resilience.outage import FallbackState
from session_repo.resilience.owner_calls import OwnerCalls
from session_repo.resilience.recovery import WriteBack
from session_repo.resilience.serving import Serving
from session_repo.resilience.session_calls import SessionCalls
from session_repo.resilience.tokens import FallbackTokens

__all__ = ["ClaimLostListener", "ResilientSessionRepository"]

logger = logging.getLogger("session_repo.resilience")


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
        retry_count = positive_int("retry_count", retry_count)
        retry_delay = non_negative_seconds("retry_delay", retry_delay)
        probe_delay = positive_seconds("probe_delay", probe_delay)
        probe_max_delay = positive_seconds("probe_max_delay", probe_max_delay)
        if on_claim_lost is not None and not callable(on_claim_lost):
            raise TypeError("on_claim_lost must be an async callable")
        self._primary: StoreFront = primary
        self._fallback = fallback
        self._counters = Counters()
        warm_sessions = positive_int("warm_sessions", warm_sessions)
        self._state = FallbackState(
            fallback,
            journal_max=positive_int("journal_max", journal_max),
            warm_sessions=warm_sessions,
            default_ttl_ms=primary.default_ttl_ms,
            backend=primary.backend,
        )
        self._journal = self._state.journal
        self._warm = self._state.warm
        self._tokens = FallbackTokens(warm_sessions)
        self._stale_tokens = self._tokens.stale  # read by the healthy path: empty, mostly
        self._default_ttl_ms = primary.default_ttl_ms
        self._claims = ClaimLostReports(primary.backend)
        if on_claim_lost is not None:
            self._claims.add(on_claim_lost)
        self._write_back = WriteBack(primary, self._state, self._claims)
        self._healthy = True  # not degraded, not closed: what the healthy path reads
        self._serving = Serving(
            primary,
            self._state,
            self._write_back,
            self._tokens,
            self._counters,
            retry_count=retry_count,
            retry_delay=retry_delay,
            probe_delay=probe_delay,
            probe_max_delay=probe_max_delay,
            on_health=self._set_healthy,
        )
        self._probe = self._serving.probe
        self._session_calls = SessionCalls(primary, self._state, self._tokens, self._serving)
        self._owner_calls = OwnerCalls(primary, self._state, self._serving, self._counters)
        self._gauges = Gauges(0, 0, None)  # as ``metrics()`` last read
        self._opened = False

    def _set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy

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
        return self._serving.retry.count

    @property
    def retry_delay(self) -> float:
        """First wait between tries (seconds); it doubles, with jitter."""
        return self._serving.retry.delay

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
        self._claims.add(listener)

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_open()
        if not self._opened:
            self._opened = True
            # Open now, so a primary that is down at start degrades at once.
            await self._serving.serve("open", None, self._primary.open, _nothing)
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
        if self._serving.closed:
            return
        self._serving.close()
        before = cancel_requests()
        probe = self._probe.task()
        if probe is not None:
            probe.cancel()
        # Their cancellations are theirs; a cancellation of close() itself is raised below.
        await asyncio.gather(
            *([probe] if probe is not None else []), self._claims.close(), return_exceptions=True
        )
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
        self._serving.check_open()

    def _extra(self, operation: str, outcome: str) -> dict[str, object]:
        return {"backend": self._primary.backend, "operation": operation, "outcome": outcome}

    # -- the contract ----------------------------------------------------
    #
    # Each per-session call's healthy path is inline: one flag read, the primary's
    # run(), the answer kept in the warm cache. No closure, no extra coroutine: the
    # wrapper's budget is ~5% of a SQLite lookup (~0.4 us), and each of those cost
    # ~0.1-0.2 us. Everything else (the tries after a failed first one, the fallback,
    # the write-back) is in the call's served twin in ``session_calls``, through
    # ``Serving.serve``; the owner-level calls are served whole by ``owner_calls``.
    # While healthy the fallback holds no seeded session (none before the first
    # outage; recovery clears them), so the healthy path writes the warm cache
    # itself; the twins go through ``FallbackState``, which also unseeds.

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
        life = ttl_ms(ttl, self._default_ttl_ms)
        if self._healthy:
            now = self._primary.now_ms()
            expires_at = now + life
            try:
                await self._primary.run("upsert", lambda s: s.upsert(key, owner, expires_at, now))
            except StorageError as failed:
                await self._session_calls.upsert(key, owner, life, failed)
            else:
                self._warm.put(key, owner, expires_at)
        else:
            await self._session_calls.upsert(key, owner, life)
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
        owner: str | None
        if self._healthy:
            now = self._primary.now_ms()
            try:
                owner = await self._primary.run("lookup", lambda s: s.lookup(key, now))
            except StorageError as failed:
                owner = await self._session_calls.read(LOOKUP, key, failed)
            else:
                self._warm.seen(key, owner, now, now + self._default_ttl_ms)
        else:
            owner = await self._session_calls.read(LOOKUP, key)
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
        life = ttl_ms(ttl, self._default_ttl_ms)
        if self._healthy:
            now = self._primary.now_ms()
            try:
                winner = await self._primary.run(
                    "claim", lambda s: s.claim(key, owner, now + life, now, replacing)
                )
            except StorageError as failed:
                winner = await self._session_calls.take(CLAIM, key, owner, life, replacing, failed)
            else:
                if winner == owner:  # won, or already ours (then its row keeps its expiry)
                    self._warm.claimed(key, owner, now + life, now, replacing == owner)
                else:
                    self._warm.seen(key, winner, now, now + self._default_ttl_ms)
        else:
            winner = await self._session_calls.take(CLAIM, key, owner, life, replacing)
        self._counters.claims += 1
        return winner

    async def acquire(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> Lease:
        """``claim``, answering the winner's lease: the caller won iff ``owner == alloc_id``.

        While degraded the fallback answers, with its own generation (a fencing
        token good only against the fallback); a win is written back as a claim,
        and then the primary's generation is the one that counts.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the primary's default.
            replacing: an owner whose live binding this claim may take over.

        Returns:
            The lease after the call: the caller's, or the holder's, unchanged.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        owner = check_alloc_id(alloc_id)
        if replacing is not None:
            check_alloc_id(replacing, "replacing")
        life = ttl_ms(ttl, self._default_ttl_ms)
        if self._healthy:
            now = self._primary.now_ms()
            try:
                row = await self._primary.run(
                    "acquire", lambda s: s.acquire(key, owner, now + life, now, replacing)
                )
            except StorageError as failed:
                row = await self._session_calls.take(ACQUIRE, key, owner, life, replacing, failed)
            else:
                self._warm.put(key, row.owner, row.expires_at)
                if self._stale_tokens:
                    self._tokens.answered(key, row.generation, row.owner)
        else:
            row = await self._session_calls.take(ACQUIRE, key, owner, life, replacing)
        self._counters.claims += 1
        return Lease.from_ms(*row)

    async def lease(self, session_id: str) -> Lease | None:
        """``lookup`` with the generation and expiry; while degraded, the fallback's.

        Args:
            session_id: the client's session key.

        Returns:
            The live binding's lease, or ``None`` if there is none (also when its
                owner's heartbeat lapsed).

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        row: LeaseRow | None
        if self._healthy:
            now = self._primary.now_ms()
            try:
                row = await self._primary.run("lease", lambda s: s.lease(key, now))
            except StorageError as failed:
                row = await self._session_calls.read(LEASE, key, failed)
            else:
                if row is None:
                    self._warm.put(key, None, now)
                else:
                    self._warm.seen(key, row.owner, now, row.expires_at)
                    if self._stale_tokens:
                        self._tokens.answered(key, row.generation, row.owner)
        else:
            row = await self._session_calls.read(LEASE, key)
        if row is None:
            self._counters.looked_up(None)
            return None
        self._counters.looked_up(row.owner)
        return Lease.from_ms(*row)

    async def touch(
        self, session_id: str, ttl: Ttl | None = None, *, generation: int | None = None
    ) -> bool:
        """Extend a live binding to now + ttl, keeping its owner and generation.

        While degraded, ``generation`` is matched against the fallback's own.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the primary's default.
            generation: if given, extend only while the live binding has it.

        Returns:
            ``True`` if a live binding was extended, ``False`` if there is none (or
                its generation is not ``generation``).

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        life = ttl_ms(ttl, self._default_ttl_ms)
        if generation is not None:
            check_generation(generation)
        if self._healthy and (generation is None or not self._tokens.refused(key, generation)):
            now = self._primary.now_ms()
            try:
                touched = await self._primary.run(
                    "touch", lambda s: s.touch(key, now + life, now, generation)
                )
            except StorageError as failed:
                touched = await self._session_calls.touch(key, life, generation, failed)
            else:
                if touched:
                    self._warm.renew(key, now + life)
                elif generation is None:  # else: perhaps only another generation
                    self._warm.put(key, None, now)
        else:
            touched = await self._session_calls.touch(key, life, generation)
        self._counters.touches += 1
        return touched

    async def delete(self, session_id: str, *, generation: int | None = None) -> bool:
        """Remove ``session_id``'s binding; without a live one, a no-op.

        While degraded, ``generation`` is matched against the fallback's own.

        Args:
            session_id: the client's session key.
            generation: if given, remove only while the live binding has it.

        Returns:
            ``True`` if a live binding was removed.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        key = session_key(check_session_id(session_id))
        if generation is not None:
            check_generation(generation)
        if self._healthy and (generation is None or not self._tokens.refused(key, generation)):
            now = self._primary.now_ms()
            try:
                deleted = await self._primary.run(
                    "delete", lambda s: s.delete(key, now, generation)
                )
            except StorageError as failed:
                deleted = await self._session_calls.delete(key, generation, failed)
            else:
                if deleted or generation is None:
                    self._warm.put(key, None, now)
        else:
            deleted = await self._session_calls.delete(key, generation)
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
        removed = await self._owner_calls.delete_owner(check_alloc_id(alloc_id))
        self._counters.deletes += removed
        return removed

    async def heartbeat(self, alloc_id: str, ttl: Ttl) -> None:
        """``alloc_id`` is alive until now + ttl; its bindings die when this lapses.

        While degraded the fallback takes it (its bindings live on there) and the
        latest one is written back on recovery, unless it has lapsed by then.

        Args:
            alloc_id: the instance that is alive.
            ttl: how long it counts as alive without another heartbeat.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        owner = check_alloc_id(alloc_id)
        await self._owner_calls.heartbeat(owner, ttl_ms(ttl, self._default_ttl_ms))

    async def release(self, alloc_id: str) -> int:
        """An owner leaves: its heartbeat and every binding of it are removed.

        The warm cache forgets its sessions at once, so no outage serves them.

        Args:
            alloc_id: the instance that leaves.

        Returns:
            How many live bindings it held, in the store serving now.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
        """
        removed = await self._owner_calls.release(check_alloc_id(alloc_id))
        self._counters.deletes += removed
        return removed

    async def owners(self) -> dict[str, datetime]:
        """The owners with a live heartbeat, and when each lapses.

        While degraded, as the fallback knows them: the heartbeats made through this
        wrapper (its own machine's), not those other instances made.

        Returns:
            Alloc id to the end of its heartbeat (timezone-aware UTC).

        Raises:
            RepositoryClosed: the repository was closed.
        """
        ends = await self._owner_calls.owners()
        return {owner: datetime.fromtimestamp(end / 1000, UTC) for owner, end in ends.items()}

    async def cleanup(self) -> int:
        """Remove expired rows from the store serving now, batch by batch.

        Returns:
            How many expired rows were removed.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        return await self._owner_calls.cleanup()

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since open (whichever store served) and the serving store's gauges.

        A primary that cannot count right now gives zero gauges, not an error.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        self._check_open()
        self._gauges = Gauges(0, 0, None)
        if self._serving.degraded:
            self._gauges = await self._fallback.run(
                "gauges", lambda s: s.gauges(self._primary.now_ms())
            )
        else:
            try:
                gauges = await self._primary.metrics()
            except StorageError:
                self._counters.errors += 1
            else:
                self._gauges = Gauges(
                    gauges.sessions, gauges.expired, gauges.storage_bytes, gauges.owners
                )
        return self.counters()

    def counters(self) -> SessionStoreMetrics:
        """The counters now, with the gauges the last ``metrics()`` read (zero before).

        No I/O and no await, so a Prometheus scrape can read it from any thread.
        """
        own = self._counters
        primary = self._primary.counters()
        last = [t for t in (own.last_cleanup_at, primary.last_cleanup_at) if t is not None]
        sessions, expired, size, owners = self._gauges
        return dataclasses.replace(
            own.snapshot(
                sessions=sessions,
                expired=expired,
                storage_bytes=size,
                fallback_active=self._serving.degraded,
                owners=owners,
            ),
            cleaned=own.cleaned + primary.cleaned,
            last_cleanup_at=max(last, default=None),
            claims_lost=self._claims.count,
            journal_entries=self._write_back.pending(),
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
        if not self._serving.degraded:
            health = await self._primary.health()
            if health.status == "ok":
                return dataclasses.replace(health, detail=health.detail + lost) if lost else health
            await self._serving.degrade("health", StorageError(health.detail, transient=True))
        waited = time.monotonic() - self._probe.since
        return Health(
            "degraded",
            self._primary.backend,
            f"serving from the in-memory fallback for {waited:.1f} s, "
            f"{self._write_back.pending()} writes to write back{lost}; "
            f"last error: {self._probe.last_error}",
        )


async def _nothing() -> None:
    return None
