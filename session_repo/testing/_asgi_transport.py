"""A streaming in-process ASGI transport for httpx and httpx-compatible clients.

httpx's own ``ASGITransport`` waits for the whole response body, so a server-sent
event stream that stays open (MCP's GET stream) would never return. This one hands
the response back as soon as the app starts it and streams the body; closing the
response tells the app the client went away (``http.disconnect``), then cancels it.
Built per client module (``httpx``, ``httpx2``), which share this interface.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

from session_repo._asgi import ASGIApp, Message

__all__ = ["make_transport"]

GRACE = 2.0  # seconds an app gets to notice a disconnect before it is cancelled


@functools.cache
def make_transport(module: Any) -> Any:
    """The transport class for ``module`` (httpx or httpx2); call it with an ASGI app.

    Args:
        module: the imported ``httpx``-compatible module.

    Returns:
        A subclass of ``module.AsyncBaseTransport``, taking ``(app, client=...)``.
    """

    class StreamingASGITransport(module.AsyncBaseTransport):  # type: ignore[misc]
        def __init__(self, app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 123)) -> None:
            self.app = app
            self.client = client

        async def handle_async_request(self, request: Any) -> Any:
            body = b"".join([chunk async for chunk in request.stream])
            url = request.url
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": request.method,
                "headers": [(k.lower(), v) for k, v in request.headers.raw],
                "scheme": url.scheme,
                "path": url.path,
                "raw_path": url.raw_path.split(b"?")[0],
                "query_string": url.query,
                "server": (url.host, url.port),
                "client": self.client,
                "root_path": "",
            }
            exchange = _Exchange(self.app, scope, body)
            status, headers = await exchange.started()
            stream = ResponseStream(exchange, request.method == "HEAD")
            return module.Response(status, headers=headers, stream=stream)

    class ResponseStream(module.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, exchange: _Exchange, head: bool) -> None:
            self._exchange = exchange
            self._head = head

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._exchange.body():
                    if not self._head:
                        yield chunk
            except ConnectionError as exc:
                raise module.RemoteProtocolError(str(exc)) from exc

        async def aclose(self) -> None:
            await self._exchange.close()

    return StreamingASGITransport


class _Exchange:
    """One request to an ASGI app running in a task of its own."""

    def __init__(self, app: ASGIApp, scope: dict[str, Any], body: bytes) -> None:
        self._body = body
        self._body_sent = False
        self._start: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self._gone.is_set():  # the client hung up: what the app sends now goes nowhere
            return  # (as in uvicorn; the MCP SDK's SSE endpoint answers once more after it)
        if message["type"] == "http.response.start":
            self._start.set_result(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await self._chunks.put(bytes(message["body"]))
            if not message.get("more_body"):
                await self._chunks.put(None)

    async def started(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        waiting: set[asyncio.Future[Any]] = {self._start, self._task}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self.close(grace=0)
            raise
        if not self._start.done():
            if self._task.cancelled():
                raise ConnectionResetError("the app was cancelled before it answered")
            self._task.result()  # the app's exception, if it raised one
            raise RuntimeError("the ASGI app returned without starting a response")
        message = self._start.result()
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
        return int(message["status"]), headers

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            getter = asyncio.ensure_future(self._chunks.get())
            try:
                await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                chunk = getter.result()
                if chunk is None:
                    return
                yield chunk
                continue
            if self._chunks.empty():  # the app ended without finishing the body
                error = None if self._task.cancelled() else self._task.exception()
                raise ConnectionResetError("the connection closed mid-response") from error

    async def close(self, grace: float = GRACE) -> None:
        self._gone.set()
        if not self._task.done() and grace:
            await asyncio.wait({self._task}, timeout=grace)
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})
        if not self._task.cancelled():
            self._task.exception()  # retrieved, so asyncio does not warn about it
