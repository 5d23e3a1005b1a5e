"""SQL backends on SQLAlchemy 2 async: SQLite, PostgreSQL, MariaDB/MySQL."""

from session_repo.sql.repository import SqlSessionRepository

__all__ = ["SqlSessionRepository"]
