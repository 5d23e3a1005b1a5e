"""Does a bigger store cost more? SQLite lookups at two sizes, and bytes per session.

Lookups (c1 and c64) through the library and raw ``sqlite3`` on files preloaded
with a small and a large number of sessions (10,000 and 1,000,000 by default),
repetitions interleaved. Bytes per session on disk are the checkpointed file's
size over its rows; in memory, what ``tracemalloc`` sees the in-process stores
keep after loading the same sessions, over their number.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.database import SqliteTemplate
from benchmarks.measure import Result, run_scenario
from benchmarks.subjects import SUBJECTS, Setup
from benchmarks.workload import ALLOC_IDS, Dataset, make_dataset, operations

__all__ = ["FOOTPRINT_SUBJECTS", "SCALE_SUBJECTS", "Scale", "measure_footprint", "measure_scale"]

SCALE_SUBJECTS = ("repo-sqlite", "sqlite3")
FOOTPRINT_SUBJECTS = ("repo-memory", "ttlcache", "litestar-memory")
WARMUP = 200


@dataclass
class Scale:
    """Lookup results per store size, and the file's bytes per session at each size."""

    sizes: tuple[int, ...]
    results: dict[int, list[Result]] = field(default_factory=dict)
    disk_bytes_per_session: dict[int, float] = field(default_factory=dict)

    def result(self, size: int, subject: str, concurrency: int) -> Result | None:
        for r in self.results.get(size, []):
            if r.subject == subject and r.concurrency == concurrency:
                return r
        return None


async def measure_scale(
    sizes: tuple[int, ...],
    *,
    repeat: int,
    concurrency: tuple[int, ...],
    seconds: float,
    max_ops: int,
    seed: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> Scale:
    scale = Scale(sizes=sizes)
    setups: dict[int, Setup] = {}
    for size in sizes:
        dataset = make_dataset(size, seed)
        folder = workdir / f"scale-{size}"
        folder.mkdir()
        setups[size] = Setup(dataset=dataset, sqlite=SqliteTemplate(folder, dataset))
        scale.results[size] = [
            Result(name, "lookup", conc) for name in SCALE_SUBJECTS for conc in concurrency
        ]
    for rep in range(repeat):
        rng = random.Random(f"{seed}-scale-{rep}")
        for size in sizes:
            setup = setups[size]
            work = {conc: operations(setup.dataset, "lookup", max_ops, rng) for conc in concurrency}
            warmup = operations(setup.dataset, "lookup", WARMUP, rng)
            for result in scale.results[size]:
                subject = SUBJECTS[result.subject]()
                await subject.open(setup)
                try:
                    await run_scenario(
                        subject.lookup, warmup, concurrency=max(concurrency), max_seconds=seconds
                    )
                    sample = await run_scenario(
                        subject.lookup,
                        work[result.concurrency],
                        concurrency=result.concurrency,
                        max_seconds=seconds,
                        check=lambda _args, owner: owner in ALLOC_IDS,
                    )
                finally:
                    await subject.close()
                result.samples.append(sample)
                progress(
                    f"scale rep {rep + 1}/{repeat} {size:>9,} sessions {result.subject:<12} "
                    f"c{result.concurrency:<3} {sample.ops_per_s:>10,.0f} ops/s  "
                    f"p50 {sample.p50_ms:.3f} ms  p99 {sample.p99_ms:.3f} ms"
                )
            built = setup.need_sqlite().size_bytes
            if built is not None:
                scale.disk_bytes_per_session[size] = built / size
    return scale


async def measure_footprint(dataset: Dataset, names: tuple[str, ...]) -> dict[str, float]:
    """Bytes each in-process store keeps per session, after loading ``dataset``."""
    footprint: dict[str, float] = {}
    setup = Setup(dataset=dataset)
    for name in names:
        subject = SUBJECTS[name]()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await subject.open(setup)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            await subject.close()
        footprint[name] = (after - before) / len(dataset.sessions)
    return footprint
