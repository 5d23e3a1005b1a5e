"""Fly.io session affinity: a pure ASGI middleware that replays misrouted requests.

``FlyReplayMiddleware`` answers a request that reached the wrong machine with a
``fly-replay`` header naming the session's owner. ``KeyFunction`` is the shape of
its ``key`` option: a callable that reads a session key from the ASGI scope.
"""

from session_repo.fly.keys import KeyFunction
from session_repo.fly.middleware import FlyReplayMiddleware

__all__ = ["FlyReplayMiddleware", "KeyFunction"]
