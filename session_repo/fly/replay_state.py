"""The ``state`` a fly-replay carries, signed so a client cannot forge "already replayed".

Fly's proxy copies the ``state`` field of a ``fly-replay`` response header into the
``fly-replay-src`` header of the replayed request. A client can send that header
itself, so the target only trusts it when ``state`` is an HMAC-SHA256, made with the
secret every instance shares, over a timestamp, the target's id and the session's
digest. Such a state is good for one session on one instance for ``max_age``
seconds, and nothing else.

Format: ``v1.<unix seconds>.<base64url MAC, unpadded>``; no ``;``, ``,``, ``=`` or
quotes, so it sits in a header field unescaped. ``verify`` takes whatever a client
sent: anything not of exactly that shape (a superscript digit, a non-ASCII MAC) is
simply not verified, never an exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re

__all__ = ["ReplayStateSigner", "session_digest", "src_field"]

_VERSION = "v1"
# ASCII only ([0-9] is not \d): a SHA-256 MAC is 43 base64url characters unpadded.
_STATE = re.compile(r"v1\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


def session_digest(session_id: str) -> bytes:
    """The SHA-256 digest of a session key: what a state is signed over.

    Args:
        session_id: the session key.

    Returns:
        The 32-byte digest of its UTF-8 bytes (lone surrogates included).
    """
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


class ReplayStateSigner:
    """Makes and checks the ``state`` of a replay with one shared secret.

    Args:
        secret: the secret every instance shares.
        max_age: how many seconds a state stays good after it was made.
        skew: how many seconds a state may seem to come from the future (clocks
            differ between machines).

    Raises:
        ValueError: ``secret`` is empty.
    """

    __slots__ = ("_key", "_max_age", "_skew")

    def __init__(self, secret: str | bytes, *, max_age: float = 60.0, skew: float = 30.0) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not key:
            raise ValueError("the replay secret must not be empty")
        self._key = key
        self._max_age = max_age
        self._skew = skew

    def sign(self, target: str, session_digest: bytes, now: float) -> str:
        """The state for a replay of this session to ``target``, made at ``now``.

        Args:
            target: the instance the request is replayed to.
            session_digest: the session's ``session_digest``.
            now: the time, in seconds since the epoch.

        Returns:
            ``v1.<unix seconds>.<MAC>``, safe in a header field unescaped.
        """
        stamp = str(math.floor(now))
        return f"{_VERSION}.{stamp}.{self._mac(stamp, target, session_digest)}"

    def verify(self, state: str, target: str, session_digest: bytes, now: float) -> bool:
        """Whether ``state`` was signed for this session and target, recently enough.

        Args:
            state: the ``state`` a client sent; anything, never an exception.
            target: this instance's id.
            session_digest: the session's ``session_digest``.
            now: the time, in seconds since the epoch.

        Returns:
            True only for a well-formed state with a good MAC, made at most
            ``max_age`` seconds ago (and at most ``skew`` ahead).
        """
        shape = _STATE.fullmatch(state)
        if shape is None:
            return False
        stamp, mac = shape.groups()
        age = now - int(stamp)
        if not -self._skew <= age <= self._max_age:
            return False
        expected = self._mac(stamp, target, session_digest)
        return hmac.compare_digest(mac.encode("ascii"), expected.encode("ascii"))

    def _mac(self, stamp: str, target: str, session_digest: bytes) -> str:
        message = f"{_VERSION}|{stamp}|{target}|{session_digest.hex()}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def __repr__(self) -> str:  # never show the secret
        return f"ReplayStateSigner(max_age={self._max_age!r})"


def src_field(header: str, name: str) -> str | None:
    """The value of field ``name`` in a ``fly-replay-src``-style ``a=1;b=2`` header.

    Args:
        header: the header's value.
        name: the field's name, lowercase.

    Returns:
        The field's value, unquoted, or None when the header has no such field.
    """
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == name:
            return value.strip().strip('"')
    return None
