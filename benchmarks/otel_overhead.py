"""``python -m benchmarks.otel_overhead``: what ``session_repo.opentelemetry`` costs a lookup.

The memory backend, concurrency 1 (one task awaiting one lookup after another,
every one a hit), in one process, three subjects:

- ``bare``: ``MemorySessionRepository`` as it is;
- ``no-sdk``: ``instrument(repo)`` with only the API (no provider set globally);
- ``sdk``: ``instrument(repo)`` with an SDK ``TracerProvider`` (no exporter, so the
  figure is the instrumentation's, not an exporter's) and ``MeterProvider``.

Ops/s: rounds of ``--seconds`` each, the subjects interleaved round by round so
that load on the machine falls on all of them alike; the median round per subject
and its ratio to ``bare``. ``--callgrind`` also counts instructions per lookup:
for each subject a child process under ``valgrind --tool=callgrind`` runs N1 and
another N2 lookups; (total at N2 - total at N1) / (N2 - N1) is one lookup, the
start-up the same in both and cancelled out (as ``benchmarks.instructions``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from session_repo import MemorySessionRepository, SessionRepository

SUBJECTS = ("bare", "no-sdk", "sdk")
SESSIONS = 1_000
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def build(subject: str) -> SessionRepository:
    """The repository a subject looks up in."""
    repo = MemorySessionRepository(max_sessions=SESSIONS * 2)
    if subject == "bare":
        return repo
    from session_repo.opentelemetry import instrument

    if subject == "no-sdk":
        return instrument(repo)
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return instrument(repo, tracer_provider=TracerProvider(), meter_provider=meters)


async def prepared(subject: str) -> tuple[SessionRepository, list[str]]:
    repo = build(subject)
    await repo.__aenter__()
    keys = [f"session-{i:06d}" for i in range(SESSIONS)]
    for key in keys:
        await repo.upsert(key, "machine-a")
    gc.collect()
    return repo, keys


async def lookups(repo: SessionRepository, keys: list[str], n: int) -> None:
    lookup = repo.lookup
    count = len(keys)
    for i in range(n):
        await lookup(keys[i % count])


async def ops_per_second(subjects: Sequence[str], seconds: float, rounds: int) -> dict[str, float]:
    """The median ops/s of ``rounds`` rounds per subject, interleaved."""
    repos = {s: await prepared(s) for s in subjects}
    found: dict[str, list[float]] = {s: [] for s in subjects}
    for _ in range(rounds):
        for subject in subjects:
            repo, keys = repos[subject]
            await lookups(repo, keys, 1_000)  # warm
            done, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                await lookups(repo, keys, 1_000)
                done += 1_000
            found[subject].append(done / elapsed)
    for repo, _ in repos.values():
        await repo.close()
    return {s: statistics.median(v) for s, v in found.items()}


def instructions(subject: str, n1: int, n2: int, valgrind: str) -> float:
    """Instructions one lookup takes, by callgrind: (total at n2 - total at n1) / (n2 - n1)."""
    totals = []
    for n in (n1, n2):
        command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        command += [sys.executable, "-m", "benchmarks.otel_overhead", "--child", subject, str(n)]
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        match = COLLECTED.search(out.stderr)
        if out.returncode or match is None:
            raise RuntimeError(f"{subject} under callgrind failed: {out.stderr[-500:]}")
        totals.append(int(match.group(1)))
    return (totals[1] - totals[0]) / (n2 - n1)


def _child(subject: str, n: int) -> None:
    async def run() -> None:
        repo, keys = await prepared(subject)
        gc.freeze()
        await lookups(repo, keys, n)
        await repo.close()

    asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the report (``--json`` for a machine's reading).

    Args:
        argv: the command line (``sys.argv[1:]`` when None).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=1.0, help="one round (default 1)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per subject (default 7)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--n1", type=int, default=2_000)
    parser.add_argument("--n2", type=int, default=12_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("SUBJECT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    report: dict[str, Any] = {
        "ops_per_s": asyncio.run(ops_per_second(SUBJECTS, args.seconds, args.rounds))
    }
    if args.callgrind:
        valgrind = shutil.which("valgrind")
        if valgrind is None:
            print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
        report["instructions"] = {s: instructions(s, args.n1, args.n2, valgrind) for s in SUBJECTS}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("memory backend, lookup, concurrency 1")
    base = report["ops_per_s"]["bare"]
    for subject in SUBJECTS:
        ops = report["ops_per_s"][subject]
        line = f"  {subject:7} {ops:>11,.0f} ops/s  x{ops / base:.3f}"
        if "instructions" in report:
            count = report["instructions"][subject]
            line += f"  {count:>9,.0f} instr/op  x{count / report['instructions']['bare']:.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
