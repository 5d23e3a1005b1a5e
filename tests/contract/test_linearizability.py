"""Every store's histories are linearizable, even while its connections are killed (issue 10).

Three processes of three tasks each call lookup / upsert / claim / claim(replacing=) /
touch / delete at random on four hot keys of one real store, while the store's
connections are killed under them (SQLite: the file locked from outside). The recorded
history is then checked, key by key, with tests/contract/linearizability.py. The checker itself is
shown to reject hand-made violations, and the workload to catch planted bugs.

The stores are this file's own (a database of their own on the SQL servers, a key prefix
and a client name of their own on Redis), so only connections these tests opened are
killed and no other test's emptying of the shared ones can touch a running history.
tests/contract/test_lease_histories.py runs the same with the lease calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import sqlite3
import threading
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from session_repo import MemorySessionRepository, SqlSessionRepository
from tests.conftest import backend_params
from tests.contract.history_worker import Plan, RacyMemoryClaims, record, run_process
from tests.contract.linearizability import (
    INITIAL,
    Op,
    Verdict,
    check_history,
    check_key,
    step,
)
from tests.servers import own_database, require_server

PROCESSES = 3
BUDGET = 2_000_000  # search steps per key; a real run needs a few thousand

# -- the checker on hand-made histories ----------------------------------------------


def op(
    kind: str,
    call: int,
    ret: int | None,
    result: object = None,
    owner: str | None = None,
    replacing: str | None = None,
    client: str = "c",
    key: str = "k",
) -> Op:
    return Op(client, key, kind, call, ret, result, owner, replacing)


def owner_step(owner: str | None, call: Op) -> tuple[bool, str | None]:
    """The model's step on the owner alone (generations: tests/contract/test_lease_histories.py)."""
    state = INITIAL if owner is None else (owner, 5, 6)
    ok, after = step(state, call)
    return ok, after[0]


def test_the_model_follows_the_contract() -> None:
    assert owner_step(None, op("claim", 0, 1, "a", "a")) == (True, "a")
    assert owner_step("b", op("claim", 0, 1, "b", "a")) == (True, "b")
    assert owner_step("b", op("claim", 0, 1, "a", "a"))[0] is False
    assert owner_step("b", op("claim", 0, 1, "a", "a", replacing="b")) == (True, "a")
    assert owner_step(None, op("claim", 0, 1, "a", "a", replacing="b")) == (True, "a")
    assert owner_step("c", op("claim", 0, 1, "c", "a", replacing="b")) == (True, "c")
    assert owner_step("a", op("claim", 0, 1, "a", "a")) == (True, "a")
    assert owner_step("a", op("touch", 0, 1, True)) == (True, "a")
    assert owner_step(None, op("touch", 0, 1, True))[0] is False
    assert owner_step("a", op("delete", 0, 1, True)) == (True, None)
    assert owner_step(None, op("delete", 0, 1, False)) == (True, None)
    assert owner_step("a", op("upsert", 0, 1, None, "b")) == (True, "b")
    assert owner_step("a", op("lookup", 0, 1, "a")) == (True, "a")


async def test_the_model_agrees_with_a_sequential_run_on_memory() -> None:
    # One task, so the calls are sequential: the history is linearizable iff the model
    # gives every answer the memory backend gave.
    async with MemorySessionRepository(default_ttl=600) as repo:
        history = await record(repo, "solo", Plan(tasks=1, max_ops=400, think=0), seed=3)
    verdicts = check_history(history)
    assert all(v.ok for v in verdicts), [v.report for v in verdicts]
    assert len(history) == 400


def test_overlapping_calls_may_take_effect_in_either_order() -> None:
    history = [
        op("upsert", 0, 10, owner="a"),
        op("upsert", 5, 15, owner="b", client="d"),
        op("lookup", 20, 30, "a"),  # b went first
        op("claim", 31, 40, "a", "c"),
    ]
    assert check_key("k", history).ok


def test_a_stale_read_after_a_completed_write_is_rejected() -> None:
    history = [
        op("upsert", 0, 10, owner="a"),
        op("upsert", 20, 30, owner="b", client="d"),
        op("lookup", 40, 50, "a"),
    ]
    verdict = check_key("k", history)
    assert not verdict.ok
    assert not verdict.exhausted
    assert "lookup() -> 'a'" in verdict.report


def test_two_claim_winners_are_rejected() -> None:
    history = [
        op("claim", 0, 10, "a", "a"),
        op("claim", 1, 11, "b", "b", client="d"),
    ]
    assert not check_key("k", history).ok


def test_claim_replacing_an_owner_that_is_not_there_is_rejected() -> None:
    # The defect named in the brief: replacing=x answering x while y holds the binding.
    history = [
        op("upsert", 0, 10, owner="y"),
        op("claim", 20, 30, "x", "a", replacing="x"),
    ]
    assert not check_key("k", history).ok


def test_a_double_delete_is_rejected() -> None:
    history = [
        op("upsert", 0, 10, owner="a"),
        op("delete", 20, 30, True),
        op("delete", 25, 35, True, client="d"),
    ]
    assert not check_key("k", history).ok


def test_a_call_that_raised_may_or_may_not_have_taken_effect() -> None:
    took_effect = [op("upsert", 0, None, "StorageError", "a"), op("lookup", 20, 30, "a")]
    did_not = [op("upsert", 0, None, "StorageError", "a"), op("lookup", 20, 30, None)]
    late = [op("lookup", 20, 30, None), op("upsert", 0, None, "x", "a"), op("lookup", 40, 50, "a")]
    assert check_key("k", took_effect).ok
    assert check_key("k", did_not).ok
    assert check_key("k", late).ok
    flip_flop = [*late, op("lookup", 60, 70, None)]
    assert not check_key("k", flip_flop).ok


def test_the_report_names_the_shortest_failing_window() -> None:
    good = [op("upsert", 10 * n, 10 * n + 5, owner=f"m{n % 3}") for n in range(50)]
    bad = [op("lookup", 600, 610, "m0"), op("upsert", 620, 630, owner="m1")]
    verdict = check_key("k", [*good, *bad, op("lookup", 700, 710, "m1")])
    assert not verdict.ok
    assert [(w.kind, w.owner or w.result) for w in verdict.witness] == [
        ("upsert", "m1"),
        ("lookup", "m0"),
    ]
    assert "* [" in verdict.report
    assert "not linearizable" in verdict.report


def test_keys_are_checked_independently() -> None:
    history = [
        op("upsert", 0, 10, owner="a", key="k1"),
        op("lookup", 20, 30, None, key="k2"),
        op("lookup", 20, 30, "b", key="k1"),
    ]
    verdicts = check_history(history)
    assert [(v.key, v.ok) for v in verdicts] == [("k1", False), ("k2", True)]


def test_an_exhausted_budget_is_no_pass() -> None:
    # Many concurrent writes then a read nobody wrote: the search must try them all.
    history = [op("upsert", n, 1000 + n, owner=f"m{n}", client=f"c{n}") for n in range(18)]
    history.append(op("lookup", 2000, 2010, "nobody"))
    verdict = check_key("k", history, budget=1000)
    assert verdict.exhausted
    assert not verdict.ok
    assert "no answer" in verdict.report


# -- faults under a running workload --------------------------------------------------

HISTORY_DB = "session_repo_history"  # this file's database on the SQL servers
REDIS_PREFIX = "session-repo-history:"  # and key prefix on Redis, where its clients are
REDIS_CLIENT = "session-repo-history"  # named this: the only ones the faults kill


async def _history_database(name: str) -> str:
    """The URL of this file's own database on server ``name``, schema at head, emptied."""
    return await own_database(name, HISTORY_DB)


async def history_store(backend_name: str, tmp_path: Path) -> str:
    """This test's store: a SQLite file, this file's database, or Redis as its clients."""
    if backend_name == "sqlite":
        url = _sqlite_url(tmp_path)
        await _prepare_sqlite(url)
        return url
    if backend_name == "redis":
        url = require_server("redis")
        return f"{url}{'&' if '?' in url else '?'}client_name={REDIS_CLIENT}"
    return await _history_database(backend_name)


def history_plan(**shape: Any) -> Plan:
    """A plan on keys of their own (no earlier run's bindings) and this file's Redis prefix."""
    return Plan(key_prefix=f"hot-{uuid.uuid4().hex[:8]}-", redis_prefix=REDIS_PREFIX, **shape)


async def _kill_postgresql(url: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :db AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                ),
                {"db": HISTORY_DB},
            )
            return int(killed or 0)
    finally:
        await engine.dispose()


async def _kill_mariadb(url: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        async with engine.connect() as conn:
            ids = await conn.scalars(
                text(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE db = :db AND id <> CONNECTION_ID() AND command <> 'Daemon'"
                ),
                {"db": HISTORY_DB},
            )
            for thread_id in list(ids):
                with contextlib.suppress(Exception):  # it may have gone meanwhile
                    await conn.execute(text(f"KILL {int(thread_id)}"))
                    killed += 1
            return killed
    finally:
        await engine.dispose()


async def _kill_redis() -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(require_server("redis"))  # unnamed: never its own victim
    killed = 0
    try:
        for entry in await client.client_list():
            if entry.get("name") == REDIS_CLIENT:
                killed += int(await client.client_kill_filter(_id=str(entry["id"])))
        return killed
    finally:
        await client.aclose()


def _lock_sqlite(path: str, hold: float) -> int:
    """Hold the file's write lock from another connection for a while."""
    with contextlib.closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(hold)
        conn.execute("COMMIT")
    return 1


async def _fault(backend_name: str, url: str, rng: random.Random) -> int:
    if backend_name == "postgresql":
        return await _kill_postgresql(url)
    if backend_name == "mariadb":
        return await _kill_mariadb(url)
    if backend_name == "redis":
        return await _kill_redis()
    path = url.removeprefix("sqlite+aiosqlite:///")
    return await asyncio.to_thread(_lock_sqlite, path, rng.uniform(0.05, 0.3))


async def _keep_faulting(backend_name: str, url: str, stop: asyncio.Event) -> int:
    rng = random.Random(10)
    faults = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.1, 0.4))
        if not stop.is_set():
            faults += await _fault(backend_name, url, rng)
    return faults


# -- the workload ---------------------------------------------------------------------


async def run_workload(
    backend_name: str, url: str, plan: Plan, *, faults: bool
) -> tuple[list[Op], int]:
    """Every call of ``PROCESSES`` spawned processes, and how many faults hit them."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    results: Queue[Any] = ctx.Queue()
    workers = [
        ctx.Process(
            target=run_process,
            args=(backend_name, url, n, plan, barrier, results),
            daemon=True,
        )
        for n in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    stop = asyncio.Event()
    faulting: asyncio.Task[int] | None = None
    try:
        try:
            await asyncio.to_thread(barrier.wait, 120)
        except threading.BrokenBarrierError:  # a worker failed before the start: say why
            try:
                report = await asyncio.to_thread(results.get, True, 30)
            except queue.Empty:
                report = ("?", None, "no report (it died)")
            raise AssertionError(f"worker {report[0]} failed to start:\n{report[2]}") from None
        if faults:
            faulting = asyncio.create_task(_keep_faulting(backend_name, url, stop))
        reports = [await asyncio.to_thread(results.get, True, 180) for _ in workers]
    finally:
        stop.set()
        fault_count = await faulting if faulting is not None else 0
        for worker in workers:
            await asyncio.to_thread(worker.join, 30)
            if worker.is_alive():
                worker.kill()
    errors = [error for _, _, error in reports if error is not None]
    assert not errors, errors[0]
    return [call for _, history, _ in reports for call in history], fault_count


def failure(verdicts: list[Verdict]) -> str:
    return "\n\n".join(v.report for v in verdicts if not v.ok)


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite'}"


async def _prepare_sqlite(url: str) -> None:
    async with SqlSessionRepository(url, cleanup_interval=0):
        pass  # the schema, before the processes and the locker open the file


STORES = backend_params("sqlite", "postgresql", "mariadb", "redis")


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", STORES)
async def test_histories_under_killed_connections_are_linearizable(
    backend_name: str, tmp_path: Path
) -> None:
    url = await history_store(backend_name, tmp_path)
    started = time.monotonic()
    history, faults = await run_workload(backend_name, url, history_plan(), faults=True)
    ran = time.monotonic() - started
    verdicts = check_history(history, budget=BUDGET)
    checked = time.monotonic() - started - ran
    indeterminate = sum(1 for call in history if not call.definite)
    summary = (
        f"{backend_name}: {len(history)} calls ({indeterminate} raised), {faults} faults,"
        f" ops per key {[v.ops for v in verdicts]}, search steps {[v.steps for v in verdicts]},"
        f" run {ran:.1f} s, check {checked:.1f} s"
    )
    print(summary)
    assert len(verdicts) == Plan().keys
    assert not any(v.exhausted for v in verdicts), f"{summary}\n{failure(verdicts)}"
    assert all(v.ok for v in verdicts), f"{summary}\n{failure(verdicts)}"
    assert faults > 0


# -- the workload catches planted bugs ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("bug", ["racy-claim", "stale-lookup"])
async def test_planted_bugs_across_processes_are_caught(bug: str, tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path)
    await _prepare_sqlite(url)
    history, _ = await run_workload("sqlite", url, Plan(bug=bug), faults=False)
    verdicts = check_history(history, budget=BUDGET)
    assert not any(v.exhausted for v in verdicts), failure(verdicts)
    failed = [v for v in verdicts if not v.ok]
    assert failed, f"the planted {bug} went unnoticed in {len(history)} calls"
    assert failed[0].witness
    assert "not linearizable" in failed[0].report


async def test_a_racy_claim_among_tasks_is_caught() -> None:
    async with RacyMemoryClaims(default_ttl=600) as repo:
        history = await record(repo, "p", Plan(tasks=9, duration=2.0, think=0.005), seed=1)
    verdicts = check_history(history, budget=BUDGET)
    assert not any(v.exhausted for v in verdicts), failure(verdicts)
    assert any(not v.ok for v in verdicts), f"unnoticed in {len(history)} calls"
