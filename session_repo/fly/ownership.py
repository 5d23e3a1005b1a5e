"""Who owns a session, as one machine sees it: the repository, and a memory in front.

The hot path for a session this machine owns does no storage I/O: it remembers what
it claimed, when, and in which incarnation of its heartbeat (``Liveness``), and
renews only when less than half of the TTL is left. Once its heartbeat may have
lapsed, that memory is void: each session is claimed again (after a heartbeat)
before it is served, and one another machine took meanwhile is replayed there. The
memory holds only this machine's own sessions: another machine's ownership is asked
of the store each time, so nothing here outlives that machine's heartbeat. The
store failing never fails a request: a failed call is "no answer" (the request is
served here), and the failure is logged once per burst.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from cachetools import LRUCache

from session_repo.clock import Clock
from session_repo.contract import SessionRepository, session_ref
from session_repo.errors import SessionRepoError
from session_repo.fly._log import fields, logger
from session_repo.fly.liveness import Liveness

__all__ = ["ClaimLostListener", "ClaimLostReporter", "Ownership"]

T = TypeVar("T")

ClaimLostListener = Callable[[str, str], Awaitable[None]]
"""``listener(ref, winner)``: a session's log reference and the owner that kept it."""

_LOG_REF = re.compile(r"[0-9a-f]{12}")
_UNKNOWN = object()  # what a failed store call returns: "no answer", not "no owner"
_LAPSED = -1  # the incarnation of a claim made while the heartbeat was lapsed: trusted never
_QUIET = 30.0  # seconds after a reported store failure during which more are only counted


@runtime_checkable
class ClaimLostReporter(Protocol):
    """A repository that reports outage claims lost on write-back.

    ``ResilientSessionRepository`` is one: a claim it answered from its fallback
    during an outage can lose to another machine's binding when the primary is back.
    The middleware registers with any repository of this shape.
    """

    def add_claim_lost_listener(self, listener: ClaimLostListener) -> None:
        """Call ``listener(ref, winner)`` for each outage claim that loses on write-back.

        Args:
            listener: an async callable given the session's log reference and the
                alloc id that holds the session now.
        """


class Ownership:
    """This machine's view of who owns which session.

    Args:
        repository: the shared store of bindings.
        instance_id: this machine's id: the owner it claims sessions as.
        ttl: the life of a binding it claims, in seconds.
        clock: the time source for renewals and for the quiet period of failure logs.
        remember: how many sessions it keeps in memory as its own.
        liveness: this machine's heartbeat (whether its memory of what it owns holds).
    """

    def __init__(
        self,
        repository: SessionRepository,
        instance_id: str,
        ttl: float,
        clock: Clock,
        remember: int,
        liveness: Liveness,
    ) -> None:
        self.repository = repository
        self.instance_id = instance_id
        self.ttl = ttl
        self._clock = clock
        self.liveness = liveness
        # session digest -> (when this instance last claimed or renewed it, its log ref,
        # the heartbeat's incarnation then: _LAPSED, matching none, if it was lapsed)
        self._owned: LRUCache[bytes, tuple[float, str, int]] = LRUCache(maxsize=remember)
        self._reported_at: float | None = None  # when a store failure was last logged
        self._suppressed = 0

    async def owner(self, key: str, digest: bytes) -> str | None:
        """The live owner of a session; for one claimed here, from memory unless renewal is due.

        Args:
            key: the session key.
            digest: its ``session_digest``.

        Returns:
            The owner's id, or None when the session has no live owner or the store
            did not answer (then the request is served here).
        """
        me = self.instance_id
        if self.renewed_recently(digest):
            return me  # the hot path (while lapsed, current() is None: equal to none)
        entry = self._owned.get(digest)
        if entry is not None and self._clock.now() - entry[0] < self.ttl:
            return await self.claim(key, digest, replacing=me) or me  # renew, or re-acquire
        self._owned.pop(digest, None)
        owner = await self._store(self.repository.lookup(key), "lookup", key)
        if owner is _UNKNOWN:
            return None  # the store is down: serve here
        if owner == me:  # claimed before this process remembered it: renew to learn the expiry
            return await self.claim(key, digest, replacing=me) or me
        return owner if isinstance(owner, str) else None

    async def claim(self, key: str, digest: bytes, *, replacing: str | None = None) -> str | None:
        """Claim a session for this machine (``SessionRepository.claim``) and remember the result.

        Args:
            key: the session key.
            digest: its ``session_digest``.
            replacing: an owner whose binding may be taken over (this machine's own,
                to renew).

        Returns:
            The winner's id, or None when the store did not answer.
        """
        me = self.instance_id
        liveness = self.liveness
        if not await liveness.revive():  # a binding written while lapsed is dead at once
            return None  # (the store did not answer the heartbeat: serve here)
        incarnation = liveness.current(self._clock.now())
        incarnation = _LAPSED if incarnation is None else incarnation
        claim = self.repository.claim(key, me, self.ttl, replacing=replacing)
        winner = await self._store(claim, "claim", key)
        if not isinstance(winner, str):
            return None
        if winner == me:
            self._owned[digest] = (self._clock.now(), session_ref(key), incarnation)
        else:
            self._owned.pop(digest, None)
        return winner

    def renewed_recently(self, digest: bytes) -> bool:
        """Whether this machine claimed or renewed the session less than half a TTL ago.

        Args:
            digest: the session's ``session_digest``.

        Returns:
            True when no renewal is due yet (nor a claim anew, after a lapse).
        """
        try:
            claimed, _, incarnation = self._owned[digest]  # (.get makes twice the calls)
        except KeyError:
            return False
        now = self._clock.now()
        if now - claimed >= self.ttl / 2:
            return False
        liveness = self.liveness
        until = liveness.trusted_until
        if until is None or now < until:  # Liveness.current(now) without the call: not lapsed
            return incarnation == liveness.incarnation
        return incarnation == liveness.current(now)

    async def forget(self, key: str, digest: bytes) -> None:
        """The session is gone: forget owning it and delete its binding.

        Args:
            key: the session key.
            digest: its ``session_digest``.
        """
        self._owned.pop(digest, None)
        await self._store(self.repository.delete(key), "delete", key)

    async def claim_lost(self, ref: str, winner: str) -> None:
        """The store says a claim made here during an outage lost: forget owning it.

        A ``ClaimLostListener``, registered with a ``ClaimLostReporter``.

        Args:
            ref: the session's log reference (``session_repo.contract.session_ref``).
            winner: the owner that holds the session now.
        """
        for digest in [d for d, (_, r, _) in self._owned.items() if r == ref]:
            self._owned.pop(digest, None)
        ref = ref if isinstance(ref, str) and _LOG_REF.fullmatch(ref) else "?"
        logger.info(
            "session %s, claimed here while the store was down, is held by %r: "
            "its requests go there now",
            ref,
            winner,
            extra=fields("claim", "lost_on_write_back", session=ref, owner=winner),
        )

    async def _store(self, call: Awaitable[T], what: str, key: str) -> T | object:
        """Await a repository call; a storage failure is logged (once a burst) and answered
        with ``_UNKNOWN``. Input errors are bugs and propagate."""
        try:
            return await call
        except (TypeError, ValueError):  # input errors (InvalidInput is a ValueError): bugs
            raise
        except Exception as exc:  # StorageError, RepositoryClosed, a driver's own error...
            failure = exc
        now = self._clock.now()
        if self._reported_at is not None and 0 <= now - self._reported_at < _QUIET:
            self._suppressed += 1  # (a clock stepped back ends the quiet period at once)
            return _UNKNOWN
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        # Our own errors never echo a session id; a foreign one's message might.
        detail = f": {failure}" if isinstance(failure, SessionRepoError) else ""
        ref = session_ref(key)
        logger.warning(
            "session store failed during %s for session %s (%s%s); serving here%s",
            what,
            ref,
            type(failure).__name__,
            detail,
            more,
            extra=fields(what, "store_failed", session=ref, error=type(failure).__name__),
        )
        self._reported_at, self._suppressed = now, 0
        return _UNKNOWN
