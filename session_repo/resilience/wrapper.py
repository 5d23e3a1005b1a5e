"""``ResilientSessionRepository``: the store is never the reason a request fails.

Inputs are checked and the session id hashed once, here; healthy, every call
goes to the primary's storage through its declared ``run()`` (timed and
translated there, as the primary's own calls are). A transient ``StorageError`` is tried
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

Leases while degraded (issue 14): ``acquire`` and ``lease`` are answered by the
fallback, with the fallback's own generations: a fencing token issued while degraded
is good only against the fallback, and once a win is written back the primary's
generation is the one that counts. The two never mix (``tokens``): while degraded a
conditional call with a token the primary issued answers ``False``, and after
recovery one with a token the fallback issued does too. ``acquire`` is journaled as a
claim; a conditional ``touch``/``delete`` acts on the fallback by its generation and
is journaled in its plain form only if it acted. ``heartbeat`` is applied to the
fallback and journaled folded per owner, written back (before the bindings) only
if it has not lapsed by then. ``release`` is applied to the fallback, forgets the
owner's warm sessions and is journaled in order. ``owners`` is the fallback's: the
heartbeats made through this wrapper. The warm cache never seeds a binding whose
owner it knows to be dead (see ``warm``).

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
from session_repo.errors import InvalidInput, RepositoryClosed, StorageError
from session_repo.lease import Lease
from session_repo.metrics import Health, Latency, SessionStoreMetrics
from session_repo.resilience.answers import ACQUIRE, CLAIM, LEASE, LOOKUP, Read, Take
from session_repo.resilience.claims import ClaimLostListener, ClaimLostReports
from session_repo.resilience.outage import FallbackState
from session_repo.resilience.probe import Probe
from session_repo.resilience.recovery import WriteBack
from session_repo.resilience.retry import RetryPolicy
from session_repo.resilience.tokens import FallbackTokens

__all__ = ["ClaimLostListener", "ResilientSessionRepository"]

logger = logging.getLogger("session_repo.resilience")

T = TypeVar("T")


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
        self._retry = RetryPolicy(
            retry_count, retry_delay, self._counters, lambda: not self._healthy
        )
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
        self._probe = Probe(
            primary,
            self._write_back,
            self._state,
            delay=probe_delay,
            max_delay=max(probe_max_delay, probe_delay),
            recovered=self._recovered,
        )
        self._gauges = Gauges(0, 0, None)  # as ``metrics()`` last read
        self._degraded = False
        self._opened = False
        self._closed = False
        self._healthy = True  # not degraded, not closed: what the healthy path reads

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
        return self._retry.count

    @property
    def retry_delay(self) -> float:
        """First wait between tries (seconds); it doubles, with jitter."""
        return self._retry.delay

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
        self._set_healthy()
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
        if self._closed:
            raise RepositoryClosed("ResilientSessionRepository is closed")

    # -- the contract ----------------------------------------------------
    #
    # Each per-session call's healthy path is inline: one flag read, the primary's
    # run(), the answer kept in the warm cache. No closure, no extra coroutine: the
    # wrapper's budget is ~5% of a SQLite lookup (~0.4 us), and each of those cost
    # ~0.1-0.2 us. Everything else (the tries after a failed first one, the fallback,
    # the write-back) is in the call's ``_*_served`` twin, through ``_serve``. The two
    # pairs that are one call answered two ways share theirs: ``_take_served`` (claim,
    # acquire) and ``_read_served`` (lookup, lease), told by ``answers`` which is which.
    # While healthy the fallback holds no seeded session (none before the first
    # outage; recovery clears them), so the healthy path writes the warm cache
    # itself; the twins go through ``FallbackState``, which also unseeds.

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
        life = ttl_ms(ttl, self._default_ttl_ms)
        if self._healthy:
            now = self._primary.now_ms()
            expires_at = now + life
            try:
                await self._primary.run("upsert", lambda s: s.upsert(key, owner, expires_at, now))
            except StorageError as failed:
                await self._upsert_served(key, owner, life, failed)
            else:
                self._warm.put(key, owner, expires_at)
        else:
            await self._upsert_served(key, owner, life)
        self._counters.upserts += 1

    async def _upsert_served(
        self, key: bytes, owner: str, life: int, failed: StorageError | None = None
    ) -> None:
        async def on_primary() -> None:
            now = self._now_ms()
            expires_at = now + life
            await self._primary.run("upsert", lambda s: s.upsert(key, owner, expires_at, now))
            self._state.answered(key, owner, expires_at)

        async def on_fallback() -> None:
            now = self._now_ms()
            before = await self._state.owner(key, now)
            await self._fallback.run("upsert", lambda s: s.upsert(key, owner, now + life, now))
            self._state.journaled("upsert", key, before, owner, now + life)

        await self._serve("upsert", key, on_primary, on_fallback, failed)

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
                owner = await self._read_served(LOOKUP, key, failed)
            else:
                self._warm.seen(key, owner, now, now + self._default_ttl_ms)
        else:
            owner = await self._read_served(LOOKUP, key)
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
                winner = await self._take_served(CLAIM, key, owner, life, replacing, failed)
            else:
                if winner == owner:  # won, or already ours (then its row keeps its expiry)
                    self._warm.claimed(key, owner, now + life, now, replacing == owner)
                else:
                    self._warm.seen(key, winner, now, now + self._default_ttl_ms)
        else:
            winner = await self._take_served(CLAIM, key, owner, life, replacing)
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
                row = await self._take_served(ACQUIRE, key, owner, life, replacing, failed)
            else:
                self._warm.put(key, row.owner, row.expires_at)
                if self._stale_tokens:
                    self._tokens.answered(key, row.generation, row.owner)
        else:
            row = await self._take_served(ACQUIRE, key, owner, life, replacing)
        self._counters.claims += 1
        return Lease.from_ms(*row)

    async def _take_served(
        self,
        take: Take[T],
        key: bytes,
        owner: str,
        life: int,
        replacing: str | None,
        failed: StorageError | None = None,
    ) -> T:
        """``claim``'s and ``acquire``'s served path: one claim, answered as ``take`` says.

        The primary's answer is kept in the warm cache: a lease until it ends (and it
        retires the fallback's tokens it makes stale), a bare winner by the claim
        rule (``FallbackState.claimed``). A lease the fallback answers is its token.
        """

        async def on_primary() -> T:
            now = self._now_ms()
            expires_at = now + life
            answer = await self._primary.run(
                take.operation, lambda s: take.method(s)(key, owner, expires_at, now, replacing)
            )
            lease = take.lease(answer)
            if lease is None:
                self._state.claimed(key, owner, take.owner(answer), now, expires_at, replacing)
            else:
                self._leased(key, lease)
            return answer

        async def on_fallback() -> T:
            now = self._now_ms()
            expires_at = now + life
            before = await self._state.owner(key, now)
            answer = await self._fallback.run(
                take.operation, lambda s: take.method(s)(key, owner, expires_at, now, replacing)
            )
            if take.owner(answer) == owner and (before != owner or replacing == owner):
                self._state.journaled("claim", key, before, owner, expires_at)
            if (lease := take.lease(answer)) is not None:
                self._tokens.issued(key, lease.generation, lease.owner)
            return answer

        return await self._serve(take.operation, key, on_primary, on_fallback, failed)

    def _leased(self, key: bytes, lease: LeaseRow) -> None:
        """A lease the primary answered: kept until it ends; stale fallback tokens retire."""
        self._state.answered(key, lease.owner, lease.expires_at)
        self._tokens.answered(key, lease.generation, lease.owner)

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
                row = await self._read_served(LEASE, key, failed)
            else:
                if row is None:
                    self._warm.put(key, None, now)
                else:
                    self._warm.seen(key, row.owner, now, row.expires_at)
                    if self._stale_tokens:
                        self._tokens.answered(key, row.generation, row.owner)
        else:
            row = await self._read_served(LEASE, key)
        if row is None:
            self._counters.looked_up(None)
            return None
        self._counters.looked_up(row.owner)
        return Lease.from_ms(*row)

    async def _read_served(
        self, read: Read[T], key: bytes, failed: StorageError | None = None
    ) -> T:
        """``lookup``'s and ``lease``'s served path: one read, answered as ``read`` says.

        The primary's answer is kept in the warm cache: a lease until it ends, a bare
        owner (a lookup's) for the default ttl at most, no binding not at all. The
        fallback reads the session seeded; a lease it answers is its token.
        """

        async def on_primary() -> T:
            now = self._now_ms()
            answer = await self._primary.run(read.operation, lambda s: read.method(s)(key, now))
            lease = read.lease(answer)
            if lease is None:
                self._state.seen(key, read.owner(answer), now)
            else:
                self._leased(key, lease)
            return answer

        async def on_fallback() -> T:
            now = self._now_ms()
            await self._state.seed(key, now)
            answer = await self._fallback.run(read.operation, lambda s: read.method(s)(key, now))
            if (lease := read.lease(answer)) is not None:
                self._tokens.issued(key, lease.generation, lease.owner)
            return answer

        return await self._serve(read.operation, key, on_primary, on_fallback, failed)

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
                touched = await self._touch_served(key, life, generation, failed)
            else:
                if touched:
                    self._warm.renew(key, now + life)
                elif generation is None:  # else: perhaps only another generation
                    self._warm.put(key, None, now)
        else:
            touched = await self._touch_served(key, life, generation)
        self._counters.touches += 1
        return touched

    async def _touch_served(
        self, key: bytes, life: int, generation: int | None, failed: StorageError | None = None
    ) -> bool:
        async def on_primary() -> bool:
            if generation is not None and self._tokens.refused(key, generation):
                return False  # a token the fallback issued: it names no primary binding
            now = self._now_ms()
            touched = await self._primary.run(
                "touch", lambda s: s.touch(key, now + life, now, generation)
            )
            if touched:
                self._state.renewed(key, now + life)
            elif generation is None:
                self._state.answered(key, None, now)
            return touched

        async def on_fallback() -> bool:
            if generation is not None and not self._tokens.honoured(key, generation):
                return False  # not a token the fallback issued: a primary one, perhaps
            now = self._now_ms()
            before = await self._state.owner(key, now)
            touched = await self._fallback.run(
                "touch", lambda s: s.touch(key, now + life, now, generation)
            )
            if touched and before is not None:
                self._state.journaled("touch", key, before, before, now + life)
            return touched

        return await self._serve("touch", key, on_primary, on_fallback, failed)

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
                deleted = await self._delete_served(key, generation, failed)
            else:
                if deleted or generation is None:
                    self._warm.put(key, None, now)
        else:
            deleted = await self._delete_served(key, generation)
        if deleted:
            self._counters.deletes += 1
        return deleted

    async def _delete_served(
        self, key: bytes, generation: int | None, failed: StorageError | None = None
    ) -> bool:
        async def on_primary() -> bool:
            if generation is not None and self._tokens.refused(key, generation):
                return False
            now = self._now_ms()
            deleted = await self._primary.run("delete", lambda s: s.delete(key, now, generation))
            if deleted or generation is None:
                self._state.answered(key, None, now)
            return deleted

        async def on_fallback() -> bool:
            if generation is not None and not self._tokens.honoured(key, generation):
                return False
            now = self._now_ms()
            before = await self._state.owner(key, now)
            deleted = await self._fallback.run("delete", lambda s: s.delete(key, now, generation))
            if deleted:
                self._state.journaled("delete", key, before, "", 0)
            return deleted

        return await self._serve("delete", key, on_primary, on_fallback, failed)

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
            now = self._now_ms()
            removed = await self._primary.run("delete_owner", lambda s: s.delete_owner(owner, now))
            self._state.warm.forget_owner(owner)
            return removed

        async def on_fallback() -> int:
            self._state.journaled_delete_owner(owner)
            now = self._now_ms()
            for key in self._state.warm.keys_of(owner):  # its known sessions: each one cleared
                if await self._state.owner(key, now) == owner:
                    self._state.journaled("delete", key, owner, "", 0)
            self._state.warm.forget_owner(owner)
            return await self._fallback.run("delete_owner", lambda s: s.delete_owner(owner, now))

        removed = await self._serve("delete_owner", None, on_primary, on_fallback)
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
        life = ttl_ms(ttl, self._default_ttl_ms)

        async def on_primary() -> None:
            now = self._now_ms()
            await self._primary.run("heartbeat", lambda s: s.heartbeat(owner, now + life, now))
            self._warm.beat(owner, now + life, now)

        async def on_fallback() -> None:
            now = self._now_ms()
            await self._state.beat(owner, now + life, now)

        await self._serve("heartbeat", None, on_primary, on_fallback)

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
        owner = check_alloc_id(alloc_id)

        async def on_primary() -> int:
            now = self._now_ms()
            removed = await self._primary.run("release", lambda s: s.release(owner, now))
            self._warm.released(owner)
            return removed

        async def on_fallback() -> int:
            now = self._now_ms()
            for key in self._warm.keys_of(owner):  # its known sessions, counted below
                await self._state.seed(key, now)
            self._state.journaled_release(owner)
            return await self._fallback.run("release", lambda s: s.release(owner, now))

        removed = await self._serve("release", None, on_primary, on_fallback)
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

        async def on_primary() -> dict[str, int]:
            now = self._now_ms()
            ends = await self._primary.run("owners", lambda s: s.owners(now))
            self._warm.owners_seen(ends)
            return ends

        async def on_fallback() -> dict[str, int]:
            now = self._now_ms()
            for owner in self._warm.beating():
                await self._state.seed_beat(owner, now)
            return await self._fallback.run("owners", lambda s: s.owners(now))

        ends = await self._serve("owners", None, on_primary, on_fallback)
        return {owner: datetime.fromtimestamp(end / 1000, UTC) for owner, end in ends.items()}

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
        self._gauges = Gauges(0, 0, None)
        if self._degraded:
            self._gauges = await self._fallback.run("gauges", lambda s: s.gauges(self._now_ms()))
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
                fallback_active=self._degraded,
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
        if not self._degraded:
            health = await self._primary.health()
            if health.status == "ok":
                return dataclasses.replace(health, detail=health.detail + lost) if lost else health
            await self._degrade("health", StorageError(health.detail, transient=True))
        waited = time.monotonic() - self._probe.since
        return Health(
            "degraded",
            self._primary.backend,
            f"serving from the in-memory fallback for {waited:.1f} s, "
            f"{self._write_back.pending()} writes to write back{lost}; "
            f"last error: {self._probe.last_error}",
        )

    # -- healthy or degraded ---------------------------------------------

    async def _serve(
        self,
        operation: str,
        key: bytes | None,
        on_primary: Callable[[], Awaitable[T]],
        on_fallback: Callable[[], Awaitable[T]],
        failed: StorageError | None = None,
    ) -> T:
        """``on_primary`` with retries while healthy, else ``on_fallback``.

        ``failed``: the error of a first try the caller already made on the primary
        (its healthy path); the tries go on from there. ``on_fallback`` reads and
        writes the memory fallback with nothing in between that could let another
        task in. While the journal is written back, a session with nothing left in
        it is served by the primary again, and one whose entry is being written
        waits for that write.
        """
        while True:
            if failed is None:
                self._check_open()
                if self._degraded:
                    if key is not None and (writing := self._write_back.in_flight(key)) is not None:
                        await writing.wait()
                        continue
                    if not self._write_back.serves_primary(key):
                        return await on_fallback()
                try:  # the first try here, not in the retry policy: one frame less per call
                    return await on_primary()
                except StorageError as exc:
                    failed = exc
            try:
                return await self._retry.again(on_primary, failed)
            except StorageError as exc:
                failed = None
                await self._degrade(operation, exc)

    def _set_healthy(self) -> None:
        """The healthy path's one flag: neither degraded nor closed."""
        self._healthy = not (self._degraded or self._closed)

    def _recovered(self) -> None:
        self._tokens.recovered()
        self._degraded = False
        self._set_healthy()

    async def _degrade(self, operation: str, error: StorageError) -> None:
        await self._fallback.open()
        self._write_back.recovering = False  # failing again mid write-back: the fallback serves all
        if self._degraded or self._closed:
            return
        self._degraded = True
        self._set_healthy()
        self._state.degraded()
        logger.warning(
            "%s %s failed (%s): serving from the in-memory fallback until it answers",
            self._primary.backend,
            operation,
            error,
            extra=self._extra(operation, "degraded", transient=error.transient),
        )
        self._probe.start(str(error))

    def _extra(self, operation: str, outcome: str, **more: object) -> dict[str, object]:
        return {
            "backend": self._primary.backend,
            "operation": operation,
            "outcome": outcome,
            **more,
        }


async def _nothing() -> None:
    return None
