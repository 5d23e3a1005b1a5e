"""Leases keep their fencing promises under concurrency and killed connections (issue 14).

The history checker (tests/contract/linearizability.py) models a binding as (owner,
generation, least fresh generation): ``acquire`` and ``lease`` must answer the model's
owner and generation, a generation is fresh (greater than every one the key had) when
the owner changes or the binding is made anew, and a touch/delete given a generation
succeeds only while the live binding has it. ``fencing_faults`` checks without search
that no generation has two owners and none goes backwards in real time. The owners also
heartbeat (with a ttl that outlasts the run: no binding may change for it) and release
(every binding of theirs ends, on every key at once). Shown here: the checker rejects
hand-made violations, the workload (with ``Plan(leases=True)``) catches planted bugs, and
every store's lease histories pass while its connections are killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from session_repo import MemorySessionRepository, SessionRepository
from session_repo.backends.base import StoreFront
from session_repo.backends.memory import MemoryStorage
from tests.conftest import backend_params
from tests.contract.history_worker import Plan, build, owner_names, record
from tests.contract.linearizability import (
    EVERY_KEY,
    INITIAL,
    Op,
    Verdict,
    check_history,
    check_key,
    fencing_faults,
    step,
)
from tests.contract.test_linearizability import (
    BUDGET,
    failure,
    history_plan,
    history_store,
    run_workload,
)

LEASES = Plan(leases=True, duration=3.0)
AMONG_TASKS = Plan(tasks=9, duration=1.5, max_ops=100, leases=True)  # 900 calls, in one process

# -- the model and the checker on hand-made histories ---------------------------------


def op(
    kind: str,
    call: int,
    ret: int | None,
    result: object = None,
    owner: str | None = None,
    *,
    replacing: str | None = None,
    generation: int | None = None,
    client: str = "c",
    key: str = "k",
) -> Op:
    return Op(client, key, kind, call, ret, result, owner, replacing, generation)


def everywhere(kind: str, call: int, ret: int | None, result: object, owner: str) -> Op:
    """An owner's call (heartbeat, release): in every key's history."""
    return op(kind, call, ret, result, owner, key=EVERY_KEY, client="o")


def test_the_model_follows_the_generation_rules() -> None:
    held = ("a", 7, 8)  # a holds generation 7; a fresh one is >= 8
    assert step(INITIAL, op("acquire", 0, 1, ("a", 7), "a")) == (True, held)
    assert step(INITIAL, op("lease", 0, 1, None)) == (True, INITIAL)
    assert step(held, op("lease", 0, 1, ("a", 7))) == (True, held)
    assert step(held, op("lease", 0, 1, ("a", 8)))[0] is False
    assert step(held, op("acquire", 0, 1, ("a", 7), "b")) == (True, held)  # b lost
    assert step(held, op("acquire", 0, 1, ("b", 9), "b", replacing="a")) == (True, ("b", 9, 10))
    assert step(held, op("acquire", 0, 1, ("b", 7), "b", replacing="a"))[0] is False
    assert step(held, op("acquire", 0, 1, ("a", 7), "a", replacing="a")) == (True, held)
    assert step(held, op("upsert", 0, 1, None, "a")) == (True, held)  # the same owner keeps it
    assert step(held, op("upsert", 0, 1, None, "b")) == (True, ("b", None, 8))  # unseen, >= 8
    assert step(("b", None, 8), op("lease", 0, 1, ("b", 7)))[0] is False
    assert step(("b", None, 8), op("lease", 0, 1, ("b", 12))) == (True, ("b", 12, 13))
    assert step(held, op("touch", 0, 1, True, generation=7)) == (True, held)
    assert step(held, op("touch", 0, 1, True, generation=6))[0] is False
    assert step(held, op("touch", 0, 1, False, generation=6)) == (True, held)
    assert step(held, op("touch", 0, 1, False, generation=7))[0] is False
    assert step(held, op("delete", 0, 1, True, generation=7)) == (True, (None, None, 8))
    assert step(held, op("delete", 0, 1, True, generation=6))[0] is False
    assert step(held, op("delete", 0, None, "StorageError", generation=6))[0] is False
    assert step(held, op("delete", 0, None, "StorageError", generation=7))[0] is True
    assert step((None, None, 8), op("acquire", 0, 1, ("a", 7), "a"))[0] is False  # not fresh
    assert step(("a", None, 8), op("touch", 0, 1, True, generation=9)) == (True, ("a", 9, 10))
    # An owner's calls, on one key: release ends its binding; a count of 0 says it had none.
    assert step(held, everywhere("release", 0, 1, 2, "a")) == (True, (None, None, 8))
    assert step(held, everywhere("release", 0, 1, 3, "b")) == (True, held)  # other keys'
    assert step(held, everywhere("release", 0, 1, 0, "b")) == (True, held)
    assert step(held, everywhere("release", 0, 1, 0, "a"))[0] is False
    assert step(INITIAL, everywhere("release", 0, 1, 1, "a")) == (True, INITIAL)
    raised = everywhere("release", 0, None, "StorageError", "a")
    assert step(held, raised) == (True, (None, None, 8))
    assert step(held, everywhere("heartbeat", 0, 1, None, "a")) == (True, held)


async def test_the_model_agrees_with_a_sequential_run_on_memory() -> None:
    async with MemorySessionRepository(default_ttl=600) as repo:
        plan = Plan(tasks=1, max_ops=600, think=0, leases=True)
        history = await record(repo, "solo", plan, seed=5)
    verdicts = check_history(history)
    assert all(v.ok for v in verdicts), [v.report for v in verdicts]
    kinds = {(call.kind, call.generation is not None, call.result is True) for call in history}
    assert {("touch", True, True), ("touch", True, False), ("delete", True, True)} <= kinds
    released = {call.result for call in history if call.kind == "release"}
    assert 0 in released, released
    assert released - {0}, released  # and ones that ended bindings
    assert any(call.kind == "heartbeat" for call in history)


def rejected(history: list[Op]) -> tuple[Verdict, Verdict]:
    """The verdict with the direct checks first, and that of the search alone."""
    with_fencing, search = check_key("k", history), check_key("k", history, fencing=False)
    assert not search.ok, search.report
    assert not search.exhausted
    assert not with_fencing.ok
    return with_fencing, search


def test_a_generation_going_backwards_is_rejected() -> None:
    history = [
        op("acquire", 0, 10, ("a", 5), "a"),
        op("delete", 20, 30, True),
        op("acquire", 40, 50, ("b", 4), "b", client="d"),
    ]
    verdict, _ = rejected(history)
    assert "generation went back from 5 to 4" in verdict.report
    assert [w.kind for w in verdict.witness] == ["acquire", "acquire"]


def test_two_owners_of_one_generation_are_rejected() -> None:
    history = [
        op("acquire", 0, 10, ("a", 5), "a"),
        op("acquire", 20, 30, ("b", 5), "b", replacing="a", client="d"),
    ]
    verdict, _ = rejected(history)
    assert "generation 5 held by two owners" in verdict.report
    # Overlapping, the two are still one generation with two owners.
    overlapping = [
        op("lease", 0, 100, ("a", 5)),
        op("acquire", 10, 20, ("b", 5), "b", replacing="a", client="d"),
    ]
    assert "two owners" in check_key("k", overlapping).report


def test_a_stale_conditional_delete_that_succeeded_is_rejected() -> None:
    # b took the session unseen (an upsert answers no generation): 5 is stale.
    unseen = [
        op("acquire", 0, 10, ("a", 5), "a"),
        op("upsert", 20, 30, owner="b", client="d"),
        op("delete", 40, 50, True, generation=5),
    ]
    verdict, search = rejected(unseen)
    assert verdict.report == search.report  # no direct check sees it: the search does
    assert "delete(generation=5) -> True" in verdict.report
    seen = [
        op("acquire", 0, 10, ("a", 5), "a"),
        op("acquire", 20, 30, ("b", 6), "b", replacing="a", client="d"),
        op("delete", 40, 50, True, generation=5),
    ]
    assert "went back from 6 to 5" in rejected(seen)[0].report
    touched = [*unseen[:2], op("touch", 40, 50, True, generation=5)]
    rejected(touched)


def test_concurrent_lease_calls_may_take_effect_in_either_order() -> None:
    history = [
        op("lease", 0, 100, ("a", 5)),  # answered last, linearized first
        op("acquire", 0, 5, ("a", 5), "a", client="e"),
        op("acquire", 10, 20, ("b", 6), "b", replacing="a", client="d"),
        op("touch", 30, 40, False, generation=5, client="e"),
        op("delete", 30, 40, True, generation=6, client="d"),
        op("acquire", 50, 60, ("a", 9), "a", client="e"),
    ]
    assert check_key("k", history).ok
    assert fencing_faults(history) == []


def test_an_indeterminate_lease_call_may_or_may_not_have_taken_effect() -> None:
    start = [op("acquire", 0, 10, ("a", 5), "a")]
    took = [
        *start,
        op("acquire", 20, None, "StorageError", "b", replacing="a"),
        op("lease", 40, 50, ("b", 8)),
    ]
    assert check_key("k", took).ok
    delete = op("delete", 20, None, "StorageError", generation=5)
    assert check_key("k", [*start, delete, op("lease", 40, 50, None)]).ok
    assert check_key("k", [*start, delete, op("lease", 40, 50, ("a", 5))]).ok
    back = [*start, delete, op("lease", 40, 50, None), op("lease", 60, 70, ("a", 5))]
    assert not check_key("k", back).ok
    stale = op("delete", 20, None, "StorageError", generation=4)  # cannot have deleted
    assert not check_key("k", [*start, stale, op("lease", 40, 50, None)]).ok


def test_an_unseen_generation_is_pinned_by_what_succeeds_on_it() -> None:
    history = [
        op("upsert", 0, 10, owner="a"),
        op("touch", 20, 30, True, generation=3),
        op("lease", 40, 50, ("a", 4)),
    ]
    assert not check_key("k", history).ok
    assert check_key("k", [*history[:2], op("lease", 40, 50, ("a", 3))]).ok


def test_a_release_ends_the_owners_bindings_on_every_key() -> None:
    history = [
        op("acquire", 0, 10, ("a", 5), "a", key="k1"),
        op("acquire", 0, 10, ("a", 6), "a", key="k2", client="d"),
        everywhere("release", 20, 30, 2, "a"),
        everywhere("heartbeat", 25, 45, None, "a"),
        op("lease", 40, 50, None, key="k1"),
        op("lease", 40, 50, ("a", 6), key="k2", client="d"),  # outlived the release
    ]
    verdicts = check_history(history)
    assert [(v.key, v.ok) for v in verdicts] == [("k1", True), ("k2", False)]
    assert [w.kind for w in verdicts[1].witness] == ["release", "heartbeat", "lease"]
    assert "release('a') -> 2" in verdicts[1].report


def test_a_binding_made_after_a_release_is_new_and_lives_without_a_heartbeat() -> None:
    start = [
        everywhere("heartbeat", 0, 10, None, "a"),
        op("acquire", 20, 30, ("a", 5), "a"),
        everywhere("release", 40, 50, 1, "a"),
    ]
    verdict, search = rejected([*start, op("acquire", 60, 70, ("a", 5), "a")])
    assert verdict.report == search.report  # the same owner, so only the search sees it
    again = [*start, op("acquire", 60, 70, ("a", 8), "a")]
    assert check_key("k", [*again, op("lookup", 80, 90, "a")]).ok
    rejected([*again, op("lookup", 80, 90, None)])  # live: as if it never heartbeated
    rejected([*start[:2], everywhere("release", 40, 50, 0, "a")])  # it had one here
    rejected([*start[:2], op("lookup", 40, 50, None)])  # a heartbeat kills nothing


def test_an_indeterminate_release_may_or_may_not_have_taken_effect() -> None:
    start = [
        op("acquire", 0, 10, ("a", 5), "a"),
        everywhere("release", 20, None, "StorageError", "a"),
    ]
    assert check_key("k", [*start, op("lease", 40, 50, None)]).ok
    assert check_key("k", [*start, op("lease", 40, 50, ("a", 5))]).ok
    back = [*start, op("lease", 40, 50, None), op("lease", 60, 70, ("a", 5))]
    assert not check_key("k", back).ok


# -- the workload catches planted bugs ------------------------------------------------


class ReusedGenerations(MemoryStorage):
    """Planted bug: a binding taken over (or upserted by another owner) keeps the old
    row's generation instead of a fresh one."""

    def _bind(self, key: bytes, alloc_id: str, expires_at: int, now: int) -> Any:  # a LeaseRow
        old = self._rows.get(key)
        row = super()._bind(key, alloc_id, expires_at, now)
        if old is None or old[0] == alloc_id:
            return row
        self._rows[key] = (alloc_id, expires_at, old[2], self._rows[key][3])
        return row._replace(generation=old[2])


class IgnoredGenerations(MemoryStorage):
    """Planted bug: touch and delete forget the generation they were given."""

    async def touch(
        self, key: bytes, expires_at: int, now: int, generation: int | None = None
    ) -> bool:
        return await super().touch(key, expires_at, now)

    async def delete(self, key: bytes, now: int, generation: int | None = None) -> bool:
        return await super().delete(key, now)


class ForgetfulRelease(MemoryStorage):
    """Planted bug: release leaves the owner's latest binding behind (and counts it)."""

    async def release(self, alloc_id: str, now: int) -> int:
        mine = [key for key, row in self._rows.items() if row[0] == alloc_id]
        if not mine:
            return await super().release(alloc_id, now)
        spared = self._rows.pop(mine[-1])
        live = await super().release(alloc_id, now)
        self._rows[mine[-1]] = spared
        return live + 1


class LapsedOnRelease(MemoryStorage):
    """Planted bug: release lapses a heartbeat instead of removing it, so the owner reads
    as dead, not as one that never heartbeated: what it binds later is dead at once."""

    async def release(self, alloc_id: str, now: int) -> int:
        beat = self._beats.get(alloc_id)
        live = await super().release(alloc_id, now)
        if beat is not None:
            self._beats[alloc_id] = (now, beat[1])
        return live


class RestartingHeartbeats(MemoryStorage):
    """Planted bug: every heartbeat starts a new epoch, as after a lapse: the owner's live
    bindings die."""

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        beat = self._beats.get(alloc_id)
        self._beats[alloc_id] = (expires_at, 0 if beat is None else beat[1] + 1)


def on_storage(storage: MemoryStorage) -> SessionRepository:
    async def connect(resources: contextlib.AsyncExitStack) -> MemoryStorage:
        return storage

    return StoreFront(connect=connect, backend="memory", clock=None, default_ttl=600)


PLANTED = [
    ReusedGenerations,
    IgnoredGenerations,
    ForgetfulRelease,
    LapsedOnRelease,
    RestartingHeartbeats,
]


@pytest.mark.parametrize("bug", PLANTED)
async def test_planted_lease_bugs_among_tasks_are_caught(bug: type[MemoryStorage]) -> None:
    async with on_storage(bug(100_000)) as repo:
        history = await record(repo, "p", AMONG_TASKS, seed=2)
    verdicts = check_history(history, budget=BUDGET)
    assert not any(v.exhausted for v in verdicts), failure(verdicts)
    failed = [v for v in verdicts if not v.ok]
    assert failed, f"the planted {bug.__name__} went unnoticed in {len(history)} calls"
    assert failed[0].witness
    # The search alone catches it too, not only the direct checks.
    searched = check_history(history, budget=BUDGET, fencing=False)
    assert not any(v.exhausted for v in searched), failure(searched)
    assert any(not v.ok for v in searched)


async def test_the_same_tasks_on_the_real_memory_store_pass() -> None:
    async with MemorySessionRepository(default_ttl=600) as repo:
        history = await record(repo, "p", AMONG_TASKS, seed=2)
    verdicts = check_history(history, budget=BUDGET)
    assert all(v.ok for v in verdicts), failure(verdicts)


# -- every store, connections killed ---------------------------------------------------


def _summary(backend_name: str, history: list[Op], faults: int, verdicts: list[Verdict]) -> str:
    conditional = [c for c in history if c.generation is not None and c.definite]
    won = sum(1 for c in conditional if c.result is True)
    released = [c.result for c in history if c.kind == "release" and c.definite]
    beats = sum(1 for c in history if c.kind == "heartbeat")
    return (
        f"{backend_name}: {len(history)} calls"
        f" ({sum(1 for c in history if not c.definite)} raised), {faults} faults,"
        f" conditional touch/delete {won} of {len(conditional)} succeeded,"
        f" {beats} heartbeats, releases answered {released},"
        f" ops per key {[v.ops for v in verdicts]}, search steps {[v.steps for v in verdicts]}"
    )


async def _release_owners(backend_name: str, url: str, plan: Plan) -> None:
    """Leave no heartbeat behind (Redis keeps an owner's mark until it is released)."""
    async with build(backend_name, url, plan) as repo:
        for owner in owner_names(plan):
            await repo.release(owner)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", backend_params("sqlite", "postgresql", "mariadb", "redis"))
async def test_lease_histories_under_killed_connections_keep_fencing(
    backend_name: str, tmp_path: Path
) -> None:
    url = await history_store(backend_name, tmp_path)
    started = time.monotonic()
    plan = history_plan(leases=True, duration=LEASES.duration)
    # Owners of this run alone: no earlier run's heartbeat can lapse under it.
    plan = dataclasses.replace(plan, owner_prefix=f"{plan.key_prefix}m")
    try:
        history, faults = await run_workload(backend_name, url, plan, faults=True)
    finally:
        await _release_owners(backend_name, url, plan)
    verdicts = check_history(history, budget=BUDGET)
    summary = (
        f"{_summary(backend_name, history, faults, verdicts)}, {time.monotonic() - started:.1f} s"
    )
    print(summary)
    assert len(verdicts) == plan.keys
    assert not any(v.exhausted for v in verdicts), f"{summary}\n{failure(verdicts)}"
    assert all(v.ok for v in verdicts), f"{summary}\n{failure(verdicts)}"
    assert faults > 0
    conditional = [c for c in history if c.generation is not None and c.definite]
    assert {c.result for c in conditional} == {True, False}, summary  # both kinds exercised
    released = {c.result for c in history if c.kind == "release" and c.definite}
    assert 0 in released, summary
    assert released - {0}, summary  # releases that ended bindings, and ones that did not
    assert any(c.kind == "heartbeat" and c.definite for c in history), summary
