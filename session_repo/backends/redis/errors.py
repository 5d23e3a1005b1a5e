"""Redis's error table: which errors of redis-py (or valkey-py) are worth another try.

Transient: a dropped or refused connection, a timeout, a server loading its data, a
replica refusing a write (a failover under way), and Redis Cluster's own states of
change: ``CLUSTERDOWN`` (and ``MASTERDOWN``), ``TRYAGAIN``, a ``MOVED`` or ``ASK``
the client ran out of redirections for, a slot no node serves yet. Permanent:
authentication, ``CROSSSLOT`` (a bug: keys of one script in two slots), the rest.
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
        if isinstance(exc, family.base_error):
            return False
        if isinstance(exc, family.error("ClusterException")):
            return False
    return generic_is_transient(exc)
