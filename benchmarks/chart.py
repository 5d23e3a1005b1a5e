"""The ratio table as a picture: the library against each baseline, the baseline at 1.0.

One panel per pair (``repo-sqlite / sqlite3``, ...), one bar per operation and
concurrency, ops/s ratio on a log scale (a 2x lead and a 2x lag look the same
size); the title names the commit and the machine. Written with matplotlib's
Agg backend (no display needed); without matplotlib the run says so and goes on.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.report import Ratio, Report

__all__ = ["write_chart"]


def write_chart(report: Report, path: Path) -> str | None:
    """Draw ``report``'s ops/s ratios into ``path`` (PNG).

    Args:
        report: a finished run.
        path: the image to write.

    Returns:
        None once written, else why there is no chart.
    """
    pairs: dict[str, list[Ratio]] = {}
    for ratio in report.ratios:
        pairs.setdefault(f"{ratio.numerator} / {ratio.denominator}", []).append(ratio)
    if not pairs:
        return "no pair of this run has both sides"
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[dev]')"
    columns = 2
    rows = math.ceil(len(pairs) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(12, 2.6 * rows), squeeze=False)
    for axis, (pair, ratios) in zip(axes.flat, pairs.items(), strict=False):
        labels = [f"{r.op} c{r.concurrency}" for r in ratios]
        values = [r.ops_per_s for r in ratios]
        colours = ["#2a7ab9" if v >= 1 else "#d1603d" for v in values]
        axis.barh(labels, values, color=colours)
        axis.axvline(1.0, color="black", linewidth=1)
        axis.set_xscale("log")
        axis.set_xlim(min(0.05, *values) / 1.3, max(20.0, *values) * 1.3)
        axis.invert_yaxis()
        axis.set_title(pair, fontsize=10)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:.2f}x", va="center", fontsize=8)
    for axis in list(axes.flat)[len(pairs) :]:
        axis.set_visible(False)
    machine = report.machine
    figure.suptitle(
        "ops/s ratio, same run (above 1: the library is faster) - commit "
        f"{machine.get('session-repo source', '?')}, {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')} cores, {machine.get('python', '?')}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return None
