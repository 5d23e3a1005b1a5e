"""The fast paths' batching (SQLite, PostgreSQL, MariaDB): what coalescing must never change.

Lookups waiting together share one query, writes waiting together share one
transaction; a cancelled caller, a failing statement or a failing commit touches
only the callers it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import Pool

from session_repo import SessionRepository, SqlSessionRepository, StorageError
from session_repo.testing import FakeClock
from tests.conftest import RepoFactory, backend_params

BATCH = "session-repo batch"  # the name of every batch's task (a documented constant)

batched = pytest.mark.parametrize("backend_name", backend_params("sqlite", "postgresql", "mariadb"))

PG_POISON = """
CREATE OR REPLACE FUNCTION session_repo_poison() RETURNS trigger AS $$
BEGIN
  IF NEW.alloc_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql
"""


@contextlib.asynccontextmanager
async def poisoned(repo: SessionRepository) -> AsyncIterator[None]:
    """A trigger that fails any statement binding a session to 'poison'."""
    assert isinstance(repo, SqlSessionRepository)
    if repo.backend == "sqlite":
        statements = [
            f"CREATE TRIGGER poison_{event.lower()} BEFORE {event} ON session_bindings "
            "WHEN NEW.alloc_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            for event in ("INSERT", "UPDATE")
        ]
        undo = ["DROP TRIGGER poison_insert", "DROP TRIGGER poison_update"]
    elif repo.backend == "mysql":
        statements = [
            f"CREATE TRIGGER poison_{event.lower()} BEFORE {event} ON session_bindings "
            "FOR EACH ROW BEGIN IF NEW.alloc_id = 'poison' THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned'; END IF; END"
            for event in ("INSERT", "UPDATE")
        ]
        undo = ["DROP TRIGGER poison_insert", "DROP TRIGGER poison_update"]
    else:
        statements = [
            PG_POISON,
            "CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON session_bindings "
            "FOR EACH ROW EXECUTE FUNCTION session_repo_poison()",
        ]
        undo = ["DROP TRIGGER poison ON session_bindings"]
    async with repo.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with repo.engine.begin() as conn:
            for statement in undo:
                await conn.execute(text(statement))


async def stored_count(repo: SessionRepository) -> int:
    """Rows as another connection, outside the fast path, sees them."""
    assert isinstance(repo, SqlSessionRepository)
    async with repo.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM session_bindings"))).scalar_one())


@batched
async def test_a_failing_statement_fails_only_its_caller(repo: SessionRepository) -> None:
    calls = [repo.upsert(f"s{n}", "poison" if n == 5 else f"machine-{n}") for n in range(10)]
    calls += [repo.claim("c", "poison"), repo.claim("d", "machine-d")]
    async with poisoned(repo):
        results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
    assert failed == [5, 10]
    assert all(isinstance(results[n], StorageError) for n in failed)
    assert "poisoned" in str(results[5])
    assert await repo.lookup("s5") is None
    assert await repo.lookup("c") is None
    for n in (0, 4, 6, 9):
        assert await repo.lookup(f"s{n}") == f"machine-{n}"
    assert await repo.lookup("d") == "machine-d"
    assert (await repo.metrics()).errors == 2


@batched
async def test_a_write_then_a_read_from_one_task_sees_the_write(
    repo: SessionRepository,
) -> None:
    async def writer_reader(n: int) -> None:
        for round_ in range(20):
            await repo.upsert(f"own-{n}", f"machine-{round_}")
            assert await repo.lookup(f"own-{n}") == f"machine-{round_}"
            assert await repo.claim(f"own-{n}", "someone-else") == f"machine-{round_}"

    await asyncio.gather(*(writer_reader(n) for n in range(32)))


@batched
async def test_an_acknowledged_write_is_committed(repo: SessionRepository) -> None:
    await asyncio.gather(*(repo.upsert(f"s{n}", "machine-a") for n in range(200)))
    await asyncio.gather(*(repo.claim(f"c{n}", "machine-a") for n in range(50)))
    assert await stored_count(repo) == 250


@batched
async def test_a_caller_cancelled_before_its_batch_runs_writes_nothing(
    repo: SessionRepository,
) -> None:
    await repo.lookup("warm-up")  # opened, so the calls below reach the store at once
    first = asyncio.create_task(repo.upsert("first", "machine-a"))  # runs at once, alone
    task = asyncio.create_task(repo.upsert("cancelled", "machine-a"))
    await asyncio.sleep(0)  # the task is now waiting in the queue; its batch has not started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first
    await repo.upsert("after", "machine-b")
    assert await repo.lookup("cancelled") is None
    assert await repo.lookup("after") == "machine-b"


@batched
async def test_cancelling_waiting_lookups_leaves_the_others_answered(
    repo: SessionRepository,
) -> None:
    for n in range(50):
        await repo.upsert(f"s{n}", f"machine-{n}")
    # A read in progress first: the lookups wait for the next batch (on SQLite a
    # lookup that finds the reader idle is answered at once, on the loop's thread).
    reading = asyncio.create_task(repo.metrics())
    tasks = [asyncio.create_task(repo.lookup(f"s{n}")) for n in range(50)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)
    for task in tasks[::3]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for n, result in enumerate(results):
        if n % 3 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == f"machine-{n}"
    assert await repo.lookup("s0") == "machine-0"  # the pipeline is still healthy
    await reading


@batched
async def test_duplicate_keys_in_one_batch_each_get_an_answer(repo: SessionRepository) -> None:
    await repo.upsert("same", "machine-a")
    results = await asyncio.gather(*(repo.lookup("same") for _ in range(100)))
    assert results == ["machine-a"] * 100


@batched
async def test_lookups_in_one_batch_each_judge_expiry_by_their_own_time(
    repo: SessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert("short", "machine-a", ttl=1)
    early = asyncio.create_task(repo.lookup("short"))
    await asyncio.sleep(0)  # read "now" before the clock moves
    fake_clock.advance(1)
    late = asyncio.create_task(repo.lookup("short"))
    assert await early == "machine-a"
    assert await late is None


@batched
async def test_close_waits_for_calls_in_flight(make_repo: RepoFactory) -> None:
    repo = make_repo()
    await repo.lookup("open")
    writes = [asyncio.create_task(repo.upsert(f"s{n}", "machine-a")) for n in range(100)]
    await asyncio.sleep(0)
    await repo.close()
    assert all(task.done() and task.exception() is None for task in writes)
    async with make_repo() as again:
        assert (await again.metrics()).sessions == 100


async def test_a_busy_database_fails_the_group_with_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite"
    async with SqlSessionRepository(f"sqlite+aiosqlite:///{path}", cleanup_interval=0) as repo:
        await repo.upsert("before", "machine-a")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            loop_ticks = 0

            async def ticker() -> None:
                nonlocal loop_ticks
                while True:
                    await asyncio.sleep(0.01)
                    loop_ticks += 1

            ticking = asyncio.create_task(ticker())
            results = await asyncio.gather(
                repo.upsert("during-1", "machine-a"),
                repo.upsert("during-2", "machine-a"),
                return_exceptions=True,
            )
            ticking.cancel()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert all(isinstance(r, StorageError) and r.transient for r in results)
        assert loop_ticks > 100  # the 5 s busy wait happened off the event loop
        await repo.upsert("after", "machine-a")
        assert await repo.lookup("after") == "machine-a"


async def test_the_fast_path_connections_use_wal_normal_sync_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, int, int]] = []

    def pragmas(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):  # the pipeline's, not aiosqlite's
            seen.append(
                (
                    dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0],
                    dbapi_connection.execute("PRAGMA synchronous").fetchone()[0],
                    dbapi_connection.execute("PRAGMA busy_timeout").fetchone()[0],
                )
            )

    url = f"sqlite+aiosqlite:///{tmp_path}/pragmas.sqlite"
    event.listen(Pool, "checkout", pragmas)
    try:
        async with SqlSessionRepository(url, cleanup_interval=0, busy_timeout=2.5) as repo:
            await repo.lookup("s")  # the reader (and the loop's own reader) connect at open
            await repo.upsert("s", "machine-a")  # the writer on first use
    finally:
        event.remove(Pool, "checkout", pragmas)
    # The open's own connection (it sets WAL), then the reader, the loop's reader, the writer.
    assert seen.count(("wal", 1, 2500)) >= 3
    assert {(sync, busy) for _, sync, busy in seen} == {(1, 2500)}


async def test_a_cancelled_batch_fails_its_waiting_callers_instead_of_hanging(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    async with SqlSessionRepository(url, cleanup_interval=0, busy_timeout=1) as repo:
        await repo.upsert("before", "machine-a")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # the write group waits in SQLite's busy handler
        try:
            # The first write runs alone and waits out the busy timeout; the three that
            # came meanwhile then go as one batch, which also waits, and is cancelled.
            alone = asyncio.create_task(repo.upsert("alone", "machine-a"))
            await asyncio.sleep(0)
            waiting = [asyncio.create_task(repo.upsert(f"s{n}", "machine-a")) for n in range(3)]
            with pytest.raises(StorageError):
                await alone
            await asyncio.sleep(0.1)
            (running,) = [task for task in asyncio.all_tasks() if task.get_name() == BATCH]
            running.cancel()
            for task in waiting:
                with pytest.raises(StorageError, match="cancelled") as info:
                    await asyncio.wait_for(task, 2)
                assert info.value.transient
        finally:
            holder.execute("ROLLBACK")
            holder.close()


@batched
async def test_claims_racing_in_one_tick_each_key_has_one_winner_all_callers_agree_on(
    repo: SessionRepository, fake_clock: FakeClock
) -> None:
    await repo.upsert("held", "machine-held")  # live: nobody takes it
    await repo.upsert("lapsed", "machine-old", ttl=1)
    await repo.upsert("replaced", "machine-old")  # taken only by naming its owner
    fake_clock.advance(1)  # "lapsed" has expired
    keys = [f"k{n}" for n in range(24)] + ["held", "lapsed"]
    calls = [(key, f"machine-{m}", None) for m in range(3) for key in keys]
    calls += [("k0", "machine-late", None), ("replaced", "machine-new", "machine-old")]
    random.Random(7).shuffle(calls)
    results = await asyncio.gather(
        *(repo.claim(key, alloc, replacing=replacing) for key, alloc, replacing in calls)
    )
    answers: dict[str, set[str]] = {}
    for (key, _, _), owner in zip(calls, results, strict=True):
        answers.setdefault(key, set()).add(owner)
    for key, owners in answers.items():
        assert len(owners) == 1, f"{key}: callers were told different owners {owners}"
        assert await repo.lookup(key) == owners.pop()
    assert await repo.lookup("held") == "machine-held"
    assert await repo.lookup("lapsed") in {"machine-0", "machine-1", "machine-2"}
    assert await repo.lookup("replaced") == "machine-new"
    assert await repo.lookup("k0") in {"machine-0", "machine-1", "machine-2", "machine-late"}


PG_COUNT_STATEMENTS = [
    "CREATE TABLE IF NOT EXISTS claim_statements (at timestamptz DEFAULT now())",
    "DELETE FROM claim_statements",
    "CREATE OR REPLACE FUNCTION count_claim_statement() RETURNS trigger AS $$ "
    "BEGIN INSERT INTO claim_statements DEFAULT VALUES; RETURN NULL; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER count_claims AFTER INSERT ON session_bindings "
    "FOR EACH STATEMENT EXECUTE FUNCTION count_claim_statement()",
]


@pytest.mark.parametrize("backend_name", backend_params("postgresql"))
async def test_a_ticks_claims_on_postgresql_are_one_statement(repo: SessionRepository) -> None:
    assert isinstance(repo, SqlSessionRepository)
    await repo.claim("warm-up", "machine-a")  # opened: the claims below reach the store at once
    async with repo.engine.begin() as conn:
        for statement in PG_COUNT_STATEMENTS:
            await conn.execute(text(statement))
    try:
        first = asyncio.create_task(repo.claim("first", "machine-a"))  # alone, at once
        await asyncio.sleep(0)
        owners = await asyncio.gather(*(repo.claim(f"c{n}", "machine-a") for n in range(40)))
        await first
    finally:
        async with repo.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER count_claims ON session_bindings"))
            count = (await conn.execute(text("SELECT count(*) FROM claim_statements"))).scalar()
            await conn.execute(text("DROP TABLE claim_statements"))
    assert owners == ["machine-a"] * 40
    assert count == 2  # the lone claim, then the 40 that came meanwhile as one statement
    assert await stored_count(repo) == 42


@pytest.mark.parametrize("backend_name", backend_params("postgresql", "mariadb"))
async def test_a_ticks_claims_and_upserts_are_never_refused_together(
    repo: SessionRepository, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.claim("warm-up", "machine-a")
    caplog.set_level(logging.DEBUG, logger="session_repo.backends.sql.batched_writes")
    await asyncio.gather(*(repo.upsert(f"u{n}", f"machine-{n % 3}") for n in range(30)))
    owners = await asyncio.gather(*(repo.claim(f"u{n}", "machine-x") for n in range(30)))
    claimed = await asyncio.gather(*(repo.claim(f"c{n}", f"machine-{n % 3}") for n in range(30)))
    assert owners == [f"machine-{n % 3}" for n in range(30)]
    assert claimed == [f"machine-{n % 3}" for n in range(30)]
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == []
