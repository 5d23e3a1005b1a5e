"""``TracedSessionRepository``: a span and a duration per operation, by the conventions.

What the spans say is in ``session_repo.opentelemetry.conventions``; the
metrics are ``session_repo.opentelemetry.meters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Self, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from session_repo._version import __version__
from session_repo.contract import SessionRepository, Ttl, session_ref
from session_repo.errors import RepositoryClosed, SessionRepoError, StorageError
from session_repo.metrics import Health, Instrumented, Latency, SessionStoreMetrics
from session_repo.opentelemetry.conventions import (
    OPERATIONS,
    SCOPE,
    describe,
    error_type,
    found,
    hit,
    ok,
    sdk_behind,
)
from session_repo.opentelemetry.meters import Meters

__all__ = ["OPERATIONS", "TracedSessionRepository"]

T = TypeVar("T")


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
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        backend = type(repository).__name__
        if isinstance(repository, Instrumented):
            backend = repository.backend
        self._backend = backend
        described = describe(backend, attributes)
        self._names, self._span_attrs = described.names, described.span_attributes
        meter = (meter_provider or otel_metrics).get_meter(SCOPE, __version__)
        self._meters = Meters(meter, repository, described.metric_attributes, refresh_timeout)
        self._tracer = (tracer_provider or trace).get_tracer(SCOPE, __version__)
        self._tracing = self._metering = False
        self._arm()

    def _arm(self) -> None:
        """Serve the traced operations iff an SDK is behind the tracer or meter provider."""
        if self._tracing and self._metering:
            return  # a global provider, once set, stays set
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or otel_metrics.get_meter_provider()
        self._tracing, self._metering = sdk_behind(tracer_provider, meter_provider)
        if self._tracing:  # the SDK's own tracer: no proxy between
            self._tracer = tracer_provider.get_tracer(SCOPE, __version__)
        instance = vars(self)
        for op in OPERATIONS:
            if self._tracing or self._metering:
                instance.pop(op, None)  # the class's traced method
            else:
                instance[op] = getattr(self._repo, op)  # the wrapped one's, at no cost

    async def _traced(
        self,
        op: str,
        session_id: str | None,
        call: Awaitable[T],
        outcome: Callable[[T], str],
    ) -> T:
        span = token = None
        try:
            if self._meters.loop is None:
                self._meters.loop = asyncio.get_running_loop()
            if self._tracing:
                span = self._tracer.start_span(
                    self._names[op], kind=SpanKind.CLIENT, attributes=self._span_attrs[op]
                )
                if session_id is not None and span.is_recording():
                    with contextlib.suppress(TypeError, ValueError):  # the call raises it itself
                        span.set_attribute("session_repo.session.ref", session_ref(session_id))
                token = otel_context.attach(trace.set_span_in_context(span))
        except BaseException:
            if isinstance(call, Coroutine):
                call.close()  # never awaited: no "coroutine was never awaited" warning
            raise
        started = time.perf_counter()
        try:
            result = await call
        except BaseException as exc:
            self._failed(op, started, span, exc)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        said = outcome(result)
        if self._metering:
            self._meters.done(op, said, time.perf_counter() - started)
        if span is not None:
            span.set_attribute("session_repo.outcome", said)
            if isinstance(result, int) and not isinstance(result, bool):
                span.set_attribute("session_repo.removed", result)
            span.end()
        return result

    def _failed(self, op: str, started: float, span: trace.Span | None, exc: BaseException) -> None:
        """Say how the operation failed on its span and duration; never the session id.

        Only the library's own storage errors give their message (it is written to
        be logged); any other error is named by its type alone.
        """
        named = error_type(exc)
        if self._metering:
            self._meters.failed(op, named, time.perf_counter() - started)
        if span is None:
            return
        span.set_attribute("error.type", named)
        if isinstance(exc, StorageError):
            span.set_attribute("session_repo.transient", exc.transient)
        if isinstance(exc, StorageError | RepositoryClosed):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        elif isinstance(exc, asyncio.CancelledError):
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
        else:
            kind = "input" if isinstance(exc, SessionRepoError | TypeError) else "error"
            span.set_status(Status(StatusCode.ERROR, f"{kind}: {type(exc).__name__}"))
        span.end()

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

    async def touch(self, session_id: str, ttl: Ttl | None = None) -> bool:
        """Extend a live binding (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
            ttl: the binding's new life from now; ``None`` for the repository's default.
        """
        return await self._traced("touch", session_id, self._repo.touch(session_id, ttl), found)

    async def delete(self, session_id: str) -> bool:
        """Remove a binding (see ``SessionRepository``).

        Args:
            session_id: the client's session key.
        """
        return await self._traced("delete", session_id, self._repo.delete(session_id), found)

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
