"""``python -m benchmarks.instructions``: what one operation costs the client, in instructions.

Wall-clock figures move with the machine's load; instruction counts hardly do.
Every measurement is a fresh child process under ``valgrind --tool=callgrind
--callgrind-out-file=/dev/null``, which prints the instructions the process
executed, every thread's, when it exits ("Collected"): the interpreter, the
drivers, SQLite's engine (in-process, in whatever thread runs it), not the
servers. For one subject, one child preloads the store and runs each chosen
operation N1 times in sequence (concurrency 1: one task awaiting one operation
after another); then, for each operation, another child does exactly the same
with that one operation run N2 times. (total at N2 - total at N1) / (N2 - N1)
is what one operation costs: everything else is the same in both children and
cancels out. Lookups run first, then upserts, then claims, so a longer run of
one leaves the others' data as it was (upserts rebind preloaded sessions,
claims take fresh ones).

Callgrind counts from where the child asks it to (``--instr-atstart=no``, then
the client request ``CALLGRIND_START_INSTRUMENTATION``, made from Python
through a few bytes of x86-64 code), right before the first measured
operation: the imports (SQLAlchemy, Alembic, the drivers: 2.4 billion
instructions) and the preload run at valgrind's uninstrumented speed and add
no noise, so a child takes 10-15 s instead of 30 and the default set (13
subjects, 52 children, two at a time) about 5 minutes on 2 idle cores. The
difference is the same either way: ``--from-start`` counts the whole process
(the only way elsewhere than x86-64), and agreed within 0.6% (repo-sqlite and
aiosqlite lookups: 58,789 vs 59,150 and 113,664 vs 113,343).

Every child is set up identically: the same dataset (10,000 sessions, one
seed), the same operations (drawn for N2, the first N1 or N2 of them run),
``PYTHONHASHSEED=0``, garbage collected and frozen after the preload as in the
main run, and the same code: a copy of ``session_repo/``, ``alembic/`` and
``benchmarks/`` taken at the start, so edits in the checkout meanwhile do not
reach the children. The server state a child starts from is made by this
process, natively, right before it: the PostgreSQL and MariaDB tables reloaded
with the dataset's rows, the Redis database (db 15) flushed and the subject's
keys preloaded (the library through its own upsert); SQLite subjects copy one
preloaded file. Children run two at a time (``--jobs``), never two on one
server. A subject whose child failed is measured once more, and the report
says so.

Spread: two identical runs of six subjects (repo-sqlite, aiosqlite,
repo-memory, ttlcache, repo-redis, redis-py-lua; all three operations, on a
busy machine) agreed within 0.6% for the in-process stacks (most within 0.1%),
and within 1-3% for the Redis ones, up to 8% against the default run made on
an idle machine: whether a reply has arrived when the event loop polls decides
how many loop iterations an operation takes. Read the network backends'
ratios as good to about 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import ctypes
import gc
import json
import mmap
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.workload import ALLOC_IDS, CLAIMER, OPS, make_dataset, operations

__all__ = ["DEFAULT_SUBJECTS", "Options", "Ratio", "Report", "Row", "main", "measure", "render"]

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("session_repo", "alembic", "benchmarks")  # what the children run, copied at the start

# The library's stacks and the raw drivers (or the bare backend) each is judged by.
DEFAULT_SUBJECTS = (
    "repo-sqlite",
    "repo-resilient",
    "aiosqlite",
    "sqlite3",
    "repo-pg",
    "asyncpg",
    "repo-mariadb",
    "asyncmy",
    "repo-redis",
    "redis-py-lua",
    "redis-py",
    "repo-memory",
    "ttlcache",
)

# What each operation must return in this workload (a lookup hits, a claim of a fresh session wins).
ACCEPTED: dict[str, frozenset[str | None]] = {
    "lookup": frozenset(ALLOC_IDS),
    "upsert": frozenset({None}),
    "claim": frozenset({CLAIMER}),
}
COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")

# valgrind.h's client request for x86-64, as a function of one argument (the request's six
# words): the magic preamble (four rotations of rdi, 128 bits in all: a no-op on a real CPU),
# then xchg rbx,rbx; valgrind answers in rdx (0 when not under valgrind).
_REQUEST_CODE = bytes.fromhex(
    "4889f8"  # mov rax, rdi          (rax: the request's address)
    "31d2"  # xor edx, edx            (the answer when not under valgrind)
    "48c1c703"
    "48c1c70d"
    "48c1c73d"
    "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
    "4887db"  # xchg rbx, rbx         (the request)
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)
RUNNING_ON_VALGRIND = 0x1001
START_INSTRUMENTATION = 0x4354_0004  # VG_USERREQ_TOOL_BASE('C', 'T') + 4, callgrind.h


@dataclass(frozen=True)
class Options:
    subjects: tuple[str, ...] = DEFAULT_SUBJECTS
    ops: tuple[str, ...] = OPS
    n1: int = 300
    n2: int = 900
    sessions: int = 10_000
    seed: int = 20240601
    jobs: int = 2  # children at a time
    from_start: bool = False  # count the whole child, not from its first operation on
    timeout_s: float = 1_800.0  # per child
    pg_admin_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    pg_database: str = "session_repo_bench"
    mysql_admin_url: str = "mysql+asyncmy://root@127.0.0.1:3306/test"
    mysql_database: str = "session_repo_bench"
    redis_url: str = "redis://127.0.0.1:6379/15"  # its database is flushed


@dataclass
class Row:
    """One subject and operation: instructions per operation, or why there is no figure."""

    subject: str
    op: str
    per_op: float | None = None
    collected: tuple[int, int] | None = None  # the totals at N1 and at N2
    wrong: int = 0  # results the workload rules out (a lookup that missed, a claim lost)
    skipped: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Ratio:
    numerator: str
    denominator: str
    op: str
    value: float  # above 1: the numerator costs more instructions per operation


@dataclass
class Report:
    machine: dict[str, str]
    options: dict[str, Any]
    rows: list[Row]
    ratios: list[Ratio] = field(default_factory=list)
    wall_seconds: float = 0.0

    def row(self, subject: str, op: str) -> Row | None:
        return next((r for r in self.rows if (r.subject, r.op) == (subject, op)), None)


@dataclass(frozen=True)
class _Job:
    subject: str
    varied: str | None  # the operation run N2 times; None: every one N1 times
    counts: tuple[tuple[str, int], ...]


@dataclass
class _Outcome:
    collected: int | None = None
    wrong: dict[str, int] = field(default_factory=dict)
    error: str | None = None


# -- the child: one subject, its operations, then exit -------------------------------------


def _client_request() -> Callable[[int], int]:
    """A function making one valgrind client request (x86-64 only): request code -> answer."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"client requests need x86-64, not {platform.machine()}")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(_REQUEST_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    call = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)(address)

    def request(code: int) -> int:
        words = (ctypes.c_uint64 * 6)(code, 0, 0, 0, 0, 0)
        answer: int = call(ctypes.addressof(words))
        _ = page  # the code lives as long as this function
        return answer

    return request


def _child_setup(spec: dict[str, Any], dataset: Any) -> Any:
    """The ``Setup`` a subject opens with; the servers' state is the parent's doing."""
    from benchmarks.database import SqliteTemplate
    from benchmarks.mariadb import MariadbTemplate
    from benchmarks.postgres import PostgresTemplate
    from benchmarks.redis_db import RedisTemplate
    from benchmarks.subjects import Setup

    workdir = Path(spec["workdir"])

    class Prebuilt(SqliteTemplate):
        """The parent's preloaded file, copied (never rebuilt in here)."""

        def __init__(self, template: Path) -> None:
            super().__init__(workdir, dataset)
            self._template = template
            self.size_bytes = template.stat().st_size

        async def copy(self, name: str) -> Path:
            target = workdir / f"{name}.sqlite"
            shutil.copyfile(self._template, target)
            target.chmod(0o600)
            return target

    class ReloadedPostgres(PostgresTemplate):
        async def reset(self) -> None:
            """The parent reloaded the table just before starting this process."""

    class ReloadedMariadb(MariadbTemplate):
        async def reset(self) -> None:
            """The parent reloaded the table just before starting this process."""

    class PreloadedRedis(RedisTemplate):
        async def preload_once(self, subject: str, load: Any) -> None:
            """The parent flushed the database and preloaded this subject's keys."""

    server = spec["server"]
    return Setup(
        dataset=dataset,
        sqlite=Prebuilt(Path(spec["sqlite"])) if spec["sqlite"] else None,
        postgres=ReloadedPostgres(spec["pg_admin_url"], spec["pg_database"], dataset)
        if server == "postgresql"
        else None,
        mariadb=ReloadedMariadb(spec["mysql_admin_url"], spec["mysql_database"], dataset)
        if server == "mariadb"
        else None,
        redis=PreloadedRedis(spec["redis_url"]) if server == "redis" else None,
    )


async def _run(call: Callable[..., Any], work: list[tuple[str, ...]], accepted: Any) -> int:
    """Each operation in turn; how many returned what the workload rules out."""
    wrong = 0
    for args in work:
        if await call(*args) not in accepted:
            wrong += 1
    return wrong


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    name = spec["subject"]
    request = None if spec["from_start"] else _client_request()
    if request is not None and not request(RUNNING_ON_VALGRIND):
        raise RuntimeError("valgrind did not answer a client request; try --from-start")
    if not name.startswith("litestar-"):
        # Importing Litestar is a quarter of the registry's imports: no figure changes, but
        # with --from-start it takes seconds. A None entry makes its import fail, and the
        # registry then lists the Litestar subjects as unavailable.
        sys.modules.setdefault("litestar", None)  # type: ignore[arg-type]
    from benchmarks.subjects import SUBJECTS

    dataset = make_dataset(spec["sessions"], spec["seed"])
    counts: dict[str, int] = dict(spec["counts"])
    # Drawn for the longest run whatever this one's length, so drawing costs every child the same.
    work = {
        op: operations(dataset, op, spec["most"], random.Random(f"{spec['seed']}-{op}"))
        for op in OPS
        if op in counts
    }
    subject = SUBJECTS[name]()
    wrong: dict[str, int] = {}
    try:
        await subject.open(_child_setup(spec, dataset))
        gc.collect()
        gc.freeze()  # as the main run: collections walk the operations' objects only
        if request is not None:
            request(START_INSTRUMENTATION)
        for op in OPS:
            if op in counts:
                wrong[op] = await _run(getattr(subject, op), work[op][: counts[op]], ACCEPTED[op])
    finally:
        await subject.close()
    return {"wrong": wrong}


def _child_main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        answer = asyncio.run(_child(spec))
    except Exception as exc:
        answer = {"error": _redact(f"{type(exc).__name__}: {exc}", spec["secrets"])}
    print(json.dumps(answer), flush=True)
    return 0


# -- the parent: servers, children, figures -------------------------------------------------


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _secrets(options: Options) -> list[str]:
    """The passwords in the URLs, which nothing printed may contain."""
    found = []
    for url in (options.pg_admin_url, options.mysql_admin_url, options.redis_url):
        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                found.append(password)
    return found


def _snapshot(folder: Path) -> Path:
    """The library, its migrations and the harness as they are now, compiled: what children run.

    Other work may edit the checkout during a run; a subject measured on two versions
    of the code would show their difference, not an operation's cost.
    """
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    compileall.compile_dir(folder, quiet=1)
    return folder


def _jobs(subject: str, options: Options) -> list[_Job]:
    base = tuple((op, options.n1) for op in options.ops)
    jobs = [_Job(subject, None, base)]
    for op in options.ops:
        counts = tuple((o, options.n2 if o == op else n) for o, n in base)
        jobs.append(_Job(subject, op, counts))
    return jobs


class _Servers:
    """The server templates, and the state each child of theirs must start from."""

    def __init__(self, options: Options, dataset: Any) -> None:
        from benchmarks.mariadb import MariadbTemplate
        from benchmarks.postgres import PostgresTemplate
        from benchmarks.redis_db import RedisTemplate

        self._options = options
        self._dataset = dataset
        self.postgres = PostgresTemplate(options.pg_admin_url, options.pg_database, dataset)
        self.mariadb = MariadbTemplate(options.mysql_admin_url, options.mysql_database, dataset)
        self.redis = RedisTemplate(options.redis_url)
        self.used: set[str] = set()

    async def down(self, server: str) -> str | None:
        """Why ``server`` cannot be used, or None."""
        template = {"postgresql": self.postgres, "mariadb": self.mariadb, "redis": self.redis}
        return await template[server].unreachable()

    async def prepare(self, subject: str, server: str | None) -> None:
        """The table reloaded, or the Redis database flushed and the subject's keys loaded."""
        from benchmarks.redis_db import RedisTemplate
        from benchmarks.subjects import SUBJECTS, Setup

        if server is not None:
            self.used.add(server)
        if server == "postgresql":
            await self.postgres.reset()
        elif server == "mariadb":
            await self.mariadb.reset()
        elif server == "redis":
            stack = SUBJECTS[subject]()
            try:
                await stack.open(Setup(self._dataset, redis=RedisTemplate(self._options.redis_url)))
            finally:
                await stack.close()

    async def finish(self) -> None:
        """Leave the tables and the Redis database empty."""
        if "postgresql" in self.used:
            await self.postgres.empty()
        if "mariadb" in self.used:
            await self.mariadb.empty()
        if "redis" in self.used:
            await self.redis.flush()


async def _spawn(
    valgrind: str, spec: dict[str, Any], source: Path, timeout_s: float, secrets: Sequence[str]
) -> _Outcome:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    if not spec["from_start"]:
        command.append("--instr-atstart=no")
    command += [sys.executable, "-m", "benchmarks.instructions", "--child"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=source,  # first on the child's path: the snapshot, not the checkout
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(spec).encode()), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return _Outcome(error=f"no answer within {timeout_s:.0f} s")
    answer: dict[str, Any] = {}
    with contextlib.suppress(ValueError, IndexError):
        answer = json.loads(out.decode().strip().splitlines()[-1])
    found = COLLECTED.search(err)
    if "error" in answer:
        return _Outcome(error=_redact(str(answer["error"]), secrets))
    if proc.returncode != 0 or found is None or "wrong" not in answer:
        lines = [s for s in err.decode(errors="replace").splitlines() if not s.startswith("==")]
        last = lines[-1] if lines else "no output"
        return _Outcome(error=_redact(f"child exited {proc.returncode}: {last}", secrets))
    return _Outcome(collected=int(found.group(1)), wrong=answer["wrong"])


async def _run_jobs(
    jobs: list[_Job],
    run_one: Callable[[_Job], Any],
    server_of: Callable[[str], str | None],
    workers: int,
) -> dict[_Job, _Outcome]:
    """Every job, ``workers`` at a time, never two of one server at once, in order otherwise."""
    pending = list(jobs)
    busy: set[str] = set()
    changed = asyncio.Condition()
    outcomes: dict[_Job, _Outcome] = {}

    def runnable(job: _Job) -> bool:
        server = server_of(job.subject)
        return server is None or server not in busy

    async def worker() -> None:
        while True:
            async with changed:
                await changed.wait_for(lambda: not pending or any(map(runnable, pending)))
                if not pending:
                    return
                job = next(j for j in pending if runnable(j))
                pending.remove(job)
                server = server_of(job.subject)
                if server is not None:
                    busy.add(server)
            try:
                outcomes[job] = await run_one(job)
            finally:
                async with changed:
                    busy.discard(server or "")
                    changed.notify_all()

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    return outcomes


def _failure(subject: str, outcomes: dict[_Job, _Outcome]) -> str | None:
    return next(
        (o.error for job, o in outcomes.items() if job.subject == subject and o.error), None
    )


def _rows(subject: str, options: Options, outcomes: dict[_Job, _Outcome]) -> list[Row]:
    mine = {job.varied: outcome for job, outcome in outcomes.items() if job.subject == subject}
    base = mine[None]
    rows = []
    for op in options.ops:
        row = Row(subject, op)
        varied = mine[op]
        failed = base.error or varied.error
        if failed is not None:
            row.skipped = f"failed: {failed}"
        elif base.collected is not None and varied.collected is not None:
            row.collected = (base.collected, varied.collected)
            row.per_op = (varied.collected - base.collected) / (options.n2 - options.n1)
            row.wrong = base.wrong.get(op, 0) + varied.wrong.get(op, 0)
        rows.append(row)
    return rows


def _ratios(rows: list[Row]) -> list[Ratio]:
    from benchmarks.report import RATIO_PAIRS

    per_op = {(r.subject, r.op): r.per_op for r in rows if r.per_op}
    return [
        Ratio(top, bottom, op, per_op[(top, op)] / per_op[(bottom, op)])
        for top, bottom in RATIO_PAIRS
        for op in OPS
        if (top, op) in per_op and (bottom, op) in per_op
    ]


def _machine(valgrind: str | None) -> dict[str, str]:
    from benchmarks.machine import describe_machine

    full = describe_machine()
    keep = ("cpu", "cores", "python", "sqlite", "session-repo source", "load average at start")
    machine = {key: full[key] for key in keep if key in full}
    if valgrind is not None:
        version = subprocess.run([valgrind, "--version"], capture_output=True, text=True)
        machine["valgrind"] = version.stdout.strip()
    return machine


async def measure(
    options: Options, *, progress: Callable[[str], None] = lambda _line: None
) -> Report:
    """Instructions per operation for every chosen subject and operation, and their ratios.

    Args:
        options: The subjects, operations, N1 and N2, dataset size and servers.
        progress: Called with a line as each child finishes.

    Returns:
        One row per subject and operation (a figure, or why not) and the ratios.

    Raises:
        ValueError: An unknown subject or operation, or N2 not above N1.
    """
    from benchmarks.database import build_sqlite
    from benchmarks.subjects import NAMES, SUBJECTS, UNAVAILABLE, server_of
    from benchmarks.workload import rows_of

    unknown = [name for name in options.subjects if name not in NAMES and name not in SUBJECTS]
    if unknown:
        raise ValueError(f"unknown subject(s) {unknown}; known: {', '.join(NAMES)}")
    if not options.ops or any(op not in OPS for op in options.ops):
        raise ValueError(f"operations must be among {', '.join(OPS)}")
    if not 0 <= options.n1 < options.n2:
        raise ValueError("N2 must be above N1 (and N1 not negative)")
    began = time.perf_counter()
    valgrind = shutil.which("valgrind")
    machine = _machine(valgrind)
    secrets = _secrets(options)
    skipped: dict[str, str] = {}
    for name in options.subjects:
        if valgrind is None:
            skipped[name] = "valgrind is not installed (apt-get install valgrind)"
        elif name in UNAVAILABLE:
            skipped[name] = UNAVAILABLE[name]
    dataset = make_dataset(options.sessions, options.seed)
    servers = _Servers(options, dataset)
    down: dict[str, str | None] = {}
    for name in options.subjects:
        server = server_of(name)
        if name not in skipped and server is not None:
            if server not in down:
                down[server] = await servers.down(server)
            if down[server] is not None:
                skipped[name] = _redact(str(down[server]), secrets)
    names = [name for name in options.subjects if name not in skipped]
    outcomes: dict[_Job, _Outcome] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="session-repo-instructions-") as tmp:
        folder = Path(tmp)
        source = _snapshot(folder / "source") if names else folder
        template = folder / "template.sqlite"
        if any(server_of(n) is None for n in names):
            await build_sqlite(template, rows_of(dataset))
        started = 0

        async def run_one(job: _Job) -> _Outcome:
            nonlocal started
            started += 1
            workdir = folder / f"child-{started:04d}"  # as long a path for every child
            workdir.mkdir()
            server = server_of(job.subject)
            t0 = time.perf_counter()
            try:
                await servers.prepare(job.subject, server)
            except Exception as exc:
                return _Outcome(error=_redact(f"preparing: {type(exc).__name__}: {exc}", secrets))
            spec = {
                "subject": job.subject,
                "server": server,
                "counts": job.counts,
                "most": options.n2,
                "sessions": options.sessions,
                "seed": options.seed,
                "from_start": options.from_start,
                "workdir": str(workdir),
                "sqlite": str(template) if template.exists() else None,
                "pg_admin_url": options.pg_admin_url,
                "pg_database": options.pg_database,
                "mysql_admin_url": options.mysql_admin_url,
                "mysql_database": options.mysql_database,
                "redis_url": options.redis_url,
                "secrets": secrets,
            }
            assert valgrind is not None
            outcome = await _spawn(valgrind, spec, source, options.timeout_s, secrets)
            shutil.rmtree(workdir, ignore_errors=True)
            what = ",".join(f"{op}={n}" for op, n in job.counts)
            result = f"{outcome.collected:,} instructions" if outcome.error is None else "FAILED"
            progress(
                f"{job.subject:<15} {what:<32} {result} ({time.perf_counter() - t0:.0f} s)"
                + (f": {outcome.error}" if outcome.error else "")
            )
            return outcome

        try:
            jobs = [job for name in names for job in _jobs(name, options)]
            outcomes = await _run_jobs(jobs, run_one, server_of, options.jobs)
            again = {name: why for name in names if (why := _failure(name, outcomes))}
            for name, why in again.items():
                progress(f"measuring {name} once more: {why}")
            if again:
                retried = [job for name in again for job in _jobs(name, options)]
                outcomes.update(await _run_jobs(retried, run_one, server_of, options.jobs))
            for name, why in again.items():
                notes[name] = f"measured twice, the first time failed ({why})"
        finally:
            await servers.finish()
    rows = []
    for name in options.subjects:
        if name in skipped:
            rows += [Row(name, op, skipped=skipped[name]) for op in options.ops]
            continue
        for row in _rows(name, options, outcomes):
            row.note = notes.get(name)
            rows.append(row)
    return Report(
        machine=machine,
        options={
            k: _redact(v, secrets) if isinstance(v, str) else v for k, v in asdict(options).items()
        },
        rows=rows,
        ratios=_ratios(rows),
        wall_seconds=time.perf_counter() - began,
    )


# -- output ----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        rule = ["---"] + ["---:"] * (len(header) - 1)
        return ["| " + " | ".join(row) + " |" for row in [header, rule, *rows]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, ["-" * w for w in widths], *rows]
    ]


def render(report: Report, *, markdown: bool = False) -> str:
    """The figures as two tables (instructions per operation, ratios), text or Markdown."""
    ops = list(report.options["ops"])
    options = report.options
    lines = [] if markdown else ["session-repo: instructions per operation (callgrind)", ""]
    facts = [*report.machine.items()]
    facts.append(
        (
            "method",
            f"{options['sessions']:,} sessions preloaded; each operation run N1={options['n1']} "
            f"and N2={options['n2']} times, concurrency 1; (total at N2 - at N1) / (N2 - N1); "
            + (
                "every instruction counted"
                if options["from_start"]
                else "counted from the first op"
            ),
        )
    )
    facts.append(("took", f"{report.wall_seconds:.0f} s"))
    lines += [f"- {k}: {v}" if markdown else f"  {k}: {v}" for k, v in facts]
    lines.append("")

    def cell(row: Row | None) -> str:
        if row is None or row.per_op is None:
            return "-"
        return f"{row.per_op:,.0f}" + (f" ({row.wrong} wrong)" if row.wrong else "")

    subjects = list(dict.fromkeys(r.subject for r in report.rows))
    measured = [
        s for s in subjects if any(r.per_op is not None for r in report.rows if r.subject == s)
    ]
    if measured:
        lines += ["instructions per operation", ""] if not markdown else []
        body = [[s, *(cell(report.row(s, op)) for op in ops)] for s in measured]
        lines += _table(["subject", *ops], body, markdown)
    if report.ratios:
        pairs = list(dict.fromkeys((q.numerator, q.denominator) for q in report.ratios))
        value = {(q.numerator, q.denominator, q.op): q.value for q in report.ratios}
        body = [
            [
                f"{a} / {b}",
                *(f"{value[(a, b, op)]:.2f}x" if (a, b, op) in value else "-" for op in ops),
            ]
            for a, b in pairs
        ]
        lines += ["", "ratios (instructions per operation, library / baseline)", ""]
        lines += _table(["ratio", *ops], body, markdown)
    remarks = {}
    for row in report.rows:
        if row.skipped is not None:
            remarks.setdefault(f"skipped {row.subject}", row.skipped)
        elif row.note is not None:
            remarks.setdefault(f"note {row.subject}", row.note)
    if remarks:
        lines.append("")
        lines += [f"- {k}: {v}" if markdown else f"  {k}: {v}" for k, v in remarks.items()]
    return "\n".join(lines)


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    return lambda text: tuple(kind(part) for part in text.split(",") if part)


def _parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description="Instructions per operation under callgrind, and library / driver ratios.",
    )
    add = parser.add_argument
    add("--subjects", type=_csv(str), help=f"default {','.join(DEFAULT_SUBJECTS)}")
    add("--ops", type=_csv(str), help=f"subset of {','.join(OPS)} (all by default)")
    add("--n1", type=int, help=f"operations in the shorter run (default {defaults.n1})")
    add("--n2", type=int, help=f"operations in the longer run (default {defaults.n2})")
    add("--sessions", type=int, help=f"preloaded sessions (default {defaults.sessions})")
    add("--jobs", type=int, help=f"children at a time (default {defaults.jobs})")
    add(
        "--from-start",
        action="store_true",
        help="count every instruction of each child, not from its first operation on (slower)",
    )
    add("--pg-url", help="PostgreSQL maintenance URL (as benchmarks.run)")
    add("--pg-database", help=f"the benchmark's own database (default {defaults.pg_database})")
    add("--mysql-url", help="MariaDB maintenance URL (as benchmarks.run)")
    add(
        "--mysql-database", help=f"the benchmark's own database (default {defaults.mysql_database})"
    )
    add("--redis-url", help=f"Redis URL; its database is flushed (default {defaults.redis_url})")
    add("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    add("--markdown", type=Path, metavar="PATH", help="also write the tables as Markdown")
    add("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def options_from(args: argparse.Namespace) -> Options:
    overrides = {
        "subjects": args.subjects,
        "ops": args.ops,
        "n1": args.n1,
        "n2": args.n2,
        "sessions": args.sessions,
        "jobs": args.jobs,
        "from_start": args.from_start or None,
        "pg_admin_url": args.pg_url,
        "pg_database": args.pg_database,
        "mysql_admin_url": args.mysql_url,
        "mysql_database": args.mysql_database,
        "redis_url": args.redis_url,
    }
    return Options(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child_main()
    options = options_from(args)
    report = asyncio.run(
        measure(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
    )
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
        print(f"\nfigures written to {args.json}", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.write_text(render(report, markdown=True) + "\n")
        print(f"tables written to {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
