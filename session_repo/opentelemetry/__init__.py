"""OpenTelemetry export (extra ``[opentelemetry]``): ``instrument`` and ``TracedSessionRepository``.

``instrument(repository)`` wraps a repository in one whose operations
(``lookup``, ``upsert``, ``claim``, ``touch``, ``delete``, ``delete_owner``,
``cleanup``, and the leases' ``acquire``, ``lease``, ``heartbeat``, ``release``,
``owners``) each make a span named and attributed by the database semantic
conventions and record ``db.client.operation.duration``; the counters and gauges
that ``session_repo.prometheus`` exports are observable instruments here. A
session id appears only as its log reference (``session_ref``), never in clear.

Only ``opentelemetry-api`` is needed: the application configures the SDK. With
none configured, the instrumented repository's operations are the wrapped one's
own bound methods, so instrumenting costs nothing until an SDK is there.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from session_repo.contract import SessionRepository
from session_repo.opentelemetry.repository import OPERATIONS, TracedSessionRepository

__all__ = ["OPERATIONS", "TracedSessionRepository", "instrument"]


def instrument(
    repository: SessionRepository,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> TracedSessionRepository:
    """Wrap ``repository`` so that its operations make OpenTelemetry spans and metrics.

    Use the returned repository in its place (``async with``, the middleware, the
    container); closing it closes ``repository``. Configure the SDK before the
    repository opens: an SDK set later is noticed on the next open, ``metrics()``
    or ``health()``.

    Args:
        repository: the repository to instrument.
        tracer_provider: where spans go; the global one when None.
        meter_provider: where metrics go; the global one when None.
        attributes: more attributes for every span (``server.address``,
            ``server.port``, ``db.namespace``).

    Returns:
        The instrumented repository.

    Raises:
        TypeError: ``repository`` is not a ``SessionRepository``.
    """
    return TracedSessionRepository(
        repository,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        attributes=attributes,
    )
