"""A plain Starlette app with its own session cookie, kept on its Fly.io machine.

``POST /login`` starts a session: a random ``sid`` cookie, and a cart that lives only
in this process's memory. ``POST /cart/{item}`` and ``GET /cart`` use it; ``DELETE
/session`` ends it. ``FlyReplayMiddleware(cookie="sid")`` reads the session key from
that cookie (and learns a new one from ``Set-Cookie``), so every request for a cart
reaches the machine that holds it. Run one process per machine:
``uvicorn --factory fly_cookie_app:create_app --host 0.0.0.0 --port 8080``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from session_repo import SessionRepository, create_session_repository
from session_repo.fly import FlyReplayMiddleware

COOKIE = "sid"


def create_app(
    repository: SessionRepository | None = None,
    *,
    instance_id: str | None = None,
    state_secret: str | None = None,
) -> Starlette:
    """The app for one machine; ``None`` arguments come from the environment."""
    instance_id = instance_id or os.environ.get("FLY_MACHINE_ID") or os.environ.get("FLY_ALLOC_ID")
    store = repository if repository is not None else create_session_repository()
    carts: dict[str, list[str]] = {}  # this machine's sessions, in memory only
    machine = instance_id or "local"

    async def login(request: Request) -> Response:
        sid = secrets.token_urlsafe(24)
        carts[sid] = []
        response = JSONResponse({"machine": machine}, status_code=201)
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, sid, httponly=True, samesite="lax", secure=secure)
        return response

    def cart_of(request: Request) -> list[str] | Response:
        sid = request.cookies.get(COOKIE)
        if sid is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        if sid not in carts:  # 404 for an unknown session: the middleware unbinds it
            return JSONResponse({"error": "unknown session"}, status_code=404)
        return carts[sid]

    async def add(request: Request) -> Response:
        cart = cart_of(request)
        if isinstance(cart, Response):
            return cart
        cart.append(request.path_params["item"])
        return JSONResponse({"machine": machine, "items": cart})

    async def show(request: Request) -> Response:
        cart = cart_of(request)
        if isinstance(cart, Response):
            return cart
        return JSONResponse({"machine": machine, "items": cart})

    async def logout(request: Request) -> Response:
        carts.pop(request.cookies.get(COOKIE, ""), None)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE)
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:
            yield
            if instance_id:  # this machine's carts die with it: release their bindings
                await store.delete_owner(instance_id)

    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/cart/{item}", add, methods=["POST"]),
        Route("/cart", show, methods=["GET"]),
        Route("/session", logout, methods=["DELETE"]),
    ]
    fly = Middleware(
        FlyReplayMiddleware,
        repository=store,
        instance_id=instance_id,
        cookie=COOKIE,
        state_secret=state_secret,
    )
    return Starlette(routes=routes, middleware=[fly], lifespan=lifespan)
