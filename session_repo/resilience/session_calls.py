"""Each per-session call's served path: the tries after a failed first one, the fallback.

The wrapper makes a call's first try inline (its healthy path); what follows is
here, through ``Serving.serve``: the tries again on the primary, whose answers go
to the warm cache through ``FallbackState`` (which also unseeds), or the fallback,
whose writes that changed something are journaled. The two pairs that are one call
answered two ways share theirs: ``take`` (claim, acquire) and ``read`` (lookup,
lease), told by ``answers`` which is which.

Fencing tokens never mix (``tokens``): on the primary a token the fallback issued
names no binding, and on the fallback a token it did not issue is refused. An
``acquire`` the fallback grants is journaled as a claim; a conditional ``touch`` or
``delete`` acts on the fallback by its generation and is journaled in its plain
form, only if it acted.
"""

from __future__ import annotations

from typing import TypeVar

from session_repo._core.front import StoreFront
from session_repo._core.storage import LeaseRow
from session_repo.errors import StorageError
from session_repo.resilience.answers import Read, Take
from session_repo.resilience.outage import FallbackState
from session_repo.resilience.serving import Serving
from session_repo.resilience.tokens import FallbackTokens

__all__ = ["SessionCalls"]

T = TypeVar("T")


class SessionCalls:
    """``upsert``, ``lookup``/``lease``, ``claim``/``acquire``, ``touch``, ``delete``, served.

    Each takes the checked inputs (the session's key, the ttl in ms) and, as
    ``failed``, the error of the first try if the healthy path made one.

    Args:
        primary: the store served while healthy.
        state: the fallback, the warm cache, the seeded sessions and the journal.
        tokens: the fencing tokens the fallback issued.
        serving: the switch between the two.
    """

    def __init__(
        self, primary: StoreFront, state: FallbackState, tokens: FallbackTokens, serving: Serving
    ) -> None:
        self._primary = primary
        self._fallback = state.fallback
        self._state = state
        self._tokens = tokens
        self._serving = serving

    async def upsert(
        self, key: bytes, owner: str, life: int, failed: StorageError | None = None
    ) -> None:
        """Bind ``key`` to ``owner`` for ``life`` ms; journaled on the fallback."""

        async def on_primary() -> None:
            now = self._primary.now_ms()
            expires_at = now + life
            await self._primary.run("upsert", lambda s: s.upsert(key, owner, expires_at, now))
            self._state.answered(key, owner, expires_at)

        async def on_fallback() -> None:
            now = self._primary.now_ms()
            before = await self._state.owner(key, now)
            await self._fallback.run("upsert", lambda s: s.upsert(key, owner, now + life, now))
            self._state.journaled("upsert", key, before, owner, now + life)

        await self._serving.serve("upsert", key, on_primary, on_fallback, failed)

    async def read(self, read: Read[T], key: bytes, failed: StorageError | None = None) -> T:
        """``lookup``'s and ``lease``'s served path: one read, answered as ``read`` says.

        The primary's answer is kept in the warm cache: a lease until it ends, a bare
        owner (a lookup's) for the default ttl at most, no binding not at all. The
        fallback reads the session seeded; a lease it answers is its token.
        """

        async def on_primary() -> T:
            now = self._primary.now_ms()
            answer = await self._primary.run(read.operation, lambda s: read.method(s)(key, now))
            lease = read.lease(answer)
            if lease is None:
                self._state.seen(key, read.owner(answer), now)
            else:
                self._leased(key, lease)
            return answer

        async def on_fallback() -> T:
            now = self._primary.now_ms()
            await self._state.seed(key, now)
            answer = await self._fallback.run(read.operation, lambda s: read.method(s)(key, now))
            if (lease := read.lease(answer)) is not None:
                self._tokens.issued(key, lease.generation, lease.owner)
            return answer

        return await self._serving.serve(read.operation, key, on_primary, on_fallback, failed)

    async def take(
        self,
        take: Take[T],
        key: bytes,
        owner: str,
        life: int,
        replacing: str | None,
        failed: StorageError | None = None,
    ) -> T:
        """``claim``'s and ``acquire``'s served path: one claim, answered as ``take`` says.

        The primary's answer is kept in the warm cache: a lease until it ends (and it
        retires the fallback's tokens it makes stale), a bare winner by the claim
        rule (``FallbackState.claimed``). A lease the fallback answers is its token;
        a win there is journaled as a claim.
        """

        async def on_primary() -> T:
            now = self._primary.now_ms()
            expires_at = now + life
            answer = await self._primary.run(
                take.operation, lambda s: take.method(s)(key, owner, expires_at, now, replacing)
            )
            lease = take.lease(answer)
            if lease is None:
                self._state.claimed(key, owner, take.owner(answer), now, expires_at, replacing)
            else:
                self._leased(key, lease)
            return answer

        async def on_fallback() -> T:
            now = self._primary.now_ms()
            expires_at = now + life
            before = await self._state.owner(key, now)
            answer = await self._fallback.run(
                take.operation, lambda s: take.method(s)(key, owner, expires_at, now, replacing)
            )
            if take.owner(answer) == owner and (before != owner or replacing == owner):
                self._state.journaled("claim", key, before, owner, expires_at)
            if (lease := take.lease(answer)) is not None:
                self._tokens.issued(key, lease.generation, lease.owner)
            return answer

        return await self._serving.serve(take.operation, key, on_primary, on_fallback, failed)

    async def touch(
        self, key: bytes, life: int, generation: int | None, failed: StorageError | None = None
    ) -> bool:
        """Extend ``key``'s live binding by ``life`` ms; journaled on the fallback if it did."""

        async def on_primary() -> bool:
            if generation is not None and self._tokens.refused(key, generation):
                return False  # a token the fallback issued: it names no primary binding
            now = self._primary.now_ms()
            touched = await self._primary.run(
                "touch", lambda s: s.touch(key, now + life, now, generation)
            )
            if touched:
                self._state.renewed(key, now + life)
            elif generation is None:
                self._state.answered(key, None, now)
            return touched

        async def on_fallback() -> bool:
            if generation is not None and not self._tokens.honoured(key, generation):
                return False  # not a token the fallback issued: a primary one, perhaps
            now = self._primary.now_ms()
            before = await self._state.owner(key, now)
            touched = await self._fallback.run(
                "touch", lambda s: s.touch(key, now + life, now, generation)
            )
            if touched and before is not None:
                self._state.journaled("touch", key, before, before, now + life)
            return touched

        return await self._serving.serve("touch", key, on_primary, on_fallback, failed)

    async def delete(
        self, key: bytes, generation: int | None, failed: StorageError | None = None
    ) -> bool:
        """Remove ``key``'s live binding; journaled on the fallback if it did."""

        async def on_primary() -> bool:
            if generation is not None and self._tokens.refused(key, generation):
                return False
            now = self._primary.now_ms()
            deleted = await self._primary.run("delete", lambda s: s.delete(key, now, generation))
            if deleted or generation is None:
                self._state.answered(key, None, now)
            return deleted

        async def on_fallback() -> bool:
            if generation is not None and not self._tokens.honoured(key, generation):
                return False
            now = self._primary.now_ms()
            before = await self._state.owner(key, now)
            deleted = await self._fallback.run("delete", lambda s: s.delete(key, now, generation))
            if deleted:
                self._state.journaled("delete", key, before, "", 0)
            return deleted

        return await self._serving.serve("delete", key, on_primary, on_fallback, failed)

    def _leased(self, key: bytes, lease: LeaseRow) -> None:
        """A lease the primary answered: kept until it ends; stale fallback tokens retire."""
        self._state.answered(key, lease.owner, lease.expires_at)
        self._tokens.answered(key, lease.generation, lease.owner)
