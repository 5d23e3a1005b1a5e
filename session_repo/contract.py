"""``SessionRepository``: the contract every backend fulfils the same way.

A *binding* maps a session id to the alloc id (instance) that owns it and is
live while ``now < expires_at``; ``now`` comes from the repository's clock.
Session ids are secrets: backends keep only their SHA-256 digest.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from session_repo._core.inputs import DEFAULT_TTL_MS, Ttl, check_session_id, ttl_ms
from session_repo._core.keys import log_ref, session_key
from session_repo.lease import Lease
from session_repo.metrics import Health, SessionStoreMetrics

__all__ = ["SessionRepository", "Ttl", "session_ref", "ttl_seconds"]


def session_ref(session_id: str) -> str:
    """The short, non-reversible reference the library's logs give a session.

    Log it instead of the session id (a bearer secret) to correlate your logs with
    the library's.

    Args:
        session_id: the client's session key.

    Raises:
        TypeError: ``session_id`` is not a ``str``.
        InvalidInput: ``session_id`` breaks the input rules.
    """
    return log_ref(session_key(check_session_id(session_id)))


def ttl_seconds(ttl: Ttl | None, default: float = DEFAULT_TTL_MS / 1000) -> float:
    """``ttl`` in seconds, checked by the contract's rules (``None`` gives ``default``).

    Rounded up to whole milliseconds, as the repositories store it.

    Args:
        ttl: seconds (``int`` or ``float``) or a ``timedelta``; ``None`` for the default.
        default: the seconds ``None`` stands for.

    Raises:
        TypeError: ``ttl`` has the wrong type (``bool`` included).
        InvalidInput: ``ttl`` is not finite and > 0, or is longer than a century.
    """
    return ttl_ms(ttl, round(default * 1000)) / 1000


@runtime_checkable
class SessionRepository(Protocol):
    """An async, TTL-keyed map of session id -> alloc id.

    Every method validates its arguments before any I/O (``TypeError`` for a
    wrong type, ``InvalidInput`` for a wrong value; nothing is written then),
    opens the repository lazily if needed, and raises ``RepositoryClosed``
    after ``close()``. ``ttl=None`` means the repository's default.
    """

    async def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        """Bind or rebind ``session_id`` to ``alloc_id``; expiry = now + ttl.

        Overwrites any binding the session has, whoever owns it. Use ``claim`` to
        take a session only if no one else holds it.

        Args:
            session_id: the client's session key (stored only as its digest).
            alloc_id: the instance that owns the session from now on.
            ttl: how long the binding lives; ``None`` for the repository's default.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def lookup(self, session_id: str) -> str | None:
        """The owner of ``session_id``'s live binding, if it has one.

        Reading changes nothing: the expiry is not extended (use ``touch``).

        Args:
            session_id: the client's session key.

        Returns:
            The alloc id that owns the session, or ``None`` if there is no live
                binding (an expired row that cleanup has not reached yet is ``None`` too).

        Raises:
            TypeError: ``session_id`` is not a ``str``.
            InvalidInput: ``session_id`` breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        """Atomically take a session unless someone else holds it.

        If a live binding exists and its owner is not ``replacing``, return
        that owner and change nothing. Otherwise bind to ``alloc_id`` and
        return ``alloc_id``. Of many concurrent claims (tasks, processes,
        machines) exactly one wins and all see the winner; a deadlock or
        serialization failure inside the backend is retried there, not raised.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the repository's default.
            replacing: an owner whose live binding this claim may take over;
                ``None`` takes only a session with no live binding.

        Returns:
            The owner after the call: ``alloc_id`` if the caller won, else the
                instance that holds the session.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def touch(
        self, session_id: str, ttl: Ttl | None = None, *, generation: int | None = None
    ) -> bool:
        """Extend a live binding to now + ttl, keeping its owner and generation.

        If there is no live binding (none, or an expired one), nothing changes.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the repository's default.
            generation: if given, extend only while the live binding has this
                generation (compare-and-set); ``False`` otherwise.

        Returns:
            ``True`` if a live binding was extended, ``False`` if there is none.

        Raises:
            TypeError: ``session_id`` is not a ``str``.
            InvalidInput: ``session_id`` breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def delete(self, session_id: str, *, generation: int | None = None) -> bool:
        """Remove ``session_id``'s binding.

        If there is no live binding (none, or an expired one), this is a no-op
        that returns ``False``.

        Args:
            session_id: the client's session key.
            generation: if given, remove only while the live binding has this
                generation (compare-and-set); ``False`` otherwise.

        Returns:
            ``True`` if a live binding was removed.

        Raises:
            TypeError: ``session_id`` is not a ``str``.
            InvalidInput: ``session_id`` breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def delete_owner(self, alloc_id: str) -> int:
        """Remove every binding of an instance that is gone.

        An alloc id that owns nothing is a no-op that returns 0.

        Args:
            alloc_id: the instance whose bindings go.

        Returns:
            How many live bindings were removed.

        Raises:
            TypeError: ``alloc_id`` is not a ``str``.
            InvalidInput: ``alloc_id`` breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def acquire(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> Lease:
        """``claim``, answering the winner's lease; the caller won iff ``owner == alloc_id``.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the repository's default.
            replacing: an owner whose live binding this claim may take over.

        Returns:
            The lease after the call. Its ``generation`` is new whenever the owner
                changed or the binding was made anew, so it fences out the previous owner.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def lease(self, session_id: str) -> Lease | None:
        """``lookup`` with the generation and expiry; reading changes nothing.

        Args:
            session_id: the client's session key.

        Returns:
            The live binding's lease, or ``None`` (no binding, an expired one, or one
                whose owner's heartbeat lapsed).

        Raises:
            TypeError: ``session_id`` is not a ``str``.
            InvalidInput: ``session_id`` breaks an input rule.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def heartbeat(self, alloc_id: str, ttl: Ttl) -> None:
        """``alloc_id`` is alive until now + ttl.

        Once an owner has heartbeated, its bindings are live only while its heartbeat
        is: when it lapses they are dead at once, and stay dead (a later heartbeat
        starts afresh; the owner acquires its sessions again, with new generations).
        An owner that never heartbeats keeps bindings by their own ttl alone.

        Args:
            alloc_id: the instance that is alive.
            ttl: how long it counts as alive without another heartbeat.

        Raises:
            TypeError: an argument has the wrong type.
            InvalidInput: an argument breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def release(self, alloc_id: str) -> int:
        """The owner leaves cleanly: its heartbeat and every binding of it go.

        Args:
            alloc_id: the instance that leaves.

        Returns:
            How many live bindings it held.

        Raises:
            TypeError: ``alloc_id`` is not a ``str``.
            InvalidInput: ``alloc_id`` breaks an input rule; nothing was written.
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def owners(self) -> dict[str, datetime]:
        """The owners with a live heartbeat, and when each lapses (timezone-aware UTC).

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def cleanup(self) -> int:
        """Remove all expired rows, batch by batch; live bindings are untouched.

        Batches are bounded, so writers are never held up long. The background
        cleanup task calls this every ``cleanup_interval``.

        Returns:
            How many expired rows were removed.

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def metrics(self) -> SessionStoreMetrics:
        """Counters since the repository was created, and gauges read now.

        Returns:
            A snapshot: counters such as ``lookups`` and ``claims``, and gauges
                such as ``sessions`` (live) and ``expired``.

        Raises:
            RepositoryClosed: the repository was closed.
            StorageError: the store failed (``ResilientSessionRepository`` never
                raises it).
        """
        ...

    async def health(self) -> Health:
        """Whether the store answers; never raises a storage error.

        Returns:
            ``status`` is ``"ok"``, ``"degraded"`` (serving from a fallback) or
                ``"down"`` (the store does not answer), with ``backend`` and a ``detail``.

        Raises:
            RepositoryClosed: the repository was closed.
        """
        ...

    async def close(self) -> None:
        """Stop background work and release connections.

        Idempotent: closing again is a no-op. Every later call raises
        ``RepositoryClosed``. ``async with repo:`` calls it on exit.
        """
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
