"""A cancellation that something beneath us swallowed is raised again.

Drivers have swallowed ``CancelledError`` before (redis-py's timeouts, a
``BaseException`` handler that disconnects): the task is left "cancelling" yet
running. ``asyncio.Task.cancelling()`` still counts the request, so comparing it
before and after a call tells; ``asyncio.timeout`` uncancels what it converts, so
a timeout never looks like a swallowed cancellation.
"""

from __future__ import annotations

import asyncio

__all__ = ["cancel_requests", "reraise_swallowed"]


def cancel_requests() -> int:
    """The current task's pending cancellation requests (0 outside a task)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def reraise_swallowed(before: int, cause: BaseException | None = None) -> None:
    """Raise ``CancelledError`` if a cancellation arrived since ``before`` and was lost.

    ``before`` below 0 means "not watched" (a store whose calls cannot swallow one).
    """
    if before >= 0 and cancel_requests() > before:
        raise asyncio.CancelledError from cause
