"""A FastAPI app whose sessions stay on the Fly.io machine that created them.

The same counter as ``starlette_app.py``: ``POST /counter`` with no ``session-id``
header starts a session (kept only in this process's memory, its id in the
``session-id`` response header), ``POST`` with the header counts one more, ``GET``
reads, ``DELETE`` ends it; ``/healthz`` answers Fly's health checks.

FastAPI is Starlette underneath, so the middleware goes in ``middleware=`` and sees
the lifespan: the app's own startup opens the repository, then the middleware starts
heartbeating; at shutdown the middleware releases this machine's sessions before the
app's own shutdown closes the repository. (``fastapi_app.py`` shows the repository
injected from a ``Container`` instead; a ``Container`` makes its repository in the
lifespan, too late for a middleware that needs it when the app is built.)

Run one process per machine: ``uvicorn --factory fastapi_fly_app:create_app --host
0.0.0.0 --port 8080``. ``SESSION_STORE_URL`` names the shared store,
``SESSION_REPO_REPLAY_SECRET`` signs replays, Fly sets ``FLY_MACHINE_ID``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Response
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

from session_repo import SessionRepository, create_session_repository
from session_repo.asgi import health_app
from session_repo.fly import FlyReplayMiddleware

HEADER = "session-id"  # the request and response header that carries the session
TTL = 600.0  # seconds a binding lives unless renewed: as long as an idle session

SessionId = Annotated[str | None, Header(alias=HEADER)]


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
) -> FastAPI:
    """The app for one machine; ``None`` arguments come from the environment."""
    instance_id = instance_id or os.environ.get("FLY_MACHINE_ID") or os.environ.get("FLY_ALLOC_ID")
    store = repository if repository is not None else create_session_repository()
    counts: dict[str, int] = {}  # this machine's sessions, in memory only
    machine = instance_id or "local"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
    app = FastAPI(title="session-repo on Fly.io", lifespan=lifespan, middleware=middleware)

    def known(sid: str | None) -> JSONResponse | None:
        if sid is None:
            return JSONResponse({"error": f"no {HEADER} header"}, status_code=400)
        if sid not in counts:  # 404 for an unknown session: the middleware unbinds it
            return JSONResponse({"error": "unknown session"}, status_code=404)
        return None

    @app.post("/counter")
    async def count(session_id: SessionId = None) -> Response:
        if session_id is None:  # a new session, on this machine
            sid = secrets.token_urlsafe(24)
            counts[sid] = 0
            body = {"machine": machine, "count": 0}
            return JSONResponse(body, status_code=201, headers={HEADER: sid})
        if (refused := known(session_id)) is not None:
            return refused
        counts[session_id] += 1
        return JSONResponse({"machine": machine, "count": counts[session_id]})

    @app.get("/counter")
    async def read(session_id: SessionId = None) -> Response:
        if (refused := known(session_id)) is not None:
            return refused
        assert session_id is not None
        return JSONResponse({"machine": machine, "count": counts[session_id]})

    @app.delete("/counter", status_code=204)
    async def end(session_id: SessionId = None) -> Response:
        if (refused := known(session_id)) is not None:
            return refused
        assert session_id is not None
        del counts[session_id]  # 2xx: the middleware deletes the binding
        return Response(status_code=204)

    return app
