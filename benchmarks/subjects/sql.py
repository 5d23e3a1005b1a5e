"""The SQL the raw-driver baselines run: what the library's statements compile to.

SQLite (``?`` parameters), PostgreSQL (asyncpg's ``$n``, with the casts
SQLAlchemy's asyncpg dialect adds) and MariaDB (asyncmy's ``%s``). Times are
integer milliseconds, as the library stores them.
"""

from __future__ import annotations

import time

from benchmarks.workload import TTL_S, digest

__all__ = [
    "CLAIM",
    "LOOKUP",
    "MY_CLAIM",
    "MY_LOOKUP",
    "MY_UPSERT",
    "OWNER",
    "PG_CLAIM",
    "PG_LOOKUP",
    "PG_OWNER",
    "PG_UPSERT",
    "PRAGMAS",
    "UPSERT",
    "digest",
    "expiry_ms",
    "now_ms",
]

LOOKUP = "SELECT alloc_id FROM session_bindings WHERE session_key = ? AND expires_at > ?"
OWNER = "SELECT alloc_id FROM session_bindings WHERE session_key = ?"
UPSERT = (
    "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (session_key) DO UPDATE "
    "SET alloc_id = excluded.alloc_id, expires_at = excluded.expires_at"
)
# Takes the row only if it is expired or held by `replacing`; RETURNING says who won.
CLAIM = (
    UPSERT + " WHERE session_bindings.expires_at <= ? OR session_bindings.alloc_id = ? "
    "RETURNING alloc_id"
)
# As the library's connections: WAL (persistent in the file), synchronous=NORMAL, busy timeout.
PRAGMAS = ("PRAGMA busy_timeout = 5000", "PRAGMA synchronous = NORMAL")

PG_LOOKUP = (
    "SELECT session_bindings.alloc_id FROM session_bindings "
    "WHERE session_bindings.session_key = $1::BYTEA AND session_bindings.expires_at > $2::BIGINT"
)
PG_OWNER = (
    "SELECT session_bindings.alloc_id FROM session_bindings "
    "WHERE session_bindings.session_key = $1::BYTEA"
)
PG_UPSERT = (
    "INSERT INTO session_bindings (session_key, alloc_id, expires_at) "
    "VALUES ($1::BYTEA, $2::VARCHAR, $3::BIGINT) ON CONFLICT (session_key) DO UPDATE "
    "SET alloc_id = excluded.alloc_id, expires_at = excluded.expires_at"
)
PG_CLAIM = (
    PG_UPSERT + " WHERE session_bindings.expires_at <= $4::BIGINT "
    "OR session_bindings.alloc_id = $5::VARCHAR RETURNING session_bindings.alloc_id"
)

MY_LOOKUP = (
    "SELECT session_bindings.alloc_id FROM session_bindings "
    "WHERE session_bindings.session_key = %s AND session_bindings.expires_at > %s"
)
MY_UPSERT = (
    "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES (%s, %s, %s) "
    "ON DUPLICATE KEY UPDATE alloc_id = VALUES(alloc_id), expires_at = VALUES(expires_at)"
)
# The library's claim (the condition evaluated once into a session variable), with
# RETURNING appended: MariaDB >= 10.5 returns the row as the statement left it, so the
# owner comes back in the same round trip. Parameters: key, alloc, expires, now, replacing.
MY_CLAIM = (
    "INSERT INTO session_bindings (session_key, alloc_id, expires_at) VALUES (%s, %s, %s) "
    "ON DUPLICATE KEY UPDATE "
    "alloc_id = IF(@session_repo_take := (expires_at <= %s OR alloc_id = %s), "
    "VALUES(alloc_id), alloc_id), "
    "expires_at = IF(@session_repo_take, VALUES(expires_at), expires_at) RETURNING alloc_id"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def expiry_ms() -> int:
    return now_ms() + TTL_S * 1000
