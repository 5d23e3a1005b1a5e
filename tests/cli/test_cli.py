"""The ``session-repo`` command, in-process (``main([...])``) and as a real subprocess.

Every test runs against a SQLite file under ``tmp_path`` named by
``SESSION_STORE_URL``; one runs against a dedicated PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from session_repo import Lease, SessionRepository, SessionStoreMetrics, SqlSessionRepository, cli
from session_repo.backends.sql.migrate import head_revision
from session_repo.cli.output import json_default
from tests.servers import require_server

SID = "7f3c9a0e-5b1d-4c2e-9f00-1a2b3c4d5e6f"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SCRIPT = Path(sys.executable).with_name("session-repo")


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite file (not created yet) that SESSION_STORE_URL names; other settings cleared."""
    for name in list(os.environ):
        if name.startswith("SESSION_STORE_"):
            monkeypatch.delenv(name)
    path = tmp_path / "store.sqlite"
    monkeypatch.setenv("SESSION_STORE_URL", f"sqlite+aiosqlite:///{path}")
    return path


Invoke = Callable[..., Run]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Invoke:
    """``main([...])`` in this process: (exit status, stdout, stderr)."""

    def invoke(*argv: str) -> Run:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return invoke


def spawn(*argv: str, script: bool = False, stdin: str = "") -> Run:
    """Run the command as a child process (env inherited, so the ``db`` fixture applies)."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "session_repo"]
    done = subprocess.run(
        [*command, *argv], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Run, *secrets: str) -> None:
    assert result.code >= 2
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("session-repo: error: ")
    for secret in secrets:
        assert secret not in result.err


# -- schema ------------------------------------------------------------------


def test_current_and_migrate(db: Path, run: Invoke) -> None:
    head = head_revision()
    result = run("current")
    assert (result.code, result.out) == (0, f"(none); head is {head}\n")
    assert not db.exists(), "current must not create the SQLite file"

    assert run("migrate").out == f"migrated: (none) -> {head} (head)\n"
    assert db.exists()
    assert run("migrate").out == f"already at head: {head}\n"
    assert run("current").out == f"{head} (head)\n"


def test_migrate_sql_prints_ddl_and_runs_nothing(db: Path, run: Invoke) -> None:
    result = run("migrate", "--sql")
    assert result.code == 0
    assert "CREATE TABLE session_bindings" in result.out
    assert "CREATE INDEX ix_session_bindings_expires_at" in result.out
    assert not db.exists()


def test_nothing_to_migrate_for_memory_or_disabled(
    db: Path, run: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("migrate", "--url", "memory://").out.startswith("nothing to migrate")
    monkeypatch.setenv("SESSION_STORE_ENABLED", "false")
    result = run("current")
    assert (result.code, result.out) == (
        0,
        "nothing to migrate: the disabled store has no schema\n",
    )


# -- bindings ------------------------------------------------------------------


def test_set_get_delete(db: Path, run: Invoke) -> None:
    assert run("set", SID, "machine-a").code == 0
    assert (run("get", SID).code, run("get", SID).out) == (0, "machine-a\n")
    assert run("set", SID, "machine-b", "--ttl", "60").code == 0
    assert run("get", SID).out == "machine-b\n"

    deleted = run("delete", SID)
    assert (deleted.code, deleted.out) == (0, "deleted\n")
    missing = run("get", SID)
    assert (missing.code, missing.out) == (1, "")
    assert run("delete", SID).code == 1


def test_expired_binding_misses_and_cleanup_counts_it(db: Path, run: Invoke) -> None:
    assert run("set", SID, "machine-a", "--ttl", "0.05").code == 0
    assert run("set", "other-session", "machine-a").code == 0
    time.sleep(0.1)
    assert run("get", SID).code == 1
    assert run("cleanup").out == "removed 1 expired bindings\n"
    assert run("cleanup").out == "removed 0 expired bindings\n"
    assert run("get", "other-session").out == "machine-a\n"


def test_url_option_before_or_after_the_command(db: Path, run: Invoke, tmp_path: Path) -> None:
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite'}"
    assert run("set", SID, "machine-z", "--url", other).code == 0
    assert run("get", SID, "--url", other).out == "machine-z\n"
    assert run("--url", other, "get", SID).out == "machine-z\n"
    assert run("get", SID).code == 1, "the env's store was not touched"


def test_session_id_from_stdin(db: Path, run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SID + "\n"))
    assert run("set", "-", "machine-a").code == 0
    assert run("get", SID).out == "machine-a\n"


# -- leases ------------------------------------------------------------------------


def seed(db: Path, *calls: Callable[[SessionRepository], Awaitable[object]]) -> list[object]:
    """Run ``calls`` on the SQLite file the CLI uses, as another process's library would."""

    async def go() -> list[object]:
        async with SqlSessionRepository(f"sqlite+aiosqlite:///{db}", cleanup_interval=0) as repo:
            return [await call(repo) for call in calls]

    return asyncio.run(go())


def test_lease_shows_owner_generation_and_expiry(db: Path, run: Invoke) -> None:
    started = time.time()
    (won,) = seed(db, lambda r: r.acquire(SID, "machine-a", 600))
    assert isinstance(won, Lease)
    result = run("lease", SID)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:2] == ["owner       machine-a", f"generation  {won.generation}"]
    shown = re.fullmatch(r"expires_at  (\S+) \(in (\d+\.\d) s\)", lines[2])
    assert shown is not None, lines[2]
    assert datetime.fromisoformat(shown[1]) == won.expires_at.replace(
        microsecond=won.expires_at.microsecond // 1000 * 1000
    )
    end = won.expires_at.timestamp()  # shown to 0.1 s, measured while the command ran
    assert end - time.time() - 0.05 <= float(shown[2]) <= end - started + 0.05
    assert json.loads(run("lease", SID, "--json").out) == {
        "owner": "machine-a",
        "generation": won.generation,
        "expires_at": won.expires_at.isoformat(),
    }
    assert SID not in result.out + result.err


def test_lease_of_nothing_prints_nothing_and_exits_1(db: Path, run: Invoke) -> None:
    missing = run("lease", SID)
    assert (missing.code, missing.out) == (1, "")
    as_json = run("lease", SID, "--json")
    assert (as_json.code, json.loads(as_json.out)) == (1, None)
    *_, owners = seed(
        db,
        lambda r: r.heartbeat("machine-a", 1),
        lambda r: r.acquire(SID, "machine-a"),
        lambda r: r.owners(),
    )
    assert isinstance(owners, dict)
    lapses = owners["machine-a"].timestamp()
    assert run("lease", SID).code == 0
    assert time.time() < lapses, "too slow to see the lease before its owner lapsed"
    time.sleep(max(0.0, lapses + 0.05 - time.time()))  # machine-a's heartbeat lapsed:
    assert (run("lease", SID).code, run("lease", SID).out) == (1, "")  # its binding with it
    assert run("get", SID).code == 1


def test_lease_reads_the_session_id_from_stdin(
    db: Path, run: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db, lambda r: r.acquire(SID, "machine-a"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(SID + "\n"))
    result = run("lease", "-")
    assert result.code == 0
    assert result.out.startswith("owner       machine-a\n")


def test_owners_lists_live_heartbeats_and_when_each_lapses(db: Path, run: Invoke) -> None:
    assert run("owners").out == "no owner has a live heartbeat\n"
    assert json.loads(run("owners", "--json").out) == {}
    seed(
        db,
        lambda r: r.heartbeat("machine-b", 300),
        lambda r: r.heartbeat("machine-a", 30),
        lambda r: r.heartbeat("machine-gone", 0.05),
    )
    time.sleep(0.1)
    result = run("owners")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [line.split()[0] for line in lines] == ["machine-a", "machine-b"]  # sorted, live only
    left = [float(re.findall(r"\(in (\d+\.\d) s\)", line)[0]) for line in lines]
    assert 25 < left[0] <= 30
    assert 295 < left[1] <= 300
    (owners,) = seed(db, lambda r: r.owners())
    assert isinstance(owners, dict)
    as_json = json.loads(run("owners", "--json").out)
    assert as_json == {owner: end.isoformat() for owner, end in owners.items()}
    assert list(as_json) == ["machine-a", "machine-b"]


def test_stats_shows_live_owners(db: Path, run: Invoke) -> None:
    seed(db, lambda r: r.heartbeat("machine-a", 60), lambda r: r.heartbeat("machine-b", 60))
    assert "live owners    2 (with a heartbeat)" in run("stats").out.splitlines()
    assert json.loads(run("stats", "--json").out)["owners"] == 2


# -- stats and health ------------------------------------------------------------


def test_stats_json_has_every_metric(db: Path, run: Invoke) -> None:
    run("set", SID, "machine-a")
    run("set", "second", "machine-b")
    result = run("stats", "--json")
    assert result.code == 0
    metrics = json.loads(result.out)
    assert set(metrics) == {f.name for f in dataclasses.fields(SessionStoreMetrics)}
    assert (metrics["sessions"], metrics["expired"]) == (2, 0)
    assert metrics["storage_bytes"] > 0


def test_stats_is_readable(db: Path, run: Invoke) -> None:
    run("set", SID, "machine-a")
    lines = run("stats").out.splitlines()
    assert "backend        sqlite" in lines
    assert "live sessions  1" in lines


def test_metrics_datetimes_are_iso_8601() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    metrics = SessionStoreMetrics(sessions=1, expired=0, last_cleanup_at=at)
    text = json.dumps(dataclasses.asdict(metrics), default=json_default)
    assert json.loads(text)["last_cleanup_at"] == "2026-01-02T03:04:05+00:00"


def test_health_ok(db: Path, run: Invoke) -> None:
    result = run("health")
    assert result.code == 0
    assert result.out.splitlines()[:2] == ["status:  ok", "backend: sqlite"]
    as_json = json.loads(run("health", "--json").out)
    assert as_json["status"] == "ok"
    assert set(as_json) == {"status", "backend", "detail"}


def test_health_down_exits_2(db: Path, run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SESSION_STORE_FALLBACK", "none")
    result = run("health", "--json", "--url", f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    assert result.code == 2
    assert json.loads(result.out)["status"] == "down"


# -- bad input: one line, exit >= 2, nothing echoed --------------------------------


def test_control_character_in_session_id(db: Path, run: Invoke) -> None:
    secret = "secret\x01session"
    assert_one_line_error(run("set", secret, "machine-a"), "secret")
    assert_one_line_error(run("get", secret), "secret")
    assert_one_line_error(run("lease", secret), "secret")


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["set", SID, "machine-a", "--ttl", "0"], {}, "ttl must be finite and > 0"),
        (["set", SID, "machine a"], {}, "alloc_id"),
        (["get", SID], {"SESSION_STORE_TTL_MS": "abc"}, "SESSION_STORE_TTL_MS='abc'"),
        (["get", SID, "--url", "ftp://example.com/x"], {}, "unsupported scheme 'ftp'"),
        (["get", SID], {"SESSION_STORE_URL": "nonsense"}, "SESSION_STORE_URL"),
        (["get", SID, "surplus-secret"], {}, "unrecognized arguments"),
        (["surplus-secret"], {}, "unknown command"),
        (["lease", SID, "surplus-secret"], {}, "unrecognized arguments"),
        (["owners", "surplus-secret"], {}, "unrecognized arguments"),
        (["set", SID, "machine-a", "--ttl", "soon"], {}, "invalid float value"),
    ],
)
def test_bad_input_is_one_line(
    db: Path,
    run: Invoke,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    says: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run(*argv)
    assert_one_line_error(result, SID, "surplus-secret")
    assert says in result.err


def test_unwritable_sqlite_path(db: Path, run: Invoke, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite+aiosqlite:///{blocker / 'store.sqlite'}"
    for argv in (["get", SID], ["migrate"], ["set", SID, "machine-a"]):
        result = run(*argv, "--url", url)
        assert_one_line_error(result, SID)
        assert "cannot open SQLite database" in result.err


def test_help_has_examples(run: Invoke) -> None:
    commands = ("migrate", "current", "get", "set", "delete", "lease", "owners", "cleanup", "stats")
    for command in (*commands, "health"):
        result = run(command, "--help")
        assert result.code == 0
        assert f"examples:\n  session-repo {command}" in result.out


# -- demo and bench -----------------------------------------------------------------


def test_demo_narrates_the_main_job(run: Invoke, tmp_path: Path) -> None:
    result = run("demo", "--dir", str(tmp_path / "demo"))
    assert result.code == 0, result.err
    out = result.out
    assert f"(none) -> {head_revision()}" in out
    winner = re.search(r"winner: (machine-[abc]); 50 of 50 claims answered \1", out)
    assert winner is not None, out
    assert "machine-b claims sess-1 replacing machine-a -> machine-b" in out
    assert "lookup sess-5 -> (none) (expired)" in out
    assert "health: ok (sqlite)" in out
    assert "0 of 7 session ids appear in the database files" in out
    assert not UUID.search(out), "the demo printed a session id"
    assert (tmp_path / "demo" / "demo.sqlite").exists()
    again = run("demo", "--dir", str(tmp_path / "demo"))
    assert_one_line_error(again)


def test_bench_cleans_up_after_itself(db: Path, run: Invoke) -> None:
    result = run("bench", "--sessions", "40", "--ops", "20", "--concurrency", "1", "4")
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("lookup", "1", "20"),
        ("upsert", "1", "20"),
        ("lookup", "4", "20"),
        ("upsert", "4", "20"),
    ]
    assert json.loads(run("stats", "--json").out)["sessions"] == 0


def test_bench_rejects_nonsense(run: Invoke) -> None:
    assert_one_line_error(run("bench", "--url", "memory://", "--sessions", "0"))


# -- as a real process --------------------------------------------------------------


def test_subprocess_round_trip(db: Path) -> None:
    assert spawn("migrate").code == 0
    assert (
        spawn("set", "-", "machine-a", stdin=SID + "\n", script=True).out == "bound to machine-a\n"
    )
    got = spawn("get", SID, script=True)
    assert (got.code, got.out) == (0, "machine-a\n")
    missing = spawn("get", "nobody-has-this")
    assert (missing.code, missing.out, missing.err) == (1, "", "")
    assert "CREATE TABLE session_bindings" in spawn("migrate", "--sql").out


def test_subprocess_errors_have_no_traceback(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_one_line_error(spawn("get", "secret\x01id"), "secret")
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "abc")
    assert_one_line_error(spawn("get", SID, script=True), SID)


def test_subprocess_help_names_the_program(db: Path) -> None:
    result = spawn("--help")
    assert result.code == 0
    assert result.out.startswith("usage: session-repo ")


def _read(fd: int, deadline: float) -> bytes:
    """What the pseudo-terminal has within the deadline; b"" once the child closed it."""
    ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the child closed its end
        return b""


def _on_a_terminal(*argv: str, until: str, interrupt: bool = False) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; read it until ``until``, optionally send SIGINT."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "session_repo", *argv], stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    deadline = time.monotonic() + 30
    seen = b""
    try:
        while until.encode() not in seen and (chunk := _read(master, deadline)):
            seen += chunk
        if interrupt:
            child.send_signal(signal.SIGINT)
        code = child.wait(timeout=30)
        while chunk := _read(master, deadline):
            seen += chunk
    finally:
        child.kill()
        os.close(master)
    return code, seen.decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_cleanup_shows_progress_on_a_terminal(db: Path, run: Invoke) -> None:
    run("set", SID, "machine-a", "--ttl", "0.01")
    time.sleep(0.05)
    code, err = _on_a_terminal("cleanup", until="to remove")
    assert code == 0
    assert "cleanup: 1 expired bindings to remove" in err


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_interrupt_exits_130_quietly(db: Path) -> None:
    code, err = _on_a_terminal(
        "bench", "--url", "memory://", "--sessions", "100000000", until="preload:", interrupt=True
    )
    assert code == 130
    assert "Traceback" not in err


# -- a server database whose schema is missing ---------------------------------------


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database with no schema, dropped afterwards."""
    url = make_url(require_server("postgresql"))
    name = "session_repo_cli_test"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def execute(statement: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    asyncio.run(execute(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.mark.server
def test_postgres_schema_missing_then_migrated(
    db: Path, run: Invoke, empty_pg_database: str
) -> None:
    head = head_revision()
    url = empty_pg_database
    assert run("current", "--url", url).out == f"(none); head is {head}\n"
    behind = run("get", SID, "--url", url)
    assert_one_line_error(behind, SID)
    assert behind.code == 2
    assert "session-repo migrate" in behind.err

    assert run("migrate", "--url", url).out == f"migrated: (none) -> {head} (head)\n"
    assert run("current", "--url", url).out == f"{head} (head)\n"
    assert run("set", SID, "machine-a", "--url", url).code == 0
    assert spawn("get", SID, "--url", url).out == "machine-a\n"
