"""This machine's own heartbeat: telling the store it is alive, and knowing when it may not be.

Once a machine has heartbeated, the store counts its bindings live only while its
heartbeat is (``SessionRepository.heartbeat``): a machine that dies loses its sessions
within one heartbeat ttl, and the next request for one is served where it lands, with
no replay to a dead machine and no replay ``timeout`` waited out. ``Liveness`` renews
the heartbeat every third of its ttl from a task started at ASGI lifespan startup,
and releases the machine (``SessionRepository.release``) at shutdown.

The rule cuts the other way too: a machine whose heartbeat was not renewed in time
(the store was down, its event loop froze) may have lost every session it holds,
and other machines may have taken some. It judges that by its own clock, with a
margin for the other machines' clocks and the store's latency: once the end of its
last renewal, less the margin, has passed, its memory of what it owns is void
(``current`` says None, and the incarnation moves on). It heartbeats again before
it claims anything (a binding written while its heartbeat is lapsed is dead on
arrival), and ``Ownership`` re-acquires each session before serving it again.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable

from session_repo.clock import Clock
from session_repo.contract import SessionRepository, Ttl, ttl_seconds
from session_repo.errors import InvalidInput, SessionRepoError
from session_repo.fly._log import fields, logger

__all__ = ["DEFAULT_HEARTBEAT_TTL", "HEARTBEAT_ENV", "Liveness", "Sleep", "heartbeat_seconds"]

DEFAULT_HEARTBEAT_TTL = 30.0
HEARTBEAT_ENV = "SESSION_REPO_HEARTBEAT_TTL"
Sleep = Callable[[float], Awaitable[None]]
"""``sleep(seconds)``: how the heartbeat task waits (``asyncio.sleep`` by default)."""


def heartbeat_seconds(value: Ttl | None) -> float:
    """The heartbeat ttl in seconds: ``value``, else ``SESSION_REPO_HEARTBEAT_TTL``, else 30.

    Args:
        value: the middleware's ``heartbeat_ttl`` (None: read the variable).

    Returns:
        The ttl, checked like any ttl (finite, > 0).

    Raises:
        InvalidInput: the ttl (or the variable) is out of range or not a number.
        TypeError: ``value`` is not a number or a ``timedelta``.
    """
    if value is None:
        raw = os.environ.get(HEARTBEAT_ENV, "").strip()
        if not raw:
            return DEFAULT_HEARTBEAT_TTL
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"{HEARTBEAT_ENV}={raw!r} is not a number of seconds") from None
    return ttl_seconds(value)


class Liveness:
    """One machine's heartbeat: the task that renews it, and whether it may have lapsed.

    Until ``start`` (no lifespan, or not on Fly) and after ``stop`` it is off: the
    machine's bindings then live by their own ttl alone, as without heartbeats, and
    ``current`` never voids anything.

    Args:
        repository: the shared store.
        instance_id: this machine's id, the owner it heartbeats as.
        ttl: how long one heartbeat keeps the machine alive, in seconds; it is
            renewed every third of that, and counted lapsed a sixth before its end.
        clock: the time source (the store's own clock, for the same idea of now).
        sleep: how the renewal task waits between heartbeats.

    Attributes:
        trusted_until: when the memory of owned sessions stops holding (the last
            renewal's end less the margin); None while off. Before it, ``current``
            is ``incarnation``.
    """

    def __init__(
        self,
        repository: SessionRepository,
        instance_id: str,
        ttl: float,
        clock: Clock,
        sleep: Sleep | None = None,
    ) -> None:
        self.repository = repository
        self.instance_id = instance_id
        self.ttl = ttl
        self.period = ttl / 3
        self.margin = ttl / 6
        self.incarnation = 0  # moves on at each lapse: what was owned before is void
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        # None: off; else the lapse less the margin (read as it is by Ownership's hot path)
        self.trusted_until: float | None = None
        self._void = False  # lapsed, and the incarnation already moved on for it
        self._task: asyncio.Task[None] | None = None
        self._reviving: asyncio.Future[bool] | None = None
        self._failures = 0

    def current(self, now: float) -> int | None:
        """The incarnation whose memory of owned sessions holds now; None while lapsed.

        Args:
            now: the time, by this machine's clock.

        Returns:
            ``incarnation``, or None when the last renewal (less the margin) has ended.
        """
        until = self.trusted_until
        if until is None or now < until:
            return self.incarnation
        if not self._void:
            self._void = True
            self.incarnation += 1
            if until > -math.inf:
                logger.warning(
                    "heartbeat of machine %s was not renewed in time: the sessions it held "
                    "are acquired again before they are served",
                    self.instance_id,
                    extra=fields("heartbeat", "lapsed", instance=self.instance_id),
                )
        return None

    async def start(self) -> None:
        """Heartbeat now and keep heartbeating every third of the ttl (lifespan startup)."""
        if self._task is not None:
            return
        self.trusted_until, self._void = -math.inf, True  # nothing is owned before it beats
        await self.beat()
        self._task = asyncio.ensure_future(self._run())  # (ends at once if unsupported)

    async def stop(self) -> None:
        """Stop heartbeating and release the machine: its heartbeat and bindings go."""
        if self._task is None:
            return
        await self.abandon()
        try:
            released = await self.repository.release(self.instance_id)
        except Exception as exc:  # a store failure never fails the shutdown
            self._report(exc, "release")
            return
        logger.info(
            "machine %s released %d sessions",
            self.instance_id,
            released,
            extra=fields("release", "ok", instance=self.instance_id, sessions=released),
        )

    async def abandon(self) -> None:
        """Stop heartbeating without a release (the lifespan ended without a shutdown)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.trusted_until, self._void = None, False
        self.incarnation += 1  # released (or soon lapsed): nothing owned before counts

    async def revive(self) -> bool:
        """While lapsed, heartbeat once (one attempt shared by the callers at the time).

        Returns:
            Whether the heartbeat is live now (True when it was not lapsed, or is off).
        """
        if self.current(self._clock.now()) is not None:
            return True
        reviving = self._reviving
        if reviving is None or reviving.done():
            reviving = self._reviving = asyncio.ensure_future(self.beat())
        # shielded: a caller cancelled does not cancel the others' heartbeat
        return await asyncio.shield(reviving) and self.current(self._clock.now()) is not None

    async def beat(self) -> bool:
        """Heartbeat once; a failure is logged, never raised.

        Returns:
            Whether the store took it.
        """
        started = self._clock.now()
        try:
            await self.repository.heartbeat(self.instance_id, self.ttl)
        except (AttributeError, NotImplementedError) as exc:  # a repository without heartbeats
            self._unsupported(exc)
            return True
        except Exception as exc:  # a store failure (CancelledError is not an Exception)
            self._report(exc, "heartbeat")
            return False
        self.current(started)  # a lapse before this renewal voids what was owned
        if self.trusted_until is not None:  # (not stopped meanwhile)
            self.trusted_until, self._void = started + self.ttl - self.margin, False
        if self._failures:
            logger.info(
                "heartbeat of machine %s renewed after %d failed attempts",
                self.instance_id,
                self._failures,
                extra=fields("heartbeat", "recovered", instance=self.instance_id),
            )
            self._failures = 0
        return True

    async def _run(self) -> None:
        while self.trusted_until is not None:
            await self._sleep(self.period)
            await self.beat()

    def _unsupported(self, exc: Exception) -> None:
        """A repository that cannot heartbeat: go on without (bindings live by their ttl)."""
        self.trusted_until, self._void = None, False
        logger.error(
            "the repository cannot heartbeat (%s): machine %s runs without, so a dead "
            "machine's sessions are replayed to it until their bindings expire",
            type(exc).__name__,
            self.instance_id,
            extra=fields("heartbeat", "unsupported", instance=self.instance_id),
        )

    def _report(self, exc: Exception, what: str) -> None:
        """Log a failed heartbeat or release: the first of a burst as a warning."""
        self._failures += 1
        detail = f": {exc}" if isinstance(exc, SessionRepoError) else ""
        level = logger.warning if self._failures == 1 or what == "release" else logger.debug
        level(
            "%s of machine %s failed (%s%s); %s",
            what,
            self.instance_id,
            type(exc).__name__,
            detail,
            f"retrying every {self.period:g} s" if what == "heartbeat" else "its heartbeat lapses",
            extra=fields(what, "store_failed", instance=self.instance_id, error=type(exc).__name__),
        )
