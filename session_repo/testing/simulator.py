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
or any other) or answers 502. Its records know a session by the session header, or
by the HTTP+SSE transport's ``session_id`` query parameter (created by the machine
whose event stream's ``endpoint`` event named it). Given ``replay_cache`` rules (the
``[[http_service.http_options.replay_cache]]`` tables of ``fly.toml``), it caches
replays per header or cookie value as ``_replay_cache`` describes: ``hit``, ``miss``
and ``bypass`` in ``fly-replay-cache-status``, ``ttl_seconds`` on ``clock``, and
``fly-replay-cache: invalidate``.

What it does not model: waiting out ``timeout`` (a stopped machine fails at once; the
time Fly would have spent trying is recorded as ``Delivery.waited``),
cross-app ``app=`` replays, the JSON replay body, path-based ``fly-replay-cache``
answers, regions' latency, Fly's exact error pages, or what ``fly-replay-failed``
contains (Fly says "metadata about what went wrong"; here
``instance=<target>;reason=unreachable``). Client headers reach the first machine
(the cached one, on a hit) as sent, so a spoofed ``fly-replay-src`` gets through, the
worst case a middleware must survive.

Use it as an ASGI app, or through ``transport()`` with httpx (or httpx2, which the
MCP SDK 2.x uses): ``httpx.AsyncClient(transport=sim.transport())``. The transport
streams responses, so a server-sent-event stream works as it would over a socket.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from session_repo._asgi import ASGIApp, Receive, Send, serve_lifespan
from session_repo.testing._asgi_transport import make_transport
from session_repo.testing._headers import (
    endpoint_session,
    header,
    query_param,
    replay_fields,
    session_ref,
    with_hop_header,
)
from session_repo.testing._machine import Machine, deliver, proxy_error, read_body
from session_repo.testing._replay_cache import (
    CacheClock,
    ReplayCache,
    ReplayCacheRule,
    with_cache_status,
)
from session_repo.testing._routing import (
    fallback_target,
    refusal,
    replay_src,
    replay_target,
    replay_wait,
)

__all__ = ["Delivery", "FlyProxySimulator", "ReplayCacheRule"]

REPLAY_LIMIT = 1_000_000  # "Requests larger than 1MB cannot be replayed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One client request as the proxy handled it.

    Args:
        method: the request's HTTP method.
        path: the request's path.
        session: a short digest of the session header, None without one.
        origin: the machine the load balancer (or the replay cache, on a hit) picked.
        served_by: the machine whose answer reached the client (None: the proxy's own).
        status: the status the client got.
        replays: how many ``fly-replay`` answers were followed.
        fell_back: whether the request was sent back with ``fly-replay-failed``.
        cache: what the replay cache did (``hit``, ``miss``, ``bypass``), None when
            no rule applied.
        waited: the seconds Fly's proxy would have spent trying to reach replay
            targets that were down (each replay's ``timeout``; ``math.inf`` for a
            replay with none), before it fell back or failed; 0 when none was down.
    """

    method: str
    path: str
    session: str | None  # a short digest of the session header, never the id itself
    origin: str  # the machine the load balancer (or the replay cache) picked
    served_by: str | None  # the machine whose answer reached the client (None: the proxy's)
    status: int
    replays: int
    fell_back: bool
    cache: str | None = None
    waited: float = 0.0


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
        session_query: the query parameter that carries it when the header does
            not (the HTTP+SSE transport's ``session_id``, whose creator is the
            machine whose event stream named it); None: only the header.
        max_replay_body: the largest body, in bytes, it replays; a bigger one gets 502.
        max_replays: the most replays one request may take; one more gets 502.
        lifespan: run each app's ASGI lifespan on ``start`` and ``stop``.
        replay_cache: ``fly.toml``'s replay cache rules (``ReplayCacheRule`` or its
            table as a mapping); None: no caching.
        clock: the replay cache's time source (the system clock when None).

    Attributes:
        deliveries: every client request, as a ``Delivery``, in order.
        replays: the replays followed.
        fallbacks: the requests sent back with ``fly-replay-failed``.
        refused: the replays refused (body over the limit, too many, after a fallback).
        misrouted: requests with a session header answered by a machine other than
            the running one that created that session.
        replay_cache: the cache (its counters and ``target``), None without rules.
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
        session_query: str | None = "session_id",
        max_replay_body: int = REPLAY_LIMIT,
        max_replays: int = 3,
        lifespan: bool = True,
        replay_cache: Sequence[ReplayCacheRule | Mapping[str, Any]] | None = None,
        clock: CacheClock | None = None,
    ) -> None:
        self._random = random.Random(seed)  # noqa: S311 - load balancing, not secrets
        if isinstance(machines, int):
            machines = [f"{self._random.getrandbits(56):014x}" for _ in range(machines)]
        regions = regions or {}
        self._factory = app_factory
        self._machines = {m: Machine(m, regions.get(m, region)) for m in machines}
        self._chooser = chooser or self._random.choice
        self._session_header = session_header.lower().encode("latin-1")
        self._session_query = session_query
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
        now = clock.now if clock is not None else time.time
        self.replay_cache = ReplayCache(replay_cache, now) if replay_cache else None

    # -- machines ---------------------------------------------------------------

    @property
    def machine_ids(self) -> list[str]:
        """Every machine's id, running or not, in order.

        Returns:
            The ids, in the order the machines were given or made.
        """
        return list(self._machines)

    def running(self) -> list[str]:
        """The ids of the machines running now.

        Returns:
            The ids, in ``machine_ids`` order.
        """
        return [m.id for m in self._machines.values() if m.running]

    def app(self, machine_id: str) -> ASGIApp:
        """The app object the machine runs now (a new one after each ``start``).

        Args:
            machine_id: one of ``machine_ids``.

        Returns:
            The ASGI app its factory built at the last ``start``.

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
            await machine.start(self._factory, lifespan=self._lifespan)

    async def stop(self, machine_id: str | None = None, *, graceful: bool = True) -> None:
        """Stop a machine (all when None): its connections drop and its memory is gone.

        ``graceful`` runs the app's lifespan shutdown (as ``fly machine stop`` lets it);
        otherwise it is a crash (a killed VM): the lifespan task is cancelled with no
        shutdown, and what it started (the middleware's heartbeat) stops with it, so
        the machine's heartbeat lapses in the store as a dead machine's would. Either
        way requests in flight there are cut off.

        Args:
            machine_id: the machine to stop, or None for every running machine.
            graceful: run the lifespan shutdown; False stops it as a crash would.

        Raises:
            KeyError: no machine has that id.
        """
        for machine in self._pick(machine_id):
            await machine.stop(graceful=graceful)

    def _regions(self) -> dict[str, str]:
        """The running machines, id -> region."""
        return {m.id: m.region for m in self._machines.values() if m.running}

    def _pick(self, machine_id: str | None) -> list[Machine]:
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
        """Serve one ASGI connection as Fly's proxy would.

        A ``lifespan`` scope starts the machines and stops them at shutdown.

        Args:
            scope: the ASGI scope (``http`` or ``lifespan``).
            receive: the ASGI ``receive``.
            send: the ASGI ``send``.

        Raises:
            NotImplementedError: a scope the simulator does not model (websocket).
        """
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self.start, self.stop)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)
        else:
            raise NotImplementedError(f"FlyProxySimulator does not model {scope['type']} scopes")

    async def _proxy(self, scope: Any, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
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
            await proxy_error(send, 503, "no machine is running")
            return
        origin = target = self._chooser(running)
        headers = list(scope["headers"])
        replays, fell_back, waited = 0, False, 0.0
        cache, label = self.replay_cache, None
        key = cache.key(scope) if cache is not None else None
        if cache is not None and key is not None:
            cached, label = cache.lookup(key, headers, running)
            if cached is not None:  # straight to the cached machine (client headers as sent)
                origin = target = cached
                headers = with_cache_status(headers, "hit")
        while True:
            hop = {**scope, "headers": headers}
            out = self._streams(scope, target, send)
            replay, status, answer = await deliver(self._machines[target], hop, body, out, gone)
            if replay is None:
                self._learn(scope, answer, target, status)
                self._record(scope, origin, target, status, replays, fell_back, label, waited)
                return
            reason = refusal(len(body), replays, fell_back, self._max_body, self._max_replays)
            if reason is not None:
                self.refused += 1
                await proxy_error(send, 502, reason)
                self._record(scope, origin, None, 502, replays, fell_back, label, waited)
                return
            fields = replay_fields(replay)
            live = self._regions()
            chosen = replay_target(fields, target, live, self._chooser)
            if cache is not None and key is not None:  # "only one step of lookup": 1st replay
                cache.learn(key, replay, answer, chosen if replays == 0 else None)
            if chosen is None:
                waited += replay_wait(fields.get("timeout"))  # Fly tries that long first
                chosen = fallback_target(fields.get("fallback"), target, live, self._chooser)
                if chosen is None:
                    await proxy_error(send, 502, "the replay target could not be reached")
                    self._record(scope, origin, None, 502, replays, fell_back, label, waited)
                    return
                self.fallbacks += 1
                fell_back = True
                failed = f"instance={fields.get('instance', '')};reason=unreachable"
                headers = with_hop_header(headers, b"fly-replay-failed", failed)
            else:
                self.replays += 1
                replays += 1
                src = replay_src(target, self._machines[target].region, fields.get("state"))
                headers = with_hop_header(headers, b"fly-replay-src", src)
                if key is not None:  # replayed by a machine: a miss (or a bypass)
                    headers = with_cache_status(headers, "bypass" if label == "bypass" else "miss")
            target = chosen

    def _streams(self, scope: Any, target: str, send: Send) -> Send:
        """``send``, reading an HTTP+SSE stream's ``endpoint`` event for its session's creator."""
        name = self._session_query
        if name is None or scope["method"] != "GET" or self._session(scope) is not None:
            return send
        looking = True

        async def watch(message: Any) -> None:
            nonlocal looking
            if looking and message["type"] == "http.response.body":
                looking = False  # the transport sends the endpoint event first
                created = endpoint_session(bytes(message.get("body", b"")), name)
                if created:
                    self._creators[session_ref(created)] = target
            await send(message)

        return watch

    def _session(self, scope: Any) -> str | None:
        """The request's session: its header, else its query parameter."""
        session = header(scope["headers"], self._session_header)
        if session is None and self._session_query is not None:
            session = query_param(scope.get("query_string", b""), self._session_query)
        return session

    def _learn(self, scope: Any, answer: list[Any], served_by: str, status: int) -> None:
        """A 2xx answer that sets the session header to a request without one creates it."""
        created = header(answer, self._session_header)
        if (
            200 <= status < 300
            and created
            and header(scope["headers"], self._session_header) is None
        ):
            self._creators[session_ref(created)] = served_by

    def _record(
        self,
        scope: Any,
        origin: str,
        served_by: str | None,
        status: int,
        replays: int,
        fell_back: bool,
        cache: str | None = None,
        waited: float = 0.0,
    ) -> None:
        session = self._session(scope)
        ref = session_ref(session) if session else None
        if ref is not None and served_by is not None and not fell_back:
            creator = self._creators.get(ref)
            if creator is not None and creator != served_by and self._machines[creator].running:
                self.misrouted += 1
        method, path = scope["method"], scope["path"]
        delivery = Delivery(
            method, path, ref, origin, served_by, status, replays, fell_back, cache, waited
        )
        self.deliveries.append(delivery)

    def creator(self, session_id: str) -> str | None:
        """The machine whose answer created ``session_id`` (set its session header).

        Args:
            session_id: the session id, as the app handed it out.

        Returns:
            The machine id, or None when no answer seen here created that session.
        """
        return self._creators.get(session_ref(session_id))
