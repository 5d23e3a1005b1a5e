"""Bindings in Redis (or Valkey), one key per session with native TTLs."""

from session_repo.backends.redis.repository import RedisSessionRepository

__all__ = ["RedisSessionRepository"]
