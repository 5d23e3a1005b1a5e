"""The SQL the raw-driver baselines run: the library's own statements, compiled.

Each baseline runs the statements the library sends for a call made alone (no
batch), compiled from ``statements_for`` for the baseline's driver: SQLite's ``?``
parameters, asyncpg's ``$n`` (with the casts SQLAlchemy's asyncpg dialect adds),
asyncmy's ``%s``. So a baseline does the library's work (owner liveness, fencing
generations) and the ratio shows what the library adds around it. Until
2026-12-06 they ran the pre-lease statements (one table, no generation), less work
than the library has done since owner liveness. Times are integer milliseconds,
as the library stores them. ``SqlCalls.args`` puts a call's values in a
statement's parameter order (``Compiled``: a name used twice is sent twice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.mysql.asyncmy import dialect as asyncmy_dialect
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from benchmarks.workload import digest
from session_repo.backends.sql.compiled import Compiled
from session_repo.backends.sql.statements import statements_for

__all__ = [
    "MARIADB",
    "POSTGRES",
    "PRAGMAS",
    "SQLITE",
    "SqlCalls",
    "digest",
    "live_row",
    "now_ms",
]


@dataclass(frozen=True)
class SqlCalls:
    """One dialect's statements for a lone call, as the library compiles them.

    Attributes:
        lookup: PostgreSQL and SQLite: the owner if live (key, now); MariaDB: the
            binding's row with its owner's (key), judged by ``live_row``.
        upsert: key, alloc, expires, now.
        claim: key, alloc, expires, now, replacing; returns the lease (PostgreSQL,
            MariaDB; SQLite only when it took the session).
        current: the binding's lease (key), for SQLite's claim that did not take it.
    """

    lookup: Compiled
    upsert: Compiled
    claim: Compiled
    current: Compiled


def _calls(dialect_name: str, dialect: Any) -> SqlCalls:
    statements = statements_for(dialect_name)
    returning = statements.claim_returning  # MariaDB's: the lease in the same round trip
    return SqlCalls(
        lookup=Compiled.of(
            statements.lookup if returning is None else statements.row_for_lookup, dialect
        ),
        upsert=Compiled.of(statements.upsert, dialect),
        claim=Compiled.of(statements.claim if returning is None else returning, dialect),
        current=Compiled.of(statements.current, dialect),
    )


SQLITE = _calls("sqlite", sqlite.dialect(paramstyle="qmark"))
POSTGRES = _calls("postgresql", asyncpg_dialect())  # type: ignore[no-untyped-call]
MARIADB = _calls("mysql", asyncmy_dialect())
# As the library's connections: WAL (persistent in the file), synchronous=NORMAL, busy timeout.
PRAGMAS = ("PRAGMA busy_timeout = 5000", "PRAGMA synchronous = NORMAL")


def live_row(row: Any, now: int) -> str | None:
    """The owner in a MariaDB lookup's row (alloc, expires, epoch, owner's expiry and
    epoch) if the binding is live: unexpired, and its owner never heartbeat or is
    alive in the epoch the binding was written in."""
    if row is None or row[1] <= now:
        return None
    return str(row[0]) if row[3] is None or (now < row[3] and row[4] == row[2]) else None


def now_ms() -> int:
    return int(time.time() * 1000)
