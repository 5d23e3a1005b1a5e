"""``python -m benchmarks.run [--quick] [--repeat N] [--json PATH]``: measure and print.

One run measures every subject on the same data, repetitions interleaved
(every subject once, then again), so the ratios compare like with like even on
a busy machine. Each subject starts every repetition from a fresh copy of the
preloaded store.
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

from benchmarks.database import SqliteTemplate
from benchmarks.machine import describe_machine, load_average
from benchmarks.measure import StallTicker, run_scenario
from benchmarks.report import Report, Result, compute_ratios, render
from benchmarks.subjects import SUBJECTS, Setup, Subject
from benchmarks.workload import ALLOC_IDS, CLAIMER, OPS, Dataset, make_dataset, operations

__all__ = ["QUICK", "Settings", "main", "run_benchmarks"]


@dataclass(frozen=True)
class Settings:
    sessions: int = 100_000
    max_ops: int = 100_000  # per scenario and repetition; the time box usually ends it first
    seconds: float = 3.0  # time box per scenario and repetition
    repeat: int = 3
    concurrency: tuple[int, ...] = (1, 64)
    ops: tuple[str, ...] = OPS
    subjects: tuple[str, ...] = tuple(SUBJECTS)
    warmup: int = 200  # ops of each kind before measuring, per subject and repetition
    seed: int = 20240601


QUICK = Settings(sessions=20_000, max_ops=20_000, seconds=0.25, repeat=1, warmup=50)

CHECKS: dict[str, Callable[[tuple[str, ...], Any], bool]] = {
    "lookup": lambda _args, owner: owner in ALLOC_IDS,  # every looked-up key is live
    "upsert": lambda _args, result: result is None,
    "claim": lambda _args, owner: owner == CLAIMER,  # nobody held these sessions
}


def _bind(subject: Subject, op: str) -> Callable[..., Any]:
    method: Callable[..., Any] = getattr(subject, op)
    return method


async def _idle_stall(seconds: float = 0.3) -> float:
    async with StallTicker() as ticker:
        await asyncio.sleep(seconds)
    return ticker.max_stall_s * 1e3


async def _one_repetition(
    rep: int,
    settings: Settings,
    dataset: Dataset,
    template: SqliteTemplate,
    results: dict[tuple[str, str, int], Result],
    progress: Callable[[str], None],
) -> None:
    rng = random.Random(f"{settings.seed}-{rep}")
    work = {
        (op, conc): operations(dataset, op, settings.max_ops, rng)
        for op in settings.ops
        for conc in settings.concurrency
    }
    warmup = {op: operations(dataset, op, settings.warmup, rng) for op in settings.ops}
    setup = Setup(dataset=dataset, sqlite=template)
    # Rotate the order each repetition, so a burst of outside load hits a different subject.
    shift = rep % len(settings.subjects)
    for name in settings.subjects[shift:] + settings.subjects[:shift]:
        subject = SUBJECTS[name]()
        await subject.open(setup)
        try:
            for op in settings.ops:
                for args in warmup[op]:
                    await _bind(subject, op)(*args)
            for op in settings.ops:
                for conc in settings.concurrency:
                    sample = await run_scenario(
                        _bind(subject, op),
                        work[(op, conc)],
                        concurrency=conc,
                        max_seconds=settings.seconds,
                        check=CHECKS[op],
                    )
                    results[(name, op, conc)].samples.append(sample)
                    progress(
                        f"rep {rep + 1}/{settings.repeat} {name:<12} {op:<6} c{conc:<3} "
                        f"{sample.ops_per_s:>10,.0f} ops/s  p50 {sample.p50_ms:.3f} ms  "
                        f"p99 {sample.p99_ms:.3f} ms  stall {sample.loop_stall_ms:.2f} ms"
                    )
        finally:
            await subject.close()


async def run_benchmarks(
    settings: Settings,
    *,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> Report:
    """Measure every subject and scenario ``settings.repeat`` times; medians and ratios."""
    unknown = [name for name in settings.subjects if name not in SUBJECTS]
    if unknown:
        raise ValueError(f"unknown subject(s) {unknown}; known: {', '.join(SUBJECTS)}")
    began = time.perf_counter()
    machine = describe_machine()
    idle = await _idle_stall()
    dataset = make_dataset(settings.sessions, settings.seed)
    results = {
        (name, op, conc): Result(name, op, conc)
        for name in settings.subjects
        for op in settings.ops
        for conc in settings.concurrency
    }
    with tempfile.TemporaryDirectory(prefix="session-repo-bench-", dir=workdir) as tmp:
        template = SqliteTemplate(Path(tmp), dataset)
        for rep in range(settings.repeat):
            await _one_repetition(rep, settings, dataset, template, results, progress)
    machine["load average at end"] = load_average()
    ordered = list(results.values())
    report = Report(
        machine=machine,
        settings=asdict(settings),
        idle_loop_stall_ms=idle,
        results=ordered,
        ratios=compute_ratios(ordered),
    )
    report.wall_seconds = time.perf_counter() - began
    return report


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    return lambda text: tuple(kind(part) for part in text.split(",") if part)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (about 10 s)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3); medians reported")
    parser.add_argument("--sessions", type=int, help="preloaded sessions (default 100000)")
    parser.add_argument("--seconds", type=float, help="time box per scenario (default 3)")
    parser.add_argument("--max-ops", type=int, help="op cap per scenario (default 100000)")
    parser.add_argument("--concurrency", type=_csv(int), help="e.g. 1,64 (the default)")
    parser.add_argument("--ops", type=_csv(str), help=f"subset of {','.join(OPS)}")
    parser.add_argument("--subjects", type=_csv(str), help=f"subset of {','.join(SUBJECTS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--workdir", type=Path, help="where SQLite files go (default: temp dir)")
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
    }
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
