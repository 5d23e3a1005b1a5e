"""``Calls``: what one repository call records, a span and a duration, and whether to record.

The traced repository hands each call here with its operation's name and how to
name its outcome; the span's name and attributes are the conventions'
(``session_repo.opentelemetry.conventions``), the duration is the meters'.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from session_repo._version import __version__
from session_repo.contract import SessionRepository, session_ref
from session_repo.errors import RepositoryClosed, SessionRepoError, StorageError
from session_repo.opentelemetry.conventions import SCOPE, describe, error_type, sdk_behind
from session_repo.opentelemetry.meters import Meters

__all__ = ["Calls"]

T = TypeVar("T")


class Calls:
    """One repository's tracer and meters, and the recording of each call on them.

    Args:
        repository: the repository whose calls these are (its gauges are read too).
        backend: its backend's name.
        tracer_provider: where spans go; the global one when None.
        meter_provider: where metrics go; the global one when None.
        attributes: more attributes for every span.
        refresh_timeout: how long one read of the gauges (``metrics()``) may take.
    """

    def __init__(
        self,
        repository: SessionRepository,
        backend: str,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        attributes: Mapping[str, AttributeValue] | None,
        refresh_timeout: float,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        described = describe(backend, attributes)
        self._names, self._span_attrs = described.names, described.span_attributes
        meter = (meter_provider or otel_metrics).get_meter(SCOPE, __version__)
        self.meters = Meters(meter, repository, described.metric_attributes, refresh_timeout)
        """The repository's instruments."""
        self._tracer = (tracer_provider or trace).get_tracer(SCOPE, __version__)
        self._tracing = self._metering = False

    def arm(self) -> bool:
        """Look again for an SDK behind the providers; whether calls are to be recorded."""
        if self._tracing and self._metering:
            return True  # a global provider, once set, stays set
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or otel_metrics.get_meter_provider()
        self._tracing, self._metering = sdk_behind(tracer_provider, meter_provider)
        if self._tracing:  # the SDK's own tracer: no proxy between
            self._tracer = tracer_provider.get_tracer(SCOPE, __version__)
        return self._tracing or self._metering

    async def traced(
        self,
        op: str,
        session_id: str | None,
        call: Awaitable[T],
        outcome: Callable[[T], str],
    ) -> T:
        """Await ``call`` as operation ``op``, in a span and timed.

        Args:
            op: the operation's name (one of ``OPERATIONS``).
            session_id: the session it is about, if any: only its log reference is recorded.
            call: the wrapped repository's call, not yet awaited.
            outcome: names the outcome of a result (``hit``, ``won``, ``ok``...).
        """
        span = token = None
        try:
            if self.meters.loop is None:
                self.meters.loop = asyncio.get_running_loop()
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
            self.meters.done(op, said, time.perf_counter() - started)
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
            self.meters.failed(op, named, time.perf_counter() - started)
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
