"""SQLite done right: an owner-only file in WAL mode, clear errors, no deadlocks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import sqlite3
import stat
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import Pool

from session_repo import InvalidInput, SchemaOutOfDate, SqlSessionRepository, StorageError
from session_repo.backends.sql import sqlite_checkpoint
from session_repo.backends.sql.migrate import head_revision
from session_repo.backends.sql.sqlite_engine import sync_engine_for
from session_repo.backends.sql.sqlite_inline import InlineReader
from session_repo.backends.sql.sqlite_writes import run_alone
from session_repo.testing import FakeClock


def url(path: Path | str) -> str:
    return f"sqlite+aiosqlite:///{path}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


# -- the file ------------------------------------------------------------------------------


async def test_file_and_missing_directories_are_created_owner_only(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    path = tmp_path / "a" / "b" / "store.sqlite"
    old_umask = os.umask(0)  # the library must not rely on the umask
    try:
        async with SqlSessionRepository(url(path), clock=fake_clock, cleanup_interval=0) as repo:
            await repo.upsert("s", "machine-a")
            assert path.parent.is_dir()
            assert mode(path) == 0o600
            side_files = [Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert any(f.exists() for f in side_files)  # WAL at work
            for side in side_files:
                if side.exists():
                    assert mode(side) == 0o600, side.name
    finally:
        os.umask(old_umask)


async def test_pragmas_on_the_repositorys_connections(db_path: Path) -> None:
    async with SqlSessionRepository(url(db_path), cleanup_interval=0, pool_size=3) as repo:
        await repo.lookup("s")
        engine = repo.engine
        async with engine.connect() as c1, engine.connect() as c2, engine.connect() as c3:
            for conn in (c1, c2, c3):
                pragma = conn.exec_driver_sql
                assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
                assert (await pragma("PRAGMA synchronous")).scalar() == 1  # NORMAL
                assert (await pragma("PRAGMA busy_timeout")).scalar_one() > 0


async def test_in_memory_sqlite_works(fake_clock: FakeClock) -> None:
    async with SqlSessionRepository(
        "sqlite+aiosqlite:///:memory:", clock=fake_clock, cleanup_interval=0
    ) as repo:
        results = await asyncio.gather(*(repo.claim("s", f"machine-{n}") for n in range(20)))
        assert len(set(results)) == 1
        assert await repo.lookup("s") == results[0]
        assert (await repo.metrics()).storage_bytes is None


async def test_only_digests_reach_the_file(db_path: Path, fake_clock: FakeClock) -> None:
    session_ids = [f"RAW-SESSION-ID-{n}-c0ffee" for n in range(5)]

    def file_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))

    async with SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0) as repo:
        for session_id in session_ids:
            await repo.upsert(session_id, "owner-marker-7")
            await repo.claim(session_id + "-claimed", "owner-marker-7")
        data = file_bytes()
        assert b"owner-marker-7" in data  # we are reading the right bytes
    data += file_bytes()  # and once more, checkpointed by close
    for session_id in session_ids:
        assert session_id.encode() not in data
        assert b"RAW-SESSION-ID" not in data
        assert hashlib.sha256(session_id.encode()).digest() in data


# -- failures ------------------------------------------------------------------------------


@pytest.fixture
def unwritable_path(tmp_path: Path) -> Iterator[Path]:
    """A database path nobody can create: in a read-only directory, or (as root,
    where permissions do not stop writes) under a regular file."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.touch()
        except PermissionError:
            yield locked / "store.sqlite"
        else:  # root
            probe.unlink()
            blocker = tmp_path / "a-file"
            blocker.write_text("not a directory")
            yield blocker / "sub" / "store.sqlite"
    finally:
        locked.chmod(0o700)


async def test_unwritable_path_is_a_permanent_storage_error_naming_it(
    unwritable_path: Path,
) -> None:
    repo = SqlSessionRepository(url(unwritable_path), cleanup_interval=0)
    try:
        with pytest.raises(StorageError) as raised:
            await repo.upsert("s", "machine-a")
        assert raised.value.transient is False
        assert str(unwritable_path) in str(raised.value)
        with pytest.raises(StorageError):
            await repo.lookup("s")
        health = await repo.health()
        assert health.status == "down"
        assert health.backend == "sqlite"
        assert str(unwritable_path) in health.detail
    finally:
        await repo.close()
    assert not unwritable_path.exists()


async def test_bad_input_is_rejected_before_any_io(tmp_path: Path) -> None:
    path = tmp_path / "never" / "store.sqlite"
    repo = SqlSessionRepository(url(path), cleanup_interval=0)
    try:
        with pytest.raises(InvalidInput):
            await repo.upsert("", "machine-a")
        with pytest.raises(InvalidInput):
            await repo.claim("s", "machine a")
        with pytest.raises(TypeError):
            await repo.touch("s", ttl=True)
        assert not path.parent.exists()
    finally:
        await repo.close()


async def test_a_storage_failure_is_counted_and_never_echoes_the_session_id(
    db_path: Path, fake_clock: FakeClock
) -> None:
    secret = "SECRET-SESSION-4242"
    async with SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0) as repo:
        await repo.upsert(secret, "machine-a")
        with sqlite3.connect(db_path) as other:
            other.execute("ALTER TABLE session_bindings RENAME TO moved_away")
        with pytest.raises(StorageError) as raised:
            await repo.lookup(secret)
        assert "session_bindings" in str(raised.value)
        assert secret not in str(raised.value)
        assert hashlib.sha256(secret.encode()).hexdigest()[:12] not in str(raised.value)
        assert raised.value.transient is False
        with sqlite3.connect(db_path) as other:
            other.execute("ALTER TABLE moved_away RENAME TO session_bindings")
        metrics = await repo.metrics()
        assert (metrics.errors, metrics.lookups) == (1, 0)
        assert await repo.lookup(secret) == "machine-a"


# -- schema ------------------------------------------------------------------------------------


async def test_schema_is_migrated_on_open(db_path: Path) -> None:
    async with (
        SqlSessionRepository(url(db_path), cleanup_interval=0) as repo,
        repo.engine.connect() as conn,
    ):
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert version == [(head_revision(),)]
    with sqlite3.connect(db_path) as db:
        indexed = {
            db.execute(f"PRAGMA index_info('{name}')").fetchone()[2]
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'session_bindings' AND sql IS NOT NULL"
            )
        }
    assert indexed == {"expires_at", "alloc_id"}


async def test_server_style_refusal_on_an_empty_file(db_path: Path) -> None:
    repo = SqlSessionRepository(url(db_path), cleanup_interval=0, auto_migrate=False)
    try:
        with pytest.raises(SchemaOutOfDate) as raised:
            await repo.lookup("s")
        assert "session-repo migrate" in str(raised.value)
        assert raised.value.transient is False
        with pytest.raises(SchemaOutOfDate):
            async with repo:
                pass
    finally:
        await repo.close()
    with sqlite3.connect(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "session_bindings" not in tables
    # Once migrated (the default for SQLite), the refusing repository opens fine.
    async with SqlSessionRepository(url(db_path), cleanup_interval=0):
        pass
    async with SqlSessionRepository(url(db_path), cleanup_interval=0, auto_migrate=False) as repo:
        assert await repo.lookup("s") is None


# -- writers -------------------------------------------------------------------------------------


def random_call(repo: SqlSessionRepository, rng: random.Random) -> Awaitable[object]:
    session_id = f"s-{rng.randrange(30)}"
    owner = f"machine-{rng.randrange(5)}"
    match rng.randrange(8):
        case 0:
            return repo.upsert(session_id, owner, ttl=rng.choice([0.5, 5, 600]))
        case 1:
            return repo.claim(session_id, owner)
        case 2:
            return repo.claim(session_id, owner, replacing="machine-0")
        case 3:
            return repo.touch(session_id)
        case 4:
            return repo.delete(session_id)
        case 5:
            return repo.lookup(session_id)
        case 6:
            return repo.delete_owner("machine-4")
        case _:
            return repo.cleanup()


async def test_concurrent_writers_on_one_file_never_deadlock(
    db_path: Path, fake_clock: FakeClock
) -> None:
    a = SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0)
    b = SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0)
    rng = random.Random(3)
    async with a, b:
        for _ in range(3):
            calls = [random_call(a if n % 2 else b, rng) for n in range(300)]
            await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
            fake_clock.advance(1)  # some bindings expire: cleanup has work
        for n in range(30):
            assert await a.lookup(f"s-{n}") == await b.lookup(f"s-{n}")
        assert (await a.metrics()).errors == (await b.metrics()).errors == 0
        # Whether the cleanups above found expired rows depends on how they interleaved
        # with the writes that replaced them; past every ttl, one finds them for sure.
        fake_clock.advance(1000)
        assert await b.cleanup() > 0
        assert [await a.lookup(f"s-{n}") for n in range(30)] == [None] * 30


async def test_an_existing_file_is_never_opened_behind_sqlites_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing any descriptor of a database file drops every POSIX lock the process
    holds on it, SQLite's included: the library must not open an existing file itself."""
    path = tmp_path / "existing.sqlite"
    async with SqlSessionRepository(url(path), cleanup_interval=0) as first:
        await first.upsert("s", "machine-a")
        opened: list[str] = []
        real_open = os.open

        def spy(name: Any, *args: Any, **kwargs: Any) -> int:
            opened.append(os.fspath(name))
            return real_open(name, *args, **kwargs)

        monkeypatch.setattr(os, "open", spy)
        async with SqlSessionRepository(url(path), cleanup_interval=0) as second:
            assert await second.lookup("s") == "machine-a"
        monkeypatch.undo()
        assert str(path) not in opened
        assert await first.lookup("s") == "machine-a"


async def test_a_lookup_on_an_idle_reader_is_answered_on_the_loops_thread(
    db_path: Path, fake_clock: FakeClock
) -> None:
    url = f"sqlite+aiosqlite:///{db_path}"
    async with SqlSessionRepository(url, clock=fake_clock, cleanup_interval=0) as repo:
        await repo.upsert("s", "machine-a")
        lookup = asyncio.create_task(repo.lookup("s"))
        await asyncio.sleep(0)  # one step of the task: no thread hop to wait for
        assert lookup.done()
        assert lookup.result() == "machine-a"
        # What another connection commits is read at once (no snapshot is kept).
        other = sqlite3.connect(db_path)
        try:
            with other:
                other.execute("UPDATE session_bindings SET alloc_id = 'machine-b'")
        finally:
            other.close()
        assert await repo.lookup("s") == "machine-b"
        fake_clock.advance(601)
        assert await repo.lookup("s") is None  # expiry by the injected clock, as ever


def test_an_inline_read_that_would_wait_for_a_lock_answers_none_at_once(db_path: Path) -> None:
    """The loop's own reader never waits for a lock: the pipeline then uses its thread.

    A rollback-journal file, where a writer's exclusive lock shuts readers out (in WAL
    mode, what the library runs, readers wait for no one but a WAL being recovered).
    """
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("CREATE TABLE t (x)")
        engine = sync_engine_for(db_path, busy_timeout=5, synchronous="NORMAL")
        reader = InlineReader(engine)
        assert reader.rows("SELECT x FROM t", []) is None  # not open yet: the thread's turn
        reader.connect()  # as the reader thread does
        assert reader.rows("SELECT x FROM t", []) == []
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        assert reader.rows("SELECT x FROM t", []) is None
        assert time.monotonic() - started < 0.5  # not the 5 s busy timeout
        locker.execute("ROLLBACK")
        assert reader.rows("SELECT x FROM t", []) == []
        reader.close()
        engine.dispose()
    finally:
        locker.close()


# -- write transactions ---------------------------------------------------------------------


@pytest.fixture
def traced() -> Iterator[dict[int, list[str]]]:
    """Every statement each new sync SQLite connection runs, by connection."""
    seen: dict[int, list[str]] = {}

    def trace(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            statements = seen.setdefault(id(dbapi_connection), [])
            dbapi_connection.set_trace_callback(statements.append)

    event.listen(Pool, "connect", trace)
    try:
        yield seen
    finally:
        event.remove(Pool, "connect", trace)


def writer_statements(seen: dict[int, list[str]]) -> list[str]:
    """What the one connection that wrote (the pipeline's writer) ran, pragmas aside:
    a statement's first word, or all of BEGIN IMMEDIATE.

    SQLite traces a statement once more for each trigger program it enters (the
    generation counter's, revision 0002), with the same text: a repeat right after
    a statement is that statement."""
    (writes,) = [s for s in seen.values() if any(q.startswith("INSERT") for q in s)]
    run = [q for q in writes if "PRAGMA" not in q]
    run = [q for n, q in enumerate(run) if n == 0 or q != run[n - 1]]
    return [q if q.startswith("BEGIN") else q.split()[0] for q in run]


def free_to_write(path: Path) -> bool:
    """Whether another connection can take the write lock at once (no one holds it)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def stored_owner(path: Path, session_id: str) -> str | None:
    """The row's owner as a new connection reads it: only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        key = hashlib.sha256(session_id.encode()).digest()
        row = other.execute(
            "SELECT alloc_id FROM session_bindings WHERE session_key = ?", (key,)
        ).fetchone()
    return None if row is None else str(row[0])


async def test_a_lone_write_is_one_autocommit_statement_committed_before_its_answer(
    db_path: Path, fake_clock: FakeClock, traced: dict[int, list[str]]
) -> None:
    async with SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0) as repo:
        await repo.upsert("s", "machine-a")
        assert stored_owner(db_path, "s") == "machine-a"
        assert free_to_write(db_path)  # no transaction left open on the writer
        assert await repo.claim("c", "machine-a") == "machine-a"  # RETURNING: rows fetched
        assert stored_owner(db_path, "c") == "machine-a"
        assert free_to_write(db_path)
        assert await repo.touch("s")
        assert await repo.delete("s")
        assert stored_owner(db_path, "s") is None
        assert free_to_write(db_path)
        assert writer_statements(traced) == ["INSERT", "INSERT", "UPDATE", "DELETE"]


def test_a_lone_write_never_runs_inside_a_transaction_left_open(db_path: Path) -> None:
    """Alone, a write is one statement in autocommit, committed when it returns. Should
    the writer be left inside a transaction (a failed group's rollback that failed),
    the write would join it, uncommitted, and be acknowledged: it fails instead, and
    the transaction is rolled back, so the next write is autocommit again."""
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("CREATE TABLE t (x)")
        run_alone(lambda conn: conn.execute("INSERT INTO t VALUES (1)"), writer)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (2)")  # what the failed group left behind
        with pytest.raises(sqlite3.OperationalError):
            run_alone(lambda conn: conn.execute("INSERT INTO t VALUES (3)"), writer)
        assert not writer.in_transaction
        run_alone(lambda conn: conn.execute("INSERT INTO t VALUES (4)"), writer)
        assert not writer.in_transaction
        with contextlib.closing(sqlite3.connect(db_path)) as other:
            assert other.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (4,)]
    finally:
        writer.close()


async def test_a_lone_claim_that_loses_reads_its_owner_in_the_claims_transaction(
    db_path: Path, fake_clock: FakeClock, traced: dict[int, list[str]]
) -> None:
    async with SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0) as repo:
        await repo.upsert("s", "machine-a")
        assert await repo.claim("s", "machine-b") == "machine-a"
        assert writer_statements(traced)[1:] == [
            "INSERT",  # alone, in autocommit: it did not take the session
            "BEGIN IMMEDIATE",
            "INSERT",  # again, now with the owner's read in one transaction
            "SELECT",
            "COMMIT",
        ]
        assert free_to_write(db_path)
        assert await repo.claim("s", "machine-b", replacing="machine-a") == "machine-b"


async def test_writes_that_wait_together_share_one_transaction(
    db_path: Path, fake_clock: FakeClock, traced: dict[int, list[str]]
) -> None:
    async with SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0) as repo:
        await repo.lookup("open")
        await asyncio.gather(*(repo.upsert(f"s{n}", "machine-a") for n in range(5)))
        statements = writer_statements(traced)
        assert statements[0] == "INSERT"  # the first, alone
        assert statements[1] == "BEGIN IMMEDIATE"
        assert statements[-1] == "COMMIT"
        assert statements.count("INSERT") == 5
        for n in range(5):
            assert stored_owner(db_path, f"s{n}") == "machine-a"


async def test_a_lone_write_waits_for_another_process_lock_and_answers_after_its_commit(
    db_path: Path, fake_clock: FakeClock
) -> None:
    async with SqlSessionRepository(
        url(db_path), clock=fake_clock, cleanup_interval=0, busy_timeout=5
    ) as repo:
        await repo.upsert("before", "machine-a")
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            for call in (repo.upsert("s", "machine-a"), repo.claim("c", "machine-a")):
                write = asyncio.ensure_future(call)
                await asyncio.sleep(0.2)
                assert not write.done()  # waiting in SQLite's busy handler, off the loop
                holder.execute("ROLLBACK")
                await asyncio.wait_for(write, 5)
                assert free_to_write(db_path)
                holder.execute("BEGIN IMMEDIATE")
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()
        assert stored_owner(db_path, "s") == "machine-a"
        assert stored_owner(db_path, "c") == "machine-a"


def wal_restarts(path: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time the WAL
    starts over from its first frame. (SQLite locks the -shm file, never the -wal.)"""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


async def test_checkpoints_run_beside_the_writer_and_the_wal_starts_over(
    db_path: Path,
    fake_clock: FakeClock,
    traced: dict[int, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_checkpoint, "CHECKPOINT_ROWS", 8)
    monkeypatch.setattr(sqlite_checkpoint, "RESTART_FRAMES", 40)
    async with SqlSessionRepository(url(db_path), clock=fake_clock, cleanup_interval=0) as repo:
        await repo.upsert("first", "machine-a")
        before = wal_restarts(db_path)
        # A few frames a write: far below the 8000 at which the writer's own
        # autocheckpoint would start the WAL over. On a loaded machine a checkpoint's
        # fsyncs take their time, so the writes go on until the WAL has started over.
        for n in range(1000):
            await repo.upsert(f"s{n}", "machine-a")
            if n % 20 == 19:
                if n >= 200 and wal_restarts(db_path) > before:  # 25 checkpoints asked for
                    break
                await asyncio.sleep(0.005)
        assert wal_restarts(db_path) > before
        for m in range(0, n, 7):
            assert stored_owner(db_path, f"s{m}") == "machine-a"
    checkpoint = "PRAGMA wal_checkpoint(PASSIVE)"
    writer = next(s for s in traced.values() if any(q.startswith("INSERT") for q in s))
    beside = [s for s in traced.values() if s is not writer and checkpoint in s]
    assert len(beside) == 1  # one connection of its own
    assert beside[0].count(checkpoint) > 1
    assert checkpoint in writer  # what was left, once the WAL was long
