"""The benchmark harness, run in-process with tiny numbers, so it cannot rot unnoticed."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.report import RATIO_PAIRS, render
from benchmarks.run import Settings, main, run_benchmarks
from benchmarks.subjects import SUBJECTS

TINY = Settings(sessions=200, max_ops=50, seconds=5.0, repeat=1, concurrency=(1, 8), warmup=5)


async def test_harness_measures_every_subject_and_computes_ratios(tmp_path: Path) -> None:
    report = await run_benchmarks(TINY, workdir=tmp_path)

    scenarios = {(r.subject, r.op, r.concurrency) for r in report.results}
    assert scenarios == {
        (subject, op, conc)
        for subject in SUBJECTS
        for op in ("lookup", "upsert", "claim")
        for conc in (1, 8)
    }
    for result in report.results:
        (sample,) = result.samples
        assert sample.ops == 50, result  # the op cap, well inside the time box
        assert sample.wrong == 0, result  # lookups hit, claims of fresh sessions win
        assert 0 < sample.p50_ms <= sample.p99_ms <= sample.max_ms
        assert sample.ops_per_s > 0
        assert math.isfinite(sample.loop_stall_ms)
        assert sample.loop_stall_ms >= 0

    pairs = {(q.numerator, q.denominator, q.op, q.concurrency) for q in report.ratios}
    assert len(pairs) == len(RATIO_PAIRS) * 3 * 2
    for ratio in report.ratios:
        for value in (ratio.ops_per_s, ratio.p50_ms, ratio.p99_ms):
            assert math.isfinite(value)
            assert value > 0

    table = render(report)
    assert "repo-sqlite / aiosqlite" in table
    assert "repo-sqlite / sqlite3" in table
    assert report.machine["sqlite"] in table
    assert list(tmp_path.iterdir()) == []  # the SQLite copies are gone


def test_command_line_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = ["--sessions", "100", "--max-ops", "20", "--repeat", "1", "--concurrency", "1"]
    argv += ["--subjects", "sqlite3,ttlcache", "--json", str(out), "--workdir", str(tmp_path)]
    assert main(argv) == 0

    data = json.loads(out.read_text())
    assert {r["subject"] for r in data["results"]} == {"sqlite3", "ttlcache"}
    assert all(r["median"]["ops_per_s"] > 0 for r in data["results"])
    assert data["ratios"] == []  # no pair of this run has both sides
    assert data["machine"]["cores"]
