"""Fly.io session affinity: a pure ASGI middleware that replays misrouted requests.

``FlyReplayMiddleware`` answers a request that reached the wrong machine with a
``fly-replay`` header naming the session's owner.
"""

from session_repo.fly.middleware import FlyReplayMiddleware

__all__ = ["FlyReplayMiddleware"]
