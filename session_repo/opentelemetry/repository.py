"""``TracedSessionRepository``: a span and a duration per operation, by the conventions.

Each call is recorded by ``session_repo.opentelemetry.calls``; what the spans say
is in ``session_repo.opentelemetry.conventions``; the metrics are
``session_repo.opentelemetry.meters``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from session_repo.contract import SessionRepository, Ttl
from session_repo.lease import Lease
from session_repo.metrics import Health, Instrumented, Latency, SessionStoreMetrics
from session_repo.opentelemetry.calls import Calls
from session_repo.opentelemetry.conventions import OPERATIONS, found, hit, ok

__all__ = ["OPERATIONS", "TracedSessionRepository"]


class TracedSessionRepository:
    """A repository whose operations make OpenTelemetry spans and metrics.

    With no SDK behind either provider, its operations are the wrapped
    repository's own bound methods (no cost); it looks again when opened and on
    ``metrics()`` and ``health()``. Every other attribute (``primary``,
    ``fallback``, ``add_claim_lost_listener``, ...) is the wrapped repository's.

    Args:
        repository: the repository to instrument (any backend, or the resilient wrapper).
        tracer_provider: where spans go; the global one when None.
        meter_provider: where metrics go; the global one when None.
        attributes: more attributes for every span, such as ``server.address``,
            ``server.port`` or ``db.namespace`` (which also names the span when
            there is no table).
        refresh_timeout: how long one read of the gauges (``metrics()``) may take.

    Raises:
        TypeError: ``repository`` is not a ``SessionRepository``.
    """

    def __init__(
        self,
        repository: SessionRepository,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        refresh_timeout: float = 5.0,
    ) -> None:
        if not isinstance(repository, SessionRepository):
            raise TypeError(
                f"repository must be a SessionRepository, not {type(repository).__name__}"
            )
        self._repo = repository
        backend = type(repository).__name__
        if isinstance(repository, Instrumented):
            backend = repository.backend
        self._backend = backend
        self._calls = Calls(
            repository, backend, tracer_provider, meter_provider, attributes, refresh_timeout
        )
        self._meters = self._calls.meters
        self._traced = self._calls.traced
        self._arm()

    def _arm(self) -> None:
        """Serve the traced operations iff an SDK is behind the tracer or meter provider."""
        recording = self._calls.arm()
        instance = vars(self)
        for op in OPERATIONS:
            if recording:
                instance.pop(op, None)  # the class's traced method
            else:
                instance[op] = getattr(self._repo, op)  # the wrapped one's, at no cost

    # -- the contract --------------------------------------------------------

    async def upsert(self, session_id: str, alloc_id: str, ttl: Ttl | None = None) -> None:
        """Bind or rebind ``session_id`` to ``alloc_id`` (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
            alloc_id: the instance that owns the session from now on.
            ttl: how long the binding lives; ``None`` for the repository's default.
        """
        await self._traced("upsert", session_id, self._repo.upsert(session_id, alloc_id, ttl), ok)

    async def lookup(self, session_id: str) -> str | None:
        """The owner of a live binding, else ``None`` (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
        """
        return await self._traced("lookup", session_id, self._repo.lookup(session_id), hit)

    async def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        """Take a session unless another owner holds it (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the repository's default.
            replacing: an owner whose live binding this claim may take over.
        """
        call = self._repo.claim(session_id, alloc_id, ttl, replacing=replacing)
        return await self._traced(
            "claim", session_id, call, lambda winner: "won" if winner == alloc_id else "lost"
        )

    async def acquire(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> Lease:
        """``claim``, answering the winner's lease (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
            alloc_id: the instance that wants the session.
            ttl: how long a new binding lives; ``None`` for the repository's default.
            replacing: an owner whose live binding this call may take over.
        """
        call = self._repo.acquire(session_id, alloc_id, ttl, replacing=replacing)
        return await self._traced(
            "acquire", session_id, call, lambda got: "won" if got.owner == alloc_id else "lost"
        )

    async def lease(self, session_id: str) -> Lease | None:
        """The live binding's lease, else ``None`` (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
        """
        return await self._traced("lease", session_id, self._repo.lease(session_id), hit)

    async def touch(
        self, session_id: str, ttl: Ttl | None = None, *, generation: int | None = None
    ) -> bool:
        """Extend a live binding (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the repository's default.
            generation: if given, extend only while the live binding has it.
        """
        call = self._repo.touch(session_id, ttl, generation=generation)
        return await self._traced("touch", session_id, call, found)

    async def delete(self, session_id: str, *, generation: int | None = None) -> bool:
        """Remove a binding (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
            generation: if given, remove only while the live binding has it.
        """
        call = self._repo.delete(session_id, generation=generation)
        return await self._traced("delete", session_id, call, found)

    async def heartbeat(self, alloc_id: str, ttl: Ttl) -> None:
        """The owner is alive until now + ttl (see ``SessionRepository``).

        Args:
            alloc_id: the instance that is alive.
            ttl: how long it counts as alive without another heartbeat.
        """
        await self._traced("heartbeat", None, self._repo.heartbeat(alloc_id, ttl), ok)

    async def release(self, alloc_id: str) -> int:
        """The owner leaves: its heartbeat and bindings go (see ``SessionRepository``).

        Args:
            alloc_id: the instance that leaves.
        """
        return await self._traced("release", None, self._repo.release(alloc_id), ok)

    async def owners(self) -> dict[str, datetime]:
        """The owners with a live heartbeat, and when each lapses (see ``SessionRepository``)."""
        return await self._traced("owners", None, self._repo.owners(), ok)

    async def delete_owner(self, alloc_id: str) -> int:
        """Remove every binding of an instance that is gone (see ``SessionRepository``).

        Args:
            alloc_id: the instance whose bindings go.
        """
        return await self._traced("delete_owner", None, self._repo.delete_owner(alloc_id), ok)

    async def cleanup(self) -> int:
        """Remove all expired rows (see ``SessionRepository``)."""
        return await self._traced("cleanup", None, self._repo.cleanup(), ok)

    async def metrics(self) -> SessionStoreMetrics:
        """The wrapped repository's metrics; the gauges exported are these from now on."""
        self._arm()
        self._meters.last = metrics = await self._repo.metrics()
        return metrics

    async def health(self) -> Health:
        """The wrapped repository's health."""
        self._arm()
        return await self._repo.health()

    async def open(self) -> None:
        """Open the wrapped repository (``async with`` does it too)."""
        await self._repo.__aenter__()
        self._arm()
        self._meters.loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Stop reading gauges and close the wrapped repository; idempotent."""
        await self._meters.close()
        await self._repo.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what exporters read, and the rest -----------------------------------

    @property
    def wrapped(self) -> SessionRepository:
        """The repository this one instruments."""
        return self._repo

    @property
    def backend(self) -> str:
        """The wrapped repository's backend name."""
        return self._backend

    def counters(self) -> SessionStoreMetrics:
        """The wrapped repository's counters (no I/O), so Prometheus can export this one too."""
        metrics = self._meters.snapshot()
        return metrics if metrics is not None else SessionStoreMetrics(sessions=0, expired=0)

    def latencies(self) -> dict[str, Latency]:
        """The wrapped repository's latency histograms, where it has them."""
        return self._repo.latencies() if isinstance(self._repo, Instrumented) else {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # ours, not yet set (or the wrapped one's private parts)
            raise AttributeError(name)
        return getattr(self._repo, name)

    def __repr__(self) -> str:
        return f"TracedSessionRepository({self._repo!r})"
