"""Medians over repetitions, ratios between subjects of the same run, and the printed tables."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.callbacks import LongestCallback
from benchmarks.cleanup import CleanupSample, Phase
from benchmarks.measure import Result
from benchmarks.scale import Scale
from benchmarks.targets import Target
from benchmarks.units import ms as _ms
from benchmarks.units import times as _x

__all__ = ["RATIO_PAIRS", "Ratio", "Report", "Result", "compute_ratios", "render"]

# (numerator, denominator): the library against the baseline or peer it is judged by.
RATIO_PAIRS = (
    ("repo-sqlite", "aiosqlite"),
    ("repo-sqlite", "sqlite3"),
    ("repo-resilient", "repo-sqlite"),
    ("repo-pg", "asyncpg"),
    ("repo-mariadb", "asyncmy"),
    ("repo-redis", "redis-py-lua"),
    ("repo-redis", "redis-py"),
    ("repo-redis", "litestar-redis"),
    ("repo-redis-cluster", "redis-py-cluster"),
    ("repo-pg-pgbouncer", "asyncpg-pgbouncer"),
    ("repo-memory", "ttlcache"),
    ("repo-memory", "litestar-memory"),
)

MEDIANS = ("ops_per_s", "p50_ms", "p99_ms", "loop_stall_ms")


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of the medians (throughput: above 1 is faster)."""

    numerator: str
    denominator: str
    op: str
    concurrency: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass
class Report:
    machine: dict[str, str]
    settings: dict[str, Any]
    idle_loop_stall_ms: float
    results: list[Result]
    ratios: list[Ratio]
    wall_seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # subject -> why it was not run
    failures: list[str] = field(default_factory=list)  # subject repetitions that raised
    longest_callbacks: list[LongestCallback] = field(default_factory=list)
    footprint: dict[str, float] = field(default_factory=dict)  # bytes per session in memory
    scale: Scale | None = None
    cleanup: list[CleanupSample] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        results = [_result_json(r) for r in self.results]
        scale = None
        if self.scale is not None:
            scale = {
                "sizes": list(self.scale.sizes),
                "disk_bytes_per_session": self.scale.disk_bytes_per_session,
                "results": {
                    str(size): [_result_json(r) for r in rows]
                    for size, rows in self.scale.results.items()
                },
            }
        return {
            "machine": self.machine,
            "settings": self.settings,
            "idle_loop_stall_ms": self.idle_loop_stall_ms,
            "wall_seconds": self.wall_seconds,
            "skipped": self.skipped,
            "failures": self.failures,
            "results": results,
            "ratios": [asdict(ratio) for ratio in self.ratios],
            "longest_callbacks": [asdict(found) for found in self.longest_callbacks],
            "memory_bytes_per_session": self.footprint,
            "scale": scale,
            "cleanup": [asdict(sample) for sample in self.cleanup],
            "targets": [asdict(target) for target in self.targets],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _result_json(r: Result) -> dict[str, Any]:
    return {
        "subject": r.subject,
        "op": r.op,
        "concurrency": r.concurrency,
        "median": {metric: r.median(metric) for metric in MEDIANS} if r.samples else None,
        "wrong": r.wrong,
        "samples": [asdict(s) for s in r.samples],
    }


def compute_ratios(results: list[Result]) -> list[Ratio]:
    by_key = {(r.subject, r.op, r.concurrency): r for r in results if r.samples}
    ratios = []
    for top, bottom in RATIO_PAIRS:
        for (subject, op, concurrency), a in by_key.items():
            b = by_key.get((bottom, op, concurrency))
            if subject != top or b is None:
                continue
            ratios.append(
                Ratio(
                    numerator=top,
                    denominator=bottom,
                    op=op,
                    concurrency=concurrency,
                    ops_per_s=a.median("ops_per_s") / b.median("ops_per_s"),
                    p50_ms=a.median("p50_ms") / b.median("p50_ms"),
                    p99_ms=a.median("p99_ms") / b.median("p99_ms"),
                )
            )
    return ratios


Table = Callable[[list[str], list[list[str]], int], list[str]]


def _text_table(header: list[str], rows: list[list[str]], left: int = 2) -> list[str]:
    """Aligned columns; the first ``left`` columns are text, the rest numbers."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _markdown_table(header: list[str], rows: list[list[str]], left: int = 2) -> list[str]:
    rule = ["---" if i < left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(row) + " |" for row in [header, rule, *rows]]


def _grid(report: Report, table: Table) -> list[str]:
    settings = report.settings
    lines = [
        f"{settings['sessions']:,} preloaded sessions; each scenario runs up to "
        f"{settings['max_ops']:,} ops or {settings['seconds']} s; "
        f"{settings['repeat']} repetition(s), medians shown; latencies in ms.",
        "",
    ]
    rows = [
        [
            r.subject,
            r.op,
            str(r.concurrency),
            f"{r.median('ops_per_s'):,.0f}",
            _ms(r.median("p50_ms")),
            _ms(r.median("p99_ms")),
            _ms(r.median("loop_stall_ms")),
            str(r.wrong),
        ]
        for r in report.results
        if r.samples
    ]
    header = ["subject", "op", "conc", "ops/s", "p50", "p99", "loop stall", "wrong"]
    lines += table(header, rows, 2)
    if report.ratios:
        lines += ["", "Ratios of medians (A / B, same run): ops/s above 1 = A faster;"]
        lines += ["latency above 1 = A slower.", ""]
        ratio_rows = [
            [
                f"{q.numerator} / {q.denominator}",
                q.op,
                str(q.concurrency),
                _x(q.ops_per_s),
                _x(q.p50_ms),
                _x(q.p99_ms),
            ]
            for q in report.ratios
        ]
        lines += table(["A / B", "op", "conc", "ops/s", "p50", "p99"], ratio_rows, 2)
    return lines


def _callbacks(found: list[LongestCallback], table: Table) -> list[str]:
    """One row per subject: its longest callback in each scenario, CPU / wall (ms)."""
    scenarios = list(dict.fromkeys((f.op, f.concurrency) for f in found))
    subjects = list(dict.fromkeys(f.subject for f in found))
    by_key = {(f.subject, f.op, f.concurrency): f for f in found}

    def cell(name: str, op: str, conc: int) -> str:
        f = by_key.get((name, op, conc))
        return "-" if f is None else f"{_ms(f.cpu_ms)} / {_ms(f.wall_ms)}"

    lines = [
        "The longest single callback of the event loop, CPU / wall time in ms: each scenario",
        "run once more with every callback timed. CPU is work in the loop's thread only;",
        "wall also counts waiting (a lock, the disk) and being preempted by other processes.",
        "",
    ]
    rows = [[name] + [cell(name, op, conc) for op, conc in scenarios] for name in subjects]
    return lines + table(["subject"] + [f"{op} c{conc}" for op, conc in scenarios], rows, 1)


def _scale(scale: Scale, footprint: dict[str, float], table: Table) -> list[str]:
    lines = ["Lookups by store size (SQLite), medians; latencies in ms.", ""]
    rows = [
        [
            r.subject,
            f"{size:,}",
            str(r.concurrency),
            f"{r.median('ops_per_s'):,.0f}",
            _ms(r.median("p50_ms")),
            _ms(r.median("p99_ms")),
            _ms(r.median("loop_stall_ms")),
            str(r.wrong),
        ]
        for size in scale.sizes
        for r in scale.results[size]
        if r.samples
    ]
    header = ["subject", "sessions", "conc", "ops/s", "p50", "p99", "loop stall", "wrong"]
    lines += table(header, rows, 1)
    if scale.disk_bytes_per_session:
        disk = [[f"{n:,}", f"{b:,.0f}"] for n, b in sorted(scale.disk_bytes_per_session.items())]
        lines += ["", "SQLite file size per session (checkpointed, after a bulk load):", ""]
        lines += table(["sessions", "bytes/session"], disk, 0)
    if footprint:
        memory = [[name, f"{b:,.0f}"] for name, b in footprint.items()]
        lines += ["", "Memory per session (tracemalloc, after loading the sessions):", ""]
        lines += table(["store", "bytes/session"], memory, 1)
    return lines


def _median_phase(phases: list[Phase], metric: str) -> float:
    return statistics.median(float(getattr(p, metric)) for p in phases)


def _cleanup(samples: list[CleanupSample], table: Table) -> list[str]:
    first = samples[0]
    lines = [
        f"{first.rows:,} rows, {first.expired:,} expired; cleanup() through one repository "
        "while 64 tasks look up and 64 upsert through another on the same file; "
        f"medians of {len(samples)} run(s).",
        "",
    ]
    rows = []
    for label, phases in (
        ("without cleanup", [s.baseline for s in samples]),
        ("during cleanup", [s.during for s in samples]),
    ):
        seconds = _median_phase(phases, "seconds")
        rows.append(
            [
                label,
                f"{seconds:.1f}",
                f"{statistics.median(p.lookups / p.seconds for p in phases):,.0f}",
                _ms(_median_phase(phases, "lookup_p50_ms")),
                _ms(_median_phase(phases, "lookup_p99_ms")),
                f"{statistics.median(p.upserts / p.seconds for p in phases):,.0f}",
                _ms(_median_phase(phases, "upsert_p99_ms")),
                str(sum(p.upsert_errors for p in phases)),
                str(sum(p.locked for p in phases)),
                str(sum(p.lookup_errors + p.misses for p in phases)),
                _ms(_median_phase(phases, "loop_stall_ms")),
            ]
        )
    header = ["phase", "s", "lookups/s", "lookup p50", "lookup p99", "upserts/s", "upsert p99"]
    header += ["upsert errors", "locked", "lookup errors+misses", "loop stall"]
    lines += table(header, rows, 1)
    removed = ", ".join(f"{s.removed:,} in {s.cleanup_s:.2f} s" for s in samples)
    lines += ["", f"cleanup removed: {removed}"]
    lines += [f"cleanup failed: {s.cleanup_error}" for s in samples if s.cleanup_error]
    return lines


def _targets(targets: list[Target], table: Table) -> list[str]:
    verdict = {True: "met", False: "NOT met", None: "-"}
    rows = [[t.area, t.what, t.goal, t.measured, verdict[t.met]] for t in targets]
    return table(["area", "target", "goal", "this run", "verdict"], rows, 5)


def render(report: Report, *, markdown: bool = False) -> str:
    table: Table = _markdown_table if markdown else _text_table

    def heading(title: str) -> list[str]:
        return [f"### {title}" if markdown else f"== {title}", ""]

    machine = [*report.machine.items(), ("idle loop stall", f"{_ms(report.idle_loop_stall_ms)} ms")]
    machine += [(f"skipped {name}", why) for name, why in report.skipped.items()]
    machine += [("FAILED", failure) for failure in report.failures]
    lines = ["session-repo benchmarks", ""]
    if markdown:
        lines += table(["", ""], [[key, value] for key, value in machine], 2)
    else:
        lines += [f"  {key}: {value}" for key, value in machine]
    lines.append("")
    if any(r.samples for r in report.results):
        lines += [*heading("Operations"), *_grid(report, table), ""]
    if report.longest_callbacks:
        lines += [
            *heading("Event loop: longest callback"),
            *_callbacks(report.longest_callbacks, table),
            "",
        ]
    if report.scale is not None or report.footprint:
        scale = report.scale or Scale(sizes=())
        lines += [*heading("Scale"), *_scale(scale, report.footprint, table), ""]
    if report.cleanup:
        lines += [*heading("Cleanup under load (SQLite)"), *_cleanup(report.cleanup, table), ""]
    for issue in dict.fromkeys(t.issue for t in report.targets):
        chosen = [t for t in report.targets if t.issue == issue]
        lines += [*heading(f"Issue {issue} targets"), *_targets(chosen, table), ""]
    lines.append(f"wall time {report.wall_seconds:.0f} s")
    return "\n".join(lines)
