"""What a misrouted request is answered with: a ``fly-replay`` in one of two modes.

Plain mode (the default) sends ``fly-replay: instance=<owner>;state=...;timeout=...;
fallback=force_self``: signed, bounded in time, and brought back here with
``fly-replay-failed`` when the owner cannot be reached.

Cache mode (``replay_cache=True``, paired with a ``[[http_service.http_options.
replay_cache]]`` rule in ``fly.toml``) sends plain ``fly-replay: instance=<owner>``,
the only kind Fly's proxy can cache: Fly documents that "the ``state`` field cannot
be set in the ``fly-replay`` intended to be cached", and a replay that needs
``timeout`` or ``fallback`` is no fixed route either. The proxy then sends later
requests of the session straight to the owner, marked ``fly-replay-cache-status:
hit`` ("it never reached the source app or machine and was redirected straight to
the target"). When such a hit reaches a machine that no longer owns the session, the
answer is the one Fly documents for a target whose route changed: "issuing a
``fly-replay`` back ... setting ``fly-replay-cache: invalidate``": the request goes
to the current owner (with ``timeout`` and ``fallback``: this one is not cached, so
a dead owner sends it back here) and the stale entry is dropped. A request Fly
replayed (it has ``fly-replay-src``; a cached replay has none, as Fly documents) is
served where it lands and never replayed again, so a stale hit costs one extra hop
at most and ownership moving back and forth cannot make a loop.

No replay, cached or not, goes to an owner whose heartbeat has lapsed: the store
counts such a binding dead (``lookup`` says None), so ``redirect`` is only ever
asked for a live owner, and the request for a dead one's session is served here.
"""

from __future__ import annotations

import os
import re
from typing import Any

from session_repo._asgi import Receive, Send
from session_repo.clock import Clock
from session_repo.contract import session_ref
from session_repo.errors import InvalidInput
from session_repo.fly._log import fields, logger
from session_repo.fly.replay_state import ReplayStateSigner
from session_repo.fly.request import FlyRequest
from session_repo.fly.response import respond

__all__ = ["CACHE_ENV", "INVALIDATE", "OWNER_ID", "Replier", "cache_mode"]

OWNER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
CACHE_ENV = "SESSION_REPO_REPLAY_CACHE"
# Fly's documented invalidation: a fly-replay answer that also sets this header.
INVALIDATE = (b"fly-replay-cache", b"invalidate")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_JSON = [(b"content-type", b"application/json")]


def cache_mode(value: bool | None) -> bool:
    """Whether the proxy caches this key's replays: ``value``, else ``SESSION_REPO_REPLAY_CACHE``.

    Args:
        value: the middleware's ``replay_cache`` argument (None: read the variable).

    Returns:
        The mode; False when neither says.

    Raises:
        InvalidInput: the variable is set to something not a boolean.
    """
    if value is not None:
        return bool(value)
    raw = os.environ.get(CACHE_ENV)
    if raw is None or raw.strip() == "":
        return False
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise InvalidInput(f"{CACHE_ENV}={raw!r} is not a boolean (use true or false)")


class Replier:
    """Answers a request whose session lives on another machine, in the app's place.

    Args:
        status: the HTTP status of a replay answer.
        timeout: the ``timeout`` field of a replay that is not cached.
        max_body: the largest body, in bytes, Fly may replay (a bigger one gets 409).
        signer: signs plain mode's ``state`` (None: no ``state``).
        clock: the time source of the signatures.
        cache: cache mode (see the module docstring).
    """

    __slots__ = ("_clock", "_max_body", "_signer", "_status", "_timeout", "cache")

    def __init__(
        self,
        status: int,
        timeout: str,
        max_body: int,
        signer: ReplayStateSigner | None,
        clock: Clock,
        cache: bool,
    ) -> None:
        self._status = status
        self._timeout = timeout
        self._max_body = max_body
        self._signer = signer
        self._clock = clock
        self.cache = cache

    def value(self, owner: str, digest: bytes, stale_hit: bool) -> bytes:
        """The ``fly-replay`` header's value for a replay to ``owner``.

        Args:
            owner: the machine that holds the session.
            digest: the session key's digest (what ``state`` is signed over).
            stale_hit: the request came from Fly's replay cache to the wrong machine,
                or its key is one no replay-cache rule can key on.

        Returns:
            Cache mode: ``instance=<owner>`` (cacheable), or for a stale hit (or an
            uncacheable key) that plus ``timeout`` and ``fallback``. Plain mode: that
            plus a signed ``state``.
        """
        if self.cache and not stale_hit:
            return f"instance={owner}".encode()
        state = ""
        if self._signer is not None and not self.cache:
            state = f";state={self._signer.sign(owner, digest, self._clock.now())}"
        return f"instance={owner}{state};timeout={self._timeout};fallback=force_self".encode()

    async def redirect(
        self,
        scope: Any,
        receive: Receive,
        send: Send,
        request: FlyRequest,
        owner: str,
        digest: bytes,
    ) -> bool:
        """Answer for the app (replay or 409); False means serve here after all.

        Args:
            scope: the request's ASGI scope.
            receive: its ``receive``.
            send: its ``send``.
            request: the request, read.
            owner: the machine that holds its session (not this one).
            digest: the session key's digest.

        Returns:
            True when answered here; False for an owner id that cannot go into a header.
        """
        if not OWNER_ID.fullmatch(owner):
            assert request.session_id is not None  # only a keyed request is redirected
            ref = session_ref(request.session_id)
            logger.warning(
                "session %s is bound to an owner id that cannot go into fly-replay; serving here",
                ref,
                extra=fields("replay", "bad_owner", session=ref),
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
        stale_hit = self.cache and request.cache_status == b"hit"
        # A key no fly.toml rule can cache by (a query parameter, a key= callable) gains
        # nothing from a bare replay: it keeps timeout and fallback.
        bounded = stale_hit or not request.cacheable
        headers = [(b"fly-replay", self.value(owner, digest, bounded))]
        if stale_hit:
            headers.append(INVALIDATE)
        await respond(scope, receive, send, self._status, headers)
        return True
