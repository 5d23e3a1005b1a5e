"""``create_session_repository``: the right backend for a configuration.

A store that can fail (SQL, Redis) comes wrapped in ``ResilientSessionRepository``
unless ``fallback`` is ``"none"``; memory and null stores cannot fail and are
never wrapped.
"""

from __future__ import annotations

from typing import Any

from session_repo.backends.base import StoreFront
from session_repo.backends.memory import MemorySessionRepository
from session_repo.backends.null import NullSessionRepository
from session_repo.backends.redis import RedisSessionRepository
from session_repo.backends.sql.repository import SqlSessionRepository
from session_repo.clock import Clock
from session_repo.config import SessionStoreConfig, store_kind
from session_repo.contract import SessionRepository
from session_repo.resilience import ResilientSessionRepository

__all__ = ["create_session_repository"]


def create_session_repository(
    config: SessionStoreConfig | None = None, *, clock: Clock | None = None
) -> SessionRepository:
    """Build (not open) the repository that ``config`` describes.

    Args:
        config: the settings; ``None`` reads the ``SESSION_STORE_*`` environment now.
        clock: where time comes from, for every store built; ``None`` for ``SystemClock``.

    Returns:
        ``NullSessionRepository`` when disabled, ``MemorySessionRepository`` for
            ``memory://``, otherwise the SQL or Redis store, wrapped in
            ``ResilientSessionRepository`` unless ``config.fallback`` is ``"none"``.

    Raises:
        ConfigError: ``config`` is ``None`` and a ``SESSION_STORE_*`` value is malformed,
            or the backend it names cannot be built (e.g. its extra is missing).
    """
    if config is None:
        config = SessionStoreConfig.from_env()
    if not config.enabled:
        return NullSessionRepository()
    kind = store_kind(config.url)
    # What every backend takes from the configuration alike.
    common: dict[str, Any] = {
        "clock": clock,
        "default_ttl": config.ttl,
        "cleanup_interval": config.cleanup_interval,
        "cleanup_batch": config.cleanup_batch,
    }
    if kind == "memory":
        return MemorySessionRepository(max_sessions=config.max_sessions, **common)
    primary: StoreFront
    if kind == "redis":
        primary = RedisSessionRepository(
            config.url,
            wait_replicas=config.redis_wait_replicas,
            wait_timeout=config.redis_wait_timeout,
            **common,
        )
    else:
        primary = SqlSessionRepository(
            config.url,
            auto_migrate=config.auto_migrate,
            pool_size=config.pool_size,
            connect_timeout=config.connect_timeout,
            statement_timeout=config.statement_timeout,
            busy_timeout=config.busy_timeout,
            sqlite_synchronous=config.sqlite_synchronous,
            **common,
        )
    if config.fallback == "none":
        return primary
    fallback = MemorySessionRepository(max_sessions=config.max_sessions, **common)
    return ResilientSessionRepository(
        primary,
        fallback,
        retry_count=config.retry_count,
        retry_delay=config.retry_delay,
        journal_max=config.journal_max,
        warm_sessions=config.max_sessions,
    )
