"""A Litestar app whose sessions stay on the Fly.io machine that created them.

The same counter as ``starlette_app.py``: ``POST /counter`` with no ``session-id``
header starts a session (kept only in this process's memory, its id in the
``session-id`` response header), ``POST`` with the header counts one more, ``GET``
reads, ``DELETE`` ends it; ``/healthz`` answers Fly's health checks.

Litestar answers the ASGI lifespan itself, before its own middleware, and runs its
middleware only for requests that match a route. So ``FlyReplayMiddleware`` wraps
the whole Litestar app: it then sees every request and the lifespan. The app's own
lifespan opens the repository, then the middleware starts heartbeating; at shutdown
the middleware releases this machine's sessions before the app's lifespan closes the
repository.

Run one process per machine: ``uvicorn --factory litestar_app:create_app --host
0.0.0.0 --port 8080``. ``SESSION_STORE_URL`` names the shared store,
``SESSION_REPO_REPLAY_SECRET`` signs replays, Fly sets ``FLY_MACHINE_ID``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, asgi, route

from session_repo import SessionRepository, create_session_repository
from session_repo.asgi import health_app
from session_repo.fly import FlyReplayMiddleware

HEADER = "session-id"  # the request and response header that carries the session
TTL = 600.0  # seconds a binding lives unless renewed: as long as an idle session


def create_app(
    repository: SessionRepository | None = None,
    *,
    instance_id: str | None = None,
    state_secret: str | None = None,
    replay_cache: bool | None = None,
) -> FlyReplayMiddleware:
    """The app for one machine; ``None`` arguments come from the environment."""
    instance_id = instance_id or os.environ.get("FLY_MACHINE_ID") or os.environ.get("FLY_ALLOC_ID")
    store = repository if repository is not None else create_session_repository()
    counts: dict[str, int] = {}  # this machine's sessions, in memory only
    machine = instance_id or "local"

    @route("/counter", http_method=["GET", "POST", "DELETE"])
    async def counter(request: Request[Any, Any, Any]) -> Response[Any]:
        session_id = request.headers.get(HEADER)
        if session_id is None and request.method == "POST":  # a new session, on this machine
            sid = secrets.token_urlsafe(24)
            counts[sid] = 0
            body = {"machine": machine, "count": 0}
            return Response(body, status_code=201, headers={HEADER: sid})
        if session_id is None:
            return Response({"error": f"no {HEADER} header"}, status_code=400)
        if session_id not in counts:  # 404 for an unknown session: the middleware unbinds it
            return Response({"error": "unknown session"}, status_code=404)
        if request.method == "DELETE":  # 2xx: the middleware deletes the binding
            del counts[session_id]
            return Response(None, status_code=204)
        if request.method == "POST":
            counts[session_id] += 1
        return Response({"machine": machine, "count": counts[session_id]}, status_code=200)

    healthz = asgi("/healthz", copy_scope=False)(health_app(store))  # 200 while the store serves

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with store:  # open before the heartbeat starts, closed after the release
            yield

    # logging_config=None: leave logging to the server (uvicorn) and the process
    app: Any = Litestar(  # Any: Litestar types ASGI messages more narrowly than plain ASGI
        route_handlers=[counter, healthz], lifespan=[lifespan], logging_config=None
    )
    return FlyReplayMiddleware(
        app,
        store,
        instance_id=instance_id,
        header=HEADER,
        ttl=TTL,
        state_secret=state_secret,
        replay_cache=replay_cache,
    )
