"""What the library's ASGI parts share: the ASGI types and the smallest answers.

``fly`` (the middleware), ``asgi`` (the health endpoint) and ``testing`` (the proxy
simulator) each speak raw ASGI with no framework; they take these types and helpers
from here, so each is defined once. Standard library only: importing it is free.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "ASGIApp",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "send_response",
    "serve_lifespan",
]

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]


async def send_response(
    send: Send, status: int, headers: Headers, body: bytes = b"", *, head: bool = False
) -> None:
    """Send a whole HTTP response: its start, with a ``Content-Length``, and its body.

    Args:
        send: the ASGI ``send`` callable of the request.
        status: the HTTP status.
        headers: the response headers, without ``Content-Length`` (added here).
        body: the response body.
        head: answer a ``HEAD``: the ``Content-Length`` of ``body``, but no body.
    """
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def serve_lifespan(
    receive: Receive,
    send: Send,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Answer an ASGI lifespan scope until shutdown, running the hooks given.

    Args:
        receive: the lifespan scope's ``receive``.
        send: the lifespan scope's ``send``.
        startup: awaited before ``lifespan.startup.complete`` is sent.
        shutdown: awaited before ``lifespan.shutdown.complete`` is sent.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
