"""``health_app``: a tiny ASGI health endpoint for Fly.io and Kubernetes checks.

Answers any GET or HEAD with the repository's ``health()`` as JSON: 200 when
"ok", ``degraded_status`` (200 by default: the service still answers, from its
fallback) when "degraded", 503 when "down" or closed. Mount it at ``/healthz``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from session_repo.contract import SessionRepository
from session_repo.errors import RepositoryClosed
from session_repo.metrics import Health

__all__ = ["health_app"]

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Mapping[str, Any], Receive, Send], Awaitable[None]]


def health_app(repository: SessionRepository, *, degraded_status: int = 200) -> ASGIApp:
    """An ASGI app reporting ``repository.health()``, for a platform's health check.

    Args:
        repository: the repository whose health is reported.
        degraded_status: the HTTP status for "degraded" (serving from a fallback).

    Returns:
        The ASGI app: 200 for "ok", ``degraded_status`` for "degraded", 503 for "down"
        or a closed repository, 405 for a method other than GET or HEAD.
    """

    async def app(scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, {"error": "use GET"}, head=False, allow=True)
            return
        try:
            health = await repository.health()
        except RepositoryClosed:
            health = Health("down", "closed", "the repository is closed")
        code = {"ok": 200, "degraded": degraded_status}.get(health.status, 503)
        body = {"status": health.status, "backend": health.backend, "detail": health.detail}
        await _respond(send, code, body, head=scope["method"] == "HEAD")

    return app


async def _respond(
    send: Send, status: int, body: dict[str, str], *, head: bool, allow: bool = False
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
