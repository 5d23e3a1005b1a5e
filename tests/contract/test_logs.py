"""Every log record of a full run, faults included, is structured and holds no raw
session id (nor the replay secret). The library never configures logging."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from session_repo import (
    InvalidInput,
    MemorySessionRepository,
    ResilientSessionRepository,
    SqlSessionRepository,
)
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FakeClock

SECRETS = [uuid.uuid4().hex for _ in range(6)]
REPLAY_SECRET = "replay-" + uuid.uuid4().hex


def leaks(record: logging.LogRecord) -> list[str]:
    """Every place in a record where a secret shows."""
    texts = [record.getMessage(), repr(record.args)]
    texts += [repr(value) for value in vars(record).values()]
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    return [s for s in [*SECRETS, REPLAY_SECRET] for text in texts if s in text]


async def run_everything(tmp_path: Path, clock: FakeClock) -> None:
    one, two, three, four, five, six = SECRETS
    # Plain operations on two backends, including rejected input.
    for repo in (
        MemorySessionRepository(clock=clock),
        SqlSessionRepository(f"sqlite+aiosqlite:///{tmp_path}/a.sqlite", clock=clock),
    ):
        async with repo:
            await repo.upsert(one, "machine-a", ttl=1)
            await repo.claim(two, "machine-b")
            await repo.touch(one)
            await repo.lookup(three)
            with pytest.raises(InvalidInput):
                await repo.upsert(one + "\n", "machine-a")
            with pytest.raises(InvalidInput):
                await repo.upsert(one, one + " ")  # arguments mixed up
            clock.advance(2)
            await repo.cleanup()
            await repo.delete(two)
            await repo.metrics()

    # A store whose file is garbage at start: retries, the fallback, the write-back.
    path = tmp_path / "b.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    async with SqlSessionRepository(url, clock=clock, cleanup_interval=0) as plain:
        await plain.upsert(four, "machine-a")
    backup = path.read_bytes()
    path.write_bytes(os.urandom(len(backup)))
    primary = SqlSessionRepository(url, clock=clock, cleanup_interval=0)
    async with ResilientSessionRepository(
        primary, retry_count=2, retry_delay=0.01, probe_delay=0.05, probe_max_delay=0.1
    ) as resilient:
        await resilient.upsert(five, "machine-b")  # served by the fallback
        await resilient.claim(six, "machine-c")
        assert (await resilient.health()).status == "degraded"
        path.write_bytes(backup)
        for _ in range(100):
            if (await resilient.health()).status == "ok":
                break
            await asyncio.sleep(0.05)
        assert (await resilient.health()).status == "ok"
        assert await resilient.lookup(five) == "machine-b"
        assert await resilient.lookup(four) == "machine-a"

    # The middleware, with a signing secret and a store that fails under it.
    broken = SqlSessionRepository(f"sqlite+aiosqlite:///{tmp_path}/a-file/x/db.sqlite")
    (tmp_path / "a-file").write_text("not a directory")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = FlyReplayMiddleware(
        app, broken, instance_id="machine-a", state_secret=REPLAY_SECRET
    )
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    for session in (one, two):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/mcp",
            "headers": [(b"mcp-session-id", session.encode()), (b"content-length", b"0")],
        }
        await middleware(scope, receive, send)
    assert sent[0]["status"] == 200  # served here despite the store
    await broken.close()


async def test_no_record_holds_a_secret(
    tmp_path: Path, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await run_everything(tmp_path, fake_clock)
    ours = [r for r in caplog.records if r.name.startswith("session_repo")]
    assert {r.levelname for r in ours} >= {"WARNING", "INFO"}  # the run did log things
    assert [leaks(r) for r in caplog.records if leaks(r)] == []
    for record in ours:
        assert hasattr(record, "operation"), record.getMessage()
        assert hasattr(record, "outcome"), record.getMessage()


def test_the_library_configures_no_logging() -> None:
    import session_repo.cli
    import session_repo.fly  # noqa: F401

    tree = logging.getLogger("session_repo")
    assert tree.handlers == []
    assert tree.level == logging.NOTSET
    assert tree.propagate is True
