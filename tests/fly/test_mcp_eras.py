"""Every MCP era on one endpoint, keys beyond one header, and several workers per machine.

Raw ASGI calls against ``FlyReplayMiddleware`` on a real ``MemorySessionRepository``
(its counters say what storage I/O a request cost) for the rules; then the official
MCP SDK, server and clients, on three machines behind ``FlyProxySimulator``: a
handshake-era client (Streamable HTTP, ``Mcp-Session-Id``), a 2026-07-28 client (no
session at all) and an HTTP+SSE client (2024-11-05, ``?session_id=``), in one run
against one dual-era server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from cachetools import LRUCache
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette
from starlette.routing import Mount

from session_repo import InvalidInput, MemorySessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.fly.eras import EndpointScanner, sessionless
from session_repo.fly.workers import worker_count
from session_repo.testing import FakeClock, FlyProxySimulator, ReplayCacheRule

ME, OTHER = "machine-a", "machine-b"
SECRET = "eras-secret"
SID = "3f9c2a7e41d84b0f9a1c6e5d2b7a8c90"
TTL = 60.0
BASE = "http://127.0.0.1:8080"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FLY_MACHINE_ID",
        "FLY_ALLOC_ID",
        "SESSION_REPO_REPLAY_SECRET",
        "SESSION_STORE_TTL_MS",
        "WEB_CONCURRENCY",
        "UVICORN_WORKERS",
        "GUNICORN_CMD_ARGS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at any level; none may hold a session id in clear."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        assert SID not in record.getMessage()
        assert SID not in repr(record.__dict__)


def fly_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("session_repo")]


# -- a scripted app and one request at a time ------------------------------------------------


@dataclass
class App:
    """Answers ``status``/``headers`` and then ``chunks`` (each its own body message)."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=lambda: [b"ok"])
    calls: list[dict[str, Any]] = field(default_factory=list)
    sends: list[Any] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope)
        self.sends.append(send)
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        for at, chunk in enumerate(self.chunks):
            more = at < len(self.chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    owners: list[str | None]  # the session's owner as each body message left


async def call(
    app: Any,
    *,
    method: str = "POST",
    path: str = "/mcp",
    query: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"{}",
    watch: tuple[MemorySessionRepository, str] | None = None,
) -> Answer:
    raw = [(k.lower().encode(), v.encode("utf-8", "surrogatepass")) for k, v in headers or []]
    if method == "POST":
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": raw,
    }
    messages: list[dict[str, Any]] = []
    owners: list[str | None] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if watch is not None and message["type"] == "http.response.body":
            owners.append(await watch[0].lookup(watch[1]))
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    answer_headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Answer(start["status"], answer_headers, payload, owners)


async def io(repo: MemorySessionRepository) -> tuple[int, int, int, int, int]:
    """Storage calls so far: (lookups, claims, deletes, touches, upserts)."""
    m = await repo.metrics()
    return m.lookups, m.claims, m.deletes, m.touches, m.upserts


@pytest.fixture
def repo(fake_clock: FakeClock) -> MemorySessionRepository:
    return MemorySessionRepository(clock=fake_clock)


@pytest.fixture
def app() -> App:
    return App()


def make(app: Any, repo: MemorySessionRepository, clock: FakeClock, **options: Any) -> Any:
    return FlyReplayMiddleware(
        app, repo, instance_id=ME, ttl=TTL, state_secret=SECRET, clock=clock, **options
    )


@pytest.fixture
def middleware(app: App, repo: MemorySessionRepository, fake_clock: FakeClock) -> Any:
    return make(app, repo, fake_clock)


# -- the 2026-07-28 era: no session, no affinity, no I/O ---------------------------------------


MODERN = ["2026-07-28", "2026-07-29", "2026-12-31", "2031-01-01", " 2026-07-28\t"]
NOT_MODERN = [
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
    "2026-07-27",
    "2026-13-01",
    "2026-02-30",
    "20260728",
    "2026-7-28",
    "v2026-07-28",
    "2026-07-28;x",
    "\uff12\uff10\uff12\uff16-07-28",  # fullwidth digits
    "\udcff",
    "",
]


@pytest.mark.parametrize("version", MODERN, ids=repr)
async def test_a_2026_request_without_a_key_passes_with_no_storage_io_and_no_logs(
    app: App,
    repo: MemorySessionRepository,
    middleware: Any,
    records: pytest.LogCaptureFixture,
    version: str,
) -> None:
    records.clear()
    app.headers = [(b"mcp-session-id", SID.encode())]  # even this is not learned
    answer = await call(middleware, headers=[("MCP-Protocol-Version", version)])
    assert answer.status == 200
    assert len(app.calls) == 1
    assert await io(repo) == (0, 0, 0, 0, 0)
    assert await repo.lookup(SID) is None
    assert fly_records(records) == []


async def test_a_2026_request_reaches_the_app_with_the_servers_own_send(
    app: App, middleware: Any
) -> None:
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": []}
    scope["headers"] = [(b"mcp-protocol-version", b"2026-07-28"), (b"content-length", b"2")]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: Any) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    assert app.sends == [send]  # not wrapped: nothing is watched on the way out
    assert sent[0]["status"] == 200


@pytest.mark.parametrize("version", NOT_MODERN, ids=repr)
async def test_earlier_or_malformed_versions_are_routed_as_before(
    app: App, repo: MemorySessionRepository, middleware: Any, version: str
) -> None:
    app.headers = [(b"mcp-session-id", SID.encode())]
    answer = await call(middleware, headers=[("mcp-protocol-version", version)])
    assert answer.status == 200
    assert await repo.lookup(SID) == ME  # the handshake era's session, learned and bound


def test_sessionless_compares_dates_and_never_raises() -> None:
    assert [sessionless(v.encode("utf-8", "surrogatepass")) for v in MODERN] == [True] * 5
    assert not any(sessionless(v.encode("utf-8", "surrogatepass")) for v in NOT_MODERN)
    assert not sessionless(None)
    assert not sessionless(b"\xff\xfe")
    assert not sessionless(b"9999-99-99")


async def test_a_2026_request_that_does_carry_a_key_is_still_routed(
    repo: MemorySessionRepository, middleware: Any
) -> None:
    await repo.upsert(SID, OTHER)
    headers = [("mcp-protocol-version", "2026-07-28"), ("mcp-session-id", SID)]
    answer = await call(middleware, headers=headers)
    assert answer.status == 307
    assert answer.headers["fly-replay"].startswith(f"instance={OTHER};")


# -- HTTP+SSE (2024-11-05): the endpoint event and the session_id query parameter --------------


def sse_app(session_id: str = SID, *, chunks: list[bytes] | None = None) -> App:
    """What the SDK's SSE endpoint answers: an event stream whose first event names the key."""
    event = f"event: endpoint\r\ndata: /messages/?session_id={session_id}\r\n\r\n".encode()
    return App(
        headers=[(b"content-type", b"text/event-stream; charset=utf-8")],
        chunks=chunks if chunks is not None else [event, b": ping\r\n\r\n", b""],
    )


async def test_the_sse_endpoint_event_binds_its_session_before_it_leaves_and_the_end_unbinds(
    repo: MemorySessionRepository, fake_clock: FakeClock, records: pytest.LogCaptureFixture
) -> None:
    app = sse_app()
    middleware = make(app, repo, fake_clock)
    answer = await call(middleware, method="GET", path="/sse", watch=(repo, SID))
    assert b"session_id=" + SID.encode() in answer.body  # passed on untouched
    assert answer.owners[0] == ME  # bound before the event reached the client
    assert await repo.lookup(SID) is None  # the stream ended: so did the session
    _, claims, deletes, *_ = await io(repo)
    assert (claims, deletes) == (1, 1)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"event: endpoint\r\nda", b"ta: /messages/?session_id=" + SID.encode(), b"\r\n\r\n"],
        [b"event: endpoint\ndata: /messages/?session_id=" + SID.encode() + b"\n\n"],
        [
            b": ping\r\n\r\nretry: 3000\r\n\r\nevent:endpoint\r\ndata:/messages/?session_id="
            + SID.encode()
            + b"&x=1\r\n\r\n"
        ],
        [
            b"event: endpoint\r\ndata: http://127.0.0.1:8080/messages/?session_id="
            + SID.encode()
            + b"\r\n\r\n"
        ],
        [b"event: endpoint\r\ndata: /messages/?session%5Fid=" + SID.encode() + b"\r\n\r\n"],
        [
            b"event: endpoint\r\ndata: /messages/?session_id="
            + SID.encode()
            + b"\n\n"
            + b"x" * 10**6
        ],
    ],
    ids=["split", "lf", "comments-first", "absolute-url", "percent-encoded", "a-huge-tail"],
)
async def test_the_endpoint_event_is_read_however_it_is_framed(
    repo: MemorySessionRepository, fake_clock: FakeClock, chunks: list[bytes]
) -> None:
    middleware = make(sse_app(chunks=[*chunks, b""]), repo, fake_clock)
    answer = await call(middleware, method="GET", path="/sse", watch=(repo, SID))
    assert ME in answer.owners


@pytest.mark.parametrize(
    ("method", "status", "content_type", "chunks", "extra"),
    [
        ("POST", 200, b"text/event-stream", None, []),  # not the SSE GET
        ("GET", 404, b"text/event-stream", None, []),
        ("GET", 200, b"application/json", None, []),
        ("GET", 200, b"text/event-stream", None, [("mcp-session-id", "other-key")]),
        (
            "GET",
            200,
            b"text/event-stream",
            [b"event: message\r\ndata: {}\r\n\r\nevent: endpoint\r\ndata: /m?session_id=x\r\n\r\n"],
            [],
        ),
        (
            "GET",
            200,
            b"text/event-stream",
            [
                b": " + b"p" * 9000 + b"\r\n\r\nevent: endpoint\r\n"
                b"data: /m?session_id=" + SID.encode() + b"\r\n\r\n"
            ],
            [],
        ),
        (
            "GET",
            200,
            b"text/event-stream",
            [b"event: endpoint\r\ndata: /m?session_id=a b\r\n\r\n"],
            [],
        ),
        (
            "GET",
            200,
            b"text/event-stream",
            [b"event: endpoint\r\ndata: http://[::1/m?x\r\n\r\n"],
            [],
        ),
    ],
    ids=["post", "404", "json", "keyed", "other-event-first", "past-8k", "bad-key", "bad-url"],
)
async def test_only_an_sse_gets_first_event_names_a_session(
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    method: str,
    status: int,
    content_type: bytes,
    chunks: list[bytes] | None,
    extra: list[tuple[str, str]],
) -> None:
    app = sse_app(chunks=chunks)
    app.status, app.headers = status, [(b"content-type", content_type)]
    middleware = make(app, repo, fake_clock)
    await call(middleware, method=method, path="/sse", headers=extra)
    _, claims, *_ = await io(repo)
    assert claims == 0


async def test_with_query_param_none_the_sse_transport_is_not_routed(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = make(sse_app(), repo, fake_clock, query_param=None)
    await call(middleware, method="GET", path="/sse")
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, path="/messages/", query=b"session_id=" + SID.encode())
    assert answer.status == 200  # served here: the query is not a key
    assert await io(repo) == (0, 0, 0, 0, 1)


async def test_a_message_post_for_a_session_elsewhere_is_replayed_by_its_query_parameter(
    app: App, repo: MemorySessionRepository, middleware: Any
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, path="/messages/", query=b"session_id=" + SID.encode())
    assert answer.status == 307
    assert answer.headers["fly-replay"].startswith(f"instance={OTHER};state=v1.")
    assert not app.calls


async def test_a_message_post_for_a_session_held_here_costs_no_storage_io(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    app = sse_app(
        chunks=[b"event: endpoint\r\ndata: /messages/?session_id=" + SID.encode() + b"\r\n\r\n"]
    )
    app.chunks.append(b"")
    middleware = make(app, repo, fake_clock)

    opened = asyncio.Event()
    release = asyncio.Event()

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": app.headers})
            await send({"type": "http.response.body", "body": app.chunks[0], "more_body": True})
            opened.set()
            await release.wait()
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b"Accepted"})

    middleware.app = stream
    get = asyncio.ensure_future(call(middleware, method="GET", path="/sse"))
    await opened.wait()
    before = await io(repo)
    for _ in range(20):
        fake_clock.advance(1)
        answer = await call(middleware, path="/messages/", query=b"session_id=" + SID.encode())
        assert answer.status == 202
    assert await io(repo) == before
    release.set()
    await get
    assert await repo.lookup(SID) is None


@pytest.mark.parametrize(
    ("query", "routed"),
    [
        (b"session_id=" + SID.encode(), True),
        (b"a=1&session_id=" + SID.encode() + b"&b=2", True),
        (b"session_id=nope&session_id=" + SID.encode(), True),  # the last one, as Starlette
        (b"session_id=" + SID.encode() + b"&session_id=nope", False),
        (b"session%5Fid=" + SID.encode(), True),
        (b"session_id=" + SID[:4].encode() + b"%" + SID[4:].encode(), False),
        (b"session_id=", False),
        (b"session_id=has+space", False),
        (b"sessionid=" + SID.encode(), False),
        (b"\xff\xfe=\xb2&session_id", False),
    ],
    ids=repr,
)
async def test_the_session_id_query_parameter_is_read_as_the_app_reads_it(
    repo: MemorySessionRepository, middleware: Any, query: bytes, routed: bool
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, path="/messages/", query=query)
    assert (answer.status == 307) is routed


async def test_the_header_wins_over_the_query_parameter(
    repo: MemorySessionRepository, middleware: Any
) -> None:
    await repo.upsert(SID, OTHER)
    await repo.upsert("mine-here", ME)
    answer = await call(
        middleware,
        path="/messages/",
        query=b"session_id=" + SID.encode(),
        headers=[("mcp-session-id", "mine-here")],
    )
    assert answer.status == 200


async def test_the_query_parameter_name_is_settable(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    event = b"event: endpoint\r\ndata: /messages?sessionId=" + SID.encode() + b"\r\n\r\n"
    middleware = make(sse_app(chunks=[event, b""]), repo, fake_clock, query_param="sessionId")
    answer = await call(middleware, method="GET", path="/sse", watch=(repo, SID))
    assert answer.owners[0] == ME
    await repo.upsert(SID, OTHER)
    assert (
        await call(middleware, path="/messages", query=b"sessionId=" + SID.encode())
    ).status == 307
    assert (
        await call(middleware, path="/messages", query=b"session_id=" + SID.encode())
    ).status == 200


async def test_a_404_on_the_message_endpoint_ends_the_sse_session(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    opened, release = asyncio.Event(), asyncio.Event()
    event = b"event: endpoint\r\ndata: /messages/?session_id=" + SID.encode() + b"\r\n\r\n"
    answers = {"/elsewhere": 404, "/messages/": 404}

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "GET":
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": event, "more_body": True})
            opened.set()
            await release.wait()
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": answers[scope["path"]]})
        await send({"type": "http.response.body", "body": b""})

    middleware = make(stream, repo, fake_clock)
    get = asyncio.ensure_future(call(middleware, method="GET", path="/sse"))
    await opened.wait()
    query = b"session_id=" + SID.encode()
    await call(middleware, path="/elsewhere", query=query)
    assert await repo.lookup(SID) == ME  # a 404 elsewhere says nothing of the session
    await call(middleware, path="/messages/", query=query)
    assert await repo.lookup(SID) is None  # "Could not find session": it is gone
    release.set()
    await get


def test_a_bad_query_param_is_refused_at_construction(
    app: App, repo: MemorySessionRepository
) -> None:
    with pytest.raises(TypeError):
        FlyReplayMiddleware(app, repo, instance_id=ME, query_param=b"session_id")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        FlyReplayMiddleware(app, repo, instance_id=ME, query_param="session id")


def test_the_scanner_stops_after_the_first_event() -> None:
    scanner = EndpointScanner(b"session_id")
    assert scanner.feed(b"event: message\ndata: 1\n\n") is None
    assert scanner.done
    assert scanner.feed(b"event: endpoint\ndata: /m?session_id=abc\n\n") is None


# -- key=: a callable for any other key ----------------------------------------------------------


def tenant(scope: Any) -> str | None:
    """A tenant header as the key."""
    for name, value in scope["headers"]:
        if name == b"x-tenant":
            return value.decode("latin-1")
    return None


async def test_a_key_callable_routes_by_what_it_returns(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = make(app, repo, fake_clock, key=tenant)
    await repo.upsert("acme", OTHER)
    answer = await call(middleware, headers=[("x-tenant", "acme"), ("mcp-session-id", SID)])
    assert answer.status == 307  # the callable's key; the header is not read
    assert answer.headers["fly-replay"].startswith(f"instance={OTHER};")
    assert not app.calls


async def test_a_key_no_machine_holds_is_bound_by_a_2xx_here_then_served_from_memory(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = make(app, repo, fake_clock, key=tenant)
    app.status = 404
    await call(middleware, headers=[("x-tenant", "globex")])
    assert await repo.lookup("globex") is None  # a 404 binds nothing
    app.status = 200
    await call(middleware, headers=[("x-tenant", "globex")])
    assert await repo.lookup("globex") == ME
    before = await io(repo)
    for _ in range(10):
        assert (await call(middleware, headers=[("x-tenant", "globex")])).status == 200
    assert await io(repo) == before


async def test_a_key_callables_binding_ends_on_delete_not_on_a_stray_404(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    def task(scope: Any) -> str | None:
        parts = scope["path"].split("/")
        return parts[2] if len(parts) > 2 and parts[1] == "tasks" else None

    middleware = make(app, repo, fake_clock, key=task)
    await call(middleware, method="GET", path="/tasks/t-17")
    assert await repo.lookup("t-17") == ME
    app.status = 404
    await call(middleware, method="GET", path="/tasks/t-17/attachments/9")
    assert await repo.lookup("t-17") == ME
    app.status = 204
    await call(middleware, method="DELETE", path="/tasks/t-17")
    assert await repo.lookup("t-17") is None


async def test_the_app_still_hands_out_new_keys_in_the_header_with_a_key_callable(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = make(app, repo, fake_clock, key=tenant, header="x-tenant")
    app.headers = [(b"x-tenant", b"initech")]
    await call(middleware)
    assert await repo.lookup("initech") == ME


@pytest.mark.parametrize(
    "returned",
    ["", "has space", "caf\u00e9", "x" * 1025, "tab\t", 42, b"bytes", ["acme"]],
    ids=repr,
)
async def test_what_a_key_callable_returns_is_validated_like_a_header(
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    records: pytest.LogCaptureFixture,
    returned: Any,
) -> None:
    middleware = make(app, repo, fake_clock, key=lambda scope: returned)
    records.clear()
    answer = await call(middleware)
    assert answer.status == 200
    assert len(app.calls) == 1
    assert await io(repo) == (0, 0, 0, 0, 0)  # no key: not even looked up
    warnings = [r for r in fly_records(records) if r.levelno >= logging.WARNING]
    if isinstance(returned, str):
        assert warnings == []  # no key, as a bad header is: not an error
    else:
        assert len(warnings) == 1
        assert type(returned).__name__ in warnings[0].getMessage()


async def test_a_key_callable_that_raises_is_no_key_logged_by_type_only_once_a_burst(
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    records: pytest.LogCaptureFixture,
) -> None:
    def broken(scope: Any) -> str | None:
        raise LookupError(f"no tenant for session {SID}")

    middleware = make(app, repo, fake_clock, key=broken)
    records.clear()
    for _ in range(5):
        assert (await call(middleware, headers=[("mcp-session-id", SID)])).status == 200
    fake_clock.advance(31)
    assert (await call(middleware)).status == 200
    assert len(app.calls) == 6
    assert await io(repo) == (0, 0, 0, 0, 0)
    warnings = [r.getMessage() for r in fly_records(records) if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "raised LookupError" in warnings[0]
    assert "(4 more since the last report)" in warnings[1]
    # the records fixture checks that the message, with the raw key, was never logged


async def test_an_async_or_uncallable_key_is_refused_at_construction(
    app: App, repo: MemorySessionRepository
) -> None:
    async def later(scope: Any) -> str | None:
        return None

    with pytest.raises(TypeError, match="synchronous callable"):
        FlyReplayMiddleware(app, repo, instance_id=ME, key=later)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="synchronous callable"):
        FlyReplayMiddleware(app, repo, instance_id=ME, key="x-tenant")  # type: ignore[arg-type]


async def test_a_coroutine_returned_by_a_key_callable_is_closed_not_left_unawaited(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    async def later() -> str:
        return "acme"

    made: list[Any] = []

    def sneaky(scope: Any) -> Any:
        made.append(later())
        return made[-1]

    middleware = make(app, repo, fake_clock, key=sneaky)
    assert (await call(middleware)).status == 200
    assert made[0].cr_frame is None  # closed


# -- several workers per machine ---------------------------------------------------------------


class FakeProcess:
    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs


MAIN = FakeProcess()


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        ({}, ["/venv/bin/uvicorn", "app:app"], None),
        ({}, ["/venv/bin/uvicorn", "app:app", "--workers", "4"], (4, "uvicorn's command line")),
        ({}, ["/venv/bin/uvicorn", "--workers=3", "app:app"], (3, "uvicorn's command line")),
        (
            {},
            ["/usr/lib/python3/site-packages/uvicorn/__main__.py", "--workers", "2"],
            (2, "uvicorn's command line"),
        ),
        (
            {},
            ["/venv/bin/gunicorn", "-w", "4", "-k", "uvicorn.workers.UvicornWorker"],
            (4, "gunicorn's command line"),
        ),
        ({}, ["/venv/bin/gunicorn", "-w4", "app:app"], (4, "gunicorn's command line")),
        ({}, ["/venv/bin/hypercorn", "--workers", "2", "app:app"], (2, "hypercorn's command line")),
        ({}, ["/venv/bin/uvicorn", "-w", "4"], None),  # uvicorn has no -w
        ({}, ["serve.py", "--workers", "4"], None),  # not a server we know
        ({}, ["/venv/bin/uvicorn", "--workers", "four"], None),
        (
            {"GUNICORN_CMD_ARGS": "--bind :8080 --workers 3"},
            ["/venv/bin/gunicorn"],
            (3, "GUNICORN_CMD_ARGS"),
        ),
        ({"GUNICORN_CMD_ARGS": "--bind ':8080"}, [], None),
        ({"UVICORN_WORKERS": "5"}, [], (5, "UVICORN_WORKERS")),
        ({"WEB_CONCURRENCY": "4"}, [], (4, "WEB_CONCURRENCY")),
        ({"WEB_CONCURRENCY": "\uff14"}, [], None),
        (
            {"WEB_CONCURRENCY": "4"},
            ["/venv/bin/uvicorn", "app:app", "--workers", "1"],
            (1, "uvicorn's command line"),
        ),
    ],
)
def test_worker_count_reads_the_command_line_and_the_environment(
    environ: dict[str, str], argv: list[str], expected: tuple[int, str] | None
) -> None:
    assert worker_count(environ, argv, MAIN) == expected


def test_worker_count_reads_the_uvicorn_config_a_worker_was_spawned_with() -> None:
    config = uvicorn.Config("app:app", workers=3)
    assert worker_count({}, ["serve.py"], FakeProcess(config=config)) == (3, "uvicorn's config")
    reloading = uvicorn.Config("app:app", workers=3, reload=True)
    assert worker_count({}, ["serve.py"], FakeProcess(config=reloading)) is None
    assert worker_count({}, [], FakeProcess(config="not uvicorn's")) is None


async def test_several_workers_log_one_warning_at_lifespan_startup(
    monkeypatch: pytest.MonkeyPatch,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/uvicorn", "app:app"])
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    middleware = make(app, repo, fake_clock)
    caplog.set_level(logging.WARNING, logger="session_repo")
    await middleware({"type": "lifespan"}, None, None)
    await middleware({"type": "lifespan"}, None, None)
    warnings = [r for r in fly_records(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "4 worker processes" in message
    assert "WEB_CONCURRENCY" in message
    assert "one process per machine" in message
    assert app.calls == [{"type": "lifespan"}] * 2  # the scope itself passes through
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    caplog.clear()
    await make(app, repo, fake_clock)({"type": "lifespan"}, None, None)
    assert fly_records(caplog) == []


UVICORN_APP = """
import os, uvicorn
from session_repo import MemorySessionRepository
from session_repo.fly import FlyReplayMiddleware

async def inner(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                print("started", os.getpid(), flush=True)
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

app = FlyReplayMiddleware(inner, MemorySessionRepository(), instance_id="148ed193b95089",
                          state_secret="x")

if __name__ == "__main__":
    uvicorn.run("fly_app:app", host="127.0.0.1", port=0, workers=2, log_level="warning")
"""


def test_uvicorn_run_with_two_workers_warns_in_each(tmp_path: Path) -> None:
    """The real thing: ``uvicorn.run(..., workers=2)``, no flag or variable to read."""
    (tmp_path / "fly_app.py").write_text(textwrap.dedent(UVICORN_APP))
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "UVICORN_WORKERS")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    process = subprocess.Popen(
        [sys.executable, "fly_app.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while sum(line.startswith("started") for line in lines) < 2:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = "".join(lines)
    assert output.count("started") == 2, output
    assert output.count("2 worker processes on machine 148ed193b95089 (uvicorn's config)") == 2


# -- end to end: the real SDK, three eras, one dual-era server, three machines ----------------


def dual_era_app(
    machine_id: str, repository: MemorySessionRepository, *, replay_cache: bool = False
) -> Any:
    """One machine: the SDK's Streamable HTTP app at /mcp and its SSE app under /legacy."""
    server = MCPServer("dual-era")
    calls: LRUCache[str, int] = LRUCache(maxsize=1000)  # per session, in this machine only

    @server.tool()
    def whoami() -> str:
        """The machine serving this request."""
        return machine_id

    @server.tool()
    def count(ctx: Context) -> int:
        """How many times this session has called ``count``, here."""
        request = ctx.request_context.request
        session = (ctx.headers or {}).get("mcp-session-id") or getattr(
            request, "query_params", {}
        ).get("session_id")
        if not session:
            raise ToolError("count needs a session")
        calls[session] = calls.get(session, 0) + 1
        return calls[session]

    streamable = server.streamable_http_app()
    legacy = server.sse_app()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    app = Starlette(
        routes=[Mount("/legacy", app=legacy), Mount("/", app=streamable)], lifespan=lifespan
    )
    return FlyReplayMiddleware(
        app, repository, instance_id=machine_id, state_secret=SECRET, replay_cache=replay_cache
    )


@dataclass(frozen=True)
class Seen:
    """A request reaching a machine's middleware (``replay`` None), or its replay answer."""

    machine: str
    method: str
    path: str
    session: str | None  # the Mcp-Session-Id header, or the session_id query parameter
    cache: str | None  # the fly-replay-cache-status the proxy sent with it
    replay: str | None = None  # the fly-replay value a machine answered


def noting(timeline: list[Seen], machine: str, app: Any) -> Any:
    """``app``, noting in ``timeline``, in order, each request it gets and replay it answers."""

    async def noted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {bytes(k).lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
        query = dict(q.split("=", 1) for q in scope["query_string"].decode().split("&") if "=" in q)
        session = headers.get(b"mcp-session-id") or query.get("session_id")
        cache = headers.get(b"fly-replay-cache-status")
        seen = Seen(machine, scope["method"], scope["path"], session, cache)
        timeline.append(seen)

        async def note(message: Any) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if bytes(name).lower() == b"fly-replay":
                        replay = bytes(value).decode("latin-1")
                        timeline.append(replace(seen, replay=replay))
            await send(message)

        await app(scope, receive, note)

    return noted


@dataclass
class Wire:
    sessions: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)


def http_client(sim: FlyProxySimulator, wire: Wire, **options: Any) -> httpx2.AsyncClient:
    async def on_request(request: httpx2.Request) -> None:
        wire.versions.add(request.headers.get("mcp-protocol-version", ""))

    async def on_response(response: httpx2.Response) -> None:
        session = response.headers.get("mcp-session-id")
        if session and session not in wire.sessions:
            wire.sessions.append(session)

    hooks = {"request": [on_request], "response": [on_response]}
    return httpx2.AsyncClient(
        transport=sim.transport(httpx2), base_url=BASE, event_hooks=hooks, **options
    )


def storage_calls(metrics: Any) -> tuple[int, ...]:
    return metrics.lookups, metrics.claims, metrics.touches, metrics.upserts, metrics.deletes


async def result(client: Client, name: str) -> Any:
    answer = await client.call_tool(name, {})
    assert not answer.is_error, answer
    return answer.structured_content["result"]


def ref(session_id: str) -> str:
    """The simulator's short digest of a session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


# fly.toml's rule for the handshake era's header (docs/fly.md, "Replays Fly's proxy can cache")
CACHE_RULE = ReplayCacheRule("/mcp", 300, "header", "mcp-session-id")


@pytest.mark.parametrize("replay_cache", [False, True], ids=["plain", "replay-cache"])
async def test_three_eras_on_one_dual_era_server_each_follow_up_reaches_its_owner(
    replay_cache: bool,
) -> None:
    shared = MemorySessionRepository()
    timeline: list[Seen] = []  # what reached each machine, and the replays they answered

    def machine(machine_id: str) -> Any:
        app = dual_era_app(machine_id, shared, replay_cache=replay_cache)
        return noting(timeline, machine_id, app)

    rules = [CACHE_RULE] if replay_cache else None
    async with FlyProxySimulator(machine, 3, seed=21, replay_cache=rules) as sim:
        # The handshake era: initialize, then Mcp-Session-Id on every request.
        legacy_wire = Wire()
        legacy_http = http_client(sim, legacy_wire, timeout=30)
        streamable = streamable_http_client(f"{BASE}/mcp", http_client=legacy_http)
        # HTTP+SSE: a GET event stream, then POSTs to /legacy/messages/?session_id=...
        sse_sessions: list[str] = []
        sse_wire = Wire()

        def sse_factory(**options: Any) -> httpx2.AsyncClient:
            return http_client(sim, sse_wire, **options)

        sse = sse_client(
            f"{BASE}/legacy/sse",
            httpx_client_factory=sse_factory,
            on_session_created=sse_sessions.append,
        )
        async with (
            legacy_http,
            Client(streamable, mode="legacy") as handshake,
            Client(sse, mode="legacy") as old,
        ):
            handshake_home = await result(handshake, "whoami")
            sse_home = await result(old, "whoami")
            [handshake_session] = legacy_wire.sessions
            [sse_session] = sse_sessions
            assert await shared.lookup(handshake_session) == handshake_home
            assert await shared.lookup(sse_session) == sse_home
            assert sim.creator(sse_session) == sse_home  # its event stream named it there

            # The 2026-07-28 era, with the handshake and SSE sessions open beside it.
            modern_wire = Wire()
            before = await shared.metrics()
            async with (
                http_client(sim, modern_wire, timeout=30) as modern_http,
                Client(
                    streamable_http_client(f"{BASE}/mcp", http_client=modern_http),
                    mode="2026-07-28",
                ) as modern,
            ):
                answered = {await result(modern, "whoami") for _ in range(15)}
                refused = await modern.call_tool("count", {})
            after = await shared.metrics()
            assert modern_wire.versions == {"2026-07-28"}
            assert modern_wire.sessions == []
            assert refused.is_error  # no session to count in
            assert len(answered) > 1  # any machine may answer: nothing to route
            assert storage_calls(after) == storage_calls(before)  # not one for that era

            # Interleaved follow-ups of the two sessions.
            for calls in range(1, 13):
                assert await result(handshake, "whoami") == handshake_home
                assert await result(old, "whoami") == sse_home
                assert await result(handshake, "count") == calls
                assert await result(old, "count") == calls

        await asyncio.sleep(0.1)  # the SSE GET's delivery is recorded when its stream ends
        for session, home in ((handshake_session, handshake_home), (sse_session, sse_home)):
            keyed = [d for d in sim.deliveries if d.session == ref(session)]
            assert len(keyed) > 24
            assert {d.served_by for d in keyed} == {home}
            assert all(d.status < 400 for d in keyed)
            assert any(d.origin != home and d.replays == 1 for d in keyed)
        sse_posts = [d for d in sim.deliveries if d.path == "/legacy/messages/"]
        assert sse_posts
        assert all(d.session == ref(sse_session) for d in sse_posts)
        assert all(
            d.session is None
            for d in sim.deliveries
            if d.path == "/mcp" and d.session != ref(handshake_session)
        )
        # Every HTTP+SSE message that landed elsewhere took a replay of its own, in both
        # modes: its key is a query parameter, which no fly.toml rule can cache by.
        assert all(d.replays == (d.origin != sse_home) for d in sse_posts)
        assert sum(d.replays for d in sse_posts) > 1
        assert all(d.cache is None for d in sse_posts)
        replay_answers = [e for e in timeline if e.replay is not None]
        sse_replays = [str(e.replay) for e in replay_answers if e.session == sse_session]
        assert len(sse_replays) == sum(d.replays for d in sse_posts)
        assert all(v.endswith(";timeout=5s;fallback=force_self") for v in sse_replays)
        assert all((";state=v1." in v) != replay_cache for v in sse_replays)
        keyed_seen = [e for e in timeline if e.session == handshake_session]
        replayed = [e for e in keyed_seen if e.replay is not None]
        if not replay_cache:
            assert sim.replay_cache is None
            assert all(d.cache is None for d in sim.deliveries)
            assert len(replayed) > 1  # the balancer sent several follow-ups elsewhere
            assert all(
                str(e.replay).startswith(f"instance={handshake_home};state=v1.") for e in replayed
            )
        else:
            # One bare replay of the handshake session, cached for its owner: every
            # follow-up after it went straight there (wherever the balancer pointed),
            # and no machine was asked to replay it again.
            assert [e.replay for e in replayed] == [f"instance={handshake_home}"]
            first = keyed_seen.index(replayed[0])
            # it landed elsewhere with no cache entry yet (no status) and was replayed
            assert keyed_seen[first - 1] == replace(replayed[0], replay=None)
            assert replayed[0].machine != handshake_home
            assert replayed[0].cache is None
            # what came before it landed on the owner, load-balanced (no status either)
            balanced = keyed_seen[: first - 1]
            assert {(e.machine, e.cache) for e in balanced} == {(handshake_home, None)}
            # the replayed request, at the owner; then every follow-up, by the cache
            [redelivered, *by_cache] = keyed_seen[first + 1 :]
            assert (redelivered.machine, redelivered.cache) == (handshake_home, "miss")
            assert len(by_cache) > 24
            assert {(e.machine, e.cache, e.replay) for e in by_cache} == {
                (handshake_home, "hit", None)
            }
            hits = [d for d in sim.deliveries if d.cache == "hit"]
            assert len(hits) == len(by_cache)
            assert all(d.session == ref(handshake_session) for d in hits)
            assert {(d.origin, d.served_by, d.replays) for d in hits} == {
                (handshake_home, handshake_home, 0)
            }
            assert sim.replay_cache is not None
            assert (sim.replay_cache.stored, sim.replay_cache.hits) == (1, len(by_cache))
            assert sim.replay_cache.invalidations == sim.replay_cache.gone == 0
            assert sim.replay_cache.target(handshake_session) == handshake_home
            assert sim.replay_cache.target(sse_session) is None
        assert sim.misrouted == 0
        # Both clients ended their sessions (DELETE, the stream's end): no binding is left.
        assert await shared.lookup(handshake_session) is None
        assert await shared.lookup(sse_session) is None
