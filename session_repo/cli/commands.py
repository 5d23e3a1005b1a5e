"""``session-repo``: migrate, inspect and exercise the configured session store.

Settings come from the same ``SESSION_STORE_*`` variables as the library;
``--url`` overrides the URL, before or after the command. An error is one line
on stderr and exit status 2 (3 for a bug); a session id is never echoed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, NoReturn, TextIO

from alembic import command
from session_repo._core.translate import storage_errors
from session_repo._version import __version__
from session_repo.backends.sql.engine import (
    BEGIN_OPTION,
    SUPPORTED,
    create_engine,
    parse_url,
    sqlite_file,
)
from session_repo.backends.sql.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from session_repo.config import SessionStoreConfig
from session_repo.contract import SessionRepository
from session_repo.errors import SessionRepoError
from session_repo.factory import create_session_repository

__all__ = ["main"]

EXIT_MISSING = 1
EXIT_ERROR = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130
HEALTH_EXIT = {"ok": 0, "degraded": 1, "down": 2}
PROGRESS_EVERY = 0.25  # seconds between progress lines on a terminal

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

ENVIRONMENT = """\
environment (the library's own settings):
  SESSION_STORE_URL     store URL (default sqlite+aiosqlite:///session-store.sqlite);
                        also postgresql+asyncpg://, mysql+asyncmy://, redis://, memory://
  SESSION_STORE_ENABLED false turns the store off; SESSION_STORE_TTL_MS default ttl; ...
A SQLite store is created (owner-only) and migrated on first use, even by
get, stats or health; a server database must be migrated with `migrate`.
A session id of "-" is read from stdin (keeps it out of `ps` and shell history).
"""


class _UsageError(Exception):
    """A command line argparse rejected."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports one line and never echoes stray arguments."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments, not shown as they may hold a session id"
        elif "invalid choice:" in message:  # the word may be a session id given as a command
            head, _, choices = message.partition(" (choose from ")
            message = f"{head.split('invalid choice:')[0]}unknown command (choose from {choices}"
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command, as the ``session-repo`` entry point does.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when None).

    Returns:
        The exit status: 0 done, 1 nothing found (or degraded, or warnings), 2 an error
        (or down, or failures), 3 a bug, 130 interrupted. An error is one line on
        stderr, never a traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        command: Command = args.run
        return asyncio.run(command(args))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `session-repo migrate --sql | head`: the reader left
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return EXIT_MISSING
    except (_UsageError, SessionRepoError, ValueError, TypeError, OSError) as exc:
        return _fail(str(exc) or type(exc).__name__, EXIT_ERROR)
    except Exception as exc:  # a bug or an unclassified driver error: still no traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_BUG)


def _fail(message: str, status: int) -> int:
    line = " ".join(message.split())
    print(f"session-repo: error: {line}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The parser; each command's help is its function's docstring: summary, then examples.

    Returns:
        The ``session-repo`` parser; each command sets ``run``, its coroutine function.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="store URL; overrides SESSION_STORE_URL (and SESSION_STORE_PATH)",
    )
    parser = _Parser(
        prog="session-repo",
        description="Which server instance owns which session: manage the session store.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"session-repo {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    sub: dict[str, argparse.ArgumentParser] = {}
    for run in (
        _migrate, _current, _get, _set, _delete, _cleanup, _stats, _health, _doctor, _demo, _bench,
    ):  # fmt: skip
        summary, _, examples = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
        name = run.__name__.strip("_")
        sub[name] = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"examples:\n{textwrap.indent(examples, '  ')}\n\n{ENVIRONMENT}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        sub[name].set_defaults(run=run)
    for name in ("get", "set", "delete"):
        sub[name].add_argument("session_id", metavar="SID", help='session id; "-" reads stdin')
    sub["set"].add_argument("alloc_id", metavar="ALLOC", help="the owner: machine or instance id")
    sub["set"].add_argument("--ttl", type=float, metavar="SECONDS", help="default: from settings")
    sub["migrate"].add_argument("--sql", action="store_true", help="print the SQL, run nothing")
    for name in ("current", "get", "cleanup", "stats", "health", "doctor"):
        sub[name].add_argument("--json", action="store_true", help="print the answer as JSON")
    sub["demo"].add_argument("--dir", help="where to create demo.sqlite (default: a temp dir)")
    bench = sub["bench"]
    bench.add_argument("--sessions", type=int, default=10_000, help="bindings to preload")
    bench.add_argument("--ops", type=int, default=2_000, help="operations per measurement")
    bench.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 64], metavar="N",
        help="concurrent tasks; one measurement each (default: 1 64)",
    )  # fmt: skip
    return parser


# -- helpers -----------------------------------------------------------------


def _config(args: argparse.Namespace, *, fallback: bool = False) -> SessionStoreConfig:
    """Settings from the environment and ``--url``; no background cleanup in a CLI.

    Without ``fallback`` storage errors surface instead of being served from an
    in-process memory store that vanishes when the command exits.
    """
    overrides: dict[str, Any] = {"cleanup_interval": 0}
    if getattr(args, "url", None) is not None:
        overrides["url"] = args.url
    if not fallback:
        overrides["fallback"] = "none"
    return SessionStoreConfig.from_env().with_overrides(overrides)


def _store(args: argparse.Namespace, *, note: bool = True) -> SessionRepository:
    config = _config(args)
    if note and not config.enabled:
        _note("the store is disabled (SESSION_STORE_ENABLED=false): it keeps nothing")
    elif note and config.url.lower().startswith("memory:"):
        _note("memory:// lives inside one process: this command sees an empty store")
    return create_session_repository(config)


def _sql_url(config: SessionStoreConfig) -> str | None:
    scheme = config.url.split("://", 1)[0].split("+", 1)[0].lower()
    return config.url if config.enabled and scheme in SUPPORTED else None


def _no_schema(config: SessionStoreConfig) -> str:
    store = config.url.split("://", 1)[0] + "://" if config.enabled else "disabled"
    return f"nothing to migrate: the {store} store has no schema"


def _session_id(value: str) -> str:
    return sys.stdin.readline().rstrip("\r\n") if value == "-" else value


def _note(message: str) -> None:
    print(f"session-repo: note: {message}", file=sys.stderr)


async def _revision(url: str) -> str | None:
    """The database's Alembic revision, without creating a missing SQLite file."""
    path = sqlite_file(parse_url(url))
    if path is not None and not path.exists():
        return None
    engine = create_engine(url, pool_size=1)
    try:
        with storage_errors("schema check"):
            async with engine.connect() as conn:
                await conn.execution_options(**{BEGIN_OPTION: "DEFERRED"})
                return await conn.run_sync(current_revision)
    finally:
        await engine.dispose()


# -- commands ----------------------------------------------------------------


async def _migrate(args: argparse.Namespace) -> int:
    """Upgrade the database schema to head (nothing to do for memory:// or a disabled store).

    session-repo migrate --url postgresql+asyncpg://app@db.internal/app
    session-repo migrate --sql > schema.sql   # the DDL for a DBA; runs nothing
    """
    config = _config(args)
    url = _sql_url(config)
    if url is None:
        print(_no_schema(config))
        return 0
    if args.sql:
        alembic = alembic_config(url)
        alembic.output_buffer = sys.stdout
        command.upgrade(alembic, "head", sql=True)
        return 0
    before = await _revision(url)
    engine = create_engine(url, pool_size=1, sqlite_synchronous=config.sqlite_synchronous)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    if before == head:
        print(f"already at head: {head}")
    else:
        print(f"migrated: {before or '(none)'} -> {head} (head)")
    return 0


async def _current(args: argparse.Namespace) -> int:
    """Show the database's schema revision and the head this version needs.

    session-repo current   # prints "0001 (head)" or "(none); head is 0001"
    """
    config = _config(args)
    url = _sql_url(config)
    if url is None:
        print(_no_schema(config))
        return 0
    current, head = await _revision(url), head_revision()
    if args.json:
        print(json.dumps({"current": current, "head": head, "at_head": current == head}))
    else:
        print(f"{current} (head)" if current == head else f"{current or '(none)'}; head is {head}")
    return 0


async def _get(args: argparse.Namespace) -> int:
    """Print the owner of a live binding; print nothing and exit 1 if there is none.

    session-repo get 7f3c9a0e-5b1d-4c2e-9f00-1a2b3c4d5e6f   # prints machine-a
    session-repo get - < session-id.txt
    """
    session_id = _session_id(args.session_id)
    async with _store(args) as repo:
        owner = await repo.lookup(session_id)
    if args.json:
        print(json.dumps({"owner": owner}))
    elif owner is not None:
        print(owner)
    return EXIT_MISSING if owner is None else 0


async def _set(args: argparse.Namespace) -> int:
    """Bind a session to an owner, replacing any binding it has.

    session-repo set 7f3c9a0e-5b1d-4c2e-9f00-1a2b3c4d5e6f machine-a --ttl 600
    """
    session_id = _session_id(args.session_id)
    async with _store(args) as repo:
        await repo.upsert(session_id, args.alloc_id, args.ttl)
    print(f"bound to {args.alloc_id}")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    """Remove a live binding; exit 1 if there was none.

    session-repo delete 7f3c9a0e-5b1d-4c2e-9f00-1a2b3c4d5e6f
    """
    session_id = _session_id(args.session_id)
    async with _store(args) as repo:
        deleted = await repo.delete(session_id)
    print("deleted" if deleted else "no live binding")
    return 0 if deleted else EXIT_MISSING


async def _cleanup(args: argparse.Namespace) -> int:
    """Remove expired bindings in bounded batches and print how many.

    session-repo cleanup   # shows progress on stderr when it is a terminal
    """
    async with _store(args) as repo:
        if sys.stderr.isatty():
            removed = await _cleanup_with_progress(repo, sys.stderr)
        else:
            removed = await repo.cleanup()
    print(json.dumps({"removed": removed}) if args.json else f"removed {removed} expired bindings")
    return 0


async def _cleanup_with_progress(repo: SessionRepository, stream: TextIO) -> int:
    """Run ``cleanup()`` and report its batches by watching the expired-row gauge."""
    total = (await repo.metrics()).expired
    print(f"cleanup: {total} expired bindings to remove", file=stream, flush=True)
    task = asyncio.ensure_future(repo.cleanup())
    try:
        while not (await asyncio.wait({task}, timeout=PROGRESS_EVERY))[0]:
            left = (await repo.metrics()).expired
            stream.write(f"\rcleanup: {max(total - left, 0)} of {total} removed")
            stream.flush()
        return task.result()
    finally:
        task.cancel()
        stream.write("\r\x1b[K")


async def _stats(args: argparse.Namespace) -> int:
    """Show live and expired bindings and the storage size.

    session-repo stats
    session-repo stats --json   # every SessionStoreMetrics field (counters: this run only)
    """
    async with _store(args) as repo:
        metrics = await repo.metrics()
        backend = str(getattr(repo, "backend", type(repo).__name__))
    if args.json:
        print(json.dumps(dataclasses.asdict(metrics), default=_json_default, indent=2))
        return 0
    size = metrics.storage_bytes
    rows = {
        "backend": backend,
        "live sessions": metrics.sessions,
        "expired rows": f"{metrics.expired} (removed by cleanup)",
        "storage": "n/a" if size is None else f"{size / 1024:.1f} KiB",
    }
    for name, value in rows.items():
        print(f"{name:<14} {value}")
    return 0


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


async def _health(args: argparse.Namespace) -> int:
    """Check the store, with its fallback: exit 0 ok, 1 degraded, 2 down.

    session-repo health --json
    """
    repo = create_session_repository(_config(args, fallback=True))
    try:
        health = await repo.health()
    finally:
        await repo.close()
    if args.json:
        print(json.dumps(dataclasses.asdict(health)))
    else:
        print(f"status:  {health.status}\nbackend: {health.backend}\ndetail:  {health.detail}")
    return HEALTH_EXIT[health.status]


async def _doctor(args: argparse.Namespace) -> int:
    """Check the URL, file permissions, schema, WAL mode and clock; say what to fix.

    session-repo doctor   # exit 0 all ok, 1 warnings, 2 failures
    session-repo doctor --json
    """
    from session_repo.cli.doctor import diagnose

    findings = await diagnose(_config(args))
    if args.json:
        print(json.dumps([dataclasses.asdict(finding) for finding in findings], indent=2))
    else:
        for finding in findings:
            print(f"{finding.level:<4}  {finding.check:<11} {finding.message}")
            if finding.fix:
                print(f"{'':<17} fix: {finding.fix}")
    levels = {finding.level for finding in findings}
    return 2 if "fail" in levels else 1 if "warn" in levels else 0


async def _demo(args: argparse.Namespace) -> int:
    """Run the main job end to end on a throwaway SQLite store, narrated (ignores settings).

    session-repo demo
    session-repo demo --dir ./demo   # keep demo.sqlite to look at
    """
    from session_repo.cli.demo import run_demo

    await run_demo(args.dir, sys.stdout)
    return 0


async def _bench(args: argparse.Namespace) -> int:
    """Measure lookup and upsert throughput and latency of the configured store.

    session-repo bench   # preloads 10000 bindings of its own and deletes them after
    session-repo bench --url memory:// --sessions 1000 --ops 500 --concurrency 1 8
    """
    from session_repo.cli.bench import run_bench

    progress = sys.stderr if sys.stderr.isatty() else None
    async with _store(args, note=False) as repo:
        await run_bench(
            repo,
            sessions=args.sessions,
            ops=args.ops,
            concurrency=args.concurrency,
            out=sys.stdout,
            progress=progress,
        )
    return 0
