"""``FlyReplayMiddleware``, row by row of the contract's table, on raw ASGI calls.

The app behind it is a tiny ASGI callable that records whether it ran and answers
what the test tells it; the store is a real ``MemorySessionRepository`` on a fake
clock (or a SQL one that cannot connect, for the failure rows). No simulator here:
each test looks at exactly what the middleware sent.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from session_repo import InvalidInput, MemorySessionRepository, SqlSessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.fly.replay_state import ReplayStateSigner, session_digest
from session_repo.testing import FakeClock
from tests.paths import PROJECT_ROOT

ME, OTHER = "machine-a", "machine-b"
SECRET = "a-shared-secret"
SID = "3f9c2a7e41d84b0f9a1c6e5d2b7a8c90"  # what an MCP server hands out
TTL = 60.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLY_MACHINE_ID", "FLY_ALLOC_ID", "SESSION_REPO_REPLAY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SESSION_STORE_TTL_MS", raising=False)


@pytest.fixture
def no_raw_session_ids(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at any level, checked at the end for the session id in clear."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        assert SID not in record.getMessage()


@dataclass
class App:
    """An ASGI app that answers ``status``/``headers``/``body`` and records its calls."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b"ok"
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            return
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    body_read: bool
    messages: list[dict[str, Any]]


async def call(
    app: Any,
    *,
    method: str = "POST",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"{}",
    kind: str = "http",
    extensions: dict[str, Any] | None = None,
    on_start: Any = None,
) -> Answer:
    """One request through ``app``; ``content-length`` is added for a POST unless given."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or [])]
    sized = any(k in (b"content-length", b"transfer-encoding") for k, _ in raw)
    if kind == "http" and method in ("POST", "PUT", "PATCH") and not sized:
        raw.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {"type": kind, "method": method, "path": "/mcp", "headers": raw}
    if extensions is not None:
        scope["extensions"] = extensions
    read = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if kind == "websocket":
            return {"type": "websocket.connect"}
        read = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"].endswith("response.start") and on_start is not None:
            await on_start()
        messages.append(message)

    await app(scope, receive, send)
    start = next((m for m in messages if m["type"].endswith("response.start")), None)
    status = start["status"] if start else 0
    answer_headers = {k.decode(): v.decode() for k, v in (start or {}).get("headers", [])}
    payload = b"".join(m.get("body", b"") for m in messages if m["type"].endswith("body"))
    return Answer(status, answer_headers, payload, read, messages)


@pytest.fixture
def repo(fake_clock: FakeClock) -> MemorySessionRepository:
    return MemorySessionRepository(clock=fake_clock)


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def middleware(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> FlyReplayMiddleware:
    return FlyReplayMiddleware(
        app, repo, instance_id=ME, ttl=TTL, state_secret=SECRET, clock=fake_clock
    )


async def io(repo: MemorySessionRepository) -> tuple[int, int, int, int, int]:
    """Storage calls so far: (lookups, claims, deletes, touches, upserts)."""
    m = await repo.metrics()
    return m.lookups, m.claims, m.deletes, m.touches, m.upserts


def signed(target: str, session_id: str, now: float, secret: str = SECRET) -> str:
    state = ReplayStateSigner(secret).sign(target, session_digest(session_id), now)
    return f"instance={OTHER};region=iad;t={int(now * 1e6)};state={state}"


# -- off Fly, and scopes that are not requests --------------------------------------------


async def test_without_an_instance_id_everything_passes_through_untouched(
    app: App, repo: MemorySessionRepository
) -> None:
    middleware = FlyReplayMiddleware(app, repo)
    assert middleware.instance_id is None
    await repo.upsert(SID, OTHER)
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([receive, send])

    middleware.app = inner
    receive, send = object(), object()
    await middleware({"type": "http", "method": "GET", "headers": []}, receive, send)
    assert seen == [receive, send]  # the very same callables: nothing wrapped
    answer = await call(FlyReplayMiddleware(app, repo), headers=[("mcp-session-id", SID)])
    assert answer.status == 200
    assert len(app.calls) == 1
    assert await io(repo) == (0, 0, 0, 0, 1)  # the upsert above; no lookups


def test_instance_id_comes_from_fly_machine_id_then_fly_alloc_id(
    monkeypatch: pytest.MonkeyPatch, app: App, repo: MemorySessionRepository
) -> None:
    monkeypatch.setenv("FLY_ALLOC_ID", "8d9e7f10-aaaa-bbbb-cccc-0123456789ab")
    assert FlyReplayMiddleware(app, repo).instance_id == "8d9e7f10-aaaa-bbbb-cccc-0123456789ab"
    monkeypatch.setenv("FLY_MACHINE_ID", "148ed193b95089")
    assert FlyReplayMiddleware(app, repo).instance_id == "148ed193b95089"
    assert FlyReplayMiddleware(app, repo, instance_id="pod-7").instance_id == "pod-7"


@pytest.mark.parametrize(
    "options",
    [
        {"instance_id": "host:8080"},
        {"instance_id": "x" * 65},
        {"replay_timeout": "5 seconds"},
        {"replay_timeout": "1h"},
        {"replay_status": 99},
        {"max_replay_body": -1},
        {"ttl": 0},
    ],
)
def test_bad_settings_are_refused_at_construction(
    app: App, repo: MemorySessionRepository, options: dict[str, Any]
) -> None:
    options.setdefault("instance_id", ME)
    with pytest.raises(InvalidInput):
        FlyReplayMiddleware(app, repo, **options)


async def test_lifespan_passes_through(middleware: FlyReplayMiddleware, app: App) -> None:
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert app.calls == [{"type": "lifespan"}]


async def test_ttl_none_follows_session_store_ttl_ms(
    monkeypatch: pytest.MonkeyPatch, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    async def lives(session_id: str, seconds: float) -> None:
        """The binding claimed for a session the app hands out lives exactly ``seconds``."""
        middleware = FlyReplayMiddleware(app, repo, instance_id=ME, clock=fake_clock)
        app.headers = [(b"mcp-session-id", session_id.encode())]
        assert (await call(middleware)).status == 200
        fake_clock.advance(seconds - 0.001)
        assert await repo.lookup(session_id) == ME
        fake_clock.advance(0.001)
        assert await repo.lookup(session_id) is None

    await lives("first", 600.0)
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "90000")
    await lives("second", 90.0)


# -- no key: learn ownership from the response --------------------------------------------


async def test_a_2xx_that_sets_the_header_binds_the_session_before_the_response_leaves(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    app.headers = [(b"mcp-session-id", SID.encode())]
    owners_at_start: list[str | None] = []

    async def on_start() -> None:
        owners_at_start.append(await repo.lookup(SID))

    answer = await call(middleware, on_start=on_start)
    assert answer.status == 200
    assert answer.body == b"ok"
    assert owners_at_start == [ME]  # bound before the client could use the id elsewhere
    assert middleware.instance_id == ME


@pytest.mark.parametrize("status", [201, 204])
async def test_any_2xx_binds(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, status: int
) -> None:
    app.status, app.headers = status, [(b"Mcp-Session-Id", SID.encode())]
    await call(middleware)
    assert await repo.lookup(SID) == ME


@pytest.mark.parametrize("status", [302, 400, 404, 500])
async def test_a_non_2xx_does_not_bind(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, status: int
) -> None:
    app.status, app.headers = status, [(b"mcp-session-id", SID.encode())]
    await call(middleware)
    assert await repo.lookup(SID) is None


async def test_a_response_key_that_is_not_visible_ascii_is_not_bound(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    app.headers = [(b"mcp-session-id", b"has space")]
    await call(middleware)
    assert await io(repo) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    "key", ["", "has space", "tab\there", "caf\u00e9", "x" * 1025, "quote\x7f"], ids=repr
)
async def test_keys_outside_visible_ascii_or_too_long_count_as_no_key(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, key: str
) -> None:
    await repo.upsert("x" * 1024, OTHER)
    answer = await call(middleware, headers=[("mcp-session-id", key)])
    assert answer.status == 200
    assert len(app.calls) == 1
    assert await io(repo) == (0, 0, 0, 0, 1)  # not even looked up


async def test_a_key_of_1024_visible_characters_is_routed(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    key = "!" + "~" * 1023
    await repo.upsert(key, OTHER)
    answer = await call(middleware, headers=[("mcp-session-id", key)])
    assert answer.status == 307
    assert not app.calls


async def test_the_header_name_is_case_insensitive(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = FlyReplayMiddleware(
        app, repo, instance_id=ME, header="X-Session", state_secret=SECRET, clock=fake_clock
    )
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, headers=[("X-SESSION", SID)])
    assert answer.status == 307
    app.headers = [(b"X-Session", b"new-one")]
    await call(middleware)
    assert await repo.lookup("new-one") == ME


# -- key unknown or expired ---------------------------------------------------------------


async def test_an_unknown_key_goes_to_the_app_and_is_never_replayed(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    app.status = 404
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.status == 404
    assert len(app.calls) == 1
    assert await repo.lookup(SID) is None
    assert await io(repo) == (2, 0, 0, 0, 0)  # the middleware's lookup and ours


async def test_an_expired_binding_counts_as_unknown(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, OTHER, ttl=10)
    fake_clock.advance(10)
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.status == 200
    assert len(app.calls) == 1


# -- owned by this instance ---------------------------------------------------------------


async def own(middleware: FlyReplayMiddleware, app: App) -> None:
    app.headers = [(b"mcp-session-id", SID.encode())]
    await call(middleware)  # the "initialize" that creates the session here


async def test_an_owned_session_is_served_here_with_no_storage_io(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await own(middleware, app)
    before = await io(repo)
    for _ in range(50):
        fake_clock.advance(0.5)  # 25 s in all: less than half of the 60 s TTL
        answer = await call(middleware, headers=[("mcp-session-id", SID)])
        assert answer.status == 200
    assert len(app.calls) == 51
    assert await io(repo) == before  # not a lookup, not a write


async def test_the_ttl_is_renewed_once_less_than_half_is_left(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await own(middleware, app)
    lookups, claims, *_ = await io(repo)
    fake_clock.advance(29)
    await call(middleware, headers=[("mcp-session-id", SID)])
    assert (await io(repo))[:2] == (lookups, claims)
    fake_clock.advance(2)  # 31 s since the claim: 29 s left, less than half
    await call(middleware, headers=[("mcp-session-id", SID)])
    await call(middleware, headers=[("mcp-session-id", SID)])
    assert (await io(repo))[:2] == (lookups, claims + 1)  # one renewal, then quiet again
    fake_clock.advance(50)  # 81 s after the first claim: alive only thanks to the renewal
    assert await repo.lookup(SID) == ME


async def test_an_owned_session_the_app_answers_404_for_is_unbound(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await own(middleware, app)
    app.status, app.headers = 404, []
    await call(middleware, headers=[("mcp-session-id", SID)])
    assert await repo.lookup(SID) is None
    lookups = (await io(repo))[0]
    app.status = 200  # the next request for it is no longer taken as owned: it is looked up
    await call(middleware, headers=[("mcp-session-id", SID)])
    assert (await io(repo))[0] == lookups + 1


async def test_a_binding_made_by_an_earlier_process_of_this_machine_is_renewed_and_served(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, ME, ttl=TTL)
    fake_clock.advance(50)
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.status == 200
    assert len(app.calls) == 1
    fake_clock.advance(50)  # past the old expiry: the lookup renewed it
    assert await repo.lookup(SID) == ME


# -- owned by another instance ------------------------------------------------------------


async def test_a_session_owned_elsewhere_is_replayed_there_before_the_body_is_read(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, headers=[("mcp-session-id", SID)], body=b'{"big": 1}')
    assert answer.status == 307
    assert answer.body == b""
    assert answer.headers["content-length"] == "0"
    assert not answer.body_read  # decided on the headers alone
    assert not app.calls
    fields = dict(part.split("=", 1) for part in answer.headers["fly-replay"].split(";"))
    assert fields.keys() == {"instance", "state", "timeout", "fallback"}
    assert fields["instance"] == OTHER
    assert fields["timeout"] == "5s"
    assert fields["fallback"] == "force_self"
    digest = session_digest(SID)
    signer = ReplayStateSigner(SECRET)
    assert signer.verify(fields["state"], OTHER, digest, fake_clock.now())
    assert not signer.verify(fields["state"], ME, digest, fake_clock.now())
    assert not signer.verify(fields["state"], OTHER, session_digest("another"), fake_clock.now())


async def test_replay_status_and_timeout_are_settable(
    app: App, repo: MemorySessionRepository
) -> None:
    middleware = FlyReplayMiddleware(
        app, repo, instance_id=ME, replay_status=409, replay_timeout="800ms", state_secret=SECRET
    )
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.status == 409
    assert ";timeout=800ms;" in answer.headers["fly-replay"]


async def test_without_a_secret_the_replay_carries_no_state(
    app: App, repo: MemorySessionRepository
) -> None:
    middleware = FlyReplayMiddleware(app, repo, instance_id=ME)
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.headers["fly-replay"] == f"instance={OTHER};timeout=5s;fallback=force_self"


async def test_an_owner_id_unfit_for_fly_replay_is_served_here_and_logged(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    no_raw_session_ids: pytest.LogCaptureFixture,
) -> None:
    await repo.upsert(SID, "10.0.0.7:8080")  # a fine alloc id, but not a Fly instance id
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.status == 200
    assert len(app.calls) == 1
    assert "fly-replay" not in answer.headers
    assert any("cannot go into fly-replay" in r.getMessage() for r in no_raw_session_ids.records)


# -- bodies Fly cannot replay -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "replayed"),
    [
        ("POST", [("content-length", "1000000")], True),
        ("POST", [("content-length", "1000001")], False),
        ("PUT", [("content-length", "2000000")], False),
        ("POST", [("transfer-encoding", "chunked")], False),
        ("GET", [("transfer-encoding", "chunked")], False),
        ("PATCH", [], False),  # a body-carrying method without a Content-Length
        ("POST", [("content-length", "12abc")], False),
        ("GET", [], True),
        ("DELETE", [], True),
    ],
)
async def test_a_body_too_big_or_of_unknown_length_gets_409_not_a_replay(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    method: str,
    headers: list[tuple[str, str]],
    replayed: bool,
) -> None:
    await repo.upsert(SID, OTHER)
    raw: list[tuple[str, str]] = [("mcp-session-id", SID), *headers]
    if method == "PATCH":
        raw.append(("transfer-encoding", "identity"))  # keeps call() from adding a length
    answer = await call(middleware, method=method, headers=raw)
    assert not app.calls
    assert not answer.body_read
    if replayed:
        assert answer.status == 307
        assert "fly-replay" in answer.headers
    else:
        assert answer.status == 409
        assert "fly-replay" not in answer.headers
        assert answer.headers["content-type"] == "application/json"
        assert json.loads(answer.body)["error"] == "request_not_replayable"
        assert SID not in answer.body.decode()


async def test_max_replay_body_is_settable(app: App, repo: MemorySessionRepository) -> None:
    middleware = FlyReplayMiddleware(app, repo, instance_id=ME, max_replay_body=10)
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, headers=[("mcp-session-id", SID)], body=b"x" * 11)
    assert answer.status == 409
    answer = await call(middleware, headers=[("mcp-session-id", SID)], body=b"x" * 10)
    assert answer.status == 307


async def test_a_big_body_for_a_session_owned_here_is_served(
    middleware: FlyReplayMiddleware, app: App
) -> None:
    await own(middleware, app)
    answer = await call(middleware, headers=[("mcp-session-id", SID)], body=b"x" * 2_000_000)
    assert answer.status == 200
    assert answer.body_read


# -- replayed requests --------------------------------------------------------------------


async def test_a_replayed_request_whose_state_verifies_is_served_never_replayed_again(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, OTHER)  # the store moved on meanwhile; the replay still lands here
    src = signed(ME, SID, fake_clock.now())
    answer = await call(middleware, headers=[("mcp-session-id", SID), ("fly-replay-src", src)])
    assert answer.status == 200
    assert len(app.calls) == 1
    assert await repo.lookup(SID) == OTHER  # left as it was


@pytest.mark.parametrize(
    "src",
    [
        pytest.param(lambda now: "instance=x;region=iad;t=1", id="no state"),
        pytest.param(lambda now: "instance=x;state=garbage", id="garbage"),
        pytest.param(lambda now: signed(ME, SID, now, secret="wrong"), id="other secret"),
        pytest.param(lambda now: signed(OTHER, SID, now), id="for another instance"),
        pytest.param(lambda now: signed(ME, "another-session", now), id="for another session"),
        pytest.param(lambda now: signed(ME, SID, now - 61), id="too old"),
        pytest.param(lambda now: signed(ME, SID, now + 31), id="from the future"),
    ],
)
async def test_a_fly_replay_src_whose_state_does_not_verify_is_ignored(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    src: Any,
) -> None:
    await repo.upsert(SID, OTHER)
    headers = [("mcp-session-id", SID), ("fly-replay-src", src(fake_clock.now()))]
    answer = await call(middleware, headers=headers)
    assert answer.status == 307
    assert not app.calls


async def test_without_a_secret_any_fly_replay_src_is_trusted_and_that_is_logged_once(
    app: App, repo: MemorySessionRepository, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="session_repo.fly")
    middleware = FlyReplayMiddleware(app, repo, instance_id=ME)
    await repo.upsert(SID, OTHER)
    headers = [("mcp-session-id", SID), ("fly-replay-src", "instance=anything")]
    for _ in range(3):
        assert (await call(middleware, headers=headers)).status == 200
    warnings = [r for r in caplog.records if "SESSION_REPO_REPLAY_SECRET" in r.getMessage()]
    assert len(warnings) == 1


async def test_the_secret_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, app: App, repo: MemorySessionRepository
) -> None:
    monkeypatch.setenv("SESSION_REPO_REPLAY_SECRET", SECRET)
    middleware = FlyReplayMiddleware(app, repo, instance_id=ME)
    await repo.upsert(SID, OTHER)
    spoofed = [("mcp-session-id", SID), ("fly-replay-src", "instance=x")]
    assert (await call(middleware, headers=spoofed)).status == 307
    assert SECRET not in repr(middleware)
    assert SECRET not in repr(ReplayStateSigner(SECRET))


# -- fly-replay-failed --------------------------------------------------------------------


async def test_fly_replay_failed_unbinds_the_session_and_passes_to_the_app(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    app.status = 404
    headers = [("mcp-session-id", SID), ("fly-replay-failed", "instance=machine-b")]
    answer = await call(middleware, headers=headers)
    assert answer.status == 404
    assert len(app.calls) == 1
    assert await repo.lookup(SID) is None


async def test_fly_replay_failed_then_a_new_session_binds_here(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    app.headers = [(b"mcp-session-id", b"the-new-session")]
    headers = [("mcp-session-id", SID), ("fly-replay-failed", "x")]
    await call(middleware, headers=headers)
    assert await repo.lookup(SID) is None
    assert await repo.lookup("the-new-session") == ME


# -- DELETE -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "unbound"),
    [(200, True), (204, True), (404, True), (405, False), (500, False), (409, False)],
)
async def test_delete_unbinds_after_the_owner_answers_2xx_or_404_and_405_keeps_it(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    status: int,
    unbound: bool,
) -> None:
    await own(middleware, app)
    app.status = status  # the DELETE answer repeats the session header, as MCP's does
    # 405 is MCP's "this server does not let clients end sessions": the session lives on
    await call(middleware, method="DELETE", headers=[("mcp-session-id", SID)], body=b"")
    assert (await repo.lookup(SID) is None) is unbound


async def test_delete_for_a_session_owned_elsewhere_is_replayed_and_left_to_the_owner(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, method="DELETE", headers=[("mcp-session-id", SID)])
    assert answer.status == 307
    assert not app.calls
    assert await repo.lookup(SID) == OTHER


# -- the store failing --------------------------------------------------------------------


async def test_a_store_that_cannot_connect_never_fails_a_request(
    app: App, no_raw_session_ids: pytest.LogCaptureFixture
) -> None:
    broken = SqlSessionRepository("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    middleware = FlyReplayMiddleware(app, broken, instance_id=ME, state_secret=SECRET)
    try:
        app.headers = [(b"mcp-session-id", SID.encode())]
        for headers in ([], [("mcp-session-id", SID)], [("mcp-session-id", SID)]):
            answer = await call(middleware, headers=headers)
            assert answer.status == 200
        app.status = 404  # a 404 for an unknown key must not fail either
        assert (await call(middleware, headers=[("mcp-session-id", "s2")])).status == 404
    finally:
        await broken.close()
    assert len(app.calls) == 4
    failures = [r for r in no_raw_session_ids.records if "session store failed" in r.getMessage()]
    assert len(failures) == 1  # one burst, one line
    assert "StorageError" in failures[0].getMessage()


async def test_a_closed_repository_is_a_failure_to_serve_through(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await repo.close()
    answer = await call(middleware, headers=[("mcp-session-id", SID)])
    assert answer.status == 200
    assert len(app.calls) == 1


async def test_the_burst_log_reports_what_it_held_back(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    no_raw_session_ids: pytest.LogCaptureFixture,
) -> None:
    await repo.close()
    for _ in range(4):
        await call(middleware, headers=[("mcp-session-id", SID)])
    fake_clock.advance(30)  # the quiet period is over
    await call(middleware, headers=[("mcp-session-id", SID)])
    lines = [r.getMessage() for r in no_raw_session_ids.records if "store failed" in r.getMessage()]
    assert len(lines) == 2
    assert "3 more since the last report" in lines[1]


# -- cookies ------------------------------------------------------------------------------


async def test_with_a_cookie_the_key_comes_from_that_cookie(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = FlyReplayMiddleware(
        app, repo, instance_id=ME, cookie="sid", state_secret=SECRET, clock=fake_clock
    )
    app.headers = [(b"set-cookie", f"sid={SID}; Path=/; HttpOnly; SameSite=Lax".encode())]
    await call(middleware, headers=[("mcp-session-id", "ignored")])
    assert await repo.lookup(SID) == ME
    assert await repo.lookup("ignored") is None
    await repo.upsert("theirs", OTHER)
    cookie = [("cookie", "theme=dark; sid=theirs"), ("mcp-session-id", SID)]
    answer = await call(middleware, method="GET", headers=cookie)
    assert answer.status == 307
    assert len(app.calls) == 1
    answer = await call(middleware, method="GET", headers=[("cookie", f'sid="{SID}"')])
    assert answer.status == 200


# -- websockets ---------------------------------------------------------------------------


async def test_a_websocket_for_a_session_elsewhere_gets_the_replay_as_an_http_response(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await call(
        middleware,
        kind="websocket",
        headers=[("mcp-session-id", SID)],
        extensions={"websocket.http.response": {}},
    )
    assert not app.calls
    assert answer.messages[0]["type"] == "websocket.http.response.start"
    assert answer.status == 307
    assert answer.headers["fly-replay"].startswith(f"instance={OTHER};")


async def test_a_websocket_without_the_response_extension_is_closed(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await call(middleware, kind="websocket", headers=[("mcp-session-id", SID)])
    assert not app.calls
    assert answer.messages == [{"type": "websocket.close", "code": 1013}]


async def test_a_websocket_for_a_session_owned_here_is_accepted(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository
) -> None:
    await own(middleware, app)
    answer = await call(middleware, kind="websocket", headers=[("mcp-session-id", SID)])
    assert answer.messages == [{"type": "websocket.accept"}]


# -- the docs ------------------------------------------------------------------------------


def test_docs_fly_md_has_a_valid_fly_toml_and_every_row_of_the_table() -> None:
    page = (PROJECT_ROOT / "docs" / "fly.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", page, flags=re.S)
    config = tomllib.loads(blocks[0])
    assert config["deploy"]["release_command"] == "session-repo migrate"
    assert config["http_service"]["internal_port"] == 8080
    for block in blocks[1:]:
        tomllib.loads(block)
    assert 'fly secrets set SESSION_REPO_REPLAY_SECRET="$(openssl rand -hex 32)"' in page
    for row in (
        "| no session key |",
        "| key unknown or expired |",
        "| key owned by this machine |",
        "| key owned by another machine |",
        "| body larger than `max_replay_body`",
        "| a replayed request (`fly-replay-src` whose `state` verifies) |",
        "| `fly-replay-failed` present",
        "| `DELETE` with a key |",
        "| `fly-replay-src` whose `state` does not verify |",
        "| malformed input anywhere",
        "never on a 404 for an unrelated path",
        "(405 is MCP's",
    ):
        assert row in page, row
    assert "```mermaid\nsequenceDiagram" in page
    assert "not Fly" in page  # the simulator is a model, and says so


# -- what a machine remembers owning, for keys of any length ------------------------
# By their digest: a session id is a bearer secret, and no memory holds it past its
# request. The hot path makes no storage call, a 404 on the session endpoint lets the
# session go, and keys that differ only past the 64th character stay two sessions.

OWNED_KEYS = ["k", "s" * 64, "l" * 65, "x" * 1024]


@pytest.mark.parametrize("key", OWNED_KEYS, ids=len)
async def test_a_session_handed_out_here_is_served_from_memory_then_let_go_on_404(
    middleware: FlyReplayMiddleware,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    key: str,
) -> None:
    app.headers = [(b"mcp-session-id", key.encode())]
    await call(middleware)  # handed out here: bound here
    assert await repo.lookup(key) == ME
    before = await io(repo)
    for _ in range(5):
        fake_clock.advance(1)
        assert (await call(middleware, headers=[("mcp-session-id", key)])).status == 200
    assert await io(repo) == before  # from memory: no lookup, no claim
    app.status, app.headers = 404, []
    await call(middleware, headers=[("mcp-session-id", key)])
    assert await repo.lookup(key) is None


@pytest.mark.parametrize("length", [64, 65, 1024])
async def test_keys_that_differ_past_the_64th_character_are_two_sessions(
    middleware: FlyReplayMiddleware, app: App, repo: MemorySessionRepository, length: int
) -> None:
    mine, theirs = "a" * (length - 1) + "1", "a" * (length - 1) + "2"
    app.headers = [(b"mcp-session-id", mine.encode())]
    await call(middleware)
    await repo.claim(theirs, OTHER, TTL)
    app.headers = []
    assert (await call(middleware, headers=[("mcp-session-id", mine)])).status == 200
    replayed = await call(middleware, headers=[("mcp-session-id", theirs)])
    assert replayed.status == 307
    assert f"instance={OTHER}" in replayed.headers["fly-replay"]
