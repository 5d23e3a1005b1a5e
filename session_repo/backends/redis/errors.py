"""Redis's error table: which errors of redis-py (or valkey-py) are worth another try."""

from __future__ import annotations

from session_repo._core.translate import is_transient as generic_is_transient
from session_repo.backends.redis.clients import families

__all__ = ["is_transient"]


def is_transient(exc: BaseException) -> bool:
    """A dropped or refused connection, a timeout, a server loading or a replica in failover.

    Args:
        exc: what the driver raised.
    """
    for family in families():
        r = family.errors
        if isinstance(exc, r.AuthenticationError):
            return False
        transient = (r.ConnectionError, r.TimeoutError, r.BusyLoadingError, r.TryAgainError)
        if isinstance(exc, transient):
            return True
        if isinstance(exc, r.ReadOnlyError):  # a replica during failover
            return True
        if isinstance(exc, family.base_error):
            return False
    return generic_is_transient(exc)
