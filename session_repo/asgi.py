"""``health_app``: a tiny ASGI health endpoint for Fly.io and Kubernetes checks.

Answers any GET or HEAD with the repository's ``health()`` as JSON: 200 when
"ok", ``degraded_status`` (200 by default: the service still answers, from its
fallback) when "degraded", 503 when "down" or closed. Mount it at ``/healthz``.
"""

from __future__ import annotations

import json

from session_repo._asgi import ASGIApp, Receive, Scope, Send, send_response, serve_lifespan
from session_repo.contract import SessionRepository
from session_repo.errors import RepositoryClosed
from session_repo.metrics import Health

__all__ = ["health_app"]


def health_app(repository: SessionRepository, *, degraded_status: int = 200) -> ASGIApp:
    """An ASGI app reporting ``repository.health()``, for a platform's health check.

    Args:
        repository: the repository whose health is reported.
        degraded_status: the HTTP status for "degraded" (serving from a fallback).

    Returns:
        The ASGI app: 200 for "ok", ``degraded_status`` for "degraded", 503 for "down"
        or a closed repository, 405 for a method other than GET or HEAD.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
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
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send_response(send, status, headers, json.dumps(body).encode(), head=head)
