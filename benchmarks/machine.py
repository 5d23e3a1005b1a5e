"""What the figures were measured on: they mean little without it."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = ["CpuSnapshot", "cpu_snapshot", "cpu_usage", "describe_machine", "load_average"]

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = (
    "session-repo",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "asyncmy",
    "redis",
    "cachetools",
    "litestar",
)


def _cpu_model() -> str:
    """The model name from /proc/cpuinfo, with family, model and clock (VMs often hide the name)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    extra = [
        f"{label} {fields[key]}"
        for label, key in (("family", "cpu family"), ("model", "model"), ("MHz", "cpu MHz"))
        if key in fields
    ]
    name = fields.get("model name", "unknown")
    return f"{name} ({', '.join(extra)})" if extra else name


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """1, 5 and 15 minute load: other work on the machine skews every figure."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _source() -> str:
    """The checkout's commit, and whether the library's files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "session_repo"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    if not head:
        return "unknown (not a git checkout)"
    return f"{head} + uncommitted changes in session_repo/" if dirty else head


@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float  # CPU time the whole machine spent busy, all cores
    own_s: float  # of which this process
    wall_s: float


def cpu_snapshot() -> CpuSnapshot | None:
    """Machine-wide and own CPU time now (Linux), to tell later who else was busy."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return CpuSnapshot(
        busy_s=busy / os.sysconf("SC_CLK_TCK"),
        own_s=own.user + own.system,
        wall_s=time.monotonic(),
    )


def cpu_usage(start: CpuSnapshot | None, end: CpuSnapshot | None) -> str:
    """Average cores busy over the run: all, and this process (the rest: servers and others)."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return "unknown"
    wall = end.wall_s - start.wall_s
    busy = (end.busy_s - start.busy_s) / wall
    own = (end.own_s - start.own_s) / wall
    return (
        f"{busy:.2f} cores busy on average, {own:.2f} by this process, "
        f"{max(busy - own, 0):.2f} by everything else (database servers included)"
    )


def describe_machine() -> dict[str, str]:
    """CPU, cores, load, Python, SQLite and package versions, as printable strings."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} ({usable} usable)",
        "load average at start": load_average(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "sqlite": sqlite3.sqlite_version,
    }
    info.update({package: _version(package) for package in PACKAGES})
    info["session-repo source"] = _source()
    return info
