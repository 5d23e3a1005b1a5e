"""Fly.io session affinity: a pure ASGI middleware that answers misrouted requests with ``fly-replay``."""

from session_repo.fly.middleware import FlyReplayMiddleware

__all__ = ["FlyReplayMiddleware"]
