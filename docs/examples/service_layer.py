"""A service layer that takes its repository in the constructor: plain DI, no framework.

After cosmicpython's ``bootstrap.py``: one function builds the object graph with
production defaults, and tests call it with fakes passed in (a
``MemorySessionRepository`` on a ``FakeClock``), not patched in.
"""

from __future__ import annotations

import os
import socket

from session_repo import SessionRepository, create_session_repository


class SessionPlacement:
    """Decides which instance serves each session, for one instance of a service."""

    def __init__(self, repository: SessionRepository, instance_id: str, *, ttl: float = 600):
        self.repository = repository
        self.instance_id = instance_id
        self.ttl = ttl

    async def place(self, session_id: str) -> str:
        """The instance that serves ``session_id``: its live owner, else this one."""
        return await self.repository.claim(session_id, self.instance_id, self.ttl)

    async def is_local(self, session_id: str) -> bool:
        return await self.place(session_id) == self.instance_id

    async def take_over(self, session_id: str, dead_owner: str) -> str:
        """Claim a session whose owner is known to be gone; the live owner if someone was first."""
        return await self.repository.claim(
            session_id, self.instance_id, self.ttl, replacing=dead_owner
        )

    async def retire(self) -> int:
        """On shutdown: release every session this instance holds; how many."""
        return await self.repository.delete_owner(self.instance_id)


def bootstrap(
    repository: SessionRepository | None = None, instance_id: str | None = None
) -> SessionPlacement:
    """Production defaults: the ``SESSION_STORE_*`` store and the Fly.io machine id."""
    if repository is None:
        repository = create_session_repository()
    if instance_id is None:
        instance_id = os.environ.get("FLY_MACHINE_ID") or socket.gethostname()
    return SessionPlacement(repository, instance_id)
