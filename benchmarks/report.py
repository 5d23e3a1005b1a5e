"""Medians over repetitions, ratios between subjects of the same run, and the printed tables."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measure import Sample

__all__ = ["RATIO_PAIRS", "Ratio", "Report", "Result", "compute_ratios", "render"]

# (numerator, denominator): the library against the baseline it should be judged by.
RATIO_PAIRS = (
    ("repo-sqlite", "aiosqlite"),
    ("repo-sqlite", "sqlite3"),
    ("repo-memory", "ttlcache"),
)

MEDIANS = ("ops_per_s", "p50_ms", "p99_ms", "loop_stall_ms")


@dataclass
class Result:
    """One subject in one scenario: every repetition's sample and their medians."""

    subject: str
    op: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)

    def median(self, metric: str) -> float:
        values: list[float] = [getattr(sample, metric) for sample in self.samples]
        return statistics.median(values)

    @property
    def wrong(self) -> int:
        return sum(sample.wrong for sample in self.samples)


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

    def to_json(self) -> dict[str, Any]:
        results = [
            {
                "subject": r.subject,
                "op": r.op,
                "concurrency": r.concurrency,
                "median": {metric: r.median(metric) for metric in MEDIANS},
                "wrong": r.wrong,
                "samples": [asdict(s) for s in r.samples],
            }
            for r in self.results
        ]
        return {
            "machine": self.machine,
            "settings": self.settings,
            "idle_loop_stall_ms": self.idle_loop_stall_ms,
            "wall_seconds": self.wall_seconds,
            "results": results,
            "ratios": [asdict(ratio) for ratio in self.ratios],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def compute_ratios(results: list[Result]) -> list[Ratio]:
    by_key = {(r.subject, r.op, r.concurrency): r for r in results}
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


def _ms(value: float) -> str:
    """Milliseconds with about three significant digits, never in exponent form."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if value >= 0.01 else f"{value:.4f}"


def _x(value: float) -> str:
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 1}
    lines = []
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def render(report: Report) -> str:
    settings = report.settings
    lines = ["session-repo benchmarks", ""]
    lines += [f"  {key}: {value}" for key, value in report.machine.items()]
    lines += [
        f"  idle loop stall (ticker alone): {_ms(report.idle_loop_stall_ms)} ms",
        "",
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
    ]
    header = ["subject", "op", "conc", "ops/s", "p50", "p99", "loop stall", "wrong"]
    lines += _table(header, rows)
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
        lines += _table(["A / B", "op", "conc", "ops/s", "p50", "p99"], ratio_rows)
    lines += ["", f"wall time {report.wall_seconds:.0f} s"]
    return "\n".join(lines)
