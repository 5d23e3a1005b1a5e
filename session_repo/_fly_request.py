"""The ASGI side of ``FlyReplayMiddleware``: what it reads, and how it answers.

A request is read once from the scope's raw headers, before the body: routing never
waits for it. An answer in the app's place is an HTTP response, or for a websocket
the denial-response extension when the server has it, else a close.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FlyRequest", "cookie_value", "respond", "set_cookie_value", "valid_key"]

MAX_KEY = 1024
# Methods whose requests carry a body; without a Content-Length its size is unknown.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def valid_key(value: str) -> bool:
    """A usable session key: 1..1024 characters of visible ASCII (0x21-0x7E)."""
    return 0 < len(value) <= MAX_KEY and all("!" <= char <= "~" for char in value)


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def set_cookie_value(header: str, name: str) -> str | None:
    """The value a ``Set-Cookie`` response header gives cookie ``name``, if it sets it."""
    key, sep, value = header.split(";", 1)[0].strip().partition("=")
    if not sep or key.strip() != name:
        return None
    return value.strip().strip('"') or None


class FlyRequest:
    """The parts of an HTTP or websocket request that routing looks at."""

    __slots__ = (
        "chunked",
        "content_length",
        "method",
        "replay_failed",
        "replay_src",
        "session_id",
    )

    def __init__(self, scope: Any, header: bytes, cookie: str | None) -> None:
        self.method: str = scope.get("method", "GET")
        self.content_length: int | None = None
        self.chunked = False
        self.replay_src: str | None = None
        self.replay_failed: str | None = None
        key: str | None = None
        cookies: list[str] = []
        for raw_name, raw_value in scope["headers"]:
            name = bytes(raw_name).lower()
            value = bytes(raw_value).decode("latin-1")
            if name == header and cookie is None and key is None:
                key = value
            elif name == b"cookie" and cookie is not None:
                cookies.append(value)
            elif name == b"content-length":
                self.content_length = int(value) if value.strip().isdigit() else -1
            elif name == b"transfer-encoding":
                self.chunked = self.chunked or "chunked" in value.lower()
            elif name == b"fly-replay-src" and self.replay_src is None:
                self.replay_src = value
            elif name == b"fly-replay-failed" and self.replay_failed is None:
                self.replay_failed = value
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
