"""What the database semantic conventions make of our operations: names, attributes, errors.

Span name ``{db.operation.name} {target}`` (the SQL backends' table, else
``db.namespace`` or ``server.address:port`` when given, else none), kind
``CLIENT``; attributes ``db.system.name`` (the backend: ``sqlite``, ``postgresql``,
``mysql``, ``mariadb``, ``redis``, ``valkey``, ``memory``), ``db.operation.name``,
``db.collection.name``, and our own ``session_repo.backend``,
``session_repo.outcome`` (``hit``/``miss`` for lookup and lease, ``won``/``lost``
for claim and acquire, ``ok``/``miss`` for touch and delete, else ``ok``),
``session_repo.session.ref`` (the session's log reference, never its id) and
``session_repo.removed``. On failure: ``error.type`` (the class of the error
beneath a ``StorageError``: ``sqlite3.OperationalError``; else the error's own),
status ``ERROR``, and for the library's own storage errors their message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from session_repo.errors import StorageError

__all__ = ["OPERATIONS", "SCOPE", "Described", "describe", "error_type", "sdk_behind"]

OPERATIONS = (
    "upsert", "lookup", "claim", "touch", "delete", "delete_owner", "cleanup",
    "acquire", "lease", "heartbeat", "release", "owners",
)  # fmt: skip
"""The operations that get a span and a duration."""

SCOPE = "session_repo"
"""The instrumentation scope's name."""

Attributes = dict[str, AttributeValue]

# The SQL backends' one table (session_repo.backends.sql.model): their db.collection.name.
SQL_TABLE = "session_bindings"
_SQL = frozenset({"sqlite", "postgresql", "mysql", "mariadb"})


@dataclass(frozen=True, slots=True)
class Described:
    """Each operation's span name and attributes, and every data point's attributes."""

    names: dict[str, str]
    span_attributes: dict[str, Attributes]
    metric_attributes: Attributes


def describe(backend: str, extra: Mapping[str, AttributeValue] | None) -> Described:
    """Span names and attributes for a backend, with the caller's ``extra`` attributes."""
    system = backend.lower()
    common: Attributes = {"db.system.name": system}
    if system in _SQL:
        common["db.collection.name"] = SQL_TABLE
    common.update(extra or {})
    # the span's {target}, as the conventions rank them: table, namespace, server
    found = common.get("db.collection.name") or common.get("db.namespace")
    target = None if found is None else str(found)
    if target is None and "server.address" in common:
        port = common.get("server.port")
        target = str(common["server.address"]) + ("" if port is None else f":{port!s}")
    return Described(
        names={op: f"{op} {target}" if target else op for op in OPERATIONS},
        span_attributes={
            op: {**common, "db.operation.name": op, "session_repo.backend": backend}
            for op in OPERATIONS
        },
        metric_attributes={"db.system.name": system, "session_repo.backend": backend},
    )


def sdk_behind(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> tuple[bool, bool]:
    """Whether an SDK is behind each provider (not the API's own proxy or no-op)."""
    # The API's stand-in meter provider has no public class (its tracer's has).
    proxy_meters = getattr(otel_metrics._internal, "_ProxyMeterProvider", ())
    tracing = not isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    metering = not isinstance(meter_provider, otel_metrics.NoOpMeterProvider) and not (
        proxy_meters and isinstance(meter_provider, proxy_meters)
    )
    return tracing, metering


def error_type(exc: BaseException) -> str:
    """``error.type``: the class of the error beneath a ``StorageError``, module-qualified."""
    cause: BaseException = exc
    if isinstance(exc, StorageError) and exc.__cause__ is not None:
        cause = exc.__cause__
        orig = getattr(cause, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        if isinstance(orig, BaseException):
            cause = orig
    kind = type(cause)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def ok(result: object) -> str:
    """The outcome of a call that has no other: ``ok``."""
    return "ok"


def hit(found: object) -> str:
    """A lookup's or lease's outcome: ``hit``, or ``miss`` when there was no live binding."""
    return "miss" if found is None else "hit"


def found(done: bool) -> str:
    """A touch's or delete's outcome: ``ok``, or ``miss`` (no live binding of that generation)."""
    return "ok" if done else "miss"
