"""What the command line shows: exit statuses, notes and errors on stderr, JSON, progress.

An error is one line on stderr; progress is drawn only on a terminal.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import TextIO

from session_repo.contract import SessionRepository

__all__ = [
    "EXIT_BUG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING",
    "PROGRESS_EVERY",
    "cleanup_with_progress",
    "fail",
    "json_default",
    "note",
]

EXIT_MISSING = 1
EXIT_ERROR = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130
PROGRESS_EVERY = 0.25  # seconds between progress lines on a terminal


def fail(message: str, status: int) -> int:
    """Print ``message`` as one error line on stderr.

    Args:
        message: what went wrong; its whitespace (newlines too) is folded to spaces.
        status: the exit status to hand back.

    Returns:
        ``status``, so ``return fail(...)`` ends a command.
    """
    line = " ".join(message.split())
    print(f"session-repo: error: {line}", file=sys.stderr)
    return status


def note(message: str) -> None:
    """Print a note on stderr: something the user should know, not an error.

    Args:
        message: the note, one line.
    """
    print(f"session-repo: note: {message}", file=sys.stderr)


def json_default(value: object) -> str:
    """``json.dumps``'s ``default`` for the library's answers: datetimes as ISO 8601.

    Args:
        value: a value ``json`` cannot write by itself.

    Returns:
        ``value.isoformat()`` for a ``datetime``.

    Raises:
        TypeError: ``value`` is anything else.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


async def cleanup_with_progress(repo: SessionRepository, stream: TextIO) -> int:
    """Run ``cleanup()`` and report its batches by watching the expired-row gauge.

    Args:
        repo: the open repository to clean up.
        stream: the terminal the progress line is drawn on (and erased from after).

    Returns:
        How many expired bindings ``cleanup()`` removed.

    Raises:
        StorageError: the cleanup or a gauge read failed.
    """
    total = (await repo.metrics()).expired
    print(f"cleanup: {total} expired bindings to remove", file=stream, flush=True)
    task = asyncio.ensure_future(repo.cleanup())
    try:
        while not (await asyncio.wait({task}, timeout=PROGRESS_EVERY))[0]:
            left = (await repo.metrics()).expired
            stream.write(f"\rcleanup: {max(total - left, 0)} of {total} removed")
            stream.flush()
        return task.result()
    finally:
        task.cancel()
        stream.write("\r\x1b[K")
