"""Hypothesis throws anything at every public method: the answer is a typed error
(``TypeError`` or ``InvalidInput``) with nothing written, or a correct result. And it
throws any header bytes at ``FlyReplayMiddleware``: the answer is always one sane
response, never an exception."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_repo import InvalidInput, MemorySessionRepository, SqlSessionRepository
from session_repo.contract import SessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.fly.replay_state import ReplayStateSigner, session_digest
from session_repo.testing import FakeClock

# The contract's input rules (CONTRACT.md): lengths of a session id and an alloc id.
MAX_SESSION_ID = 1024
MAX_ALLOC_ID = 255

ANYTHING = st.one_of(
    st.text(max_size=MAX_SESSION_ID + 20),  # any unicode, surrogates included
    st.text(alphabet=st.characters(codec="ascii"), max_size=300),
    st.binary(max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
)
SQL_INJECTION = st.sampled_from(
    ["'; DROP TABLE session_bindings; --", "x' OR '1'='1", 'a"b', "%s%s%n", "\\x00"]
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def valid_session_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_SESSION_ID
        and not any(c < " " or c == "\x7f" for c in value)
    )


def valid_alloc_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_ALLOC_ID
        and all("!" <= c <= "~" for c in value)
    )


def valid_ttl(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        seconds = float(value)
    except OverflowError:
        return False
    return math.isfinite(seconds) and 0 < seconds <= 100 * 365 * 24 * 3600


@pytest.fixture(params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[asyncio.Runner, SessionRepository]]:
    runner = asyncio.Runner()
    repo: SessionRepository
    # A clock that stands still: a valid ttl of a millisecond must not run out between
    # the write and the read that checks it.
    clock = FakeClock()
    if request.param == "memory":
        repo = MemorySessionRepository(clock=clock)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/f.sqlite"
        repo = SqlSessionRepository(url, cleanup_interval=0, clock=clock)
    runner.run(repo.upsert("sentinel", "machine-sentinel"))
    yield runner, repo
    runner.run(repo.close())
    runner.close()


def unchanged(runner: asyncio.Runner, repo: SessionRepository, before: int) -> None:
    metrics = runner.run(repo.metrics())
    assert metrics.sessions == before
    assert runner.run(repo.lookup("sentinel")) == "machine-sentinel"


@SETTINGS
@given(session_id=ANYTHING | SQL_INJECTION, alloc_id=ANYTHING | SQL_INJECTION, ttl=ANYTHING)
def test_upsert_claim_touch(harness: Any, session_id: Any, alloc_id: Any, ttl: Any) -> None:
    runner, repo = harness
    before = runner.run(repo.metrics()).sessions
    ok = valid_session_id(session_id) and valid_alloc_id(alloc_id) and valid_ttl(ttl)
    for call in (
        lambda: repo.upsert(session_id, alloc_id, ttl),
        lambda: repo.claim(session_id, alloc_id, ttl, replacing=alloc_id),
    ):
        if ok:
            runner.run(call())
            assert runner.run(repo.lookup(session_id)) == alloc_id
        else:
            with pytest.raises((TypeError, InvalidInput)) as info:
                runner.run(call())
            if isinstance(session_id, str) and len(session_id) >= 8:
                assert session_id not in str(info.value)  # never echoed
            unchanged(runner, repo, before)
    if ok:
        assert runner.run(repo.touch(session_id, ttl)) is True
        assert runner.run(repo.delete(session_id)) is True
        unchanged(runner, repo, before)


@SETTINGS
@given(value=ANYTHING | SQL_INJECTION)
def test_single_argument_methods(harness: Any, value: Any) -> None:
    runner, repo = harness
    before = runner.run(repo.metrics()).sessions
    for method, valid in (
        (repo.lookup, valid_session_id),
        (repo.delete, valid_session_id),
        (repo.touch, valid_session_id),
        (repo.delete_owner, valid_alloc_id),
    ):
        if valid(value):
            result = runner.run(method(value))
            assert result in (None, False, 0) or value == "machine-sentinel"
        else:
            with pytest.raises((TypeError, InvalidInput)):
                runner.run(method(value))
        unchanged(runner, repo, before)


# -- FlyReplayMiddleware: any header bytes a client can send ------------------------------

FLY_SID = "3f9c2a7e41d84b0f9a1c6e5d2b7a8c90"
FLY_NOW = 1_700_000_000.0
FLY_SECRET = "fuzz-secret"
FLY_REPLAY = re.compile(
    rb"instance=machine-b;state=v1\.[0-9]{1,12}\.[A-Za-z0-9_-]{43};timeout=5s;fallback=force_self"
)
_STATE = ReplayStateSigner(FLY_SECRET).sign("machine-a", session_digest(FLY_SID), FLY_NOW)
FLY_NAMES = st.sampled_from(
    [
        b"mcp-session-id",
        b"Mcp-Session-Id",
        b"cookie",
        b"fly-replay-src",
        b"FLY-REPLAY-SRC",
        b"fly-replay-failed",
        b"content-length",
        b"Content-Length",
        b"transfer-encoding",
    ]
) | st.binary(max_size=16)
FLY_VALUES = (
    st.binary(max_size=80)
    | st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.sampled_from(
        [
            FLY_SID.encode(),
            b"mine",
            b"elsewhere",
            f"sid={FLY_SID}".encode(),
            b"theme=dark; sid=mine",
            b'sid="elsewhere"',
            f"instance=machine-b;state={_STATE}".encode(),
            b"state=v1.\xb2.x",
            b"state=v1.1700000000." + "\u00e9".encode() * 22,
            b"state=" + b"v1." * 5000,
            b"\xb2",
            "\uff11\uff12".encode(),
            b"+5",
            b"-1",
            b" 5",
            b"5 5",
            b"9" * 40,
            b"chunked",
            b"gzip, chunked",
            b"",
        ]
    )
)
FLY_HEADERS = st.lists(st.tuples(FLY_NAMES, FLY_VALUES), max_size=8)


class FuzzApp:
    """Answers ``status`` with ``headers``; counts its calls."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers, self.calls = status, headers, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await receive()
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"app"})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + repr(record.__dict__))


async def fly_request(
    cookie: bool,
    headers: list[tuple[bytes, bytes]],
    method: str,
    path: str,
    query: bytes,
    status: int,
    answer: list[tuple[bytes, bytes]],
) -> tuple[FuzzApp, list[dict[str, Any]], MemorySessionRepository]:
    clock = FakeClock(FLY_NOW)
    repo = MemorySessionRepository(clock=clock)
    for session_id, owner in (
        (FLY_SID, "machine-b"),
        ("elsewhere", "machine-b"),
        ("mine", "machine-a"),
        ("odd-owner", "10.0.0.7:8080"),
    ):
        await repo.upsert(session_id, owner)
    app = FuzzApp(status, answer)
    middleware = FlyReplayMiddleware(
        app,
        repo,
        instance_id="machine-a",
        cookie="sid" if cookie else None,
        state_secret=FLY_SECRET,
        clock=clock,
    )
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return app, sent, repo


@settings(max_examples=300, deadline=None)
@given(
    cookie=st.booleans(),
    headers=FLY_HEADERS,
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "\u00e9"]),
    path=st.sampled_from(["/mcp", "/favicon.ico", "/", ""]) | st.text(max_size=20),
    query=st.binary(max_size=40) | st.sampled_from([b"session_id=" + FLY_SID.encode()]),
    status=st.sampled_from([200, 201, 204, 404, 405, 500]),
    answer=st.lists(st.tuples(FLY_NAMES | st.just(b"set-cookie"), FLY_VALUES), max_size=3),
)
def test_no_header_a_client_sends_raises_out_of_the_fly_middleware(
    cookie: bool,
    headers: list[tuple[bytes, bytes]],
    method: str,
    path: str,
    query: bytes,
    status: int,
    answer: list[tuple[bytes, bytes]],
) -> None:
    records = Records()
    logger = logging.getLogger("session_repo")
    logger.addHandler(records)
    try:
        app, sent, repo = asyncio.run(
            fly_request(cookie, headers, method, path, query, status, answer)
        )
    finally:
        logger.removeHandler(records)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1  # exactly one answer, whoever gave it
    assert sent[-1]["type"] == "http.response.body"
    replay = dict(starts[0]["headers"]).get(b"fly-replay")
    if app.calls:
        assert app.calls == 1
        assert starts[0]["status"] == status
        # The middleware adds no fly-replay of its own (the app may send one itself).
        sent_replays = [v for k, v in starts[0]["headers"] if k == b"fly-replay"]
        assert sent_replays == [v for k, v in answer if k == b"fly-replay"]
    elif starts[0]["status"] == 307:  # routed to the owner, with a well-formed replay
        assert replay is not None
        assert FLY_REPLAY.fullmatch(replay), replay
    else:
        assert starts[0]["status"] == 409
        assert json.loads(sent[-1]["body"])["error"] == "request_not_replayable"
    assert asyncio.run(repo.metrics()).errors == 0
    assert not any(FLY_SID in line for line in records.lines)
