"""Outages cannot be seen: hypothesis drives the wrapper through them against a model.

One instance, one store, and a plain dict of session -> (owner, expiry) as the
model. Among the operations come outages: the store breaks, a few calls are made
(and the fake clock moves, so outage writes may expire before the write-back), and
it heals. Because the
fallback is warm and the write-back exact, every answer must be the model's, in an
outage or not; and after each recovery the store itself must hold exactly the model
(no outage write lost, none applied twice, no replaced binding come back).

The store is ``BreakableStore`` (tests/resilience/test_resilient.py): the real memory backend
with hooks that fail while told to.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from session_repo import ResilientSessionRepository
from session_repo.testing import FakeClock
from tests.resilience.test_resilient import DOWN, BreakableStore

T = TypeVar("T")

START = 1_700_000_000.0
SESSIONS = st.sampled_from(["s-0", "s-1"])
OWNERS = st.sampled_from(["machine-a", "machine-b"])
TTLS = st.sampled_from([1, 60])  # seconds: gone by the write-back, or not
REPLACING = st.none() | OWNERS


class OutageMachine(RuleBasedStateMachine):
    """The wrapper over a store that breaks, against a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = FakeClock(START)
        self.store = BreakableStore(clock=self.clock, default_ttl=5, cleanup_interval=0)
        self.repo = ResilientSessionRepository(
            self.store, retry_count=1, retry_delay=0, probe_delay=0.001, probe_max_delay=0.002
        )
        self.model: dict[str, tuple[str, int]] = {}
        self.outages = 0
        self.run(self.repo.__aenter__())

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(call)

    def teardown(self) -> None:
        try:
            self.run(self.repo.close())
        finally:
            self.runner.close()

    @property
    def now(self) -> int:
        return math.floor(self.clock.now() * 1000)

    def owner(self, session_id: str) -> str | None:
        row = self.model.get(session_id)
        return row[0] if row is not None and row[1] > self.now else None

    # -- faults ----------------------------------------------------------------

    @rule(data=st.data(), steps=st.integers(min_value=1, max_value=6))
    def outage(self, data: st.DataObject, steps: int) -> None:
        """Break the store, make ``steps`` calls (time may pass), heal it, compare."""
        self.store.error = DOWN
        calls = [self.upsert, self.lookup, self.claim, self.touch, self.delete]
        for _ in range(steps):
            call = data.draw(st.sampled_from([*calls, self.delete_owner, self.advance]))
            if call == self.delete_owner:
                self.delete_owner(data.draw(OWNERS))
            elif call == self.advance:
                self.advance(data.draw(st.sampled_from([0.5, 2])))
            else:
                self._draw_call(data, call)
        self.store.error = None
        self.outages += 1

        async def recovered() -> None:
            for _ in range(2000):
                if (await self.repo.health()).status == "ok":
                    return
                await asyncio.sleep(0.001)
            raise AssertionError("no recovery")

        self.run(recovered())
        for session_id in ("s-0", "s-1"):
            assert self.run(self.store.lookup(session_id)) == self.owner(session_id), session_id

    def _draw_call(self, data: st.DataObject, call: Any) -> None:
        session_id = data.draw(SESSIONS)
        if call == self.upsert:
            self.upsert(session_id, data.draw(OWNERS), data.draw(TTLS))
        elif call == self.claim:
            self.claim(session_id, data.draw(OWNERS), data.draw(TTLS), data.draw(REPLACING))
        elif call == self.touch:
            self.touch(session_id, data.draw(TTLS))
        else:
            call(session_id)

    @rule(seconds=st.sampled_from([0.5, 2]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- the contract ----------------------------------------------------------

    @rule(session_id=SESSIONS, alloc_id=OWNERS, ttl=TTLS)
    def upsert(self, session_id: str, alloc_id: str, ttl: int) -> None:
        self.run(self.repo.upsert(session_id, alloc_id, ttl=ttl))
        self.model[session_id] = (alloc_id, self.now + ttl * 1000)

    @rule(session_id=SESSIONS)
    def lookup(self, session_id: str) -> None:
        assert self.run(self.repo.lookup(session_id)) == self.owner(session_id)

    @rule(session_id=SESSIONS, alloc_id=OWNERS, ttl=TTLS, replacing=REPLACING)
    def claim(self, session_id: str, alloc_id: str, ttl: int, replacing: str | None) -> None:
        current = self.owner(session_id)
        if current is not None and current != replacing:
            expected = current
        else:
            expected = alloc_id
            self.model[session_id] = (alloc_id, self.now + ttl * 1000)
        assert self.run(self.repo.claim(session_id, alloc_id, ttl=ttl, replacing=replacing)) == (
            expected
        )

    @rule(session_id=SESSIONS, ttl=TTLS)
    def touch(self, session_id: str, ttl: int) -> None:
        current = self.owner(session_id)
        if current is not None:
            self.model[session_id] = (current, self.now + ttl * 1000)
        assert self.run(self.repo.touch(session_id, ttl=ttl)) is (current is not None)

    @rule(session_id=SESSIONS)
    def delete(self, session_id: str) -> None:
        live = self.owner(session_id) is not None
        self.model.pop(session_id, None)
        assert self.run(self.repo.delete(session_id)) is live

    @rule(alloc_id=OWNERS)
    def delete_owner(self, alloc_id: str) -> None:
        doomed = [s for s in self.model if self.owner(s) == alloc_id]
        for session_id in doomed:
            del self.model[session_id]
        assert self.run(self.repo.delete_owner(alloc_id)) == len(doomed)

    @invariant()
    def nothing_dropped_or_lost(self) -> None:
        metrics = self.run(self.repo.metrics())
        assert (metrics.journal_dropped, metrics.claims_lost) == (0, 0)


def test_outages_are_invisible_to_a_single_instance() -> None:
    run_state_machine_as_test(
        OutageMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
