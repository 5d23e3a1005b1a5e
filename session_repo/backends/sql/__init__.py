"""SQL backends on SQLAlchemy 2 async: SQLite, PostgreSQL, MariaDB/MySQL."""

from session_repo.backends.sql.repository import SqlSessionRepository

__all__ = ["SqlSessionRepository"]
