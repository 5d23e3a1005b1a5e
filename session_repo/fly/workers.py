"""Whether this app runs as one of several worker processes on its machine.

``fly-replay`` names a machine, not a process: with several workers behind one port
(``uvicorn --workers 4``, gunicorn's ``-w 4``), Fly delivers a replayed request to
the right machine and the kernel hands it to any of its workers, most of which do
not hold the session. ``worker_count`` reads what can be read from inside a worker;
the middleware logs one warning at lifespan startup when it finds more than one.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from session_repo.fly._log import fields, logger

__all__ = ["SERVERS", "warn_if_several", "worker_count"]

# Programs whose --workers (and -w, for those that take it) count worker processes.
SERVERS = ("uvicorn", "gunicorn", "hypercorn", "granian")
_SHORT_W = ("gunicorn", "hypercorn")


def worker_count(
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    process: Any = None,
) -> tuple[int, str] | None:
    """How many worker processes the server runs, and what says so, when that is known.

    Looked at in order (the first that gives a number wins): the uvicorn ``Config`` a
    uvicorn worker process was started with (``uvicorn.run(..., workers=4)`` too),
    ``--workers`` / ``-w`` on a server's command line (a uvicorn worker sees its
    supervisor's), ``GUNICORN_CMD_ARGS``, then ``UVICORN_WORKERS`` and
    ``WEB_CONCURRENCY`` (uvicorn's and gunicorn's defaults).

    Args:
        environ: the environment (``os.environ`` when None).
        argv: the command line (``sys.argv`` when None).
        process: the current process (``multiprocessing.current_process()`` when None).

    Returns:
        ``(workers, source)``, or None when nothing tells.
    """
    environ = os.environ if environ is None else environ
    argv = sys.argv if argv is None else argv
    process = multiprocessing.current_process() if process is None else process
    found = _uvicorn_config(process)
    if found is None:
        found = _command_line(argv)
    if found is None:
        found = _gunicorn_args(environ.get("GUNICORN_CMD_ARGS"))
    for name in ("UVICORN_WORKERS", "WEB_CONCURRENCY"):
        if found is None:
            found = _number(environ.get(name), name)
    return found


def _uvicorn_config(process: Any) -> tuple[int, str] | None:
    """A uvicorn worker is a spawned process whose target took uvicorn's ``Config``."""
    try:
        config: Any = (getattr(process, "_kwargs", None) or {}).get("config")
        if type(config).__module__ != "uvicorn.config" or config.reload:
            return None
        workers = config.workers
    except Exception:  # someone else's process object: anything may happen
        return None
    if isinstance(workers, int) and not isinstance(workers, bool):
        return workers, "uvicorn's config"
    return None


def _command_line(argv: Sequence[str]) -> tuple[int, str] | None:
    if not argv:
        return None
    first = argv[0]
    program = os.path.basename(os.path.dirname(first) if first.endswith("__main__.py") else first)
    server = next((s for s in SERVERS if s in program.lower()), None)
    if server is None:
        return None
    return _flag(list(argv[1:]), server in _SHORT_W, f"{server}'s command line")


def _gunicorn_args(value: str | None) -> tuple[int, str] | None:
    if not value:
        return None
    try:
        args = shlex.split(value)
    except ValueError:
        return None
    return _flag(args, True, "GUNICORN_CMD_ARGS")


def _flag(args: list[str], short: bool, source: str) -> tuple[int, str] | None:
    found: tuple[int, str] | None = None
    for at, arg in enumerate(args):
        value: str | None = None
        if arg == "--workers" or (short and arg == "-w"):
            value = args[at + 1] if at + 1 < len(args) else None
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        elif short and arg.startswith("-w") and len(arg) > 2:
            value = arg[2:].lstrip("=")
        if value is not None:
            found = _number(value, source) or found  # the last one given counts
    return found


def _number(value: str | None, source: str) -> tuple[int, str] | None:
    if value is None or not value.strip().isascii() or not value.strip().isdigit():
        return None
    return int(value.strip()), source


def warn_if_several(instance_id: str) -> None:
    """Log one warning when ``worker_count`` finds several workers on this machine.

    Args:
        instance_id: this machine's id, for the message.
    """
    found = worker_count()
    if found is None or found[0] <= 1:
        return
    workers, source = found
    logger.warning(
        "%d worker processes on machine %s (%s): fly-replay routes a session to a machine, "
        "not to the process that holds it, so most of its requests would miss it. Run one "
        "process per machine (no --workers, WEB_CONCURRENCY=1) and add machines to scale "
        "(see docs/fly.md)",
        workers,
        instance_id,
        source,
        extra=fields("start", "several_workers", instance=instance_id, workers=workers),
    )
