"""``session-repo demo``: the main job end to end, narrated, on a throwaway SQLite file.

Three repository objects on one file play three machines. Time is a clock of
the demo's own that moves only when the story says, so expiry shows without
waiting. Session ids are random, like real ones, and narrated only by labels
("sess-1"): a session id is a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from session_repo.backends.sql.engine import create_engine
from session_repo.backends.sql.migrate import head_revision, schema_revision, upgrade
from session_repo.backends.sql.repository import SqlSessionRepository
from session_repo.errors import ConfigError

__all__ = ["run_demo"]

MACHINES = ("machine-a", "machine-b", "machine-c")
RACERS = 50
START = 1_700_000_000.0  # a fixed instant keeps the story the same every run


class _StoryClock:
    """The demo's time: it stands still until the story moves it.

    Args:
        start: the time it starts at, in seconds since the epoch.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        """The story's current time, in seconds since the epoch."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the story's time forward.

        Args:
            seconds: how far, >= 0.
        """
        self._now += seconds


async def run_demo(directory: str | Path | None, out: TextIO) -> None:
    """Narrate the demo on ``out``; in a temporary directory unless one is given.

    Args:
        directory: where to create ``demo.sqlite`` (a temporary directory, removed
            after, when None).
        out: where the narration goes.

    Raises:
        ConfigError: ``demo.sqlite`` exists already in ``directory``.
    """
    with _workdir(directory) as workdir:
        path = workdir / "demo.sqlite"
        if path.exists():
            raise ConfigError(f"{str(path)!r} exists already: remove it or choose another --dir")
        await _story(path, out)


@contextlib.contextmanager
def _workdir(directory: str | Path | None) -> Iterator[Path]:
    if directory is not None:
        yield Path(directory)
        return
    with tempfile.TemporaryDirectory(prefix="session-repo-demo-") as temporary:
        yield Path(temporary)


async def _story(path: Path, out: TextIO) -> None:
    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    url = f"sqlite+aiosqlite:///{path}"
    ids = {f"sess-{n}": str(uuid.uuid4()) for n in range(1, 7)} | {"sess-race": str(uuid.uuid4())}
    clock = _StoryClock(START)
    say(f"session-repo demo: an embedded SQLite store at {path}")
    say("Time is the demo's own clock, moved by hand, so expiry shows without waiting.")
    say("Session ids are random UUIDs, shown only by labels such as sess-1: a session")
    say("id is a secret.")

    say("\n1. migrate")
    engine = create_engine(url, pool_size=1)
    try:
        before = await schema_revision(engine)
        await upgrade(engine)
        after = await schema_revision(engine)
    finally:
        await engine.dispose()
    say(f"   schema revision {before or '(none)'} -> {after} (head is {head_revision()})")

    repos = {m: SqlSessionRepository(url, clock=clock, cleanup_interval=0) for m in MACHINES}
    a, b, c = (repos[m] for m in MACHINES)
    try:
        say("\n2. three instances bind the sessions they create")
        for n, machine in enumerate(MACHINES, start=1):
            owner = await repos[machine].claim(ids[f"sess-{n}"], machine)
            say(f"   {machine} claims sess-{n} -> {owner}")
        say(f"   machine-c looks up sess-1 -> {await c.lookup(ids['sess-1'])} (any instance can)")

        say(f"\n3. a race: {RACERS} concurrent claims of sess-race from all three instances")
        racers = [
            repos[MACHINES[i % 3]].claim(ids["sess-race"], MACHINES[i % 3]) for i in range(RACERS)
        ]
        answers = await asyncio.gather(*racers)
        winner = answers[0]
        agree = sum(answer == winner for answer in answers)
        say(f"   winner: {winner}; {agree} of {RACERS} claims answered {winner}")

        say("\n4. takeover: machine-a stops answering; machine-b takes sess-1 over")
        kept = await c.claim(ids["sess-1"], "machine-c")
        say(f"   machine-c claims sess-1 -> {kept} (a live owner keeps its session)")
        taken = await b.claim(ids["sess-1"], "machine-b", replacing="machine-a")
        say(f"   machine-b claims sess-1 replacing machine-a -> {taken}")

        say("\n5. expiry and touch (ttl 30 s)")
        await a.upsert(ids["sess-5"], "machine-a", ttl=30)
        await a.upsert(ids["sess-6"], "machine-a", ttl=30)
        clock.advance(20)
        say(f"   +20 s: machine-a touches sess-6 -> {await a.touch(ids['sess-6'], ttl=30)}")
        clock.advance(15)
        say(f"   +35 s: lookup sess-5 -> {await b.lookup(ids['sess-5']) or '(none)'} (expired)")
        say(f"          lookup sess-6 -> {await b.lookup(ids['sess-6'])} (touched at +20 s)")
        say(f"          touch sess-5 -> {await a.touch(ids['sess-5'])} (expired stays expired)")

        say("\n6. a session ends, and an instance goes away")
        await b.claim(ids["sess-4"], "machine-b")
        say(f"   machine-b deletes sess-4 -> {await b.delete(ids['sess-4'])}")
        gone = await a.delete_owner("machine-c")
        say(f"   machine-c is gone: delete_owner(machine-c) removed {gone} binding(s)")
        say(f"   lookup sess-3 -> {await a.lookup(ids['sess-3']) or '(none)'}")

        say("\n7. cleanup removes expired rows in bounded batches")
        say(f"   removed {await a.cleanup()} expired row(s)")

        say("\n8. metrics and health (machine-a's view; counters count its own calls)")
        metrics = await a.metrics()
        say(f"   live sessions {metrics.sessions}, expired rows {metrics.expired}")
        say(f"   lookups {metrics.lookups} (hits {metrics.hits}, misses {metrics.misses}),")
        say(f"   upserts {metrics.upserts}, claims {metrics.claims}, touches {metrics.touches},")
        say(f"   deletes {metrics.deletes}, cleaned {metrics.cleaned}, errors {metrics.errors}")
        say(f"   storage {metrics.storage_bytes} bytes")
        health = await a.health()
        say(f"   health: {health.status} ({health.backend})")
    finally:
        for repo in repos.values():
            await repo.close()

    say("\n9. secrets stay secret")
    stored = b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))
    leaked = sum(session_id.encode() in stored for session_id in ids.values())
    say(f"   {leaked} of {len(ids)} session ids appear in the database files:")
    say("   only their SHA-256 digests are stored.")
    say("\ndone.")
