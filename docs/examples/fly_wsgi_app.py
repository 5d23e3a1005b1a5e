"""A blocking (WSGI) app that places sessions on Fly.io machines with ``session_repo.sync``.

WSGI has no ASGI middleware, so the placement is written out here: the first machine
to see a session claims it; a request for a session another machine holds is
answered with ``fly-replay`` and Fly's proxy delivers it there. The repository is a
``SyncSessionRepository``: plain blocking calls, safe from every worker thread, one
event loop running the async store behind them. Serve it with any WSGI server
(``gunicorn --threads 8 'fly_wsgi_app:create_app()'``).
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from session_repo.sync import SyncSessionRepository

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def create_app(
    repository: SyncSessionRepository | None = None,
    *,
    instance_id: str | None = None,
    ttl: float = 600,
) -> WSGIApp:
    """``GET /whoami`` with an ``X-Session`` header: which machine serves that session."""
    if repository is None:  # the SESSION_STORE_* store, closed when the process exits
        repository = SyncSessionRepository()
        atexit.register(repository.close)
    store = repository
    me = instance_id or os.environ.get("FLY_MACHINE_ID") or "local"

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        session = environ.get("HTTP_X_SESSION")
        if environ.get("PATH_INFO") != "/whoami" or not session:
            return _answer(start_response, "404 Not Found", {"error": "GET /whoami, X-Session"})
        owner = store.claim(session, me, ttl)  # blocks this worker thread only
        if owner != me and "HTTP_FLY_REPLAY_SRC" not in environ:
            replay = [("fly-replay", f"instance={owner};timeout=5s;fallback=force_self")]
            return _answer(start_response, "307 Temporary Redirect", None, replay)
        return _answer(start_response, "200 OK", {"machine": me, "owner": owner})

    return app


def _answer(
    start_response: StartResponse,
    status: str,
    body: dict[str, Any] | None,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    payload = b"" if body is None else json.dumps(body).encode()
    start_response(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            *(headers or []),
        ],
    )
    return [payload]
