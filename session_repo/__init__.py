"""session-repo: which server instance owns which session, with a TTL.

Backends share one contract (``SessionRepository``); pick one with
``create_session_repository()`` or construct it directly.
"""

import importlib as _importlib
import typing as _typing

from session_repo._version import __version__
from session_repo.clock import Clock, SystemClock
from session_repo.config import SessionStoreConfig
from session_repo.contract import SessionRepository
from session_repo.errors import (
    ConfigError,
    InvalidInput,
    RepositoryClosed,
    SchemaOutOfDate,
    SessionRepoError,
    StorageError,
)
from session_repo.lease import Lease
from session_repo.metrics import Health, SessionStoreMetrics

if _typing.TYPE_CHECKING:
    from session_repo.backends.memory import MemorySessionRepository
    from session_repo.backends.null import NullSessionRepository
    from session_repo.backends.redis import RedisSessionRepository
    from session_repo.backends.sql.repository import SqlSessionRepository
    from session_repo.factory import create_session_repository
    from session_repo.resilience import ResilientSessionRepository

# Backends load on first use, so ``import session_repo.fly`` (or ``.testing``) loads
# no database driver, SQLAlchemy or Alembic.
_LAZY = {
    "MemorySessionRepository": "session_repo.backends.memory",
    "NullSessionRepository": "session_repo.backends.null",
    "RedisSessionRepository": "session_repo.backends.redis",
    "ResilientSessionRepository": "session_repo.resilience",
    "SqlSessionRepository": "session_repo.backends.sql.repository",
    "create_session_repository": "session_repo.factory",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'session_repo' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Clock",
    "ConfigError",
    "Health",
    "InvalidInput",
    "Lease",
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
