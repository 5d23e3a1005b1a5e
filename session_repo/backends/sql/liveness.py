"""The one liveness rule, in SQL and in Python, and the generation source of each dialect.

A binding is live at ``now`` iff ``now < expires_at`` and its owner has no row in
``session_owners`` or that row is live (``now < its expires_at``) and of the
binding's ``owner_epoch``. Every statement that reads or writes a binding by
liveness says it with ``live()``, a ``NOT EXISTS`` probe of ``session_owners`` by
its primary key; the batched reads fetch the owner row beside the binding (one
outer join by that key) and decide with ``is_live`` for each caller's ``now``.

Fresh generations (``fresh_generation``) come from one source per database, so
they increase for a session across deletes, expiry and cleanup, which remove its
row:

- PostgreSQL: ``nextval('session_generation')``, a SEQUENCE. Every call returns a
  value above every value returned before it, to any connection, committed or
  not (and a crash or failover skips ahead, never back).
- MariaDB: ``NEXTVAL(session_generation)``, a SEQUENCE: the same promise (its
  cache is the server's, shared by all connections).
- SQLite: the counter row of the ``session_generation`` table plus one. Triggers
  (revision 0002) move the counter up to any generation a binding is given, in
  the same statement; SQLite's writers take turns (``BEGIN IMMEDIATE``), so no
  other write sees the counter between the read and the move.

On the servers a fresh generation is taken inside ``ON CONFLICT DO UPDATE`` /
``ON DUPLICATE KEY UPDATE``, once the key's row is locked, so it is above the
generation of the row it replaces, whatever committed meanwhile.
A write that finds no row inserts the generation its ``VALUES`` drew earlier, so
the servers never remove a row at once (``tombstones``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Exists,
    Select,
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql.elements import KeyedColumnElement

from session_repo._core.storage import LeaseRow
from session_repo.backends.sql.model import GENERATION_SOURCE, bindings, owners

__all__ = [
    "KEY_AT",
    "LEASE_WIDTH",
    "LOOKUP_WIDTH",
    "OWNED_ROW",
    "answer_read",
    "answer_reads",
    "fresh_generation",
    "is_live",
    "live",
    "owner_epoch",
    "rows_with_owners",
]

_FRESH = {
    "postgresql": f"nextval('{GENERATION_SOURCE}')",
    "mysql": f"NEXTVAL({GENERATION_SOURCE})",
    "sqlite": f"((SELECT value FROM {GENERATION_SOURCE}) + 1)",
}
_FRESH["mariadb"] = _FRESH["mysql"]

# Short aliases: MariaDB parses each statement's text anew, and a shorter one is faster.
_row = bindings.alias("b")
_owner = owners.alias("o")
OWNED_ROW = (
    _row.c.alloc_id,
    _row.c.expires_at,
    _row.c.owner_epoch,
    _owner.c.expires_at.label("o_expires_at"),
    _owner.c.epoch.label("o_epoch"),
    _row.c.generation,
    _row.c.session_key,
)
"""What the batched reads fetch: the binding, and its owner's row (NULLs without one).

Ordered so that a read of one key can stop early: a lookup needs the first
``LOOKUP_WIDTH`` columns, a lease read the first ``LEASE_WIDTH``, and only a batch
needs the key (``KEY_AT``). Every column costs the client its metadata on each
result (MariaDB sends it anew every time: about 12k instructions in asyncmy).
"""
LOOKUP_WIDTH = 5
LEASE_WIDTH = 6
KEY_AT = 6


# The old row's columns by name, for a probe that SQLAlchemy must not give a FROM of its own.
_OLD_ROW = SimpleNamespace(
    **{
        name: literal_column(f"session_bindings.{name}", bindings.c[name].type)
        for name in ("alloc_id", "owner_epoch")
    }
)


def fresh_generation(dialect: str) -> ColumnElement[int]:
    """A new generation, above any this database gave before.

    Args:
        dialect: "sqlite", "postgresql" or "mysql" (MariaDB).
    """
    return literal_column(_FRESH[dialect])


def live(now: Any, *, conflict: bool = False) -> ColumnElement[bool]:
    """The liveness rule on the ``session_bindings`` row a statement is at, at ``now``.

    Args:
        now: the front's clock in ms (a bound parameter).
        conflict: the statement is in the conflict branch of an upsert, where the old
            row is named but no FROM holds it (SQLAlchemy would add one to the probe).
    """
    row = _OLD_ROW if conflict else bindings.c
    dead_owner: Exists = exists().where(
        owners.c.alloc_id == row.alloc_id,
        or_(owners.c.expires_at <= now, owners.c.epoch != row.owner_epoch),
    )
    return and_(bindings.c.expires_at > now, ~dead_owner)


def owner_epoch(alloc: KeyedColumnElement[Any] | Any) -> ColumnElement[int]:
    """The epoch a binding of ``alloc`` is written with: its owner row's, or 0 without one.

    Args:
        alloc: the new owner (a bound parameter or a column).
    """
    epoch = select(owners.c.epoch).where(owners.c.alloc_id == alloc).scalar_subquery()
    return func.coalesce(epoch, literal_column("0"))


def rows_with_owners(
    keys: Callable[[Any], ColumnElement[bool]], width: int = len(OWNED_ROW)
) -> Select[Any]:
    """``OWNED_ROW`` (its first ``width`` columns) of the bindings ``keys`` picks, live or not.

    Args:
        keys: the ``WHERE``, given the key column (of the statement's alias).
        width: how many of ``OWNED_ROW``'s columns to read.
    """
    joined = _row.outerjoin(_owner, _owner.c.alloc_id == _row.c.alloc_id)
    return select(*OWNED_ROW[:width]).select_from(joined).where(keys(_row.c.session_key))


def is_live(row: Any, now: int) -> bool:
    """The liveness rule on an ``OWNED_ROW`` row, at ``now``.

    Args:
        row: ``(alloc_id, expires_at, owner_epoch, owner_expires_at, owner_row_epoch,
            ..)``: ``OWNED_ROW``, or its first ``LOOKUP_WIDTH`` columns.
        now: the caller's clock, in ms.
    """
    if row[1] <= now:
        return False
    owner_end = row[3]
    return owner_end is None or (now < owner_end and row[4] == row[2])


def answer_read(row: Any, now: int, lease: bool) -> str | LeaseRow | None:
    """What a lookup (the owner) or a lease read (``lease``) answers from an ``OWNED_ROW``.

    Args:
        row: the key's row (``OWNED_ROW``, or at least ``LEASE_WIDTH`` of it for a lease
            read and ``LOOKUP_WIDTH`` for a lookup), or None when it has none.
        now: the caller's clock, in ms.
        lease: answer the ``LeaseRow``, not just the owner.
    """
    if row is None or not is_live(row, now):
        return None
    return LeaseRow(row[0], row[5], row[1]) if lease else row[0]


def answer_reads(
    requests: list[tuple[bytes, int, bool]], found: dict[bytes, Any]
) -> list[str | LeaseRow | None]:
    """``answer_read`` for each ``(key, now, lease)``, from the rows ``found`` by key.

    Args:
        requests: the reads of one batch.
        found: the rows one query read for their keys.
    """
    return [answer_read(found.get(key), now, lease) for key, now, lease in requests]
