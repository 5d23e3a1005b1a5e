"""What the app's answer teaches ``FlyReplayMiddleware``: sessions it made, and ended.

A machine learns that it owns a session from its own app: a 2xx answer that hands
out a key in the session header (or cookie), the ``endpoint`` event of an HTTP+SSE
stream, or (with a ``key`` callable) a 2xx answer to a request whose key no machine
held. It binds the session before that answer leaves, so the client cannot reach
another machine first. It lets a binding go only on a sign that the session itself
is gone (``Learner.ends``), never on an unrelated 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from typing import Any

from cachetools import LRUCache

from session_repo._asgi import Message, Send
from session_repo.clock import Clock
from session_repo.contract import session_ref
from session_repo.fly._log import fields, logger
from session_repo.fly.eras import EndpointScanner, SseEndpoint
from session_repo.fly.ownership import Ownership
from session_repo.fly.replay_state import session_digest
from session_repo.fly.request import MAX_KEY, FlyRequest, header_pairs
from session_repo.fly.response import response_key

__all__ = ["Answer", "Learner"]

_EVENT_STREAM = b"text/event-stream"


class Learner:
    """Binds and unbinds sessions by what this machine's app answers.

    Args:
        ownership: this machine's view of what it owns.
        header: the session header's name, lowercase bytes.
        cookie: the session cookie's name (cookie mode), or None.
        query: the HTTP+SSE session query parameter's name, or None (off).
        keyed: whether a ``key`` callable reads requests' keys.
        unbind_on_404: end a binding on a 404 for any path.
        clock: the time source for cookies' ``Expires``.
        bind_free: a free key answered 2xx binds here even with no ``key`` callable
            (replay-cache mode: a cache hit for a session no machine holds).
    """

    def __init__(
        self,
        ownership: Ownership,
        header: bytes,
        cookie: str | None,
        query: bytes | None,
        keyed: bool,
        unbind_on_404: bool,
        clock: Clock,
        *,
        bind_free: bool = False,
    ) -> None:
        self.ownership = ownership
        self.query = query
        self._header = header
        self._cookie = cookie
        self._keyed = keyed
        # a free key served 2xx binds here: a key callable's, or any in replay-cache mode
        self._bind_free = keyed or bind_free
        self._unbind_on_404 = unbind_on_404
        self._clock = clock
        # paths where the app handed out a session key (header mode's session endpoints)
        self._endpoints: LRUCache[str, bool] = LRUCache(maxsize=64)

    def watching(self, send: Send, request: FlyRequest, owned: bool, free: bool) -> Send:
        """The ``send`` to give the app: the answer's start is learned from (``lesson``) first.

        A plain function that hands back the server's own awaitable: no coroutine of its
        own per message, unless the start teaches something the store must hear first.

        Args:
            send: the server's ``send``.
            request: the request answered.
            owned: whether this machine owned the request's session.
            free: whether the request's key had no live owner.

        Returns:
            The ``send`` for the app.
        """
        lesson = self.lesson

        def learning(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                status, headers = message["status"], message.get("headers", ())
                learned = lesson(request, owned, free, status, headers)
                if learned is not None:
                    return _sent_after(learned, send, message)
            return send(message)

        return learning

    def lesson(
        self, request: FlyRequest, owned: bool, free: bool, status: int, headers: Any
    ) -> Coroutine[Any, Any, None] | None:
        """What an answer's start teaches: bind what it hands out, unbind what it ends.

        Decided at once; only what calls the store is left to await, before the answer
        leaves. Most answers teach nothing new (no key, or the request's own echoed).

        Args:
            request: the request answered.
            owned: whether this machine owned the request's session.
            free: whether the request's key had no live owner.
            status: the answer's status.
            headers: the answer's headers.

        Returns:
            The binding or unbinding to await, or None when there is none.
        """
        key = request.session_id
        cookie = self._cookie
        now = 0.0 if cookie is None else self._clock.now()  # only a cookie's Expires needs it
        given, cleared = response_key(headers, self._header, cookie, now)
        # (in header mode only a 404 or a DELETE can end a session: ends() is not asked else)
        ending = (
            key is not None
            and owned
            and (cookie is not None or status == 404 or request.method == "DELETE")
            and self.ends(request, status, cleared)
        )
        if not ending:
            if given is None and not (free and self._bind_free):
                return None  # (the common case, first)
            if given is not None and given == key and owned:  # the request's own key, echoed
                if 200 <= status < 300 and request.method != "DELETE":
                    self._endpoint(request.path)
                return None
        return self._learn(request, ending, owned, free, status, given)

    async def _learn(
        self,
        request: FlyRequest,
        ending: bool,
        owned: bool,
        free: bool,
        status: int,
        given: str | None,
    ) -> None:
        key = request.session_id
        if ending:
            assert key is not None
            await self.ownership.forget(key, session_digest(key))
            if given is None or given == key:
                return
            owned = False  # ended, and a new session handed out in the same answer
        if given is None and not (free and self._bind_free):
            return
        if not 200 <= status < 300 or request.method == "DELETE":
            return
        if given is None:
            if key is None:
                return
            given = key  # served here a key no machine held: it is this machine's now
        else:
            self._endpoint(request.path)
        if given == key and owned:
            return
        await self.claim(given)

    def _endpoint(self, path: str) -> None:
        """The app handed out a session key on ``path``: a session endpoint (known once)."""
        if len(path) <= MAX_KEY and path not in self._endpoints:
            self._endpoints[path] = True

    async def learn_stream(self, endpoint: SseEndpoint) -> None:
        """An HTTP+SSE ``endpoint`` event: its session is this machine's, its path an endpoint.

        Args:
            endpoint: what the event names.
        """
        self._endpoint(endpoint.path)
        await self.claim(endpoint.session_id)

    async def claim(self, given: str) -> None:
        """Bind a session this machine's app handed out, unless renewed recently.

        Args:
            given: the session key.
        """
        ownership = self.ownership
        digest = session_digest(given)
        if ownership.renewed_recently(digest):
            return
        winner = await ownership.claim(given, digest)
        if winner is not None and winner != ownership.instance_id:
            ref = session_ref(given)
            logger.warning(
                "session %s set here is bound to %s",
                ref,
                winner,
                extra=fields("claim", "lost", session=ref, owner=winner),
            )

    def ends(self, request: FlyRequest, status: int, cleared: bool) -> bool:
        """Whether the app's answer says the session itself is gone.

        Header mode: a 404, or a ``DELETE`` answered 2xx or 404, on a session
        endpoint (any path before one is known). Cookie mode: the app clearing the
        cookie. A ``key`` callable's key (a tenant, a task) may meet a 404 anywhere:
        only a ``DELETE``, or a 404 on a session endpoint. ``unbind_on_404``: any 404.

        Args:
            request: the request answered (its session owned here).
            status: the answer's status.
            cleared: whether the answer clears the session cookie.

        Returns:
            True when the binding should go.
        """
        if self._cookie is not None:
            return cleared or (self._unbind_on_404 and status == 404)
        deleted = request.method == "DELETE" and 200 <= status < 300
        if status != 404 and not deleted:
            return False
        if self._keyed and request.method != "DELETE":
            return request.path in self._endpoints or self._unbind_on_404
        on_endpoint = not self._endpoints or request.path in self._endpoints
        return on_endpoint or self._unbind_on_404

    def event_stream(self, request: FlyRequest, status: int, headers: Any) -> bool:
        """Whether an answer may be an HTTP+SSE stream, whose ``endpoint`` event names a key.

        Args:
            request: the request answered.
            status: the answer's status.
            headers: the answer's headers.

        Returns:
            True for a 2xx ``text/event-stream`` answer to a ``GET`` with no key.
        """
        if self.query is None or request.session_id is not None or request.method != "GET":
            return False
        if not 200 <= status < 300:
            return False
        return any(
            name.lower() == b"content-type" and value.lower().startswith(_EVENT_STREAM)
            for name, value in header_pairs(headers)
        )


class Answer:
    """The app's answer to a ``GET`` with no key, which may be an HTTP+SSE stream.

    Its start goes to ``Learner.lesson``; if it is an event stream, its first body
    chunks are read for the ``endpoint`` event, whose session is bound before the
    event leaves. ``stream`` is then that session's key, which the middleware lets
    go when the stream ends. (Other requests' answers are watched by a plain
    closure: the hot path stays as light as it was.)

    Args:
        learner: the machine's ``Learner``.
        send: the server's ``send``.
        request: the request answered (a ``GET`` with no session key).
    """

    __slots__ = ("_learner", "_request", "_scanner", "_send", "stream")

    def __init__(self, learner: Learner, send: Send, request: FlyRequest) -> None:
        self._learner = learner
        self._send = send
        self._request = request
        self._scanner: EndpointScanner | None = None
        self.stream: str | None = None

    async def send(self, message: Message) -> None:
        """The ``send`` the app is given: learn from the message, then pass it on.

        Args:
            message: an ASGI message from the app.
        """
        kind = message["type"]
        if kind == "http.response.start":
            status, headers = message["status"], message.get("headers", ())
            learner, request = self._learner, self._request
            lesson = learner.lesson(request, False, False, status, headers)
            if lesson is not None:
                await lesson
            if learner.query is not None and learner.event_stream(request, status, headers):
                self._scanner = EndpointScanner(learner.query)
        elif kind == "http.response.body" and self._scanner is not None:
            endpoint = self._scanner.feed(bytes(message.get("body", b"")))
            if self._scanner.done:
                self._scanner = None
            if endpoint is not None:
                await self._learner.learn_stream(endpoint)
                self.stream = endpoint.session_id
        await self._send(message)


async def _sent_after(learned: Awaitable[None], send: Send, message: Message) -> None:
    await learned  # bound (or unbound) before the answer leaves
    await send(message)
