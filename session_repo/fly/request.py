"""The ASGI side of ``FlyReplayMiddleware``: what it reads, and how it answers.

A request is read once from the scope's raw headers, before the body: routing never
waits for it. Every header is client input, so this is the one place that parses
them, and it cannot raise: a value that does not parse (a ``Content-Length`` of
``\\xb2`` or ``+5``, a session key with a space, bytes in no encoding) counts as
absent or, for a length, as unknown. An answer in the app's place is an HTTP
response, or for a websocket the denial-response extension when the server has it,
else a close.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "MAX_FIELD",
    "FlyRequest",
    "SetCookie",
    "cookie_value",
    "header_pairs",
    "parse_set_cookie",
    "respond",
    "valid_key",
]

MAX_KEY = 1024
MAX_FIELD = 4096  # a fly-replay-src longer than this is not Fly's: ignored
# Methods whose requests carry a body; without a Content-Length its size is unknown.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_LENGTH = re.compile(rb"[0-9]{1,18}")  # ASCII digits only: no sign, no "\xb2", no overflow
_MAX_AGE = re.compile(r"-?[0-9]{1,18}")
_OWS = b" \t"


def valid_key(value: str) -> bool:
    """A usable session key: 1..1024 characters of visible ASCII (0x21-0x7E)."""
    return 0 < len(value) <= MAX_KEY and all("!" <= char <= "~" for char in value)


def as_bytes(value: Any) -> bytes:
    """A header name or value as bytes, whatever the server handed over."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b""


def text(value: bytes) -> str:
    """Header bytes as text; latin-1 maps every byte, so this cannot fail."""
    return value.decode("latin-1")


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class SetCookie:
    """What one ``Set-Cookie`` does to a cookie: sets ``value``, or ``cleared`` it."""

    __slots__ = ("cleared", "value")

    def __init__(self, value: str, cleared: bool) -> None:
        self.value = value
        self.cleared = cleared


def parse_set_cookie(header: str, name: str, now: float) -> SetCookie | None:
    """What a ``Set-Cookie`` response header does to cookie ``name``; None if nothing.

    It clears the cookie with an empty value, ``Max-Age`` of 0 or less, or (with no
    ``Max-Age``) an ``Expires`` at or before ``now``, as a browser would (RFC 6265).
    """
    first, *attributes = header.split(";")
    key, sep, raw = first.strip().partition("=")
    if not sep or key.strip() != name:
        return None
    value = raw.strip().strip('"')
    max_age: str | None = None
    expires: str | None = None
    for attribute in attributes:
        attr, _, attr_value = attribute.strip().partition("=")
        if attr.strip().lower() == "max-age":
            max_age = attr_value.strip()
        elif attr.strip().lower() == "expires":
            expires = attr_value.strip()
    if max_age is not None and _MAX_AGE.fullmatch(max_age):
        return SetCookie(value, not value or int(max_age) <= 0)
    return SetCookie(value, not value or (expires is not None and _expired(expires, now)))


def _expired(expires: str, now: float) -> bool:
    try:
        return parsedate_to_datetime(expires).timestamp() <= now
    except (TypeError, ValueError, OverflowError, IndexError):  # not a date: no expiry
        return False


class FlyRequest:
    """The parts of an HTTP or websocket request that routing looks at."""

    __slots__ = (
        "chunked",
        "content_length",
        "method",
        "path",
        "replay_failed",
        "replay_src",
        "session_id",
    )

    def __init__(self, scope: Any, header: bytes, cookie: str | None) -> None:
        method = scope.get("method", "GET")
        self.method: str = method if isinstance(method, str) else "GET"
        path = scope.get("path", "")
        self.path: str = path if isinstance(path, str) else ""
        self.content_length: int | None = None  # -1: sent, but unusable
        self.chunked = False
        self.replay_src: str | None = None
        self.replay_failed: str | None = None
        key: str | None = None
        cookies: list[str] = []
        for raw_name, raw_value in header_pairs(scope.get("headers")):
            name = raw_name.lower()
            if name == header and cookie is None and key is None:
                key = text(raw_value)
            elif name == b"cookie" and cookie is not None:
                cookies.append(text(raw_value))
            elif name == b"content-length":
                self.content_length = _length(raw_value, self.content_length)
            elif name == b"transfer-encoding":
                self.chunked = self.chunked or b"chunked" in raw_value.lower()
            elif name == b"fly-replay-src" and self.replay_src is None:
                if len(raw_value) <= MAX_FIELD:
                    self.replay_src = text(raw_value)
            elif name == b"fly-replay-failed" and self.replay_failed is None:
                self.replay_failed = text(raw_value[:MAX_FIELD])
        if cookie is not None and cookies:
            key = cookie_value("; ".join(cookies), cookie)
        self.session_id = key if key is not None and valid_key(key) else None

    def replayable(self, max_body: int) -> bool:
        """Whether Fly can replay this request: its body is known and small enough."""
        if self.chunked or (self.content_length is not None and self.content_length < 0):
            return False
        if self.content_length is None:
            return self.method not in BODY_METHODS
        return self.content_length <= max_body


def header_pairs(headers: Any) -> list[tuple[bytes, bytes]]:
    """ASGI ``(name, value)`` header pairs as bytes; anything else in the list is skipped."""
    pairs: list[tuple[bytes, bytes]] = []
    try:
        items = list(headers or ())
    except TypeError:
        return pairs
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            pairs.append((as_bytes(item[0]), as_bytes(item[1])))
    return pairs


def _length(raw: bytes, seen: int | None) -> int:
    """A ``Content-Length`` value; -1 if it is not plain ASCII digits or disagrees with one
    sent before it (RFC 9110 section 8.6)."""
    value = raw.strip(_OWS)
    length = int(value) if _LENGTH.fullmatch(value) else -1
    return length if seen is None or seen == length else -1


async def respond(
    scope: Any,
    receive: Any,
    send: Any,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> None:
    """An HTTP answer; for a websocket, the denial response extension, else a close."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in (scope.get("extensions") or {}):
        start = {"type": "websocket.http.response.start", "status": status, "headers": headers}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013})  # "try again later"
