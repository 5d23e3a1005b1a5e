"""A claim made during a real outage, lost on write-back, and the middleware told.

Machine A's store is a SQLite file behind ``ResilientSessionRepository``. Another
connection takes the file's write lock, so A degrades; a new MCP session is created
on A and claimed in the fallback. The lock goes, machine B claims the same session
in the file before A writes back, and A's claim loses. A must forget the session
at once: its next request is replayed to B, not served from A's memory.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from session_repo import ResilientSessionRepository, SqlSessionRepository
from session_repo.fly import FlyReplayMiddleware
from tests.fly.test_fly_hardening import request

SID = "4b1e0c9d7a2f48e6b3c5d8a9f0e1c2d3"


async def mcp_app(scope: Any, receive: Any, send: Any) -> None:
    """Hands out ``SID`` to a request without a session; serves any session."""
    await receive()
    has_key = any(name == b"mcp-session-id" for name, _ in scope["headers"])
    headers = [] if has_key else [(b"mcp-session-id", SID.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_a_claim_lost_after_a_real_outage_reroutes_the_next_request(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sessions.sqlite"
    primary = SqlSessionRepository(url, busy_timeout=0.05, cleanup_interval=0)
    repo = ResilientSessionRepository(primary, retry_count=1, probe_delay=0.5)
    async with repo, SqlSessionRepository(url, cleanup_interval=0) as machine_b:
        middleware = FlyReplayMiddleware(mcp_app, repo, instance_id="machine-a", ttl=60)
        await repo.lookup("warm-up")  # opens the file
        lock = sqlite3.connect(tmp_path / "sessions.sqlite", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        created = await request(middleware, [], method="POST")  # A creates it, degraded
        assert created.status == 200
        assert (await repo.health()).status == "degraded"
        key = [(b"mcp-session-id", SID.encode()), (b"content-length", b"0")]
        assert (await request(middleware, key, method="POST")).status == 200  # A serves it
        lock.execute("COMMIT")
        lock.close()
        assert await machine_b.claim(SID, "machine-b") == "machine-b"  # before A writes back
        for _ in range(400):
            if (await repo.metrics()).claims_lost:
                break
            await asyncio.sleep(0.01)
        assert (await repo.metrics()).claims_lost == 1
        await asyncio.sleep(0.01)  # the listener runs in its own task
        answer = await request(middleware, key, method="POST")
        assert answer.status == 307
        assert answer.headers[b"fly-replay"].startswith(b"instance=machine-b;")
        assert await machine_b.lookup(SID) == "machine-b"
