"""``FlyReplayMiddleware`` against hostile headers, unrelated 404s, and lost claims.

Each test here failed before the fix it names: crafted ``fly-replay-src`` and
``Content-Length`` values raised out of the middleware; a 404 for any path (or a 405 to
a ``DELETE``) ended a live session; a claim lost on the resilient wrapper's write-back
left this machine serving a session that another machine holds. The store is a real
``MemorySessionRepository`` on a fake clock; requests are raw ASGI calls with raw
header bytes, so nothing is cleaned up on the way in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from session_repo import MemorySessionRepository
from session_repo.contract import session_ref
from session_repo.fly import FlyReplayMiddleware
from session_repo.fly.replay_state import ReplayStateSigner, session_digest
from session_repo.testing import FakeClock

ME, OTHER = "machine-a", "machine-b"
SECRET = "a-shared-secret"
SID = "3f9c2a7e41d84b0f9a1c6e5d2b7a8c90"
TTL = 60.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLY_MACHINE_ID", "FLY_ALLOC_ID", "SESSION_REPO_REPLAY_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_raw_session_ids(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        assert SID not in record.getMessage()
        assert SID not in repr(record.__dict__)


@dataclass
class App:
    """Answers ``status`` with ``headers``; records the paths it served."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await receive()
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]


async def request(
    middleware: Any,
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "GET",
    path: str = "/mcp",
    query: bytes = b"",
) -> Answer:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    return Answer(start["status"], dict(start.get("headers", [])))


@pytest.fixture
def repo(fake_clock: FakeClock) -> MemorySessionRepository:
    return MemorySessionRepository(clock=fake_clock)


@pytest.fixture
def app() -> App:
    return App()


def build(app: App, repo: Any, clock: FakeClock, **options: Any) -> FlyReplayMiddleware:
    return FlyReplayMiddleware(
        app, repo, instance_id=ME, ttl=TTL, state_secret=SECRET, clock=clock, **options
    )


@pytest.fixture
def middleware(app: App, repo: MemorySessionRepository, fake_clock: FakeClock) -> Any:
    return build(app, repo, fake_clock)


KEY = (b"mcp-session-id", SID.encode())


# -- 1. malformed headers are untrusted input, never an exception -------------------------


def bad_srcs(now: float) -> list[bytes]:
    stamp = str(int(now)).encode()
    good = ReplayStateSigner(SECRET).sign(ME, session_digest(SID), now).encode()
    return [
        b"state=v1.\xb2.x",  # a superscript two passes str.isdigit, not int()
        b"state=v1.\xb2\xb3." + good.rsplit(b".", 1)[1],
        b"state=v1." + stamp + b"." + "é".encode() * 22,  # a MAC hmac cannot compare
        b"state=v1." + stamp + b"." + good.rsplit(b".", 1)[1][:-1] + b"\xe9",
        b"state=v1.\xef\xbc\x91\xef\xbc\x92." + good.rsplit(b".", 1)[1],  # fullwidth 12
        b"state=" + good + b"x",
        b"state=v1.99999999999999999999." + good.rsplit(b".", 1)[1],
        b"\xff\xfe\xfd;state=\x00\x01",
        b";;;===;state",
        b"state=" + b"v1." * 400_000,  # over a megabyte
        b"instance=x;state=" + good + b"\xc3(",  # not UTF-8
    ]


@pytest.mark.parametrize("index", range(11))
async def test_a_crafted_fly_replay_src_is_untrusted_never_an_exception(
    middleware: Any, app: App, repo: MemorySessionRepository, fake_clock: FakeClock, index: int
) -> None:
    await repo.upsert(SID, OTHER)
    src = bad_srcs(fake_clock.now())[index]
    answer = await request(middleware, [KEY, (b"fly-replay-src", src)])
    assert answer.status == 307  # routed as if the header were absent
    assert answer.headers[b"fly-replay"].startswith(f"instance={OTHER};".encode())
    assert not app.paths


async def test_a_verified_state_still_counts_with_the_stricter_parser(
    middleware: Any, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, OTHER)
    state = ReplayStateSigner(SECRET).sign(ME, session_digest(SID), fake_clock.now())
    src = f"instance={OTHER};region=iad;state={state}".encode()
    assert (await request(middleware, [KEY, (b"fly-replay-src", src)])).status == 200
    assert app.paths == ["/mcp"]


@pytest.mark.parametrize(
    ("length", "replayed"),
    [
        (b"\xb2", False),
        (b"\xb9\xb2", False),
        ("\uff11\uff12".encode(), False),  # fullwidth digits, as UTF-8
        (b"+5", False),
        (b"-1", False),
        (b"5 5", False),
        (b"0x10", False),
        (b"9" * 40, False),
        (b"", False),
        (b" 5\t", True),  # optional whitespace around a field value is not part of it
        (b"5", True),
    ],
    ids=repr,
)
async def test_a_content_length_that_is_not_plain_digits_is_an_unknown_length(
    middleware: Any, app: App, repo: MemorySessionRepository, length: bytes, replayed: bool
) -> None:
    await repo.upsert(SID, OTHER)
    answer = await request(middleware, [KEY, (b"content-length", length)], method="POST")
    assert answer.status == (307 if replayed else 409)
    assert not app.paths
    await repo.upsert(SID, ME)  # and for a session owned here, the app answers as usual
    answer = await request(middleware, [KEY, (b"content-length", length)], method="POST")
    assert answer.status == 200


async def test_two_content_lengths_that_disagree_are_an_unknown_length(
    middleware: Any, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    lengths = [(b"content-length", b"5"), (b"content-length", b"7")]
    assert (await request(middleware, [KEY, *lengths], method="POST")).status == 409
    same = [(b"content-length", b"5"), (b"content-length", b"5")]
    assert (await request(middleware, [KEY, *same], method="POST")).status == 307


async def test_headers_that_are_not_bytes_pairs_are_skipped(
    middleware: Any, app: App, repo: MemorySessionRepository
) -> None:
    await repo.upsert(SID, OTHER)
    odd: list[Any] = [("mcp-session-id", SID), [b"x"], None, (b"a", b"b", b"c"), (1, 2)]
    assert (await request(middleware, odd)).status == 307  # a str pair still counts
    not_bytes: list[Any] = [(b"mcp-session-id", 5)]
    assert (await request(middleware, not_bytes)).status == 200


# -- 2. only a sign that the session is gone ends it --------------------------------------


async def own_by_header(middleware: Any, app: App) -> None:
    app.headers = [KEY]
    await request(middleware, [], method="POST", path="/mcp")  # initialize, on /mcp
    app.headers = []


@pytest.mark.parametrize("path", ["/favicon.ico", "/mcp/extra", "/"])
async def test_header_mode_a_404_for_another_path_keeps_the_session(
    middleware: Any, app: App, repo: MemorySessionRepository, path: str
) -> None:
    await own_by_header(middleware, app)
    app.status = 404
    await request(middleware, [KEY], path=path)
    await request(middleware, [KEY], method="DELETE", path=path)
    assert await repo.lookup(SID) == ME
    await request(middleware, [KEY], path="/mcp")  # the session endpoint says it is gone
    assert await repo.lookup(SID) is None


async def test_header_mode_unbind_on_404_ends_it_on_any_path(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = build(app, repo, fake_clock, unbind_on_404=True)
    await own_by_header(middleware, app)
    app.status = 404
    await request(middleware, [KEY], path="/favicon.ico")
    assert await repo.lookup(SID) is None


@pytest.fixture
def cookie_mode(app: App, repo: MemorySessionRepository, fake_clock: FakeClock) -> Any:
    return build(app, repo, fake_clock, cookie="sid")


COOKIE = (b"cookie", f"theme=dark; sid={SID}".encode())


async def own_by_cookie(middleware: Any, app: App, fake_clock: FakeClock) -> None:
    fake_clock.set(1_700_000_000)  # a real date, so that an Expires can be in the past
    app.status, app.headers = 201, [(b"set-cookie", f"sid={SID}; Path=/; HttpOnly".encode())]
    await request(middleware, [], method="POST", path="/login")
    app.status, app.headers = 200, []


@pytest.mark.parametrize("status", [404, 405, 410, 500])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_cookie_mode_a_404_or_any_error_keeps_the_session(
    cookie_mode: Any,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    status: int,
    method: str,
) -> None:
    await own_by_cookie(cookie_mode, app, fake_clock)
    app.status = status
    for path in ("/favicon.ico", "/login", "/cart"):
        await request(cookie_mode, [COOKIE], method=method, path=path)
    assert await repo.lookup(SID) == ME
    assert (await request(cookie_mode, [COOKIE], path="/cart")).status == status  # still here


@pytest.mark.parametrize(
    "clearing",
    [
        b'sid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=lax',
        f"sid={SID}; Max-Age=0".encode(),
        f"sid={SID}; max-age=-1; Path=/".encode(),
        f"sid={SID}; Expires=Wed, 21 Oct 2015 07:28:00 GMT".encode(),
        b"sid=; Path=/",
    ],
    ids=["starlette delete_cookie", "max-age 0", "max-age -1", "expires past", "empty"],
)
@pytest.mark.parametrize("status", [200, 204, 404])
async def test_cookie_mode_the_app_clearing_the_cookie_ends_the_session(
    cookie_mode: Any,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    clearing: bytes,
    status: int,
) -> None:
    await own_by_cookie(cookie_mode, app, fake_clock)
    app.status, app.headers = status, [(b"set-cookie", clearing)]
    await request(cookie_mode, [COOKIE], method="POST", path="/logout")
    assert await repo.lookup(SID) is None


@pytest.mark.parametrize(
    "setting",
    [
        b"other=; Max-Age=0",
        f"sid={SID}; Max-Age=600".encode(),
        f"sid={SID}; Expires=Wed, 21 Oct 2099 07:28:00 GMT".encode(),
        f"sid={SID}; Expires=not a date".encode(),
        f"sid={SID}; Max-Age=\xb2".encode("latin-1"),
    ],
)
async def test_cookie_mode_a_set_cookie_that_does_not_clear_it_keeps_the_session(
    cookie_mode: Any,
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    setting: bytes,
) -> None:
    await own_by_cookie(cookie_mode, app, fake_clock)
    app.headers = [(b"set-cookie", setting)]
    await request(cookie_mode, [COOKIE], path="/cart")
    assert await repo.lookup(SID) == ME


async def test_cookie_mode_unbind_on_404_opts_into_ending_it_on_a_404(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = build(app, repo, fake_clock, cookie="sid", unbind_on_404=True)
    await own_by_cookie(middleware, app, fake_clock)
    app.status = 405
    await request(middleware, [COOKIE], path="/cart")
    assert await repo.lookup(SID) == ME
    app.status = 404
    await request(middleware, [COOKIE], path="/cart")
    assert await repo.lookup(SID) is None


async def test_cookie_mode_a_cleared_cookie_and_a_new_one_rebinds(
    cookie_mode: Any, app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await own_by_cookie(cookie_mode, app, fake_clock)
    app.headers = [(b"set-cookie", b"sid=; Max-Age=0"), (b"set-cookie", b"sid=rotated-1")]
    await request(cookie_mode, [COOKIE], method="POST", path="/login")
    assert await repo.lookup(SID) is None
    assert await repo.lookup("rotated-1") == ME


# -- 3. a claim lost on write-back is forgotten at once -----------------------------------

Listener = Callable[[str, str], Awaitable[None]]


class ReportingRepository:
    """A real memory repository that, like the resilient wrapper, reports lost claims.

    The test plays the wrapper's write-back: it rebinds the session to the winner in
    the store, then calls the listeners the way the wrapper will.
    """

    def __init__(self, inner: MemorySessionRepository) -> None:
        self.inner = inner
        self.listeners: list[Listener] = []

    def add_claim_lost_listener(self, callback: Listener) -> None:
        self.listeners.append(callback)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def lose(self, session_id: str, winner: str) -> None:
        await self.inner.upsert(session_id, winner)
        for listener in self.listeners:
            await listener(session_ref(session_id), winner)


async def test_a_claim_lost_on_write_back_sends_the_next_request_to_the_winner(
    app: App,
    repo: MemorySessionRepository,
    fake_clock: FakeClock,
    no_raw_session_ids: pytest.LogCaptureFixture,
) -> None:
    reporting = ReportingRepository(repo)
    middleware = build(app, reporting, fake_clock)
    assert reporting.listeners  # registered at construction
    await own_by_header(middleware, app)
    assert (await request(middleware, [KEY])).status == 200  # served from memory
    lookups = (await repo.metrics()).lookups

    await reporting.lose(SID, OTHER)
    answer = await request(middleware, [KEY])
    assert (await repo.metrics()).lookups == lookups + 1  # asked the store again
    assert answer.status == 307
    assert answer.headers[b"fly-replay"].startswith(f"instance={OTHER};".encode())
    assert app.paths == ["/mcp", "/mcp"]  # the app was not called for the replayed one
    lines = [r for r in no_raw_session_ids.records if "store was down" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert session_ref(SID) in lines[0].getMessage()


async def test_a_lost_claim_for_a_session_not_owned_here_changes_nothing(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    reporting = ReportingRepository(repo)
    middleware = build(app, reporting, fake_clock)
    await own_by_header(middleware, app)
    await reporting.lose("some-other-session", OTHER)
    before = (await repo.metrics()).lookups
    assert (await request(middleware, [KEY])).status == 200
    assert (await repo.metrics()).lookups == before  # still owned, still from memory


def test_a_repository_without_the_listener_api_is_fine(
    app: App, repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    assert not hasattr(repo, "add_claim_lost_listener")
    build(app, repo, fake_clock)
