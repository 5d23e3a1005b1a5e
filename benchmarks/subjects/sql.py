"""The SQL the raw-driver baselines run: what the library's statements compile to on SQLite."""

from __future__ import annotations

import hashlib
import time

from benchmarks.workload import TTL_S

__all__ = ["CLAIM", "LOOKUP", "OWNER", "PRAGMAS", "UPSERT", "digest", "expiry_ms", "now_ms"]

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


def digest(session_id: str) -> bytes:
    """The stored key, as the library computes it."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


def now_ms() -> int:
    return int(time.time() * 1000)


def expiry_ms() -> int:
    return now_ms() + TTL_S * 1000
