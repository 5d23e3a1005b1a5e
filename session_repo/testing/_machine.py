"""One simulated Fly machine: its app, its lifespan, and delivering a request to it.

The proxy (``simulator``) decides where a request goes; this module runs it there.
A delivery buffers nothing: the machine's answer streams to the client unless it is
a ``fly-replay``, which the proxy follows instead. A machine that stops cancels what
it was serving, as a killed VM would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from session_repo._asgi import ASGIApp, Message, Receive, Send, send_response
from session_repo.testing._headers import header

__all__ = ["Lifespan", "Machine", "deliver", "proxy_error", "read_body"]


class Lifespan:
    """Drives one app's ASGI lifespan in a task of its own, as a server would.

    Args:
        app: the machine's app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Start the lifespan task and wait for the app's startup answer.

        Raises:
            RuntimeError: the app answered ``lifespan.startup.failed``.
        """
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self._app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is not None and reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"app startup failed: {reply.get('message', '')}")

    async def shutdown(self) -> None:
        """Ask the app to shut down, wait for its answer, then end the task."""
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._reply()
        await self.abandon()

    async def abandon(self) -> None:
        """End the lifespan task without a shutdown (a crash)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.wait({self._task})

    async def _reply(self) -> Message | None:
        assert self._task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()  # the app returned: it does not do lifespan (or it failed)
        return None


@dataclass(eq=False)
class Machine:
    """A machine behind the proxy: its id, region, and (while running) its app.

    Args:
        id: the machine id.
        region: its region.
        app: the app it runs; None while stopped.
        running: whether it is running.
        tasks: the deliveries it is serving now.
        lifespan: its app's lifespan driver, while running with lifespan.
    """

    id: str
    region: str
    app: ASGIApp | None = None
    running: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lifespan: Lifespan | None = None

    async def start(self, factory: Callable[[str], ASGIApp], *, lifespan: bool) -> None:
        """Start it, if stopped: a fresh app from ``factory``, its lifespan started.

        Args:
            factory: builds the app from the machine id.
            lifespan: run the app's lifespan startup.

        Raises:
            RuntimeError: the app's lifespan startup failed.
        """
        if self.running:
            return
        self.app = factory(self.id)
        if lifespan:
            self.lifespan = Lifespan(self.app)
            await self.lifespan.startup()
        self.running = True

    async def stop(self, *, graceful: bool) -> None:
        """Stop it, if running: requests in flight are cut off, the app is dropped.

        Args:
            graceful: run the lifespan shutdown; False ends it as a crash would.
        """
        if not self.running:
            return
        self.running = False
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)
        lifespan, self.lifespan, self.app = self.lifespan, None, None
        if lifespan is not None:
            await (lifespan.shutdown() if graceful else lifespan.abandon())


async def deliver(
    machine: Machine, scope: Any, body: bytes, send: Send, gone: asyncio.Event
) -> tuple[str | None, int, list[Any]]:
    """Run a machine's app on a buffered request, streaming its answer to ``send``.

    A ``fly-replay`` answer is kept from the client: the proxy follows it.

    Args:
        machine: the machine to deliver to.
        scope: the request's scope, with the headers this hop sends.
        body: the request's whole body.
        send: the client's ``send``.
        gone: set when the client hung up (the app then receives ``http.disconnect``).

    Returns:
        The ``fly-replay`` value (None when the answer went to the client), the
        status, and the response headers.

    Raises:
        ConnectionResetError: the machine stopped after it started answering.
    """
    app = machine.app
    if not machine.running or app is None:
        return None, await proxy_error(send, 502, "machine is not running"), []
    replay: str | None = None
    status = 0
    answer: list[Any] = []
    done = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        waits = {asyncio.ensure_future(done.wait()), asyncio.ensure_future(gone.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return {"type": "http.disconnect"}

    async def respond(message: Message) -> None:
        nonlocal replay, status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            answer[:] = message.get("headers", ())
            replay = header(answer, b"fly-replay")
        if replay is None:
            await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    task = asyncio.ensure_future(app({**scope}, receive, respond))
    machine.tasks.add(task)
    try:
        await asyncio.wait({task})
    finally:
        done.set()
        machine.tasks.discard(task)
        if not task.done():  # we are being cancelled: so is the request
            task.cancel()
    if task.cancelled():  # the machine stopped under the request
        if status:
            raise ConnectionResetError(f"machine {machine.id} stopped mid-response")
        return None, await proxy_error(send, 502, "machine stopped"), []
    task.result()  # an app's exception is the test's business
    return replay, status, answer


async def read_body(receive: Receive) -> bytes:
    """The whole request body (what arrived before a disconnect).

    Args:
        receive: the client's ``receive``.

    Returns:
        The body's bytes.
    """
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def proxy_error(send: Send, status: int, detail: str) -> int:
    """The proxy's own plain-text error answer.

    Args:
        send: the client's ``send``.
        status: the HTTP status.
        detail: what went wrong.

    Returns:
        ``status``, for the delivery record.
    """
    body = f"fly proxy simulator: {detail}\n".encode()
    await send_response(send, status, [(b"content-type", b"text/plain")], body)
    return status
