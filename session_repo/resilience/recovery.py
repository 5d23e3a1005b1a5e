"""Writing the outage journal back to the primary, each entry exactly once.

An entry leaves the journal as it is applied; one that fails goes back to the
journal's front and ends this try (the probe tries again), the rest of its batch
staying written. Each round writes the outage heartbeats first (see the journal),
then one batch. An owner whose heartbeat the primary no longer held live (it lapsed
there during a long outage, while the fallback took its renewals) comes back as a
new incarnation, which leaves its earlier bindings dead on the primary although
the fallback told the owner they were alive: so each of its sessions live in the
fallback (or warm) with nothing to write back is journaled as a claim replacing
itself. Taken back unless another instance bound it meanwhile; then it is a lost
claim, reported like any other. While a batch is in flight, a writer of one of its sessions
waits for it (one round trip); once a batch went through, a session with nothing
left to write back may use the primary again.
"""

from __future__ import annotations

import asyncio

from session_repo._core.front import StoreFront
from session_repo._core.keys import log_ref
from session_repo.errors import RepositoryClosed
from session_repo.resilience.claims import ClaimLostReports
from session_repo.resilience.journal import BARRIERS, Entry, write_back, write_beat
from session_repo.resilience.outage import FallbackState

__all__ = ["WriteBack"]


class WriteBack:
    """The journal's way back to ``primary``.

    Args:
        primary: the store written back to.
        state: what the fallback knows (its journal and warm cache).
        claims: where lost claims are reported.
    """

    def __init__(self, primary: StoreFront, state: FallbackState, claims: ClaimLostReports) -> None:
        self._primary = primary
        self._state = state
        self._claims = claims
        self._inflight: dict[bytes, asyncio.Event] = {}  # entries being written back
        self.recovering = False  # a batch went through: sessions with no entry use the primary

    def pending(self) -> int:
        """Entries not yet written back, those in flight included."""
        return len(self._state.journal) + len(self._inflight)

    def in_flight(self, key: bytes) -> asyncio.Event | None:
        """Set once the batch writing ``key``'s entry back has ended, if one is in flight."""
        return self._inflight.get(key)

    def serves_primary(self, key: bytes | None) -> bool:
        """Whether a call for ``key`` may use the primary while the journal drains."""
        journal = self._state.journal
        return (
            self.recovering and key is not None and key not in journal and not journal.owner_entries
        )

    async def run(self) -> tuple[int, int]:
        """Write the whole journal back, batch by batch.

        Returns:
            (entries written, claims among them that lost).

        Raises:
            StorageError: an entry failed (it is back in the journal).
        """
        journal = self._state.journal
        written = lost = 0
        try:
            while journal:
                beats = journal.take_beats()
                if beats:
                    await self._beat(beats)
                    written += len(beats)
                    continue
                batch = journal.take_batch()
                outcomes = await self._write(batch)
                # A batch went through: sessions with nothing to write back may use the
                # primary again (not before: one that reads but cannot write holds no one).
                self.recovering = True
                written += len(batch)
                lost += sum(
                    entry.kind == "claim" and winner is not None and winner != entry.owner
                    for entry, winner in zip(batch, outcomes, strict=True)
                )
        finally:
            self.recovering = False
        return written, lost

    async def _beat(self, beats: dict[str, int]) -> None:
        """Write heartbeats back together; the failed ones go back to the journal."""
        outcomes: list[BaseException | None] = [RepositoryClosed("unsent")] * len(beats)
        try:
            await self._primary.open()
            now = self._primary.now_ms()
            live = await self._primary.run("owners", lambda s: s.owners(now))
            outcomes = await asyncio.gather(
                *(write_beat(self._primary, owner, end, now) for owner, end in beats.items()),
                return_exceptions=True,
            )
        finally:
            failure: BaseException | None = None
            for (owner, end), outcome in zip(beats.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self._state.journal.put_back_beat(owner, end)
                    failure = outcome
        if failure is not None:
            raise failure
        for owner, end in beats.items():
            if end > now and owner not in live:  # a new incarnation there: claim anew
                await self._state.reassert(owner, now)

    async def _write(self, batch: list[Entry]) -> list[str | BaseException | None]:
        writing = asyncio.Event()
        for entry in batch:
            self._inflight[entry.key] = writing
        outcomes: list[str | BaseException | None] = [RepositoryClosed("unsent")] * len(batch)
        try:
            await self._primary.open()
            now = self._primary.now_ms()
            outcomes = await asyncio.gather(
                *(write_back(self._primary, entry, now) for entry in batch),
                return_exceptions=True,
            )
        finally:
            failure = self._settle(batch, outcomes)
            for entry in batch:
                del self._inflight[entry.key]
            writing.set()
        if failure is not None:
            raise failure
        return outcomes

    def _settle(
        self, batch: list[Entry], outcomes: list[str | BaseException | None]
    ) -> BaseException | None:
        """Put failed entries back, remember what the rest wrote; the first failure."""
        state = self._state
        failure: BaseException | None = None
        for entry, outcome in reversed(list(zip(batch, outcomes, strict=True))):
            if isinstance(outcome, BaseException):
                state.journal.put_back(entry)
                failure = outcome
            elif entry.kind in BARRIERS:  # their bindings went (a heartbeat after stays)
                state.warm.forget_owner(entry.owner)
            elif entry.kind == "claim" and outcome is not None and outcome != entry.owner:
                state.seen(entry.key, outcome, self._primary.now_ms())
                self._claims.report(log_ref(entry.key), outcome)
            elif entry.kind == "clear" or entry.expires_at <= self._primary.now_ms():
                state.warm.put(entry.key, None, 0)
            else:  # what the fallback says now is what the primary holds
                owner = entry.basis if entry.kind == "keep" else entry.owner
                state.warm.put(entry.key, owner, entry.expires_at)
        return failure
