"""What the figures were measured on: they mean little without it."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["describe_machine", "load_average"]

PACKAGES = ("session-repo", "sqlalchemy", "aiosqlite", "cachetools")


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
    return info
