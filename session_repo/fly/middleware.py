"""``FlyReplayMiddleware``: keep each session on the Fly.io machine that holds it.

Fly's proxy may send any request to any machine. A stateful server (an MCP server on
Streamable HTTP, say) keeps a session in one machine's memory, so a request that lands
elsewhere is answered with a ``fly-replay`` header naming the owner, and Fly's proxy
delivers it there. Who owns what lives in the shared ``SessionRepository``; this
machine learns that it owns a session when its app answers 2xx and sets the session
header (or cookie), and binds it before the response leaves. It lets a binding go only
on a sign that the session itself is gone, never on an unrelated 404 (``learning``).

Every MCP era is routed on one endpoint (``eras``): a 2026-07-28 request with no
session key passes with no storage I/O at all, a handshake-era one is routed by its
``Mcp-Session-Id``, and the deprecated HTTP+SSE transport by the ``session_id`` query
parameter its ``endpoint`` event names (bound as that event streams out, and let go
when the stream ends). A ``key`` callable reads any other key from the scope.

This module decides where a request goes; ``ownership`` holds what this machine
knows it owns (and calls the store), ``request`` and ``response`` parse headers
without ever raising (``headers`` reads their values) and answer in the app's
place, ``replay_state`` signs replays, ``learning`` binds and unbinds by the app's
answers, ``keys`` runs a ``key`` callable, ``workers`` tells whether several
processes share this machine's port, ``replies`` answers a misrouted request (plain
or replay-cache mode), ``liveness`` heartbeats for this machine between the
``lifespan``'s startup and shutdown.
See ``docs/fly.md`` for the behaviour table and the limits.
"""

from __future__ import annotations

import os
import re
from typing import Any, cast

from session_repo._asgi import ASGIApp, Receive, Send
from session_repo.clock import Clock, SystemClock
from session_repo.config import SessionStoreConfig
from session_repo.contract import SessionRepository, Ttl, ttl_seconds
from session_repo.errors import InvalidInput
from session_repo.fly._log import fields, logger
from session_repo.fly.eras import sessionless
from session_repo.fly.keys import KeyFunction, KeyReader
from session_repo.fly.learning import Answer, Learner
from session_repo.fly.lifespan import run_lifespan
from session_repo.fly.liveness import Liveness, Sleep, heartbeat_seconds
from session_repo.fly.ownership import ClaimLostReporter, Ownership
from session_repo.fly.replay_state import ReplayStateSigner, session_digest, src_field
from session_repo.fly.replies import OWNER_ID, Replier, cache_mode
from session_repo.fly.request import FlyRequest, valid_key
from session_repo.fly.workers import warn_if_several

__all__ = ["FlyReplayMiddleware", "KeyFunction"]

_DURATION = re.compile(r"[0-9]{1,6}(ms|s)")
_REPORTER = "add_claim_lost_listener"  # what makes a repository a ClaimLostReporter


class FlyReplayMiddleware:
    """Pure ASGI: replay requests to the session's owner with ``fly-replay``.

    A binding this machine owns ends only on a sign that the session is gone: in header
    mode a 404, or a ``DELETE`` answered 2xx or 404 (405 keeps it), on the session
    endpoint (a path where the app handed out a session key); in cookie mode the app
    clearing the cookie. A repository with ``add_claim_lost_listener`` (a
    ``ClaimLostReporter``, such as the resilient wrapper) tells it when a claim made
    during an outage lost on write-back, and it forgets that session.

    A request whose ``MCP-Protocol-Version`` is 2026-07-28 or later and that carries no
    session key passes straight to the app: no storage I/O, nothing logged.

    Args:
        app: the ASGI app to wrap; it is called for every request not replayed.
        repository: the shared store of who owns which session.
        instance_id: this machine's id (``FLY_MACHINE_ID``, then ``FLY_ALLOC_ID``, when
            None); with neither set, every request passes through untouched.
        header: the request and response header that carries the session key.
        cookie: read the session key from this cookie instead of ``header``.
        key: read each request's session key with this callable instead (the ASGI
            scope in, the key or None out; synchronous); it is validated like a
            header's, and one that raises counts as no key. The app still hands out
            new keys in ``header`` (or ``cookie``), and a 2xx answer to a request
            whose key no machine holds binds that key here.
        query_param: the query parameter that carries the session key when the
            header (or cookie) gives none: the deprecated HTTP+SSE transport's
            ``session_id``, learned from its ``endpoint`` event. None turns it off.
        ttl: how long a binding lives, in seconds or a ``timedelta``
            (``SESSION_STORE_TTL_MS`` when None); renewed once less than half is left.
        replay_status: the HTTP status of a replay answer.
        replay_timeout: the ``timeout`` sent in ``fly-replay``, such as ``"5s"`` or
            ``"800ms"``.
        max_replay_body: the largest body, in bytes, Fly may replay; a bigger one, or
            one of unknown length, is answered 409 instead.
        state_secret: the secret, shared by all machines, that signs replays
            (``SESSION_REPO_REPLAY_SECRET`` when None); without one any
            ``fly-replay-src`` is trusted.
        clock: the time source for renewals and replay signatures (the system clock
            when None).
        remember: how many sessions this machine keeps in memory as its own.
        unbind_on_404: also end a binding on a 404 for any path, not only the session
            endpoint's.
        replay_cache: Fly's proxy caches this key's replays (a
            ``[[http_service.http_options.replay_cache]]`` rule in ``fly.toml``;
            ``SESSION_REPO_REPLAY_CACHE`` when None): replays are plain
            ``fly-replay: instance=<owner>`` so Fly can cache them, a stale cache
            hit is replayed to the owner with ``fly-replay-cache: invalidate``, a
            replayed request is always served, and a free session served 2xx binds.
        heartbeat_ttl: from the ASGI lifespan startup to its shutdown, this machine
            heartbeats (``SessionRepository.heartbeat``) every third of this, in
            seconds or a ``timedelta`` (``SESSION_REPO_HEARTBEAT_TTL``, else 30, when
            None), and releases its sessions at shutdown: a machine that dies loses
            them within this, and their next requests are served where they land.
            A heartbeat not renewed before it lapses (by ``clock``, a sixth early)
            voids what this machine remembers owning: each session is claimed again
            before it is served, and replayed if another machine took it.
        sleep: how the heartbeat task waits (``asyncio.sleep`` when None).

    Raises:
        InvalidInput: ``instance_id`` is not 1..64 of ``[0-9A-Za-z_-]``,
            ``replay_status`` is not an HTTP status, ``replay_timeout`` does not look
            like ``"5s"`` or ``"800ms"``, ``max_replay_body`` is negative, ``ttl``
            or ``heartbeat_ttl`` is out of range, or ``SESSION_REPO_REPLAY_CACHE`` is
            not a boolean.
        TypeError: ``ttl`` is not a number or a ``timedelta``, ``key`` is not a
            synchronous callable, or ``query_param`` is not a str.
    """

    def __init__(
        self,
        app: ASGIApp,
        repository: SessionRepository,
        *,
        instance_id: str | None = None,
        header: str = "mcp-session-id",
        cookie: str | None = None,
        key: KeyFunction | None = None,
        query_param: str | None = "session_id",
        ttl: Ttl | None = None,
        replay_status: int = 307,
        replay_timeout: str = "5s",
        max_replay_body: int = 1_000_000,
        state_secret: str | bytes | None = None,
        clock: Clock | None = None,
        remember: int = 100_000,
        unbind_on_404: bool = False,
        replay_cache: bool | None = None,
        heartbeat_ttl: Ttl | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.app = app
        self.repository = repository
        if instance_id is None:
            instance_id = os.environ.get("FLY_MACHINE_ID") or os.environ.get("FLY_ALLOC_ID")
        if instance_id is not None and not OWNER_ID.fullmatch(instance_id):
            raise InvalidInput(f"instance_id must match {OWNER_ID.pattern}: {instance_id!r}")
        self.instance_id = instance_id or None
        self._header = header.lower().encode("latin-1")
        self._cookie = cookie
        if query_param is not None and not isinstance(query_param, str):
            raise TypeError(f"query_param must be a str or None: {query_param!r}")
        if query_param is not None and not valid_key(query_param):
            raise InvalidInput(f"query_param must be visible ASCII: {query_param!r}")
        query = query_param.encode("ascii") if query_param else None
        # what FlyRequest reads a request's key from (nothing when the callable does)
        self._read_header = b"" if key is not None else self._header
        self._read_cookie = None if key is not None else cookie
        self._read_query = None if key is not None else query
        self._workers_checked = False
        # None: the store's configured default, passed explicitly so renewal agrees
        seconds = SessionStoreConfig.from_env(_ttl_env()).ttl if ttl is None else ttl_seconds(ttl)
        if isinstance(replay_status, bool) or not 100 <= replay_status <= 599:
            raise InvalidInput(f"replay_status must be an HTTP status: {replay_status!r}")
        if not _DURATION.fullmatch(replay_timeout):
            raise InvalidInput(f"replay_timeout must look like '5s' or '800ms': {replay_timeout!r}")
        if isinstance(max_replay_body, bool) or max_replay_body < 0:
            raise InvalidInput("max_replay_body must be an int >= 0")
        self.replay_cache = cache_mode(replay_cache)
        secret = state_secret or os.environ.get("SESSION_REPO_REPLAY_SECRET") or None
        self._signer = ReplayStateSigner(secret) if secret else None
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._replier = Replier(
            replay_status,
            replay_timeout,
            max_replay_body,
            self._signer,
            self._clock,
            self.replay_cache,
        )
        self._key = KeyReader(key, self._clock) if key is not None else None
        me = self.instance_id or ""
        beat = Liveness(repository, me, heartbeat_seconds(heartbeat_ttl), self._clock, sleep)
        self._ownership = Ownership(repository, me, seconds, self._clock, remember, beat)
        self._learner = Learner(
            self._ownership,
            self._header,
            cookie,
            query,
            key is not None,
            bool(unbind_on_404),
            self._clock,
            bind_free=self.replay_cache,
        )
        if self.instance_id is not None and self.replay_cache:
            logger.info(
                "replay cache mode: replays carry no state, so a request with "
                "fly-replay-src is served where it lands (see docs/fly.md)",
                extra=fields("start", "replay_cache", instance=self.instance_id),
            )
        elif self.instance_id is not None and self._signer is None:
            logger.warning(
                "no SESSION_REPO_REPLAY_SECRET: any fly-replay-src header is trusted, so a "
                "client can make its request skip routing (see docs/fly.md)",
                extra=fields("start", "unsigned", instance=self.instance_id),
            )
        # A ClaimLostReporter, by duck type: getattr also sees a proxy's forwarded methods.
        if self.instance_id is not None and callable(getattr(repository, _REPORTER, None)):
            cast(ClaimLostReporter, repository).add_claim_lost_listener(self._ownership.claim_lost)

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        """Route one ASGI connection: replay it to the session's owner, or serve it here.

        Args:
            scope: the ASGI scope; only ``http`` and ``websocket`` are routed; the
                ``lifespan`` passes through, with the heartbeat between its startup
                and its shutdown.
            receive: the ASGI ``receive``.
            send: the ASGI ``send``.
        """
        me = self.instance_id
        if me is None or scope["type"] not in ("http", "websocket"):
            if me is not None and scope["type"] == "lifespan":
                if not self._workers_checked:
                    self._workers_checked = True
                    warn_if_several(me)
                await run_lifespan(self.app, scope, receive, send, self._ownership.liveness)
                return
            await self.app(scope, receive, send)
            return
        request = FlyRequest(scope, self._read_header, self._read_cookie, self._read_query)
        if self._key is not None:
            request.session_id = self._key.read(scope)
            request.cacheable = False  # no fly.toml rule knows where the callable looked
        key = request.session_id
        owned = free = False
        if key is None:
            if sessionless(request.protocol_version):  # MCP 2026-07-28+: nothing to route
                await self.app(scope, receive, send)
                return
        elif request.replay_failed is not None:  # the owner is gone, and its sessions with it
            await self._ownership.forget(key, session_digest(key))
            free = True
        else:
            digest = session_digest(key)
            ownership = self._ownership
            # the hot path, without a coroutine: a session this machine renewed recently
            owner = me if ownership.renewed_recently(digest) else await ownership.owner(key, digest)
            owned, free = owner == me, owner is None
            if (
                owner is not None
                and not owned
                and not self._replayed(request, digest)
                and await self._replier.redirect(scope, receive, send, request, owner, digest)
            ):
                return
        learner = self._learner
        if key is None and request.method == "GET" and learner.query is not None:
            answer = Answer(learner, send, request)  # perhaps an HTTP+SSE stream
            await self.app(scope, receive, answer.send)
            if answer.stream is not None:  # the stream ended: its session is gone
                await self._ownership.forget(answer.stream, session_digest(answer.stream))
            return
        await self.app(scope, receive, learner.watching(send, request, owned, free))

    def _replayed(self, request: FlyRequest, digest: bytes) -> bool:
        """A request Fly replayed here on our say-so: never replay it again."""
        src = request.replay_src
        if src is None:
            return False
        if self._signer is None or self.replay_cache:  # a cacheable replay has no state
            return True
        state = src_field(src, "state")
        assert self.instance_id is not None
        now = self._clock.now()
        return state is not None and self._signer.verify(state, self.instance_id, digest, now)


def _ttl_env() -> dict[str, str]:
    value = os.environ.get("SESSION_STORE_TTL_MS")
    return {} if value is None else {"SESSION_STORE_TTL_MS": value}
