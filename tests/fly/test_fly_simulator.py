"""``FlyProxySimulator`` follows ``fly-replay`` the way Fly documents it.

The machines here are small raw ASGI apps that answer with their id and what they
received, or with a ``fly-replay`` header the test chose, so each case checks one
documented behaviour: load balancing, instance/region routing, ``fly-replay-src``,
``timeout`` + ``fallback`` with ``fly-replay-failed``, the 1 MB limit, stopping and
starting machines, and the streaming transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest

from session_repo.testing import FlyProxySimulator

A, B, C = "a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3"


class Fleet:
    """Builds one echo app per machine; ``replays[machine]`` makes it answer fly-replay."""

    def __init__(self) -> None:
        self.replays: dict[str, str] = {}
        self.always_replay = False  # even a request that was replayed already
        self.events: list[tuple[str, str]] = []
        self.built: dict[str, list[Any]] = {}

    def __call__(self, machine: str) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    kind = message["type"].split(".")[1]
                    self.events.append((machine, kind))
                    await send({"type": f"lifespan.{kind}.complete"})
                    if kind == "shutdown":
                        return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            replay = self.replays.get(machine)
            fresh = "fly-replay-src" not in headers and "fly-replay-failed" not in headers
            if replay and (fresh or self.always_replay):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 307,
                        "headers": [(b"fly-replay", replay.encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
            answer = {
                "machine": machine,
                "headers": headers,
                "body": hashlib.sha256(body).hexdigest(),
                "size": len(body),
            }
            out = [(b"content-type", b"application/json")]
            if "x-create" in headers:
                out.append((b"mcp-session-id", headers["x-create"].encode()))
            await send({"type": "http.response.start", "status": 200, "headers": out})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

        self.built.setdefault(machine, []).append(app)
        return app


def fixed(machine: str) -> Callable[[Any], str]:
    """A chooser that always picks ``machine`` (when it runs)."""
    return lambda running: machine if machine in running else running[0]


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def client_for(sim: FlyProxySimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sim.transport(), base_url="http://app.fly.test")


# -- load balancing -----------------------------------------------------------------------


async def test_requests_spread_over_running_machines_and_a_seed_repeats_the_spread(
    fleet: Fleet,
) -> None:
    spreads = []
    for _ in range(2):
        async with FlyProxySimulator(fleet, 3, seed=7) as sim, client_for(sim) as client:
            served = [(await client.get("/")).json()["machine"] for _ in range(60)]
            spreads.append(served)
            assert set(served) == set(sim.machine_ids)
            assert [d.origin for d in sim.deliveries] == served
            assert sim.replays == 0
    assert spreads[0] == spreads[1]
    async with FlyProxySimulator(fleet, 3, seed=8) as other:
        assert other.machine_ids != sim.machine_ids


async def test_machine_ids_look_like_fly_machine_ids(fleet: Fleet) -> None:
    sim = FlyProxySimulator(fleet, 4, seed=1)
    assert len(set(sim.machine_ids)) == 4
    assert all(len(m) == 14 and int(m, 16) >= 0 for m in sim.machine_ids)


async def test_each_machine_is_its_own_app_object_built_with_its_id(fleet: Fleet) -> None:
    async with FlyProxySimulator(fleet, [A, B, C]) as sim:
        assert sorted(fleet.built) == [A, B, C]
        assert len({id(sim.app(m)) for m in (A, B, C)}) == 3
        assert ("a1a1a1a1a1a1a1", "startup") in fleet.events


# -- instance routing and fly-replay-src ---------------------------------------------------


async def test_a_replay_to_an_instance_lands_there_with_fly_replay_src(fleet: Fleet) -> None:
    fleet.replays = {A: f"instance={C};state=v1.abc", B: f"instance={C}"}
    async with FlyProxySimulator(fleet, [A, B, C], seed=3) as sim, client_for(sim) as client:
        before = time.time_ns() // 1000
        answers = [(await client.post("/x", content=b"hello")).json() for _ in range(30)]
        after = time.time_ns() // 1000
    assert {a["machine"] for a in answers} == {C}
    assert all(a["size"] == 5 for a in answers)  # the body went along
    replayed = [(d, a) for d, a in zip(sim.deliveries, answers, strict=True) if d.origin != C]
    assert replayed
    assert sim.replays == len(replayed)
    for delivery, answer in replayed:
        assert delivery.served_by == C
        assert delivery.replays == 1
        src = dict(f.split("=", 1) for f in answer["headers"]["fly-replay-src"].split(";"))
        assert src["instance"] == delivery.origin
        assert src["region"] == "iad"
        assert before <= int(src["t"]) <= after  # microseconds since the epoch
        assert src.get("state") == ("v1.abc" if delivery.origin == A else None)
    direct = [a for d, a in zip(sim.deliveries, answers, strict=True) if d.origin == C]
    assert direct
    assert all("fly-replay-src" not in a["headers"] for a in direct)


async def test_a_client_sent_fly_replay_src_reaches_the_first_machine_but_not_a_replay(
    fleet: Fleet,
) -> None:
    fleet.replays = {A: f"instance={B}"}
    fleet.always_replay = True  # A replays even though the request claims to be a replay
    spoof = {"fly-replay-src": "instance=evil;state=forged"}
    async with FlyProxySimulator(fleet, [A, B], chooser=fixed(A)) as sim, client_for(sim) as client:
        answer = (await client.get("/", headers=spoof)).json()
        fleet.replays = {}
        async with client_for(sim) as client:
            first_hop = (await client.get("/", headers=spoof)).json()
    assert answer["machine"] == B
    assert answer["headers"]["fly-replay-src"].startswith(f"instance={A};")
    assert "forged" not in answer["headers"]["fly-replay-src"]
    assert first_hop["headers"]["fly-replay-src"] == "instance=evil;state=forged"


async def test_region_prefer_instance_and_elsewhere(fleet: Fleet) -> None:
    regions = {A: "iad", B: "ams", C: "ams"}
    async with (
        FlyProxySimulator(fleet, [A, B, C], regions=regions, chooser=fixed(A)) as sim,
        client_for(sim) as client,
    ):
        fleet.replays = {A: 'region="syd,ams"'}
        assert (await client.get("/")).json()["machine"] in (B, C)
        fleet.replays = {A: "region=lhr"}
        assert (await client.get("/")).status_code == 502  # nothing there
        fleet.replays = {A: f"prefer_instance={B}"}
        assert (await client.get("/")).json()["machine"] == B
        await sim.stop(B)
        fleet.replays = {A: f"prefer_instance={B}"}
        assert (await client.get("/")).json()["machine"] in (A, C)
        fleet.replays = {A: "elsewhere=true"}
        answers = {(await client.get("/")).json()["machine"] for _ in range(10)}
        assert answers == {C}
        src = (await client.get("/")).json()["headers"]["fly-replay-src"]
        assert "region=iad" in src  # the region the replay came from


# -- timeout, fallback and fly-replay-failed --------------------------------------------------


async def test_a_stopped_target_with_force_self_comes_back_with_fly_replay_failed(
    fleet: Fleet,
) -> None:
    fleet.replays = {A: f"instance={B};timeout=5s;fallback=force_self"}
    async with FlyProxySimulator(fleet, [A, B], chooser=fixed(A)) as sim:
        await sim.stop(B)
        async with client_for(sim) as client:
            answer = (await client.post("/", content=b"body")).json()
    assert answer["machine"] == A
    assert answer["headers"]["fly-replay-failed"] == f"instance={B};reason=unreachable"
    assert "fly-replay-src" not in answer["headers"]
    assert answer["size"] == 4
    assert sim.fallbacks == 1
    assert sim.replays == 0
    assert sim.deliveries[-1].fell_back
    assert sim.deliveries[-1].served_by == A


async def test_a_stopped_target_without_fallback_is_a_proxy_error(fleet: Fleet) -> None:
    fleet.replays = {A: f"instance={B};timeout=2s"}
    async with FlyProxySimulator(fleet, [A, B], chooser=fixed(A)) as sim:
        await sim.stop(B)
        async with client_for(sim) as client:
            response = await client.get("/")
    assert response.status_code == 502
    assert sim.deliveries[-1].served_by is None
    assert sim.fallbacks == 0


async def test_prefer_self_falls_back_to_any_machine_when_the_sender_is_gone_too(
    fleet: Fleet,
) -> None:
    fleet.replays = {A: f"instance={B};fallback=prefer_self"}
    async with FlyProxySimulator(fleet, [A, B, C], chooser=fixed(A)) as sim:
        await sim.stop(B)
        async with client_for(sim) as client:
            assert (await client.get("/")).json()["machine"] == A
        assert sim.fallbacks == 1


async def test_a_request_that_fell_back_cannot_be_replayed_again(fleet: Fleet) -> None:
    fleet.replays = {A: f"instance={B};fallback=force_self"}
    fleet.always_replay = True
    async with FlyProxySimulator(fleet, [A, B], chooser=fixed(A)) as sim:
        await sim.stop(B)
        async with client_for(sim) as client:
            response = await client.get("/")
    assert response.status_code == 502
    assert sim.refused == 1


async def test_replays_that_loop_are_cut_off(fleet: Fleet) -> None:
    fleet.replays = {A: f"instance={B}", B: f"instance={A}"}
    fleet.always_replay = True
    async with FlyProxySimulator(fleet, [A, B], max_replays=3) as sim, client_for(sim) as client:
        response = await client.get("/")
    assert response.status_code == 502
    assert "too many replays" in response.text
    assert sim.replays == 3


# -- the 1 MB limit -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "replayed"), [(1_000_000, True), (1_000_001, False)])
async def test_bodies_over_1_mb_are_not_replayed(fleet: Fleet, size: int, replayed: bool) -> None:
    fleet.replays = {A: f"instance={B}"}
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    async with FlyProxySimulator(fleet, [A, B], chooser=fixed(A)) as sim, client_for(sim) as client:
        response = await client.post("/", content=body)
    if replayed:
        assert response.json() == response.json() | {"machine": B, "size": size}
        assert response.json()["body"] == hashlib.sha256(body).hexdigest()
        assert sim.refused == 0
    else:
        assert response.status_code == 502
        assert sim.refused == 1
        assert sim.replays == 0


# -- stopping and starting ----------------------------------------


async def test_stop_and_start(fleet: Fleet) -> None:
    async with FlyProxySimulator(fleet, [A, B, C]) as sim:
        first = sim.app(B)
        await sim.stop(B)  # graceful: the app's lifespan shutdown runs
        await sim.stop(C, graceful=False)  # a crash: it does not
        assert sim.running() == [A]
        with pytest.raises(LookupError):
            sim.app(B)
        async with client_for(sim) as client:
            assert {(await client.get("/")).json()["machine"] for _ in range(10)} == {A}
        await sim.start(B)
        assert sim.app(B) is not first  # a fresh process: nothing in memory survived
        assert sorted(sim.running()) == sorted([A, B])
    assert (B, "shutdown") in fleet.events
    assert (C, "shutdown") not in fleet.events
    assert fleet.events.count((B, "startup")) == 2


async def test_no_machine_running_is_a_503(fleet: Fleet) -> None:
    async with FlyProxySimulator(fleet, [A]) as sim:
        await sim.stop(A)
        async with client_for(sim) as client:
            assert (await client.get("/")).status_code == 503


def streaming_app(log: list[str], started: asyncio.Event) -> Any:
    """Answers with a chunk every 10 ms until the client goes away."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # no lifespan support, like some apps
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        gone = asyncio.ensure_future(receive())
        try:
            while not gone.done():
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.wait({gone}, timeout=0.01)
            log.append(gone.result()["type"])
        finally:
            gone.cancel()

    return app


async def test_the_transport_streams_and_a_closed_response_is_a_disconnect() -> None:
    log: list[str] = []
    started = asyncio.Event()
    async with FlyProxySimulator(lambda m: streaming_app(log, started), [A]) as sim:
        async with client_for(sim) as client, client.stream("GET", "/events") as response:
            async for chunk in response.aiter_bytes():
                assert chunk.startswith(b"tick")
                break
        await asyncio.sleep(0.05)
    assert log == ["http.disconnect"]


async def test_stopping_a_machine_cuts_its_streams() -> None:
    started = asyncio.Event()
    async with (
        FlyProxySimulator(lambda m: streaming_app([], started), [A, B], chooser=fixed(A)) as sim,
        client_for(sim) as client,
        client.stream("GET", "/events") as response,
    ):
        await started.wait()
        await sim.stop(A, graceful=False)
        with pytest.raises(httpx.RemoteProtocolError):
            async for _ in response.aiter_bytes():
                pass


async def test_the_transport_works_with_httpx2_too(fleet: Fleet) -> None:
    async with FlyProxySimulator(fleet, [A]) as sim:
        transport = sim.transport(httpx2)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://app.fly.test"
        ) as client:
            response = await client.post("/", content=b"abc")
    assert response.json()["machine"] == A
    assert response.json()["size"] == 3


async def test_the_simulator_is_an_asgi_app_with_a_lifespan(fleet: Fleet) -> None:
    sim = FlyProxySimulator(fleet, [A, B])
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        outbox.append(message)

    task = asyncio.ensure_future(sim({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    while not outbox:
        await asyncio.sleep(0)
    assert sorted(sim.running()) == [A, B]
    await inbox.put({"type": "lifespan.shutdown"})
    await task
    assert sim.running() == []
    assert [m["type"] for m in outbox] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


# -- telling whether a session was served at home ------------------------------


async def test_misrouted_counts_requests_answered_away_from_the_sessions_creator(
    fleet: Fleet,
) -> None:
    choices = iter([A, B, A])
    async with (
        FlyProxySimulator(fleet, [A, B], chooser=lambda running: next(choices)) as sim,
        client_for(sim) as client,
    ):
        await client.post("/", headers={"x-create": "s-1"})  # A creates s-1
        await client.post("/", headers={"mcp-session-id": "s-1"})  # B answers: misrouted
        await client.post("/", headers={"mcp-session-id": "s-1"})  # A answers: fine
    assert sim.creator("s-1") == A
    assert sim.misrouted == 1
    assert [d.served_by for d in sim.deliveries] == [A, B, A]
    assert all(d.session is None or "s-1" not in d.session for d in sim.deliveries)
