"""The ``session-repo`` commands: one coroutine function each, given the parsed arguments.

Each returns the exit status. Its docstring is its help: a summary, a blank line,
then examples (``parser.py`` shows them). A session id is never echoed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from alembic import command
from session_repo.backends.sql.engine import create_engine
from session_repo.backends.sql.migrate import alembic_config, head_revision, upgrade
from session_repo.cli.leases import lease, owners
from session_repo.cli.output import EXIT_MISSING, cleanup_with_progress, json_default
from session_repo.cli.store import (
    backend_name,
    cli_config,
    database_revision,
    no_schema,
    open_store,
    read_session_id,
    sql_url,
)
from session_repo.factory import create_session_repository

__all__ = ["COMMANDS", "Command"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
"""A command: given the parsed arguments, it returns the exit status."""

HEALTH_EXIT = {"ok": 0, "degraded": 1, "down": 2}


async def _migrate(args: argparse.Namespace) -> int:
    """Upgrade the database schema to head (nothing to do for memory:// or a disabled store).

    session-repo migrate --url postgresql+asyncpg://app@db.internal/app
    session-repo migrate --sql > schema.sql   # the DDL for a DBA; runs nothing
    """
    config = cli_config(args)
    url = sql_url(config)
    if url is None:
        print(no_schema(config))
        return 0
    if args.sql:
        alembic = alembic_config(url)
        alembic.output_buffer = sys.stdout
        command.upgrade(alembic, "head", sql=True)
        return 0
    before = await database_revision(url)
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
    config = cli_config(args)
    url = sql_url(config)
    if url is None:
        print(no_schema(config))
        return 0
    current, head = await database_revision(url), head_revision()
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
    session_id = read_session_id(args.session_id)
    async with open_store(args) as repo:
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
    session_id = read_session_id(args.session_id)
    async with open_store(args) as repo:
        await repo.upsert(session_id, args.alloc_id, args.ttl)
    print(f"bound to {args.alloc_id}")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    """Remove a live binding; exit 1 if there was none.

    session-repo delete 7f3c9a0e-5b1d-4c2e-9f00-1a2b3c4d5e6f
    """
    session_id = read_session_id(args.session_id)
    async with open_store(args) as repo:
        deleted = await repo.delete(session_id)
    print("deleted" if deleted else "no live binding")
    return 0 if deleted else EXIT_MISSING


async def _cleanup(args: argparse.Namespace) -> int:
    """Remove expired bindings in bounded batches and print how many.

    session-repo cleanup   # shows progress on stderr when it is a terminal
    """
    async with open_store(args) as repo:
        if sys.stderr.isatty():
            removed = await cleanup_with_progress(repo, sys.stderr)
        else:
            removed = await repo.cleanup()
    print(json.dumps({"removed": removed}) if args.json else f"removed {removed} expired bindings")
    return 0


async def _stats(args: argparse.Namespace) -> int:
    """Show live and expired bindings, live owners and the storage size.

    session-repo stats
    session-repo stats --json   # every SessionStoreMetrics field (counters: this run only)
    """
    async with open_store(args) as repo:
        metrics = await repo.metrics()
        backend = backend_name(repo)
    if args.json:
        print(json.dumps(dataclasses.asdict(metrics), default=json_default, indent=2))
        return 0
    size = metrics.storage_bytes
    rows = {
        "backend": backend,
        "live sessions": metrics.sessions,
        "expired rows": f"{metrics.expired} (removed by cleanup)",
        "live owners": f"{metrics.owners} (with a heartbeat)",
        "storage": "n/a" if size is None else f"{size / 1024:.1f} KiB",
    }
    for name, value in rows.items():
        print(f"{name:<14} {value}")
    return 0


async def _health(args: argparse.Namespace) -> int:
    """Check the store, with its fallback: exit 0 ok, 1 degraded, 2 down.

    session-repo health --json
    """
    repo = create_session_repository(cli_config(args, fallback=True))
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

    findings = await diagnose(cli_config(args))
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
    async with open_store(args, warn=False) as repo:
        await run_bench(
            repo,
            sessions=args.sessions,
            ops=args.ops,
            concurrency=args.concurrency,
            out=sys.stdout,
            progress=progress,
        )
    return 0


COMMANDS: tuple[Command, ...] = (
    _migrate, _current, _get, _set, _delete, lease, owners, _cleanup, _stats, _health, _doctor,
    _demo, _bench,
)  # fmt: skip
"""Every command, in the order ``--help`` lists them; each is named by its function."""
