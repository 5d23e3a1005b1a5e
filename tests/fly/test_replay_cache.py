"""Replays that Fly's proxy can cache (issue 15): the middleware's cache mode, and the
simulator's model of Fly's session-based replay cache.

Fly documents (networking/dynamic-request-routing, blueprints/sticky-sessions): rules
``[[http_service.http_options.replay_cache]]`` (``path_prefix``, ``ttl_seconds`` >= 10,
``type`` header or cookie, ``name``); "the ``state`` field cannot be set in the
``fly-replay`` intended to be cached"; the target gets ``fly-replay-cache-status``
(``hit``, ``miss``, ``bypass``); a cached replay carries no ``fly-replay-src``; a target
invalidates by "issuing a ``fly-replay`` back ... setting ``fly-replay-cache:
invalidate``". The store is a ``MemorySessionRepository`` on a fake clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from session_repo import InvalidInput, MemorySessionRepository
from session_repo.fly import FlyReplayMiddleware
from session_repo.testing import FakeClock, FlyProxySimulator, ReplayCacheRule

A, B, C = "a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3"
SID = "3f9c2a7e41d84b0f9a1c6e5d2b7a8c90"
SECRET = "a-shared-secret"
RULE = {"path_prefix": "/mcp", "ttl_seconds": 300, "type": "header", "name": "mcp-session-id"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLY_MACHINE_ID", "FLY_ALLOC_ID", "SESSION_REPO_REPLAY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SESSION_REPO_REPLAY_CACHE", raising=False)
    monkeypatch.delenv("SESSION_STORE_TTL_MS", raising=False)


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """An app that answers 200 with the headers it got; ``x-create`` hands out a session."""
    if scope["type"] != "http":
        return
    await receive()
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    out = [(b"content-type", b"application/json")]
    if "x-create" in headers:
        out.append((b"mcp-session-id", headers["x-create"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": out})
    await send({"type": "http.response.body", "body": json.dumps(headers).encode()})


async def call(
    app: Any, headers: dict[str, str], **scope_fields: Any
) -> tuple[int, dict[str, str], bool]:
    """One GET /mcp through ``app`` (``scope_fields`` replace the scope's own): (status,
    answer headers, whether ``echo`` answered)."""
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": "GET", "path": "/mcp", "headers": raw, **scope_fields}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    answer = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], answer, body.startswith(b"{")


async def lookups(repo: MemorySessionRepository) -> int:
    return (await repo.metrics()).lookups


@pytest.fixture
def repo(fake_clock: FakeClock) -> MemorySessionRepository:
    return MemorySessionRepository(clock=fake_clock)


def cached(repo: MemorySessionRepository, clock: FakeClock, **options: Any) -> FlyReplayMiddleware:
    options.setdefault("replay_cache", True)
    return FlyReplayMiddleware(echo, repo, instance_id=A, ttl=60, clock=clock, **options)


# -- the middleware's answers, exactly ----------------------------------------------------------


async def test_cache_mode_replays_with_a_bare_instance_field(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, B)
    middleware = cached(repo, fake_clock, state_secret=SECRET)
    status, headers, served = await call(middleware, {"mcp-session-id": SID})
    assert (status, served) == (307, False)
    assert headers["fly-replay"] == f"instance={B}"  # no state, timeout or fallback
    assert "fly-replay-cache" not in headers


async def test_keys_no_cache_rule_can_key_on_keep_timeout_and_fallback(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    """A fly.toml rule keys on a header or a cookie: a query parameter (HTTP+SSE) or a
    key= callable gets a bounded replay, not a bare one that nothing would cache."""
    await repo.upsert(SID, B)
    bounded = f"instance={B};timeout=5s;fallback=force_self"
    message = {"method": "POST", "path": "/messages/"}
    empty = {"content-length": "0"}
    query = f"session_id={SID}".encode()
    _, headers, _ = await call(cached(repo, fake_clock), empty, **message, query_string=query)
    assert headers["fly-replay"] == bounded
    by_callable = cached(repo, fake_clock, key=lambda scope: SID)
    _, headers, _ = await call(by_callable, empty, **message, query_string=b"")
    assert headers["fly-replay"] == bounded
    _, headers, _ = await call(cached(repo, fake_clock), {"mcp-session-id": SID})
    assert headers["fly-replay"] == f"instance={B}"  # the header: bare, cacheable


async def test_the_env_var_turns_cache_mode_on_and_a_bad_value_is_refused(
    repo: MemorySessionRepository, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await repo.upsert(SID, B)
    monkeypatch.setenv("SESSION_REPO_REPLAY_CACHE", "true")
    middleware = FlyReplayMiddleware(echo, repo, instance_id=A, clock=fake_clock)
    assert middleware.replay_cache
    assert (await call(middleware, {"mcp-session-id": SID}))[1]["fly-replay"] == f"instance={B}"
    assert not cached(repo, fake_clock, replay_cache=False).replay_cache  # the argument wins
    monkeypatch.setenv("SESSION_REPO_REPLAY_CACHE", "sometimes")
    with pytest.raises(InvalidInput, match="SESSION_REPO_REPLAY_CACHE"):
        FlyReplayMiddleware(echo, repo, instance_id=A)


async def test_plain_mode_is_unchanged_even_for_a_hit(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, B)
    middleware = cached(repo, fake_clock, replay_cache=False, state_secret=SECRET)
    status, headers, _ = await call(
        middleware, {"mcp-session-id": SID, "fly-replay-cache-status": "hit"}
    )
    assert status == 307
    assert headers["fly-replay"].startswith(f"instance={B};state=v1.")
    assert headers["fly-replay"].endswith(";timeout=5s;fallback=force_self")
    assert "fly-replay-cache" not in headers


async def test_a_stale_hit_is_replayed_to_the_owner_and_invalidates_the_entry(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert(SID, B)
    middleware = cached(repo, fake_clock, state_secret=SECRET)
    status, headers, served = await call(
        middleware, {"mcp-session-id": SID, "fly-replay-cache-status": "HIT "}
    )
    assert (status, served) == (307, False)
    # not cached (it invalidates), so it may bring a dead owner's request back here
    assert headers["fly-replay"] == f"instance={B};timeout=5s;fallback=force_self"
    assert headers["fly-replay-cache"] == "invalidate"


@pytest.mark.parametrize("status", ["miss", "bypass"])
async def test_a_replayed_request_is_served_here_whoever_owns_it(
    repo: MemorySessionRepository, fake_clock: FakeClock, status: str
) -> None:
    await repo.upsert(SID, B)
    middleware = cached(repo, fake_clock, state_secret=SECRET)
    src = f"instance={C};region=iad;t=1"  # a cacheable replay has no state to verify
    headers = {"mcp-session-id": SID, "fly-replay-src": src, "fly-replay-cache-status": status}
    assert (await call(middleware, headers))[::2] == (200, True)
    assert await repo.lookup(SID) == B  # served, not taken


async def test_a_hit_for_the_owner_does_no_storage_io(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = cached(repo, fake_clock)
    assert (await call(middleware, {"x-create": SID}))[0] == 200  # handed out here: bound
    assert await repo.lookup(SID) == A
    before = await repo.metrics()
    for _ in range(5):
        answer = await call(middleware, {"mcp-session-id": SID, "fly-replay-cache-status": "hit"})
        assert answer[::2] == (200, True)
    after = await repo.metrics()
    assert (after.lookups, after.claims, after.touches) == (
        before.lookups,
        before.claims,
        before.touches,
    )


async def test_a_hit_for_a_free_session_is_served_and_bound_here(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    middleware = cached(repo, fake_clock)
    headers = {"mcp-session-id": SID, "fly-replay-cache-status": "hit"}
    assert (await call(middleware, headers))[::2] == (200, True)
    assert await repo.lookup(SID) == A
    plain = cached(repo, fake_clock, replay_cache=False)
    await repo.delete(SID)
    assert (await call(plain, headers))[::2] == (200, True)
    assert await repo.lookup(SID) is None  # plain header mode binds only what the app hands out


# -- the simulator's cache, on raw apps ----------------------------------------------------------


class Replaying:
    """Machines that answer ``replays[machine]`` (a fly-replay, with ``extra`` headers) to a
    request that was not replayed, else echo what they got."""

    def __init__(self) -> None:
        self.replays: dict[str, str] = {}
        self.extra: list[tuple[bytes, bytes]] = []

    def __call__(self, machine: str) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await receive()
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            replay = self.replays.get(machine)
            if replay and "fly-replay-src" not in headers:
                out = [(b"fly-replay", replay.encode()), *self.extra]
                await send({"type": "http.response.start", "status": 307, "headers": out})
                await send({"type": "http.response.body", "body": b""})
                return
            body = json.dumps({"machine": machine, "headers": headers}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

        return app


def pick(order: list[str]) -> Callable[[Sequence[str]], str]:
    """A load balancer that picks ``order[0]`` while it runs (tests change the list)."""
    return lambda running: order[0] if order[0] in running else running[0]


def client_for(sim: FlyProxySimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://app.fly.test")


async def test_the_simulator_caches_a_bare_replay_until_its_ttl_runs_out() -> None:
    clock, machines, lb = FakeClock(1000.0), Replaying(), [B]
    machines.replays = {B: f"instance={C}"}
    sim = FlyProxySimulator(machines, [A, B, C], chooser=pick(lb), replay_cache=[RULE], clock=clock)
    async with sim, client_for(sim) as client:
        first = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
        assert first["machine"] == C
        assert first["headers"]["fly-replay-cache-status"] == "miss"
        assert "fly-replay-src" in first["headers"]
        assert sim.replay_cache is not None
        assert sim.replay_cache.target(SID) == C
        clock.advance(299)
        hit = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
        assert hit["machine"] == C
        assert hit["headers"]["fly-replay-cache-status"] == "hit"
        assert "fly-replay-src" not in hit["headers"]  # as Fly documents for cached replays
        clock.advance(1)  # 300 s: expired
        again = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
        assert again["headers"]["fly-replay-cache-status"] == "miss"
        other = (await client.get("/other", headers={"mcp-session-id": SID})).json()
        assert "fly-replay-cache-status" not in other["headers"]  # outside path_prefix
    assert [d.cache for d in sim.deliveries] == ["miss", "hit", "miss", None]
    assert [d.replays for d in sim.deliveries] == [1, 0, 1, 1]
    assert sim.deliveries[1].origin == C  # the cache sent it: B never saw it
    assert (sim.replay_cache.hits, sim.replay_cache.stored) == (1, 2)


@pytest.mark.parametrize("field", ["state=x", "timeout=5s", "fallback=force_self"])
async def test_a_replay_with_state_timeout_or_fallback_is_not_cached(field: str) -> None:
    machines = Replaying()
    machines.replays = {B: f"instance={C};{field}"}
    sim = FlyProxySimulator(machines, [A, B, C], chooser=pick([B]), replay_cache=[RULE])
    async with sim, client_for(sim) as client:
        for _ in range(2):
            answer = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
            assert answer["headers"]["fly-replay-cache-status"] == "miss"
    assert sim.replay_cache is not None
    assert sim.replay_cache.stored == 0


async def test_invalidate_drops_the_entry_and_a_gone_machine_is_load_balanced() -> None:
    machines, lb = Replaying(), [B]
    machines.replays = {B: f"instance={C}"}
    sim = FlyProxySimulator(machines, [A, B, C], chooser=pick(lb), replay_cache=[RULE])
    cache = sim.replay_cache
    assert cache is not None
    async with sim, client_for(sim) as client:
        await client.get("/mcp", headers={"mcp-session-id": SID})
        machines.replays = {C: f"instance={A}"}  # C gives the session up: back with invalidate
        machines.extra = [(b"fly-replay-cache", b"invalidate")]
        moved = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
        assert moved["machine"] == A
        assert cache.invalidations == 1
        assert cache.target(SID) is None
        machines.replays, machines.extra = {B: f"instance={C}"}, []
        await client.get("/mcp", headers={"mcp-session-id": SID})  # cached for C again
        assert cache.target(SID) == C
        await sim.stop(C)
        lb[0] = A
        answer = await client.get("/mcp", headers={"mcp-session-id": SID})
        assert answer.json()["machine"] == A  # dropped and load-balanced, no 502
        assert cache.gone == 1
        assert cache.target(SID) is None
    assert [d.cache for d in sim.deliveries] == ["miss", "hit", "miss", "miss"]


async def test_bypass_and_the_cookie_rule() -> None:
    machines = Replaying()
    machines.replays = {B: f"instance={C}"}
    machines.extra = [(b"fly-replay-cache-allow-bypass", b"yes")]
    rule = ReplayCacheRule("/", 10, "cookie", "session_id")
    sim = FlyProxySimulator(machines, [A, B, C], chooser=pick([B]), replay_cache=[rule])
    cookie = {"cookie": f"theme=dark; session_id={SID}"}
    async with sim, client_for(sim) as client:
        await client.get("/", headers=cookie)
        assert (await client.get("/", headers=cookie)).json()["machine"] == C
        skipped = await client.get("/", headers={**cookie, "fly-replay-cache-control": "skip"})
        assert skipped.json()["headers"]["fly-replay-cache-status"] == "bypass"
    assert [d.cache for d in sim.deliveries] == ["miss", "hit", "bypass"]
    assert [d.origin for d in sim.deliveries] == [B, C, B]


@pytest.mark.parametrize(
    ("change", "error"),
    [({"ttl_seconds": 9}, "ttl_seconds"), ({"type": "query"}, "type"), ({"name": ""}, "name")],
)
def test_rules_fly_would_refuse_are_refused(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        FlyProxySimulator(Replaying(), 1, replay_cache=[{**RULE, **change}])


async def test_without_rules_no_cache_status_is_sent() -> None:
    machines = Replaying()
    machines.replays = {B: f"instance={C}"}
    sim = FlyProxySimulator(machines, [A, B, C], chooser=pick([B]))
    async with sim, client_for(sim) as client:
        for _ in range(2):
            answer = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
            assert "fly-replay-cache-status" not in answer["headers"]
    assert sim.replay_cache is None
    assert sim.replays == 2


# -- the middleware on simulated machines ---------------------------------------------------------


class Fleet:
    """Each machine: ``echo`` behind the middleware in cache mode, one shared store.

    With ``flip`` set, every fly-replay a machine answers moves the session to that
    machine as the answer leaves: ownership changing under every replay in flight.
    """

    def __init__(self, repo: MemorySessionRepository, clock: FakeClock) -> None:
        self.repo, self.clock, self.flip = repo, clock, False

    def __call__(self, machine: str) -> Any:
        middleware = FlyReplayMiddleware(
            echo,
            self.repo,
            instance_id=machine,
            ttl=60,
            clock=self.clock,
            replay_cache=True,
            state_secret=SECRET,  # a secret does not make a cacheable replay verifiable
        )

        async def app(scope: Any, receive: Any, send: Any) -> None:
            async def flipping(message: Any) -> None:
                start = message["type"] == "http.response.start"
                if self.flip and start and any(k == b"fly-replay" for k, _ in message["headers"]):
                    await self.repo.upsert(SID, machine)
                await send(message)

            await middleware(scope, receive, flipping)

        return app


async def test_a_session_is_cached_to_its_owner_then_corrected_in_one_hop_when_it_moves(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    lb = [A]
    sim = FlyProxySimulator(
        Fleet(repo, fake_clock), [A, B, C], chooser=pick(lb), replay_cache=[RULE], clock=fake_clock
    )
    cache = sim.replay_cache
    assert cache is not None
    keyed = {"mcp-session-id": SID}
    async with sim, client_for(sim) as client:
        assert (await client.get("/mcp", headers={"x-create": SID})).status_code == 200
        assert await repo.lookup(SID) == A
        lb[0] = B
        await client.get("/mcp", headers=keyed)  # B replays, plainly: cached for A
        assert cache.target(SID) == A
        before = await lookups(repo)
        hit = (await client.get("/mcp", headers=keyed)).json()
        assert hit["fly-replay-cache-status"] == "hit"
        assert await lookups(repo) == before  # the owner's hot path: memory only
        # the session moves to C (A forgot it: its memory ran out, the binding is C's)
        fake_clock.advance(61)
        await repo.upsert(SID, C, ttl=600)
        stale = (await client.get("/mcp", headers=keyed)).json()
        assert stale["fly-replay-cache-status"] == "miss"  # replayed by A, served by C
        assert cache.invalidations == 1
        assert cache.target(SID) is None
        await client.get("/mcp", headers=keyed)  # B again: cached for C now
        assert cache.target(SID) == C
    served = [(d.origin, d.served_by, d.replays, d.cache) for d in sim.deliveries[1:]]
    assert served == [(B, A, 1, "miss"), (A, A, 0, "hit"), (A, C, 1, "hit"), (B, C, 1, "miss")]


async def test_ping_pong_ownership_never_loops_nor_takes_two_hops(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    fleet, lb = Fleet(repo, fake_clock), [A]
    sim = FlyProxySimulator(
        fleet, [A, B, C], chooser=pick(lb), replay_cache=[RULE], clock=fake_clock
    )
    keyed = {"mcp-session-id": SID}
    fleet.flip = True
    async with sim, client_for(sim) as client:
        for round_ in range(12):
            owner = (A, B, C)[round_ % 3]
            fake_clock.advance(61)  # every machine forgets what it claimed
            await repo.upsert(SID, owner, ttl=600)
            lb[0] = (B, C, A)[round_ % 3]
            hint = {"fly-replay-cache-status": "hit"} if round_ % 2 else {}
            answer = await client.get("/mcp", headers={**keyed, **hint})
            assert answer.status_code == 200
    assert sim.refused == 0
    assert all(d.status == 200 and d.replays <= 1 for d in sim.deliveries)
    # the owner moved under every replay, and the target served it anyway: no second hop
    moved = [d for d in sim.deliveries if d.replays == 1]
    assert len(moved) >= 6
    assert any(d.cache == "hit" for d in moved)  # corrections of stale hits among them
    assert sim.replay_cache is not None
    assert sim.replay_cache.invalidations >= 1


async def test_a_hit_to_a_machine_whose_session_is_free_is_served_and_rebound(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    sim = FlyProxySimulator(
        Fleet(repo, fake_clock), [A, B, C], chooser=pick([B]), replay_cache=[RULE], clock=fake_clock
    )
    async with sim, client_for(sim) as client:
        await repo.upsert(SID, A, ttl=600)
        await client.get("/mcp", headers={"mcp-session-id": SID})  # cached for A
        fake_clock.advance(61)
        await repo.delete(SID)  # the binding is gone; the session still lives on A
        hit = (await client.get("/mcp", headers={"mcp-session-id": SID})).json()
        assert hit["fly-replay-cache-status"] == "hit"
        assert await repo.lookup(SID) == A
    assert [d.served_by for d in sim.deliveries] == [A, A]
    assert sim.deliveries[1].replays == 0


async def test_a_stale_hit_whose_owner_is_gone_comes_back_and_is_served_here(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    sim = FlyProxySimulator(
        Fleet(repo, fake_clock), [A, B, C], chooser=pick([B]), replay_cache=[RULE], clock=fake_clock
    )
    async with sim, client_for(sim) as client:
        await repo.upsert(SID, A, ttl=600)
        await client.get("/mcp", headers={"mcp-session-id": SID})  # cached for A
        fake_clock.advance(61)  # A forgets the claim it renewed when it served
        await repo.upsert(SID, C, ttl=600)
        await sim.stop(C)
        answer = await client.get("/mcp", headers={"mcp-session-id": SID})
        assert answer.status_code == 200
        assert "fly-replay-failed" in answer.json()  # the correction's fallback brought it back
        assert await repo.lookup(SID) == A  # served and bound where it was
    last = sim.deliveries[-1]
    assert (last.origin, last.served_by, last.fell_back, last.cache) == (A, A, True, "hit")


async def test_cookie_mode_on_a_cookie_rule(
    repo: MemorySessionRepository, fake_clock: FakeClock
) -> None:
    def factory(machine: str) -> Any:
        return FlyReplayMiddleware(
            echo, repo, instance_id=machine, cookie="sid", clock=fake_clock, replay_cache=True
        )

    rule = ReplayCacheRule("/", 60, "cookie", "sid")
    lb = [B]
    sim = FlyProxySimulator(factory, [A, B, C], chooser=pick(lb), replay_cache=[rule])
    async with sim, client_for(sim) as client:
        await repo.upsert(SID, A, ttl=600)
        cookie = {"cookie": f"sid={SID}"}
        for _ in range(3):
            assert (await client.get("/mcp", headers=cookie)).status_code == 200
    assert [(d.served_by, d.replays, d.cache) for d in sim.deliveries] == [
        (A, 1, "miss"),
        (A, 0, "hit"),
        (A, 0, "hit"),
    ]
