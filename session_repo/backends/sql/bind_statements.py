"""The statements that (re)bind a session: ``upsert`` and ``claim``, with the generation rules.

A write stores the new owner's heartbeat epoch (0 when it has no row). The
generation stays only when the old binding was live and of the same owner;
otherwise a fresh one is taken (``liveness.fresh_generation``), inside the
conflict branch, after the row is locked. ``claim`` is one atomic statement per
dialect, never select-then-insert:

- SQLite: ``INSERT .. ON CONFLICT DO UPDATE .. WHERE <may take> RETURNING`` (its
  writers take turns); a claim that took nothing reads the holder's row after it.
- PostgreSQL always updates (``SET col = CASE WHEN <may take> THEN new ELSE col
  END``), so the row is locked and ``RETURNING`` gives the lease as the conflict
  check itself left it (with a failing ``WHERE``, READ COMMITTED would leave the
  row unlocked and return nothing).
- MariaDB: ``ON DUPLICATE KEY UPDATE``, whose assignments run left to right: the
  first one computes "live" and "may take" once into session variables, from the
  old row, before any column changes; ``RETURNING`` (10.5+) gives the lease.

Parameters: key, alloc, expires, now, replacing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, and_, bindparam, case, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert, ReturningInsert

from session_repo.backends.sql.liveness import fresh_generation, live, owner_epoch
from session_repo.backends.sql.model import GENERATION_SOURCE, bindings

__all__ = [
    "MARIADB_LIVE",
    "mariadb_claim",
    "mariadb_row",
    "mariadb_upsert",
    "pg_or_sqlite_claim",
    "pg_or_sqlite_upsert",
]

_b = bindings.c
LEASE = (_b.alloc_id, _b.generation, _b.expires_at)
_TAKEN_OVER = ("alloc_id", "expires_at", "owner_epoch")

MARIADB_LIVE = (
    "(expires_at > :now AND NOT EXISTS (SELECT 1 FROM session_owners o "
    "WHERE o.alloc_id = session_bindings.alloc_id "
    "AND (o.expires_at <= :now OR o.epoch <> session_bindings.owner_epoch)))"
)
"""``liveness.live`` inside MariaDB's ``ON DUPLICATE KEY UPDATE``, on the old row."""
_MARIADB_COLUMNS = "session_key, alloc_id, expires_at, generation, owner_epoch"
_MARIADB_FRESH = f"NEXTVAL({GENERATION_SOURCE})"


def _insert(dialect: str) -> Any:
    make = sqlite.insert if dialect == "sqlite" else postgresql.insert
    return make(bindings).values(
        session_key=bindparam("key"),
        alloc_id=bindparam("alloc"),
        expires_at=bindparam("expires"),
        generation=fresh_generation(dialect),
        owner_epoch=owner_epoch(bindparam("alloc")),
    )


def pg_or_sqlite_upsert(dialect: str) -> Insert:
    """``upsert`` on SQLite or PostgreSQL: a new owner or a dead binding takes a fresh one.

    Args:
        dialect: "sqlite" or "postgresql".
    """
    insert = _insert(dialect)
    kept = and_(_b.alloc_id == insert.excluded.alloc_id, live(bindparam("now"), conflict=True))
    set_: dict[str, Any] = {name: insert.excluded[name] for name in _TAKEN_OVER}
    set_["generation"] = case((kept, _b.generation), else_=fresh_generation(dialect))
    upsert: Insert = insert.on_conflict_do_update(index_elements=[_b.session_key], set_=set_)
    return upsert


def pg_or_sqlite_claim(dialect: str) -> ReturningInsert[str, int, int]:
    """``claim`` on SQLite or PostgreSQL, returning the lease (``alloc, generation, expires``).

    SQLite returns no row when the claim took nothing; PostgreSQL always returns one.

    Args:
        dialect: "sqlite" or "postgresql".
    """
    insert = _insert(dialect)
    now: Any = bindparam("now")
    is_live = live(now, conflict=True)
    take = or_(~is_live, _b.alloc_id == bindparam("replacing"))
    # Taking over one's own live binding (``replacing`` is the claimant) keeps it.
    renewed = and_(is_live, _b.alloc_id == insert.excluded.alloc_id)
    fresh = fresh_generation(dialect)
    if dialect == "sqlite":  # writers take turns: update only when taking
        set_: dict[str, Any] = {name: insert.excluded[name] for name in _TAKEN_OVER}
        set_["generation"] = case((renewed, _b.generation), else_=fresh)
        claim = insert.on_conflict_do_update(index_elements=[_b.session_key], set_=set_, where=take)
    else:
        set_ = {name: case((take, insert.excluded[name]), else_=_b[name]) for name in _TAKEN_OVER}
        set_["generation"] = case((and_(take, ~renewed), fresh), else_=_b.generation)
        claim = insert.on_conflict_do_update(index_elements=[_b.session_key], set_=set_)
    returning: ReturningInsert[str, int, int] = claim.returning(*LEASE)
    return returning


def mariadb_row(suffix: str = "") -> str:
    """One row of MariaDB's ``VALUES``: parameters ``key{suffix}``, ``alloc{suffix}``, ..

    Args:
        suffix: what the row's parameter names end with (its number in a batch).
    """
    epoch = f"COALESCE((SELECT epoch FROM session_owners WHERE alloc_id = :alloc{suffix}), 0)"
    return f"(:key{suffix}, :alloc{suffix}, :expires{suffix}, {_MARIADB_FRESH}, {epoch})"


def mariadb_upsert(rows: list[str]) -> TextClause:
    """MariaDB's ``upsert`` of ``rows`` (``mariadb_row``s) with one ``now``.

    Args:
        rows: the ``VALUES`` rows.
    """
    return text(
        f"INSERT INTO session_bindings ({_MARIADB_COLUMNS}) VALUES {', '.join(rows)} "
        "ON DUPLICATE KEY UPDATE "
        f"generation = IF(alloc_id = VALUES(alloc_id) AND {MARIADB_LIVE}, "
        f"generation, {_MARIADB_FRESH}), "
        "alloc_id = VALUES(alloc_id), expires_at = VALUES(expires_at), "
        "owner_epoch = VALUES(owner_epoch)"
    )


def mariadb_claim(rows: list[str], *, replacing: bool, returning: str = "") -> TextClause:
    """MariaDB's ``claim`` of ``rows`` (``mariadb_row``s) with one ``now``.

    Args:
        rows: the ``VALUES`` rows.
        replacing: the statement takes a ``replacing`` parameter (a claim alone).
        returning: a ``RETURNING`` list (MariaDB 10.5+), or "" for none.
    """
    take = f"NOT (@session_repo_live := {MARIADB_LIVE})"
    if replacing:
        take += " OR alloc_id = :replacing"
    sql = (
        f"INSERT INTO session_bindings ({_MARIADB_COLUMNS}) VALUES {', '.join(rows)} "
        "ON DUPLICATE KEY UPDATE "
        f"generation = IF(@session_repo_take := ({take}), "
        f"IF(@session_repo_live AND alloc_id = VALUES(alloc_id), generation, {_MARIADB_FRESH}), "
        "generation), "
        "alloc_id = IF(@session_repo_take, VALUES(alloc_id), alloc_id), "
        "expires_at = IF(@session_repo_take, VALUES(expires_at), expires_at), "
        "owner_epoch = IF(@session_repo_take, VALUES(owner_epoch), owner_epoch)"
    )
    return text(f"{sql} RETURNING {returning}" if returning else sql)
