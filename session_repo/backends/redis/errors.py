"""Redis's error table: which redis-py errors are worth another try."""

from __future__ import annotations

from session_repo._core.translate import is_transient as generic_is_transient

__all__ = ["is_transient"]


def is_transient(exc: BaseException) -> bool:
    """A dropped or refused connection, a timeout, a server loading or a replica in failover.

    Args:
        exc: what the driver raised.
    """
    from redis import exceptions as r

    if isinstance(exc, r.AuthenticationError):
        return False
    if isinstance(exc, r.ConnectionError | r.TimeoutError | r.BusyLoadingError | r.TryAgainError):
        return True
    if isinstance(exc, r.ReadOnlyError):  # a replica during failover
        return True
    if isinstance(exc, r.RedisError):
        return False
    return generic_is_transient(exc)
