"""The blocking facade's methods: the contract's, each run on the private loop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Self

from session_repo.contract import SessionRepository, Ttl
from session_repo.factory import create_session_repository
from session_repo.lease import Lease
from session_repo.metrics import Health, SessionStoreMetrics
from session_repo.sync.loop import LoopThread

__all__ = ["SyncSessionRepository"]


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
        self._runner = LoopThread(timeout)
        self._call = self._runner.call
        if repository is None:
            repository = create_session_repository
        if isinstance(repository, SessionRepository):
            self.repository: SessionRepository = repository
        else:  # a factory: build it on the loop, where it will run
            self.repository = self._runner.build(repository)

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
        self._runner.close(self.repository.close())

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

    def acquire(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> Lease:
        """``claim``, answering the winner's lease, blocking; the caller won iff it is the owner.

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the repository's default.
            replacing: an owner whose live binding this call may take over.

        Returns:
            The lease after the call, with its fencing ``generation``.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.acquire(session_id, alloc_id, ttl, replacing=replacing))

    def lease(self, session_id: str) -> Lease | None:
        """The live binding's lease (owner, generation, expiry), or ``None``, blocking.

        Args:
            session_id: the client's session key.

        Returns:
            The lease, or ``None`` when there is no live binding.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.lease(session_id))

    def touch(
        self, session_id: str, ttl: Ttl | None = None, *, generation: int | None = None
    ) -> bool:
        """Extend a live binding to now + ttl, blocking; ``False`` if there is none.

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the repository's default.
            generation: if given, extend only while the live binding has it.

        Returns:
            Whether a live binding (with ``generation``, if given) was extended.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.touch(session_id, ttl, generation=generation))

    def delete(self, session_id: str, *, generation: int | None = None) -> bool:
        """Remove a live binding, blocking; ``True`` if there was one.

        Args:
            session_id: the client's session key.
            generation: if given, remove only while the live binding has it.

        Returns:
            Whether a live binding (with ``generation``, if given) was removed.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.delete(session_id, generation=generation))

    def heartbeat(self, alloc_id: str, ttl: Ttl) -> None:
        """``alloc_id`` is alive until now + ttl, blocking until written.

        Args:
            alloc_id: the instance that is alive.
            ttl: how long it counts as alive without another heartbeat.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        self._call(self.repository.heartbeat(alloc_id, ttl))

    def release(self, alloc_id: str) -> int:
        """The owner leaves: its heartbeat and bindings are removed, blocking.

        Args:
            alloc_id: the instance that leaves.

        Returns:
            How many live bindings it held.

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.release(alloc_id))

    def owners(self) -> dict[str, datetime]:
        """The owners with a live heartbeat and when each lapses, blocking.

        Returns:
            Alloc id to the end of its heartbeat (timezone-aware UTC).

        Raises:
            RepositoryClosed: the facade or its repository was closed.
            TimeoutError: the call took longer than ``timeout``; it was cancelled.
        """
        return self._call(self.repository.owners())

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
