"""``FlyReplayMiddleware``: keep each session on the Fly.io machine that holds it.

Fly's proxy may send any request to any machine. A stateful server (an MCP server on
Streamable HTTP, say) keeps a session in one machine's memory, so a request that lands
elsewhere is answered with a ``fly-replay`` header naming the owner, and Fly's proxy
delivers it there. Who owns what lives in the shared ``SessionRepository``; this
machine learns that it owns a session when its app answers 2xx and sets the session
header (or cookie), and binds it before the response leaves. It lets a binding go only
on a sign that the session itself is gone, never on an unrelated 404 (``_ends``).
Every header is client input: ``FlyRequest`` parses them without ever raising.

The hot path for a session this machine owns does no storage I/O: it remembers what
it claimed and when, and renews only when less than half of the TTL is left. The
store failing never fails a request: the request is served here and the failure
logged once per burst. See ``docs/fly.md`` for the behaviour table and the limits.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from cachetools import LRUCache

from session_repo._core.inputs import Ttl, ttl_ms
from session_repo._core.keys import log_ref, session_key
from session_repo.clock import Clock, SystemClock
from session_repo.config import SessionStoreConfig
from session_repo.contract import SessionRepository
from session_repo.errors import InvalidInput, SessionRepoError
from session_repo.fly.replay_state import ReplayStateSigner, src_field
from session_repo.fly.request import (
    MAX_KEY,
    FlyRequest,
    header_pairs,
    parse_set_cookie,
    respond,
    text,
    valid_key,
)

__all__ = ["FlyReplayMiddleware"]

logger = logging.getLogger("session_repo.fly")

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
T = TypeVar("T")

OWNER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_DURATION = re.compile(r"[0-9]{1,6}(ms|s)")
_LOG_REF = re.compile(r"[0-9a-f]{12}")
_JSON = [(b"content-type", b"application/json")]
_UNKNOWN = object()  # what a failed store call returns: "no answer", not "no owner"


class FlyReplayMiddleware:
    """Pure ASGI: replay requests to the session's owner with ``fly-replay``.

    A binding this machine owns ends only on a sign that the session is gone: in header
    mode a 404, or a ``DELETE`` answered 2xx or 404 (405 keeps it), on the session
    endpoint (a path where the app handed out a session key); in cookie mode the app
    clearing the cookie. A repository with ``add_claim_lost_listener`` (the resilient
    wrapper) tells it when a claim made during an outage lost on write-back, and it
    forgets that session.

    Args:
        app: the ASGI app to wrap; it is called for every request not replayed.
        repository: the shared store of who owns which session.
        instance_id: this machine's id (``FLY_MACHINE_ID``, then ``FLY_ALLOC_ID``, when
            None); with neither set, every request passes through untouched.
        header: the request and response header that carries the session key.
        cookie: read the session key from this cookie instead of ``header``.
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

    Raises:
        InvalidInput: ``instance_id`` is not 1..64 of ``[0-9A-Za-z_-]``,
            ``replay_status`` is not an HTTP status, ``replay_timeout`` does not look
            like ``"5s"`` or ``"800ms"``, ``max_replay_body`` is negative, or ``ttl``
            is out of range.
        TypeError: ``ttl`` is not a number or a ``timedelta``.
    """

    def __init__(
        self,
        app: ASGIApp,
        repository: SessionRepository,
        *,
        instance_id: str | None = None,
        header: str = "mcp-session-id",
        cookie: str | None = None,
        ttl: Ttl | None = None,
        replay_status: int = 307,
        replay_timeout: str = "5s",
        max_replay_body: int = 1_000_000,
        state_secret: str | bytes | None = None,
        clock: Clock | None = None,
        remember: int = 100_000,
        unbind_on_404: bool = False,
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
        if ttl is None:  # the store's configured default, passed explicitly so renewal agrees
            self._ttl = SessionStoreConfig.from_env(_ttl_env()).ttl
        else:
            self._ttl = ttl_ms(ttl, 600_000) / 1000
        if isinstance(replay_status, bool) or not 100 <= replay_status <= 599:
            raise InvalidInput(f"replay_status must be an HTTP status: {replay_status!r}")
        if not _DURATION.fullmatch(replay_timeout):
            raise InvalidInput(f"replay_timeout must look like '5s' or '800ms': {replay_timeout!r}")
        if isinstance(max_replay_body, bool) or max_replay_body < 0:
            raise InvalidInput("max_replay_body must be an int >= 0")
        self._replay_status = replay_status
        self._replay_timeout = replay_timeout
        self._max_body = max_replay_body
        secret = state_secret or os.environ.get("SESSION_REPO_REPLAY_SECRET") or None
        self._signer = ReplayStateSigner(secret) if secret else None
        self._clock: Clock = clock if clock is not None else SystemClock()
        # session digest -> when this instance last claimed or renewed it (clock seconds)
        self._owned: LRUCache[bytes, float] = LRUCache(maxsize=remember)
        # paths where the app handed out a session key (header mode's session endpoints)
        self._endpoints: LRUCache[str, bool] = LRUCache(maxsize=64)
        self._unbind_on_404 = bool(unbind_on_404)
        self._quiet_until = 0.0
        self._suppressed = 0
        if self.instance_id is not None and self._signer is None:
            logger.warning(
                "no SESSION_REPO_REPLAY_SECRET: any fly-replay-src header is trusted, so a "
                "client can make its request skip routing (see docs/fly.md)",
                extra=_extra("start", "unsigned", instance=self.instance_id),
            )
        register = getattr(repository, "add_claim_lost_listener", None)
        if self.instance_id is not None and callable(register):
            register(self._claim_lost)

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        me = self.instance_id
        if me is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = FlyRequest(scope, self._header, self._cookie)
        key = request.session_id
        owned = False
        if key is not None:
            digest = session_key(key)
            if request.replay_failed is not None:  # the owner is gone, and its sessions with it
                await self._forget(key, digest)
            else:
                owner = await self._owner(key, digest)
                owned = owner == me
                if (
                    owner is not None
                    and not owned
                    and not self._replayed(request, digest)
                    and await self._redirect(scope, receive, send, request, owner, digest)
                ):
                    return
        await self.app(scope, receive, self._learning(send, request, owned))

    # -- who owns the session --------------------------------------------------

    async def _owner(self, key: str, digest: bytes) -> str | None:
        """The live owner; for a session claimed here, from memory unless renewal is due."""
        me = self.instance_id
        assert me is not None
        now = self._clock.now()
        renewed = self._owned.get(digest)
        if renewed is not None and now - renewed < self._ttl:
            if now - renewed < self._ttl / 2:
                return me
            return await self._claim(key, digest, replacing=me) or me
        self._owned.pop(digest, None)
        owner = await self._store(self.repository.lookup(key), "lookup", digest)
        if owner is _UNKNOWN:
            return None  # the store is down: serve here
        if owner == me:  # claimed before this process remembered it: renew to learn the expiry
            return await self._claim(key, digest, replacing=me) or me
        return owner if isinstance(owner, str) else None

    async def _claim(self, key: str, digest: bytes, *, replacing: str | None = None) -> str | None:
        me = self.instance_id
        assert me is not None
        claim = self.repository.claim(key, me, self._ttl, replacing=replacing)
        winner = await self._store(claim, "claim", digest)
        if not isinstance(winner, str):
            return None
        if winner == me:
            self._owned[digest] = self._clock.now()
        else:
            self._owned.pop(digest, None)
        return winner

    async def _forget(self, key: str, digest: bytes) -> None:
        self._owned.pop(digest, None)
        await self._store(self.repository.delete(key), "delete", digest)

    async def _claim_lost(self, ref: str, winner: str) -> None:
        """The store says a claim made here during an outage lost: forget owning it."""
        for digest in [d for d in self._owned if log_ref(d) == ref]:
            self._owned.pop(digest, None)
        ref = ref if isinstance(ref, str) and _LOG_REF.fullmatch(ref) else "?"
        logger.info(
            "session %s, claimed here while the store was down, is held by %r: "
            "its requests go there now",
            ref,
            winner,
            extra=_extra("claim", "lost_on_write_back", session=ref, owner=winner),
        )

    def _replayed(self, request: FlyRequest, digest: bytes) -> bool:
        """A request Fly replayed here on our say-so: never replay it again."""
        src = request.replay_src
        if src is None:
            return False
        if self._signer is None:
            return True
        state = src_field(src, "state")
        assert self.instance_id is not None
        now = self._clock.now()
        return state is not None and self._signer.verify(state, self.instance_id, digest, now)

    # -- answering instead of the app ------------------------------------------

    async def _redirect(
        self,
        scope: Any,
        receive: Receive,
        send: Send,
        request: FlyRequest,
        owner: str,
        digest: bytes,
    ) -> bool:
        """Answer for the app (replay or 409); False means serve here after all."""
        if not OWNER_ID.fullmatch(owner):
            logger.warning(
                "session %s is bound to an owner id that cannot go into fly-replay; serving here",
                log_ref(digest),
                extra=_extra("replay", "bad_owner", session=log_ref(digest)),
            )
            return False
        if scope["type"] == "http" and not request.replayable(self._max_body):
            body = (
                b'{"error":"request_not_replayable","detail":"this session lives on another '
                b"machine and Fly.io can only replay a request whose body has a Content-Length "
                b'of at most %d bytes"}' % self._max_body
            )
            await respond(scope, receive, send, 409, _JSON, body)
            return True
        state = ""
        if self._signer is not None:
            state = f";state={self._signer.sign(owner, digest, self._clock.now())}"
        value = f"instance={owner}{state};timeout={self._replay_timeout};fallback=force_self"
        await respond(scope, receive, send, self._replay_status, [(b"fly-replay", value.encode())])
        return True

    # -- learning from the app's answer ----------------------------------------

    def _learning(self, send: Send, request: FlyRequest, owned: bool) -> Send:
        async def learn(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._learn(request, owned, message["status"], message.get("headers", ()))
            await send(message)

        return learn

    async def _learn(self, request: FlyRequest, owned: bool, status: int, headers: Any) -> None:
        key = request.session_id
        given, cleared = self._response_key(headers)
        if key is not None and owned and self._ends(request, status, cleared):
            await self._forget(key, session_key(key))
            if given is None or given == key:
                return
            owned = False  # ended, and a new session handed out in the same answer
        if given is None or not 200 <= status < 300 or request.method == "DELETE":
            return
        if len(request.path) <= MAX_KEY:
            self._endpoints[request.path] = True
        if given == key and owned:
            return
        digest = session_key(given)
        renewed = self._owned.get(digest)
        if renewed is not None and self._clock.now() - renewed < self._ttl / 2:
            return
        winner = await self._claim(given, digest)
        if winner is not None and winner != self.instance_id:
            logger.warning(
                "session %s set here is bound to %s",
                log_ref(digest),
                winner,
                extra=_extra("claim", "lost", session=log_ref(digest), owner=winner),
            )

    def _ends(self, request: FlyRequest, status: int, cleared: bool) -> bool:
        """Whether the app's answer says the session itself is gone (see the class doc)."""
        if self._cookie is not None:
            return cleared or (self._unbind_on_404 and status == 404)
        deleted = request.method == "DELETE" and 200 <= status < 300
        if status != 404 and not deleted:
            return False
        on_endpoint = not self._endpoints or request.path in self._endpoints
        return on_endpoint or self._unbind_on_404

    def _response_key(self, headers: Any) -> tuple[str | None, bool]:
        """The session key the response hands out, and whether it clears the cookie."""
        given: str | None = None
        cleared = False
        for raw_name, raw_value in header_pairs(headers):
            name = raw_name.lower()
            if self._cookie is None and name == self._header:
                value = text(raw_value)
                if given is None and valid_key(value):
                    given = value
            elif self._cookie is not None and name == b"set-cookie":
                cookie = parse_set_cookie(text(raw_value), self._cookie, self._clock.now())
                if cookie is not None and cookie.cleared:
                    cleared = True
                elif cookie is not None and given is None and valid_key(cookie.value):
                    given = cookie.value
        return given, cleared

    # -- the store failing -----------------------------------------------------

    async def _store(self, call: Awaitable[T], what: str, digest: bytes) -> T | object:
        """Await a repository call; a storage failure is logged (once a burst) and answered
        with ``_UNKNOWN``. Input errors are bugs and propagate."""
        try:
            return await call
        except (TypeError, ValueError):  # input errors (InvalidInput is a ValueError): bugs
            raise
        except Exception as exc:  # StorageError, RepositoryClosed, a driver's own error...
            failure = exc
        now = time.monotonic()
        if now < self._quiet_until:
            self._suppressed += 1
            return _UNKNOWN
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        # Our own errors never echo a session id; a foreign one's message might.
        detail = f": {failure}" if isinstance(failure, SessionRepoError) else ""
        logger.warning(
            "session store failed during %s for session %s (%s%s); serving here%s",
            what,
            log_ref(digest),
            type(failure).__name__,
            detail,
            more,
            extra=_extra(
                what, "store_failed", session=log_ref(digest), error=type(failure).__name__
            ),
        )
        self._quiet_until, self._suppressed = now + 30.0, 0
        return _UNKNOWN


def _extra(operation: str, outcome: str, **fields: Any) -> dict[str, Any]:
    """Structured fields for a log record; sessions appear only as ``log_ref`` digests."""
    return {"component": "fly", "operation": operation, "outcome": outcome, **fields}


def _ttl_env() -> dict[str, str]:
    value = os.environ.get("SESSION_STORE_TTL_MS")
    return {} if value is None else {"SESSION_STORE_TTL_MS": value}
