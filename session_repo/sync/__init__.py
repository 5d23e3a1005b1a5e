"""``SyncSessionRepository``: the repository for blocking code (WSGI, Flask, scripts).

Every call runs the async repository on one private event loop in one thread of its
own, and blocks until it is done: errors are raised in the caller, and what was
written is there when the call returns (nothing is fired and forgotten). Any number
of threads may call at once. ``close()`` (or leaving ``with``) refuses new calls,
waits for the ones in flight, closes the repository and stops the thread.
"""

from __future__ import annotations

from session_repo.sync.repository import SyncSessionRepository

__all__ = ["SyncSessionRepository"]
