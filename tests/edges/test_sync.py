"""``session_repo.sync``: the blocking facade, from plain threads and a WSGI app.

Every call must have happened when it returns (nothing fired and forgotten), errors
must reach the calling thread, many threads at once must see one consistent store,
and ``close()`` must leave no thread or loop behind.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from session_repo import (
    InvalidInput,
    Lease,
    MemorySessionRepository,
    RepositoryClosed,
    SqlSessionRepository,
)
from session_repo.sync import SyncSessionRepository
from session_repo.testing import FakeClock
from tests.paths import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "docs" / "examples"


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'sync.sqlite'}"


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "session-repo sync loop"]


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Any:
    before = set(loop_threads())
    yield
    assert set(loop_threads()) <= before, "a SyncSessionRepository was not closed"


def test_the_same_methods_block_and_return_what_the_async_ones_do(fake_clock: FakeClock) -> None:
    with SyncSessionRepository(MemorySessionRepository(clock=fake_clock)) as repo:
        assert repo.upsert("s-1", "machine-a", ttl=30) is None
        assert repo.lookup("s-1") == "machine-a"
        assert repo.claim("s-1", "machine-b") == "machine-a"
        assert repo.claim("s-1", "machine-b", replacing="machine-a") == "machine-b"
        assert repo.touch("s-1", ttl=5) is True
        assert repo.touch("nope") is False
        fake_clock.advance(5)
        assert repo.lookup("s-1") is None
        assert repo.cleanup() == 1
        repo.upsert("s-2", "machine-c")
        repo.upsert("s-3", "machine-c")
        assert repo.delete("s-2") is True
        assert repo.delete("s-2") is False
        assert repo.delete_owner("machine-c") == 1
        metrics = repo.metrics()
        assert (metrics.sessions, metrics.upserts, metrics.claims) == (0, 3, 2)
        assert repo.health().status == "ok"


def test_leases_block_and_return_what_the_async_ones_do(fake_clock: FakeClock) -> None:
    with SyncSessionRepository(MemorySessionRepository(clock=fake_clock)) as repo:
        repo.heartbeat("machine-a", 10)
        assert repo.owners() == {"machine-a": datetime.fromtimestamp(fake_clock.now() + 10, UTC)}
        won = repo.acquire("s-1", "machine-a", ttl=60)
        assert isinstance(won, Lease)
        assert won.owner == "machine-a"
        assert won.expires_at == datetime.fromtimestamp(fake_clock.now() + 60, UTC)
        lost = repo.acquire("s-1", "machine-b")
        assert lost == won  # the holder's lease, unchanged
        assert repo.lease("s-1") == won
        assert repo.lease("nope") is None
        assert repo.touch("s-1", 30, generation=won.generation + 1) is False
        assert repo.touch("s-1", 30, generation=won.generation) is True
        assert repo.delete("s-1", generation=won.generation + 1) is False
        fake_clock.advance(10)  # machine-a's heartbeat lapses: its binding dies with it
        assert repo.owners() == {}
        assert repo.lease("s-1") is None
        taken = repo.acquire("s-1", "machine-b")
        assert (taken.owner, taken.generation > won.generation) == ("machine-b", True)
        assert repo.delete("s-1", generation=taken.generation) is True
        repo.heartbeat("machine-c", 10)
        repo.acquire("s-2", "machine-c")
        assert repo.release("machine-c") == 1
        assert repo.owners() == {}
        with pytest.raises(InvalidInput):
            repo.touch("s-2", generation=0)


def test_errors_are_raised_in_the_calling_thread() -> None:
    with SyncSessionRepository(MemorySessionRepository()) as repo:
        with pytest.raises(InvalidInput, match="control characters"):
            repo.upsert("bad\x00id", "machine-a")
        with pytest.raises(TypeError):
            repo.lookup(42)  # type: ignore[arg-type]
        assert repo.metrics().upserts == 0  # nothing was written


def test_many_threads_at_once_see_one_winner_per_session(tmp_path: Path) -> None:
    """16 threads race to claim the same 40 sessions on one SQLite file."""
    with SyncSessionRepository(SqlSessionRepository(sqlite_url(tmp_path))) as repo:
        start = threading.Barrier(16)

        def worker(n: int) -> dict[str, str]:
            start.wait()
            sessions = [f"s-{i}" for i in range(40)]
            random.Random(n).shuffle(sessions)
            return {s: repo.claim(s, f"machine-{n}") for s in sessions}

        with ThreadPoolExecutor(16) as pool:
            seen = list(pool.map(worker, range(16)))
        for session in seen[0]:
            winners = {claims[session] for claims in seen}
            assert len(winners) == 1  # every thread saw the same owner
            (winner,) = winners
            assert seen[int(winner.split("-")[1])][session] == winner  # who won got it back
            assert repo.lookup(session) == winner  # and it is written, not pending
        assert repo.metrics().claims == 16 * 40


def test_close_waits_for_calls_in_flight_and_then_refuses_new_ones() -> None:
    repo = SyncSessionRepository(MemorySessionRepository())
    repo.upsert("s", "machine-a")
    outcomes: list[str] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                assert repo.lookup("s") == "machine-a"
            except RepositoryClosed:
                outcomes.append("refused")
                return
        outcomes.append("stopped")

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    repo.close()
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert outcomes.count("refused") + outcomes.count("stopped") == 8
    assert "refused" in outcomes


def test_close_is_clean_and_idempotent(tmp_path: Path) -> None:
    inner = SqlSessionRepository(sqlite_url(tmp_path))
    before = set(loop_threads())
    repo = SyncSessionRepository(inner).open()
    repo.upsert("s", "machine-a")
    (thread,) = set(loop_threads()) - before
    repo.close()
    repo.close()
    assert not thread.is_alive()
    with pytest.raises(RepositoryClosed):
        repo.lookup("s")
    with pytest.raises(RepositoryClosed):  # the async repository was closed too
        asyncio.run(inner.lookup("s"))

    async def read_back() -> str | None:  # what was written is on disk
        async with SqlSessionRepository(sqlite_url(tmp_path)) as again:
            return await again.lookup("s")

    assert asyncio.run(read_back()) == "machine-a"


def test_a_factory_builds_the_repository_on_the_loop_thread(tmp_path: Path) -> None:
    built_on: list[str] = []

    def build() -> SqlSessionRepository:
        built_on.append(threading.current_thread().name)
        return SqlSessionRepository(sqlite_url(tmp_path))

    with SyncSessionRepository(build) as repo:
        repo.upsert("s", "machine-a")
        assert repo.lookup("s") == "machine-a"
        assert isinstance(repo.repository, SqlSessionRepository)
    assert built_on == ["session-repo sync loop"]


def test_none_builds_the_configured_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_STORE_URL", "memory://")
    with SyncSessionRepository() as repo:
        assert isinstance(repo.repository, MemorySessionRepository)
        repo.upsert("s", "machine-a")
        assert repo.lookup("s") == "machine-a"


class SlowMemory(MemorySessionRepository):
    """A memory store whose lookups take a second: for the timeout."""

    async def lookup(self, session_id: str) -> str | None:
        await asyncio.sleep(1)
        return await super().lookup(session_id)


def test_a_timeout_bounds_each_call_and_cancels_it() -> None:
    with SyncSessionRepository(SlowMemory(), timeout=0.05) as repo:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            repo.lookup("s")
        assert time.monotonic() - started < 0.9
        repo.upsert("s", "machine-a")  # still usable afterwards


class Reentrant(MemorySessionRepository):
    """A memory store whose lookup calls the blocking facade back, from the loop thread."""

    facade: SyncSessionRepository | None = None

    async def lookup(self, session_id: str) -> str | None:
        assert self.facade is not None
        return self.facade.lookup(session_id)


def test_calling_from_its_own_loop_thread_is_refused_not_a_deadlock() -> None:
    inner = Reentrant()
    with SyncSessionRepository(inner, timeout=5) as repo:
        inner.facade = repo
        with pytest.raises(RuntimeError, match="own loop thread"):
            repo.lookup("s")


# -- a WSGI app on it ---------------------------------------------------------------------


def wsgi_get(app: Any, session: str, **headers: str) -> tuple[str, dict[str, str], Any]:
    environ: dict[str, Any] = {"PATH_INFO": "/whoami", "HTTP_X_SESSION": session}
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    environ["wsgi.input"] = io.BytesIO(b"")
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(response_headers))

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], json.loads(body) if body else None


def test_a_wsgi_app_on_two_machines_from_many_threads(tmp_path: Path) -> None:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    example = importlib.import_module("fly_wsgi_app")
    url = sqlite_url(tmp_path)
    stores = [SyncSessionRepository(SqlSessionRepository(url)) for _ in range(2)]
    try:
        machines = {
            name: example.create_app(store, instance_id=name)
            for name, store in zip(("machine-a", "machine-b"), stores, strict=True)
        }

        def request(n: int) -> tuple[str, str, str, str]:
            session = f"s-{n % 25}"
            name = random.Random(n).choice(sorted(machines))
            status, headers, body = wsgi_get(machines[name], session)
            if status.startswith("307"):
                owner = headers["fly-replay"].split(";")[0].removeprefix("instance=")
                status, _, body = wsgi_get(machines[owner], session, fly_replay_src="x")
                return session, name, owner, body["machine"]
            return session, name, name, body["machine"]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(request, range(400)))
    finally:
        for store in stores:
            store.close()
    owners: dict[str, set[str]] = {}
    for session, _, replayed_to, served_by in results:
        assert replayed_to == served_by
        owners.setdefault(session, set()).add(served_by)
    assert all(len(served) == 1 for served in owners.values())  # each session, one machine
    assert {next(iter(s)) for s in owners.values()} == {"machine-a", "machine-b"}
    assert any(origin != served for _, origin, _, served in results)  # some were replayed
