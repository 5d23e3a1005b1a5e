"""session-repo: which server instance owns which session, with a TTL.

Backends share one contract (``SessionRepository``); pick one with
``create_session_repository()`` or construct it directly.
"""

from session_repo._version import __version__
from session_repo.clock import Clock, SystemClock
from session_repo.config import SessionStoreConfig
from session_repo.errors import (
    ConfigError,
    InvalidInput,
    RepositoryClosed,
    SchemaOutOfDate,
    SessionRepoError,
    StorageError,
)
from session_repo.factory import create_session_repository
from session_repo.memory import MemorySessionRepository
from session_repo.metrics import Health, SessionStoreMetrics
from session_repo.null import NullSessionRepository
from session_repo.redis import RedisSessionRepository
from session_repo.repository import SessionRepository
from session_repo.resilient import ResilientSessionRepository
from session_repo.sql.repository import SqlSessionRepository

__all__ = [
    "Clock",
    "ConfigError",
    "Health",
    "InvalidInput",
    "MemorySessionRepository",
    "NullSessionRepository",
    "RedisSessionRepository",
    "RepositoryClosed",
    "ResilientSessionRepository",
    "SchemaOutOfDate",
    "SessionRepoError",
    "SessionRepository",
    "SessionStoreConfig",
    "SessionStoreMetrics",
    "SqlSessionRepository",
    "StorageError",
    "SystemClock",
    "__version__",
    "create_session_repository",
]
