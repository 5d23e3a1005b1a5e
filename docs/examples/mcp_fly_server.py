"""An MCP server (Streamable HTTP, stateful) whose sessions stay on the Fly.io machine
that created them.

Each machine runs one process of this app (``uvicorn --factory mcp_fly_server:create_app
--host 0.0.0.0 --port 8080``): MCP keeps a session in that process's memory, and
``FlyReplayMiddleware`` sends every request for it back there with ``fly-replay``.
``SESSION_STORE_URL`` names the store the machines share, ``SESSION_REPO_REPLAY_SECRET``
signs replays, and Fly sets ``FLY_MACHINE_ID`` and ``FLY_APP_NAME``.

The tools say which machine answered and how many calls this session has made there,
state that exists only in that machine's memory. ``/healthz`` answers Fly's health
checks (``health_app``: 200 while the store serves, 503 when it is down).

The lifespan, in order: the app's own startup opens the repository and starts the MCP
session manager; then the middleware starts heartbeating for this machine (it waits
for the app's startup to complete). At shutdown the middleware stops the heartbeat
and releases this machine's sessions first; then the app's own shutdown stops the
session manager and closes the repository.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cachetools import LRUCache
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount

from session_repo import SessionRepository, create_session_repository
from session_repo.asgi import health_app
from session_repo.fly import FlyReplayMiddleware

TTL = 600.0  # seconds; a binding lives as long as an idle MCP session


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
    server = MCPServer("session-repo on Fly.io")
    calls: LRUCache[str, int] = LRUCache(maxsize=10_000)  # per session, in this process only

    @server.tool()
    def whoami() -> str:
        """The machine serving this session."""
        return instance_id or "local"

    @server.tool()
    def count(ctx: Context) -> int:
        """How many times this session has called ``count`` (kept in this machine's memory)."""
        session = (ctx.headers or {}).get("mcp-session-id")
        if not session:  # a 2026-07-28 (stateless) client has no session to count in
            raise ToolError("count needs a session: connect with the initialize handshake")
        calls[session] = calls.get(session, 0) + 1
        return calls[session]

    mcp_app = server.streamable_http_app(
        session_idle_timeout=TTL, transport_security=_transport_security()
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The middleware releases this machine's sessions before this shutdown runs.
        async with store, server.session_manager.run():
            yield

    fly = Middleware(
        FlyReplayMiddleware,
        repository=store,
        instance_id=instance_id,
        ttl=TTL,
        state_secret=state_secret,
        replay_cache=replay_cache,
    )
    health = Middleware(with_health, repository=store)  # no session key: passed through
    routes = [Mount("/", app=mcp_app)]
    return Starlette(routes=routes, middleware=[fly, health], lifespan=lifespan)


def _transport_security() -> TransportSecuritySettings | None:
    """MCP's DNS-rebinding check: the app's public name on Fly, loopback elsewhere."""
    app_name = os.environ.get("FLY_APP_NAME")
    if not app_name:
        return None  # the SDK's default for a server bound to 127.0.0.1
    return TransportSecuritySettings(
        allowed_hosts=[f"{app_name}.fly.dev", f"{app_name}.fly.dev:*"],
        allowed_origins=[f"https://{app_name}.fly.dev"],
    )
