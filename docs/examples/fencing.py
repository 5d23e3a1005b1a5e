"""Fencing tokens: a downstream store refuses writes from an owner that lost its session.

An owner stalls (a long GC pause, a frozen event loop), its heartbeat lapses, and
another instance takes the session over with a greater generation. When the stalled
owner wakes it still believes it owns the session; the generation it writes with
tells the downstream store otherwise.
"""

from __future__ import annotations

import asyncio

from session_repo import Lease, MemorySessionRepository, SessionRepository
from session_repo.testing import FakeClock


class StaleOwner(Exception):
    """A write came with a generation older than one already seen for the session."""


class FencedStore:
    """A resource that keeps the highest generation seen per session (a fencing check)."""

    def __init__(self) -> None:
        self.highest: dict[str, int] = {}
        self.data: dict[str, str] = {}

    def write(self, session_id: str, value: str, generation: int) -> None:
        if generation < self.highest.get(session_id, 0):
            raise StaleOwner(f"generation {generation} is older than {self.highest[session_id]}")
        self.highest[session_id] = generation
        self.data[session_id] = value


async def serve(repo: SessionRepository, me: str, session_id: str) -> Lease:
    """Take the session for ``me`` (a dead owner's is free) and return the lease."""
    await repo.heartbeat(me, 30)
    lease = await repo.acquire(session_id, me, 600)
    if lease.owner != me:
        raise RuntimeError(f"{lease.owner} holds the session")
    return lease


async def main() -> list[str]:
    clock = FakeClock()
    store = FencedStore()
    said: list[str] = []
    async with MemorySessionRepository(clock=clock) as repo:
        a = await serve(repo, "machine-a", "s-1")
        store.write("s-1", "from a", a.generation)

        clock.advance(31)  # machine-a stalls past its heartbeat's ttl
        b = await serve(repo, "machine-b", "s-1")  # free at once: a is dead
        store.write("s-1", "from b", b.generation)
        said.append(f"b took over with generation {b.generation} > {a.generation}")

        try:  # machine-a wakes up and carries on as if nothing happened
            store.write("s-1", "late write from a", a.generation)
        except StaleOwner as refused:
            said.append(f"a's late write refused: {refused}")
        current = await repo.lease("s-1")
        said.append(f"a checks its lease: owner is now {current.owner if current else None}")
    return said


if __name__ == "__main__":
    for line in asyncio.run(main()):
        print(line)
