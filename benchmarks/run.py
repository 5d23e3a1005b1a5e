"""``python -m benchmarks.run [--quick] [--repeat N] [--json PATH]``: measure and print.

One run measures every subject on the same data, repetitions interleaved
(every subject once, then again), so the ratios compare like with like even on
a busy machine. Each SQL subject starts every repetition from the same
preloaded rows (a fresh SQLite copy; the PostgreSQL and MariaDB tables
reloaded). Then the memory per session, SQLite lookups at two store sizes, and
cleanup under load. Subjects whose server (PostgreSQL, MariaDB, Redis) does not
answer, or whose package is not installed, are skipped, and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.callbacks import CallbackClock, LongestCallback
from benchmarks.chart import write_chart
from benchmarks.cleanup import measure_cleanup
from benchmarks.database import SqliteTemplate
from benchmarks.machine import cpu_snapshot, cpu_usage, describe_machine, load_average
from benchmarks.mariadb import DEFAULT_ADMIN_URL as MYSQL_ADMIN_URL
from benchmarks.mariadb import DEFAULT_DATABASE as MYSQL_DATABASE
from benchmarks.mariadb import MariadbTemplate
from benchmarks.measure import Result, Sample, StallTicker, run_scenario
from benchmarks.postgres import DEFAULT_ADMIN_URL as PG_ADMIN_URL
from benchmarks.postgres import DEFAULT_DATABASE as PG_DATABASE
from benchmarks.postgres import PostgresTemplate
from benchmarks.redis_db import DEFAULT_URL as REDIS_URL
from benchmarks.redis_db import RedisTemplate
from benchmarks.report import Report, compute_ratios, render
from benchmarks.scale import FOOTPRINT_SUBJECTS, measure_footprint, measure_scale
from benchmarks.subjects import NAMES, SUBJECTS, UNAVAILABLE, Setup, Subject, server_of
from benchmarks.targets import evaluate
from benchmarks.workload import ALLOC_IDS, CLAIMER, OPS, Dataset, make_dataset, operations

__all__ = ["QUICK", "Settings", "main", "run_benchmarks"]


@dataclass(frozen=True)
class Settings:
    sessions: int = 100_000
    max_ops: int = 100_000  # per scenario and repetition; the time box usually ends it first
    seconds: float = 2.0  # time box per scenario and repetition
    repeat: int = 3
    concurrency: tuple[int, ...] = (1, 64)
    ops: tuple[str, ...] = OPS
    subjects: tuple[str, ...] = NAMES
    warmup: int = 200  # ops of each kind before measuring, per subject and repetition
    seed: int = 20240601
    idle_stall_s: float = 0.3  # the ticker alone, before anything runs: the machine's floor
    footprint: bool = True  # bytes per session of the in-process stores
    heartbeats: bool = False  # every owner heartbeats: lookups meet live owner rows
    scale_sizes: tuple[int, ...] = (10_000, 1_000_000)  # () skips the scale lookups
    cleanup_rows: int = 1_000_000  # half of them expired; 0 skips cleanup under load
    cleanup_baseline_s: float = 3.0  # traffic without cleanup, to compare with
    cleanup_tasks: int = 64  # lookup tasks, and as many upsert tasks
    callback_seconds: float = 1.0  # per scenario of the callback-timing pass; 0 skips it
    pg_admin_url: str = PG_ADMIN_URL  # a maintenance connection: creates pg_database
    pg_database: str = PG_DATABASE
    mysql_admin_url: str = MYSQL_ADMIN_URL  # a maintenance connection: creates the database
    mysql_database: str = MYSQL_DATABASE
    redis_url: str = REDIS_URL  # its database is flushed: the benchmark's own


QUICK = Settings(
    sessions=20_000,
    max_ops=20_000,
    seconds=0.25,
    repeat=1,
    warmup=50,
    scale_sizes=(10_000, 100_000),
    cleanup_rows=100_000,
    cleanup_baseline_s=0.5,
    callback_seconds=0.1,
)

# The library's stacks and the raw drivers they are judged by, in the callback-timing pass.
CALLBACK_SUBJECTS = (
    "repo-sqlite",
    "aiosqlite",
    "sqlite3",
    "repo-pg",
    "asyncpg",
    "repo-mariadb",
    "asyncmy",
    "repo-redis",
    "redis-py-lua",
    "repo-memory",
)

CHECKS: dict[str, Callable[[tuple[str, ...], Any], bool]] = {
    "lookup": lambda _args, owner: owner in ALLOC_IDS,  # every looked-up key is live
    "upsert": lambda _args, result: result is None,
    "claim": lambda _args, owner: owner == CLAIMER,  # nobody held these sessions
}


def _bind(subject: Subject, op: str) -> Callable[..., Any]:
    method: Callable[..., Any] = getattr(subject, op)
    return method


async def _idle_stall(seconds: float) -> float:
    async with StallTicker() as ticker:
        await asyncio.sleep(seconds)
    return ticker.max_stall_s * 1e3


Record = Callable[[str, str, int, Sample, CallbackClock | None], None]


async def _pass(
    label: str,
    names: list[str],
    settings: Settings,
    setup: Setup,
    *,
    seed: str,
    seconds: float,
    timed: bool,
    record: Record,
    progress: Callable[[str], None],
) -> list[str]:
    """Every subject in ``names`` through every scenario once; returns what failed.

    A failure (a server restarted under the run, say) ends that subject's
    turn, not the run; the report lists it.
    """
    rng = random.Random(seed)
    work = {
        (op, conc): operations(setup.dataset, op, settings.max_ops, rng)
        for op in settings.ops
        for conc in settings.concurrency
    }
    warmup = {op: operations(setup.dataset, op, settings.warmup, rng) for op in settings.ops}
    failures = []
    for name in names:
        subject = SUBJECTS[name]()
        try:
            try:
                await subject.open(setup)
                await _scenarios(name, subject, settings, work, warmup, seconds, timed, record)
            finally:
                await subject.close()
        except Exception as exc:
            failure = f"{name}, {label}: {type(exc).__name__}: {exc}"
            failures.append(failure)
            progress(f"FAILED {failure}")
    return failures


async def _scenarios(
    name: str,
    subject: Subject,
    settings: Settings,
    work: dict[tuple[str, int], list[tuple[str, ...]]],
    warmup: dict[str, list[tuple[str, ...]]],
    seconds: float,
    timed: bool,
    record: Record,
) -> None:
    peak = max(settings.concurrency)
    for op in settings.ops:  # at full concurrency: pools open all their connections
        await run_scenario(_bind(subject, op), warmup[op], concurrency=peak, max_seconds=seconds)
    for op in settings.ops:
        for conc in settings.concurrency:
            clock = CallbackClock() if timed else None
            sample = await run_scenario(
                _bind(subject, op),
                work[(op, conc)],
                concurrency=conc,
                max_seconds=seconds,
                check=CHECKS[op],
                callbacks=clock,
            )
            record(name, op, conc, sample, clock)


async def _grid(
    settings: Settings,
    names: list[str],
    setup: Setup,
    results: dict[tuple[str, str, int], Result],
    progress: Callable[[str], None],
) -> list[str]:
    """Every subject and scenario, ``settings.repeat`` times, repetitions interleaved."""

    def record(name: str, op: str, conc: int, sample: Sample, _: CallbackClock | None) -> None:
        results[(name, op, conc)].samples.append(sample)
        progress(
            f"rep {len(results[(name, op, conc)].samples)}/{settings.repeat} {name:<15} "
            f"{op:<6} c{conc:<3} {sample.ops_per_s:>10,.0f} ops/s  p50 {sample.p50_ms:.3f} ms  "
            f"p99 {sample.p99_ms:.3f} ms  stall {sample.loop_stall_ms:.2f} ms"
        )

    failures: list[str] = []
    for rep in range(settings.repeat if names else 0):
        # Rotate the order each repetition, so a burst of outside load hits another subject.
        shift = rep % len(names)
        failures += await _pass(
            f"repetition {rep + 1}",
            names[shift:] + names[:shift],
            settings,
            setup,
            seed=f"{settings.seed}-{rep}",
            seconds=settings.seconds,
            timed=False,
            record=record,
            progress=progress,
        )
    return failures


async def _callback_pass(
    settings: Settings,
    names: list[str],
    setup: Setup,
    failures: list[str],
    progress: Callable[[str], None],
) -> list[LongestCallback]:
    """Each scenario once more with every callback timed: the longest CPU hold of the loop."""
    longest: list[LongestCallback] = []

    def record(name: str, op: str, conc: int, sample: Sample, clock: CallbackClock | None) -> None:
        assert clock is not None
        cpu_ms, wall_ms = clock.longest_cpu_s * 1e3, clock.longest_wall_s * 1e3
        longest.append(LongestCallback(name, op, conc, cpu_ms, wall_ms, clock.callbacks))
        progress(
            f"callbacks {name:<15} {op:<6} c{conc:<3} longest callback: CPU {cpu_ms:.3f} ms, "
            f"wall {wall_ms:.3f} ms ({clock.callbacks:,} callbacks)"
        )

    failures += await _pass(
        "callback pass",
        names,
        settings,
        setup,
        seed=f"{settings.seed}-callbacks",
        seconds=settings.callback_seconds,
        timed=True,
        record=record,
        progress=progress,
    )
    return longest


async def _servers(
    settings: Settings, dataset: Dataset, machine: dict[str, str]
) -> tuple[PostgresTemplate | None, MariadbTemplate | None, RedisTemplate | None, dict[str, str]]:
    """The servers the chosen subjects need; subjects whose server is down are skipped."""
    wanted = {server_of(name) for name in settings.subjects}
    postgres = mariadb = redis = None
    down: dict[str, str] = {}
    if "postgresql" in wanted:
        postgres = PostgresTemplate(settings.pg_admin_url, settings.pg_database, dataset)
        reason = await postgres.unreachable()
        if reason is None:
            machine["postgresql server"] = await postgres.server_version()
        else:
            postgres, down["postgresql"] = None, reason
    if "mariadb" in wanted:
        mariadb = MariadbTemplate(settings.mysql_admin_url, settings.mysql_database, dataset)
        reason = await mariadb.unreachable()
        if reason is None:
            machine["mariadb server"] = await mariadb.server_version()
        else:
            mariadb, down["mariadb"] = None, reason
    if "redis" in wanted:
        redis = RedisTemplate(settings.redis_url)
        reason = await redis.unreachable()
        if reason is None:
            machine["redis server"] = await redis.server_version()
        else:
            redis, down["redis"] = None, reason
    skipped = {
        name: down[server]
        for name in settings.subjects
        if (server := server_of(name)) is not None and server in down
    }
    return postgres, mariadb, redis, skipped


async def run_benchmarks(
    settings: Settings,
    *,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> Report:
    """Measure every subject and scenario ``settings.repeat`` times; medians and ratios.

    Then, unless turned off: the callback-timing pass, bytes per session of the
    in-process stores, SQLite lookups at two store sizes, and cleanup under load.
    """
    unknown = [name for name in settings.subjects if name not in NAMES and name not in SUBJECTS]
    if unknown:
        raise ValueError(f"unknown subject(s) {unknown}; known: {', '.join(NAMES)}")
    began = time.perf_counter()
    cpu_at_start = cpu_snapshot()
    machine = describe_machine()
    idle = await _idle_stall(settings.idle_stall_s)
    dataset = make_dataset(settings.sessions, settings.seed)
    postgres, mariadb, redis, skipped = await _servers(settings, dataset, machine)
    skipped.update({n: UNAVAILABLE[n] for n in settings.subjects if n in UNAVAILABLE})
    for name, why in skipped.items():
        progress(f"skipping {name}: {why}")
    names = [name for name in settings.subjects if name not in skipped]
    results = {
        (name, op, conc): Result(name, op, conc)
        for name in names
        for op in settings.ops
        for conc in settings.concurrency
    }
    with tempfile.TemporaryDirectory(prefix="session-repo-bench-", dir=workdir) as tmp:
        folder = Path(tmp)
        template = SqliteTemplate(folder, dataset)
        setup = Setup(
            dataset=dataset,
            sqlite=template,
            postgres=postgres,
            redis=redis,
            mariadb=mariadb,
            heartbeats=settings.heartbeats,
        )
        failures: list[str] = []
        longest: list[LongestCallback] = []
        try:
            failures += await _grid(settings, names, setup, results, progress)
            if settings.callback_seconds:
                audited = [name for name in CALLBACK_SUBJECTS if name in names]
                longest = await _callback_pass(settings, audited, setup, failures, progress)
        finally:
            if postgres is not None:
                await postgres.empty()
            if mariadb is not None:
                await mariadb.empty()
            if redis is not None:
                await redis.finish()
        footprint = {}
        if settings.footprint:
            stores = tuple(name for name in FOOTPRINT_SUBJECTS if name in SUBJECTS)
            footprint = await measure_footprint(dataset, stores)
            progress(f"memory per session: {footprint}")
        scale = None
        if settings.scale_sizes:
            scale = await measure_scale(
                settings.scale_sizes,
                repeat=settings.repeat,
                concurrency=settings.concurrency,
                seconds=settings.seconds,
                max_ops=settings.max_ops,
                seed=settings.seed,
                workdir=folder,
                progress=progress,
            )
            if template.size_bytes is not None:
                per_session = template.size_bytes / settings.sessions
                scale.disk_bytes_per_session[settings.sessions] = per_session
        cleanup = []
        if settings.cleanup_rows:
            cleanup = await measure_cleanup(
                settings.cleanup_rows,
                repeat=settings.repeat,
                tasks=settings.cleanup_tasks,
                baseline_s=settings.cleanup_baseline_s,
                seed=settings.seed,
                workdir=folder,
                progress=progress,
            )
    machine["load average at end"] = load_average()
    machine["cpu during the run"] = cpu_usage(cpu_at_start, cpu_snapshot())
    ordered = list(results.values())
    report = Report(
        machine=machine,
        settings=asdict(settings),
        idle_loop_stall_ms=idle,
        results=ordered,
        ratios=compute_ratios(ordered),
        skipped=skipped,
        failures=failures,
        longest_callbacks=longest,
        footprint=footprint,
        scale=scale,
        cleanup=cleanup,
    )
    report.targets = evaluate(
        ordered,
        scale=scale,
        cleanup=cleanup,
        footprint=footprint,
        idle_stall_ms=idle,
        longest_callbacks=longest,
    )
    report.wall_seconds = time.perf_counter() - began
    return report


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    return lambda text: tuple(kind(part) for part in text.split(",") if part)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a smaller run (about a minute)")
    add("--repeat", type=int, help="repetitions (default 3); medians reported")
    add("--sessions", type=int, help="preloaded sessions (default 100000)")
    add("--seconds", type=float, help="time box per scenario (default 2)")
    add("--max-ops", type=int, help="op cap per scenario (default 100000)")
    add("--concurrency", type=_csv(int), help="e.g. 1,64 (the default)")
    add("--ops", type=_csv(str), help=f"subset of {','.join(OPS)}")
    add("--subjects", type=_csv(str), help=f"subset of {','.join(NAMES)}; '' for none")
    add("--scale", action=argparse.BooleanOptionalAction, help="lookups by store size (on)")
    add("--scale-sizes", type=_csv(int), help="store sizes (default 10000,1000000)")
    add("--cleanup", action=argparse.BooleanOptionalAction, help="cleanup under load (on)")
    add("--cleanup-rows", type=int, help="rows, half expired (default 1000000)")
    add("--callback-seconds", type=float, help="callback-timing pass per scenario (1; 0: off)")
    add("--footprint", action=argparse.BooleanOptionalAction, help="memory per session (on)")
    add("--heartbeats", action="store_true", help="the library's owners heartbeat (off)")
    add("--pg-url", help=f"PostgreSQL maintenance URL (default {PG_ADMIN_URL})")
    add("--pg-database", help=f"the benchmark's own database (default {PG_DATABASE})")
    add("--mysql-url", help=f"MariaDB maintenance URL (default {MYSQL_ADMIN_URL})")
    add("--mysql-database", help=f"the benchmark's own database (default {MYSQL_DATABASE})")
    add("--redis-url", help=f"Redis URL; its database is flushed (default {REDIS_URL})")
    add("--json", type=Path, metavar="PATH", help="also write results as JSON")
    add("--markdown", type=Path, metavar="PATH", help="also write the tables as Markdown")
    add(
        "--chart",
        type=Path,
        metavar="PATH",
        default=Path("benchmark-ratios.png"),
        help="the ratio chart, a PNG (default benchmark-ratios.png; needs matplotlib)",
    )
    add("--no-chart", dest="chart", action="store_const", const=None, help="no chart")
    add("--workdir", type=Path, help="where SQLite files go (default: temp dir)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else Settings()
    overrides = {
        "repeat": args.repeat,
        "sessions": args.sessions,
        "seconds": args.seconds,
        "max_ops": args.max_ops,
        "concurrency": args.concurrency,
        "ops": args.ops,
        "subjects": args.subjects,
        "scale_sizes": args.scale_sizes,
        "cleanup_rows": args.cleanup_rows,
        "footprint": args.footprint,
        "heartbeats": args.heartbeats or None,
        "callback_seconds": args.callback_seconds,
        "pg_admin_url": args.pg_url,
        "pg_database": args.pg_database,
        "mysql_admin_url": args.mysql_url,
        "mysql_database": args.mysql_database,
        "redis_url": args.redis_url,
    }
    if args.scale is False:
        overrides["scale_sizes"] = ()
    if args.cleanup is False:
        overrides["cleanup_rows"] = 0
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_from(args)
    print(f"running {settings}", file=sys.stderr)
    report = asyncio.run(
        run_benchmarks(
            settings,
            workdir=args.workdir,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    )
    print(render(report))
    if args.json is not None:
        report.write_json(args.json)
        print(f"\nresults written to {args.json}", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.write_text(render(report, markdown=True) + "\n")
        print(f"tables written to {args.markdown}", file=sys.stderr)
    if args.chart is not None:
        missing = write_chart(report, args.chart)
        if missing is None:
            print(f"chart written to {args.chart}", file=sys.stderr)
        else:
            print(f"no chart: {missing}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
