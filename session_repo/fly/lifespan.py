"""The ASGI lifespan, passed through to the app, with this machine's heartbeat in between.

The app sees every lifespan message unchanged and answers them itself, failures
included. The heartbeat starts once the app has started (``lifespan.startup.complete``
on its way out: the app may open the repository in its own startup) and stops, with
a release, when the server asks for shutdown (``lifespan.shutdown`` on its way in:
before the app's own shutdown, which may close the repository). A lifespan that ends
any other way (the app failed, the task was cancelled as a crashed machine's would
be) stops the heartbeat with no release: the machine's heartbeat then lapses, and
its sessions with it, within one ttl.
"""

from __future__ import annotations

from typing import Any

from session_repo._asgi import ASGIApp, Message, Receive, Send
from session_repo.fly._log import fields, logger
from session_repo.fly.liveness import Liveness

__all__ = ["run_lifespan"]


async def run_lifespan(
    app: ASGIApp, scope: Any, receive: Receive, send: Send, liveness: Liveness
) -> None:
    """Run the app's lifespan with ``liveness`` heartbeating between startup and shutdown.

    Args:
        app: the wrapped app.
        scope: the ``lifespan`` scope.
        receive: the server's ``receive``.
        send: the server's ``send``.
        liveness: this machine's heartbeat.
    """
    started = False

    async def receiving() -> Message:
        message = await receive()
        if message.get("type") == "lifespan.shutdown":
            await liveness.stop()
        return message

    async def sending(message: Message) -> None:
        nonlocal started
        if message.get("type") == "lifespan.startup.complete" and not started:
            started = True
            await liveness.start()
        await send(message)

    try:
        await app(scope, receiving, sending)
    finally:
        await liveness.abandon()
        if not started:
            logger.info(
                "the app's lifespan did not start: machine %s does not heartbeat, so its "
                "sessions outlive it by their own ttl (see docs/fly.md)",
                liveness.instance_id,
                extra=fields("heartbeat", "no_lifespan", instance=liveness.instance_id),
            )
