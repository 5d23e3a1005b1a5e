"""``FlyProxySimulator``: Fly.io's proxy in a test, in-process, as Fly documents it.

It is a model of Fly's documented ``fly-replay`` behaviour, not Fly itself. What it
does: spreads requests over N ASGI app instances ("machines", each its own app
object built by your factory with its own machine id) by a seedable random choice;
follows a ``fly-replay`` response header (``instance``, ``prefer_instance``,
``region``, ``elsewhere``, ``state``, ``timeout``, ``fallback``) by delivering the
buffered request again, with a ``fly-replay-src`` header (``instance``, ``region``,
``t`` in microseconds, ``state``); refuses to replay a body over 1 MB; and when the
target is stopped, falls back as ``fallback`` says (``force_self``: back to the
machine that asked, with a ``fly-replay-failed`` header; ``prefer_self``: that machine
or any other) or answers 502.

What it does not model: waiting out ``timeout`` (a stopped machine fails at once),
cross-app ``app=`` replays, the JSON replay body, replay caching, regions' latency,
Fly's exact error pages, or what ``fly-replay-failed`` contains (Fly says "metadata
about what went wrong"; here ``instance=<target>;reason=unreachable``). Client
headers reach the first machine as sent, so a spoofed ``fly-replay-src`` gets
through, the worst case a middleware must survive.

Use it as an ASGI app, or through ``transport()`` with httpx (or httpx2, which the
MCP SDK 2.x uses): ``httpx.AsyncClient(transport=sim.transport())``. The transport
streams responses, so a server-sent-event stream works as it would over a socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from session_repo.testing._asgi_transport import ASGIApp, Message, Receive, Send, make_transport

__all__ = ["Delivery", "FlyProxySimulator"]

REPLAY_LIMIT = 1_000_000  # "Requests larger than 1MB cannot be replayed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One client request as the proxy handled it.

    Args:
        method: the request's HTTP method.
        path: the request's path.
        session: a short digest of the session header, None without one.
        origin: the machine the load balancer picked.
        served_by: the machine whose answer reached the client (None: the proxy's own).
        status: the status the client got.
        replays: how many ``fly-replay`` answers were followed.
        fell_back: whether the request was sent back with ``fly-replay-failed``.
    """

    method: str
    path: str
    session: str | None  # a short digest of the session header, never the id itself
    origin: str  # the machine the load balancer picked
    served_by: str | None  # the machine whose answer reached the client (None: the proxy's)
    status: int
    replays: int
    fell_back: bool


@dataclass(eq=False)
class _Machine:
    id: str
    region: str
    app: ASGIApp | None = None
    running: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lifespan: _Lifespan | None = None


class FlyProxySimulator:
    """N machines behind a model of Fly's proxy; see the module docstring.

    Args:
        app_factory: builds a machine's app from its machine id; called on every
            ``start``, so a restarted machine has lost its memory.
        machines: how many machines (with random 14-hex-digit ids, as Fly's), or their ids.
        regions: machine id -> region, for machines outside ``region``.
        region: the region of every machine ``regions`` does not name.
        seed: seeds the random machine ids and load balancing, for repeatable tests.
        chooser: picks a machine from the running ones' ids, for a new request and a
            replay that names no instance (random when None).
        session_header: the header that carries the session id, for ``deliveries``
            and ``misrouted``.
        max_replay_body: the largest body, in bytes, it replays; a bigger one gets 502.
        max_replays: the most replays one request may take; one more gets 502.
        lifespan: run each app's ASGI lifespan on ``start`` and ``stop``.

    Attributes:
        deliveries: every client request, as a ``Delivery``, in order.
        replays: the replays followed.
        fallbacks: the requests sent back with ``fly-replay-failed``.
        refused: the replays refused (body over the limit, too many, after a fallback).
        misrouted: requests with a session header answered by a machine other than
            the running one that created that session.
    """

    def __init__(
        self,
        app_factory: Callable[[str], ASGIApp],
        machines: int | Sequence[str] = 3,
        *,
        regions: Mapping[str, str] | None = None,
        region: str = "iad",
        seed: int | None = None,
        chooser: Callable[[Sequence[str]], str] | None = None,
        session_header: str = "mcp-session-id",
        max_replay_body: int = REPLAY_LIMIT,
        max_replays: int = 3,
        lifespan: bool = True,
    ) -> None:
        self._random = random.Random(seed)  # noqa: S311 - load balancing, not secrets
        if isinstance(machines, int):
            machines = [f"{self._random.getrandbits(56):014x}" for _ in range(machines)]
        regions = regions or {}
        self._factory = app_factory
        self._machines = {m: _Machine(m, regions.get(m, region)) for m in machines}
        self._chooser = chooser or self._random.choice
        self._session_header = session_header.lower().encode("latin-1")
        self._max_body = max_replay_body
        self._max_replays = max_replays
        self._lifespan = lifespan
        self._creators: dict[str, str] = {}
        self.deliveries: list[Delivery] = []
        self.replays = 0  # replays followed
        self.fallbacks = 0  # requests sent back with fly-replay-failed
        self.refused = 0  # replays refused: body over the limit, loops, replay after fallback
        # keyed requests answered elsewhere while the session's creator was running
        self.misrouted = 0

    # -- machines ---------------------------------------------------------------

    @property
    def machine_ids(self) -> list[str]:
        """Every machine's id, running or not, in order."""
        return list(self._machines)

    def running(self) -> list[str]:
        """The ids of the machines running now."""
        return [m.id for m in self._machines.values() if m.running]

    def app(self, machine_id: str) -> ASGIApp:
        """The app object the machine runs now (a new one after each ``start``).

        Args:
            machine_id: one of ``machine_ids``.

        Raises:
            LookupError: the machine is not running (a ``KeyError``: no such machine).
        """
        app = self._machines[machine_id].app
        if app is None:
            raise LookupError(f"machine {machine_id} has not been started")
        return app

    async def start(self, machine_id: str | None = None) -> None:
        """Start one machine (all when None): a fresh app from the factory, lifespan run.

        Args:
            machine_id: the machine to start, or None for every machine not running.

        Raises:
            KeyError: no machine has that id.
            RuntimeError: the app's lifespan startup failed.
        """
        for machine in self._pick(machine_id):
            if machine.running:
                continue
            machine.app = self._factory(machine.id)
            if self._lifespan:
                machine.lifespan = _Lifespan(machine.app)
                await machine.lifespan.startup()
            machine.running = True

    async def stop(self, machine_id: str | None = None, *, graceful: bool = True) -> None:
        """Stop a machine (all when None): its connections drop and its memory is gone.

        ``graceful`` runs the app's lifespan shutdown (as ``fly machine stop`` lets it);
        otherwise it is a crash. Either way requests in flight there are cut off.

        Args:
            machine_id: the machine to stop, or None for every running machine.
            graceful: run the lifespan shutdown; False stops it as a crash would.

        Raises:
            KeyError: no machine has that id.
        """
        for machine in self._pick(machine_id):
            if not machine.running:
                continue
            machine.running = False
            for task in list(machine.tasks):
                task.cancel()
            if machine.tasks:
                await asyncio.wait(machine.tasks)
            lifespan, machine.lifespan, machine.app = machine.lifespan, None, None
            if lifespan is not None:
                await (lifespan.shutdown() if graceful else lifespan.abandon())

    def _pick(self, machine_id: str | None) -> list[_Machine]:
        if machine_id is None:
            return list(self._machines.values())
        return [self._machines[machine_id]]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def transport(self, httpx_module: Any = None) -> Any:
        """A streaming ASGI transport for ``httpx`` (default) or a compatible module
        such as ``httpx2``: ``httpx2.AsyncClient(transport=sim.transport(httpx2))``.

        Args:
            httpx_module: the imported ``httpx``-compatible module (``httpx`` when None).

        Returns:
            An ``AsyncBaseTransport`` of that module that sends requests to this proxy.
        """
        module = httpx_module if httpx_module is not None else importlib.import_module("httpx")
        return make_transport(module)(self)

    # -- the proxy --------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _serve_lifespan(self, receive, send)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)
        else:
            raise NotImplementedError(f"FlyProxySimulator does not model {scope['type']} scopes")

    async def _proxy(self, scope: Any, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        gone = asyncio.Event()  # the client hung up: tell whichever machine is answering

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._route(scope, body, send, gone)
        finally:
            watcher.cancel()

    async def _route(self, scope: Any, body: bytes, send: Send, gone: asyncio.Event) -> None:
        running = self.running()
        if not running:
            await _error(send, 503, "no machine is running")
            return
        origin = target = self._chooser(running)
        headers = list(scope["headers"])
        replays, fell_back = 0, False
        while True:
            replay, status, answer = await self._deliver(
                target, {**scope, "headers": headers}, body, send, gone
            )
            if replay is None:
                self._learn(scope, answer, target, status)
                self._record(scope, origin, target, status, replays, fell_back)
                return
            refusal = self._refusal(body, replays, fell_back)
            if refusal is not None:
                self.refused += 1
                await _error(send, 502, refusal)
                self._record(scope, origin, None, 502, replays, fell_back)
                return
            fields = _fields(replay)
            chosen = self._replay_target(fields, target)
            if chosen is None:
                chosen = self._fallback(fields.get("fallback"), target)
                if chosen is None:
                    await _error(send, 502, "the replay target could not be reached")
                    self._record(scope, origin, None, 502, replays, fell_back)
                    return
                self.fallbacks += 1
                fell_back = True
                failed = f"instance={fields.get('instance', '')};reason=unreachable"
                headers = _replace(headers, b"fly-replay-failed", failed)
            else:
                self.replays += 1
                replays += 1
                src = f"instance={target};region={self._machines[target].region}"
                src += f";t={time.time_ns() // 1000}"
                if "state" in fields:
                    src += f";state={fields['state']}"
                headers = _replace(headers, b"fly-replay-src", src)
            target = chosen

    def _refusal(self, body: bytes, replays: int, fell_back: bool) -> str | None:
        if fell_back:
            return "a request that fell back cannot be replayed again"
        if len(body) > self._max_body:
            return f"requests larger than {self._max_body} bytes cannot be replayed"
        if replays >= self._max_replays:
            return "too many replays"
        return None

    def _replay_target(self, fields: dict[str, str], sender: str) -> str | None:
        """Where a replay goes, or None when nothing that matches is running."""
        running = [m for m in self.running() if fields.get("elsewhere") != "true" or m != sender]
        for name in ("instance", "prefer_instance"):
            if name in fields:
                wanted = fields[name]
                if wanted in running:
                    return wanted
                if name == "instance":
                    return None
        if "region" in fields:
            regions = [r.strip() for r in fields["region"].split(",")]
            for region in regions:
                here = [m for m in running if region == "any" or self._machines[m].region == region]
                if here:
                    return self._chooser(here)
            return None
        return self._chooser(running) if running else None

    def _fallback(self, mode: str | None, sender: str) -> str | None:
        running = self.running()
        if mode in ("force_self", "prefer_self") and sender in running:
            return sender
        if mode == "prefer_self" and running:
            return self._chooser(running)
        return None

    async def _deliver(
        self, machine_id: str, scope: Any, body: bytes, send: Send, gone: asyncio.Event
    ) -> tuple[str | None, int, list[Any]]:
        """Run one machine's app on the request: (fly-replay value or None, status, headers)."""
        machine = self._machines[machine_id]
        app = machine.app
        if not machine.running or app is None:
            return None, await _error(send, 502, "machine is not running"), []
        replay: str | None = None
        status = 0
        answer: list[Any] = []
        done = asyncio.Event()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            waits = {asyncio.ensure_future(done.wait()), asyncio.ensure_future(gone.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            return {"type": "http.disconnect"}

        async def respond(message: Message) -> None:
            nonlocal replay, status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                answer[:] = message.get("headers", ())
                replay = _header(answer, b"fly-replay")
            if replay is None:
                await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        task = asyncio.ensure_future(app({**scope}, receive, respond))
        machine.tasks.add(task)
        try:
            await asyncio.wait({task})
        finally:
            done.set()
            machine.tasks.discard(task)
            if not task.done():  # we are being cancelled: so is the request
                task.cancel()
        if task.cancelled():  # the machine stopped under the request
            if status:
                raise ConnectionResetError(f"machine {machine_id} stopped mid-response")
            return None, await _error(send, 502, "machine stopped"), []
        task.result()  # an app's exception is the test's business
        return replay, status, answer

    def _learn(self, scope: Any, answer: list[Any], served_by: str, status: int) -> None:
        """A 2xx answer that sets the session header to a request without one creates it."""
        created = _header(answer, self._session_header)
        if (
            200 <= status < 300
            and created
            and _header(scope["headers"], self._session_header) is None
        ):
            self._creators[_ref(created)] = served_by

    def _record(
        self,
        scope: Any,
        origin: str,
        served_by: str | None,
        status: int,
        replays: int,
        fell_back: bool,
    ) -> None:
        session = _header(scope["headers"], self._session_header)
        ref = _ref(session) if session else None
        if ref is not None and served_by is not None and not fell_back:
            creator = self._creators.get(ref)
            if creator is not None and creator != served_by and self._machines[creator].running:
                self.misrouted += 1
        delivery = Delivery(
            scope["method"], scope["path"], ref, origin, served_by, status, replays, fell_back
        )
        self.deliveries.append(delivery)

    def creator(self, session_id: str) -> str | None:
        """The machine whose answer created ``session_id`` (set its session header).

        Args:
            session_id: the session id, as the app handed it out.

        Returns:
            The machine id, or None when no answer seen here created that session.
        """
        return self._creators.get(_ref(session_id))


def _ref(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


class _Lifespan:
    """Drives one app's ASGI lifespan in a task of its own, as a server would."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self._app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is not None and reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"app startup failed: {reply.get('message', '')}")

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._reply()
        await self.abandon()

    async def abandon(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.wait({self._task})

    async def _reply(self) -> Message | None:
        assert self._task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()  # the app returned: it does not do lifespan (or it failed)
        return None


async def _serve_lifespan(sim: FlyProxySimulator, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await sim.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await sim.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _error(send: Send, status: int, detail: str) -> int:
    body = f"fly proxy simulator: {detail}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _replace(headers: list[Any], name: bytes, value: str) -> list[Any]:
    """``headers`` without any fly-replay-src/-failed a client or earlier hop put there,
    plus ``name: value``."""
    kept = [(k, v) for k, v in headers if bytes(k).lower() not in _HOP_HEADERS]
    return [*kept, (name, value.encode("latin-1"))]


_HOP_HEADERS = (b"fly-replay-src", b"fly-replay-failed")


def _fields(value: str) -> dict[str, str]:
    """``a=1;b="x,y"`` -> {"a": "1", "b": "x,y"}."""
    fields = {}
    for part in value.split(";"):
        key, sep, item = part.partition("=")
        if sep:
            fields[key.strip().lower()] = item.strip().strip('"')
    return fields
