"""Hypothesis drives a real backend and a plain-dict model side by side.

A few session ids and owners, so collisions happen; a fake clock that lands
exactly on expiries; every return value, gauge and counter checked against the
model. Each call runs on an event loop the machine owns (``asyncio.Runner``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from sqlalchemy import text

from session_repo import ResilientSessionRepository, SessionRepository, SqlSessionRepository
from session_repo.testing import FakeClock
from session_repo.testing.plugin import FAKE_CLOCK_START
from tests.conftest import BACKENDS, Backend, backend_params

T = TypeVar("T")

T0_MS = math.floor(FAKE_CLOCK_START * 1000)
DEFAULT_TTL_MS = 2000
SESSIONS = st.sampled_from(["s-0", "s-1", "s-2", "s-\U0001f600"])
OWNERS = st.sampled_from(["machine-a", "machine-b", "machine-c"])
# (ttl as given, its length in ms)
TTLS = st.sampled_from(
    [
        (1, 1000),
        (0.5, 500),
        (2.5, 2500),
        (0.0001, 1),
        (timedelta(seconds=3), 3000),
        (None, DEFAULT_TTL_MS),
    ]
)
COUNTERS = ("lookups", "hits", "misses", "upserts", "claims", "touches", "deletes", "cleaned")


class BindingMachine(RuleBasedStateMachine):
    """One backend against a dict of session -> (owner, expires_at ms)."""

    default_ttl_ms = DEFAULT_TTL_MS

    def __init__(self, backend: Backend, location: str | None) -> None:
        super().__init__()
        self.backend, self.location = backend, location
        self.runner = asyncio.Runner()
        self.clock = FakeClock(FAKE_CLOCK_START)
        self.now = T0_MS
        self.model: dict[str, tuple[str, int]] = {}
        self.counts = dict.fromkeys(COUNTERS, 0)
        options = {
            "cleanup_interval": 0,
            "default_ttl": self.default_ttl_ms / 1000,
            "cleanup_batch": 2,
        }
        self.repo: SessionRepository = backend.build(location, self.clock, options)
        self.run(self._open())

    async def _open(self) -> None:
        await self.repo.__aenter__()
        store = (
            self.repo.primary if isinstance(self.repo, ResilientSessionRepository) else self.repo
        )
        if isinstance(store, SqlSessionRepository):  # one store, reused by every example
            async with store.engine.begin() as conn:
                await conn.execute(text("DELETE FROM session_bindings"))
        else:
            await self.backend.reset(self.location)

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(call)

    def teardown(self) -> None:
        try:
            self.run(self.repo.close())
        finally:
            self.runner.close()

    # -- the model -----------------------------------------------------------

    def owner(self, session_id: str) -> str | None:
        row = self.model.get(session_id)
        return row[0] if row is not None and row[1] > self.now else None

    def set_clock(self, ms: int) -> None:
        self.now = ms
        self.clock.set(ms / 1000)
        assert math.floor(self.clock.now() * 1000) == ms

    # -- rules -------------------------------------------------------------------

    @rule(session_id=SESSIONS, alloc_id=OWNERS, ttl=TTLS)
    def upsert(self, session_id: str, alloc_id: str, ttl: tuple[Any, int]) -> None:
        assert self.run(self.repo.upsert(session_id, alloc_id, ttl=ttl[0])) is None
        self.model[session_id] = (alloc_id, self.now + ttl[1])
        self.counts["upserts"] += 1

    @rule(session_id=SESSIONS)
    def lookup(self, session_id: str) -> None:
        expected = self.owner(session_id)
        assert self.run(self.repo.lookup(session_id)) == expected
        self.counts["lookups"] += 1
        self.counts["hits" if expected is not None else "misses"] += 1

    @rule(
        session_id=SESSIONS,
        alloc_id=OWNERS,
        ttl=TTLS,
        replacing=st.none() | OWNERS,
    )
    def claim(
        self, session_id: str, alloc_id: str, ttl: tuple[Any, int], replacing: str | None
    ) -> None:
        current = self.owner(session_id)
        if current is not None and current != replacing:
            expected = current
        else:
            expected = alloc_id
            self.model[session_id] = (alloc_id, self.now + ttl[1])
        result = self.run(self.repo.claim(session_id, alloc_id, ttl=ttl[0], replacing=replacing))
        assert result == expected
        self.counts["claims"] += 1

    @rule(session_id=SESSIONS, ttl=TTLS)
    def touch(self, session_id: str, ttl: tuple[Any, int]) -> None:
        current = self.owner(session_id)
        if current is not None:
            self.model[session_id] = (current, self.now + ttl[1])
        assert self.run(self.repo.touch(session_id, ttl=ttl[0])) is (current is not None)
        self.counts["touches"] += 1

    def remove(self, session_id: str) -> None:
        """A delete: the row goes, or stays as a dead tombstone until cleanup."""
        if self.backend.tombstones:
            self.model[session_id] = (self.model[session_id][0], 0)
        else:
            del self.model[session_id]

    @rule(session_id=SESSIONS)
    def delete(self, session_id: str) -> None:
        live = self.owner(session_id) is not None
        if live:
            self.remove(session_id)
            self.counts["deletes"] += 1
        assert self.run(self.repo.delete(session_id)) is live

    @rule(alloc_id=OWNERS)
    def delete_owner(self, alloc_id: str) -> None:
        doomed = [s for s in self.model if self.owner(s) == alloc_id]
        for session_id in doomed:
            self.remove(session_id)
        self.counts["deletes"] += len(doomed)
        assert self.run(self.repo.delete_owner(alloc_id)) == len(doomed)

    @rule()
    def cleanup(self) -> None:
        doomed = [s for s, (_, expires) in self.model.items() if expires <= self.now]
        for session_id in doomed:
            del self.model[session_id]
        self.counts["cleaned"] += len(doomed)
        assert self.run(self.repo.cleanup()) == len(doomed)

    @rule(ms=st.integers(min_value=0, max_value=3000))
    def advance(self, ms: int) -> None:
        self.set_clock(self.now + ms)

    @precondition(lambda self: any(expires > self.now for _, expires in self.model.values()))
    @rule(data=st.data(), offset=st.sampled_from([0, 0, -1]))
    def advance_to_an_expiry(self, data: st.DataObject, offset: int) -> None:
        """Land exactly on a binding's expiry (or 1 ms before it)."""
        future = sorted({e for _, e in self.model.values() if e > self.now})
        self.set_clock(max(self.now, data.draw(st.sampled_from(future)) + offset))

    @rule()
    def metrics(self) -> None:
        metrics = self.run(self.repo.metrics())
        live = sum(1 for s in self.model if self.owner(s) is not None)
        assert (metrics.sessions, metrics.expired) == (live, len(self.model) - live)
        assert {name: getattr(metrics, name) for name in COUNTERS} == self.counts
        assert metrics.errors == 0


SETTINGS = {
    "memory": settings(max_examples=300, stateful_step_count=40, deadline=None),
    "sqlite": settings(max_examples=100, stateful_step_count=40, deadline=None),
    "resilient": settings(max_examples=100, stateful_step_count=40, deadline=None),
}
SERVER_SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "backend_name",
    backend_params(*(name for name, b in BACKENDS.items() if b.expires_by_fake_clock)),
)
def test_backend_agrees_with_the_model(backend_name: str, tmp_path: Path) -> None:
    backend = BACKENDS[backend_name]
    location = backend.location(tmp_path)
    run_state_machine_as_test(
        lambda: BindingMachine(backend, location),
        settings=SETTINGS.get(backend_name, SERVER_SETTINGS),
    )


# Redis expires by its own clock: long ttls, and a fake clock that stands still.
REDIS_DEFAULT_TTL_MS = 600_000
LONG_TTLS = st.sampled_from(
    [(60, 60_000), (90.5, 90_500), (timedelta(minutes=2), 120_000), (None, REDIS_DEFAULT_TTL_MS)]
)


class StillClockMachine(BindingMachine):
    """The same model for a backend the fake clock cannot expire (Redis)."""

    default_ttl_ms = REDIS_DEFAULT_TTL_MS
    advance = None  # type: ignore[assignment]
    advance_to_an_expiry = None  # type: ignore[assignment]

    @rule(session_id=SESSIONS, alloc_id=OWNERS, ttl=LONG_TTLS)
    def upsert(self, session_id: str, alloc_id: str, ttl: tuple[Any, int]) -> None:
        super().upsert(session_id, alloc_id, ttl)

    @rule(session_id=SESSIONS, alloc_id=OWNERS, ttl=LONG_TTLS, replacing=st.none() | OWNERS)
    def claim(
        self, session_id: str, alloc_id: str, ttl: tuple[Any, int], replacing: str | None
    ) -> None:
        super().claim(session_id, alloc_id, ttl, replacing)

    @rule(session_id=SESSIONS, ttl=LONG_TTLS)
    def touch(self, session_id: str, ttl: tuple[Any, int]) -> None:
        super().touch(session_id, ttl)


@pytest.mark.parametrize(
    "backend_name",
    backend_params(*(name for name, b in BACKENDS.items() if not b.expires_by_fake_clock)),
)
def test_backend_without_fake_expiry_agrees_with_the_model(
    backend_name: str, tmp_path: Path
) -> None:
    backend = BACKENDS[backend_name]
    location = backend.location(tmp_path)
    run_state_machine_as_test(
        lambda: StillClockMachine(backend, location), settings=SERVER_SETTINGS
    )
