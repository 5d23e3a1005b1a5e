"""The owner-level calls, each answered by the primary or by the fallback.

On the primary the answer teaches the warm cache (an owner's sessions forgotten,
a heartbeat kept). On the fallback, first the owner's known sessions are seeded
(or cleared), so the fallback acts on them as the primary would, then the call is
journaled: ``delete_owner`` and ``release`` in order, a heartbeat folded per owner
(written back before the bindings, and only if it has not lapsed by then). The
fallback's ``owners`` are the heartbeats made through this wrapper; the warm cache
never seeds a binding whose owner it knows to be dead (see ``warm``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from session_repo._core.counters import Counters
from session_repo._core.front import StoreFront
from session_repo.resilience.outage import FallbackState
from session_repo.resilience.serving import Serving

__all__ = ["OwnerCalls"]


class OwnerCalls:
    """``delete_owner``, ``heartbeat``, ``release``, ``owners`` and ``cleanup``, served.

    Each takes the checked inputs (the alloc id, the ttl in ms).

    Args:
        primary: the store served while healthy.
        state: the fallback, the warm cache, the seeded sessions and the journal.
        serving: the switch between the two.
        counters: where a cleanup of the fallback is counted (the primary counts its own).
    """

    def __init__(
        self, primary: StoreFront, state: FallbackState, serving: Serving, counters: Counters
    ) -> None:
        self._primary = primary
        self._fallback = state.fallback
        self._state = state
        self._warm = state.warm
        self._serving = serving
        self._counters = counters

    async def delete_owner(self, owner: str) -> int:
        """Remove every binding of ``owner``; returns how many live ones went."""

        async def on_primary() -> int:
            now = self._primary.now_ms()
            removed = await self._primary.run("delete_owner", lambda s: s.delete_owner(owner, now))
            self._warm.forget_owner(owner)
            return removed

        async def on_fallback() -> int:
            self._state.journaled_delete_owner(owner)
            now = self._primary.now_ms()
            for key in self._warm.keys_of(owner):  # its known sessions: each one cleared
                if await self._state.owner(key, now) == owner:
                    self._state.journaled("delete", key, owner, "", 0)
            self._warm.forget_owner(owner)
            return await self._fallback.run("delete_owner", lambda s: s.delete_owner(owner, now))

        return await self._serving.serve("delete_owner", None, on_primary, on_fallback)

    async def heartbeat(self, owner: str, life: int) -> None:
        """``owner`` is alive for ``life`` ms more; on the fallback, journaled folded."""

        async def on_primary() -> None:
            now = self._primary.now_ms()
            await self._primary.run("heartbeat", lambda s: s.heartbeat(owner, now + life, now))
            self._warm.beat(owner, now + life, now)

        async def on_fallback() -> None:
            now = self._primary.now_ms()
            await self._state.beat(owner, now + life, now)

        await self._serving.serve("heartbeat", None, on_primary, on_fallback)

    async def release(self, owner: str) -> int:
        """``owner`` leaves; returns how many live bindings it held."""

        async def on_primary() -> int:
            now = self._primary.now_ms()
            removed = await self._primary.run("release", lambda s: s.release(owner, now))
            self._warm.released(owner)
            return removed

        async def on_fallback() -> int:
            now = self._primary.now_ms()
            for key in self._warm.keys_of(owner):  # its known sessions, counted below
                await self._state.seed(key, now)
            self._state.journaled_release(owner)
            return await self._fallback.run("release", lambda s: s.release(owner, now))

        return await self._serving.serve("release", None, on_primary, on_fallback)

    async def owners(self) -> dict[str, int]:
        """Alloc id to the end of its live heartbeat, in ms."""

        async def on_primary() -> dict[str, int]:
            now = self._primary.now_ms()
            ends = await self._primary.run("owners", lambda s: s.owners(now))
            self._warm.owners_seen(ends)
            return ends

        async def on_fallback() -> dict[str, int]:
            now = self._primary.now_ms()
            for owner in self._warm.beating():
                await self._state.seed_beat(owner, now)
            return await self._fallback.run("owners", lambda s: s.owners(now))

        return await self._serving.serve("owners", None, on_primary, on_fallback)

    async def cleanup(self) -> int:
        """Remove expired rows from the store serving now; returns how many."""

        async def on_fallback() -> int:
            now = self._primary.clock.now()
            removed = await self._fallback.run(
                "cleanup", lambda s: s.cleanup(math.floor(now * 1000), self._primary.cleanup_batch)
            )
            self._counters.cleaned += removed
            self._counters.last_cleanup_at = datetime.fromtimestamp(now, UTC)
            return removed

        return await self._serving.serve("cleanup", None, self._primary.cleanup, on_fallback)
