"""Redis's error table: which errors of redis-py (or valkey-py) are worth another try.

Transient: a dropped or refused connection, a timeout, a server loading its data, a
replica refusing a write (a failover under way), and Redis Cluster's own states of
change: ``CLUSTERDOWN`` (and ``MASTERDOWN``), ``TRYAGAIN``, a ``MOVED`` or ``ASK``
the client ran out of redirections for, a slot no node serves yet, and a master
refusing writes while too few replicas are connected (``NOREPLICAS``, from
``min-replicas-to-write``: nothing was written). Permanent:
authentication, ``CROSSSLOT`` (a bug: keys of one script in two slots), the rest.

One more transient: a write on a connection closed under it (by the peer, or by the
cluster client, which closes every connection when it meets ``CLUSTERDOWN``) leaks
asyncio's ``TypeError``/``AttributeError`` instead of ``ConnectionError`` (redis-py
issues #3546, #4287): recognized by where it was raised.
"""

from __future__ import annotations

from session_repo._core.translate import is_transient as generic_is_transient
from session_repo.backends.redis.clients import families

__all__ = ["is_transient"]


def is_transient(exc: BaseException) -> bool:
    """A dropped or refused connection, a timeout, a server loading or a cluster in failover.

    Args:
        exc: what the driver raised.
    """
    for family in families():
        r = family.errors
        if isinstance(exc, r.AuthenticationError):
            return False
        transient = (
            r.ConnectionError,
            r.TimeoutError,
            r.BusyLoadingError,
            r.TryAgainError,
            r.ReadOnlyError,  # a replica during failover
            r.ClusterDownError,  # MASTERDOWN too
            r.AskError,  # MOVED too: redirections the client gave up on
            r.ClusterError,  # "TTL exhausted": as many redirections
            family.error("SlotNotCoveredError"),
        )
        if isinstance(exc, transient):
            return True
        if isinstance(exc, r.ResponseError) and str(exc).startswith("NOREPLICAS"):
            return True
        if isinstance(exc, family.base_error):
            return False
        if isinstance(exc, family.error("ClusterException")):
            return False
        if _closed_under_it(exc, f"{family.name}.asyncio.connection"):
            return True
    return generic_is_transient(exc)


def _closed_under_it(exc: BaseException, connection_module: str) -> bool:
    """A ``TypeError``/``AttributeError`` from a writer asyncio tore down mid-write."""
    if not isinstance(exc, (TypeError, AttributeError)):
        return False
    modules: list[str] = []
    frame = exc.__traceback__
    while frame is not None:
        modules.append(str(frame.tb_frame.f_globals.get("__name__", "")))
        frame = frame.tb_next
    if connection_module not in modules:
        return False
    innermost = modules[-1]
    return innermost.startswith("asyncio.") or (
        innermost == connection_module and "'NoneType' object" in str(exc)
    )
