"""A Starlette app whose sessions stay on the Fly.io machine that created them.

``POST /counter`` with no ``session-id`` header starts a session: a counter kept only
in this process's memory, its id in the ``session-id`` response header. ``POST
/counter`` with the header counts one more, ``GET /counter`` reads it, ``DELETE
/counter`` ends it. ``FlyReplayMiddleware`` sends every request for a session to the
machine that holds it, and ``/healthz`` answers Fly's health checks.

The lifespan, in order: the app's own startup opens the repository; then the
middleware starts heartbeating for this machine (it waits for the app's startup to
complete); at shutdown the middleware stops the heartbeat and releases the machine's
sessions first, and only then does the app's own shutdown close the repository.

Run one process per machine: ``uvicorn --factory starlette_app:create_app --host
0.0.0.0 --port 8080``. ``SESSION_STORE_URL`` names the store the machines share,
``SESSION_REPO_REPLAY_SECRET`` signs replays, Fly sets ``FLY_MACHINE_ID``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from session_repo import SessionRepository, create_session_repository
from session_repo.asgi import health_app
from session_repo.fly import FlyReplayMiddleware

HEADER = "session-id"  # the request and response header that carries the session
TTL = 600.0  # seconds a binding lives unless renewed: as long as an idle session


def with_health(app: Any, repository: SessionRepository, path: str = "/healthz") -> Any:
    """``app``, with ``path`` answered by ``health_app``: 200 while the store serves, else 503."""
    health = health_app(repository)

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == path:
            await health(scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve


def create_app(
    repository: SessionRepository | None = None,
    *,
    instance_id: str | None = None,
    state_secret: str | None = None,
    replay_cache: bool | None = None,
) -> Starlette:
    """The app for one machine; ``None`` arguments come from the environment."""
    instance_id = instance_id or os.environ.get("FLY_MACHINE_ID") or os.environ.get("FLY_ALLOC_ID")
    store = repository if repository is not None else create_session_repository()
    counts: dict[str, int] = {}  # this machine's sessions, in memory only
    machine = instance_id or "local"

    async def counter(request: Request) -> Response:
        sid = request.headers.get(HEADER)
        if sid is None and request.method == "POST":  # a new session, on this machine
            sid = secrets.token_urlsafe(24)
            counts[sid] = 0
            body = {"machine": machine, "count": 0}
            return JSONResponse(body, status_code=201, headers={HEADER: sid})
        if sid is None:
            return JSONResponse({"error": f"no {HEADER} header"}, status_code=400)
        if sid not in counts:  # 404 for an unknown session: the middleware unbinds it
            return JSONResponse({"error": "unknown session"}, status_code=404)
        if request.method == "DELETE":  # 2xx: the middleware deletes the binding
            del counts[sid]
            return Response(status_code=204)
        if request.method == "POST":
            counts[sid] += 1
        return JSONResponse({"machine": machine, "count": counts[sid]})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:  # open before the heartbeat starts, closed after the release
            yield

    middleware = [
        Middleware(
            FlyReplayMiddleware,
            repository=store,
            instance_id=instance_id,
            header=HEADER,
            ttl=TTL,
            state_secret=state_secret,
            replay_cache=replay_cache,
        ),
        Middleware(with_health, repository=store),  # no session key: passed straight through
    ]
    routes = [Route("/counter", counter, methods=["GET", "POST", "DELETE"])]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
