"""How the SQL servers remove a binding: a tombstone at once, the row only after a grace.

A bind of a key with no row inserts the generation its ``VALUES`` drew when the
statement began, before it looked at the key (and waited on the key's row, if
another write held it). Were a row of that key made, shown, and removed meanwhile,
the bind would land with a generation older than the one shown. So on PostgreSQL
and MariaDB:

- ``delete``, ``delete_owner`` and ``release`` leave a tombstone (``tombstone``):
  ``expires_at`` is minus the time of the delete, dead at any clock (every clock is
  positive) and saying when it died; the generation stays. A later bind of the key
  takes the conflict branch and draws its generation with the row locked.
- cleanup removes a row only once it has been dead for ``grace`` (``dead_by``): an
  expired row ``grace`` after its expiry, a tombstone ``grace`` after its delete. The
  bindings of an owner lapsed for ``grace`` it tombstones, and removes a grace later:
  one the dead owner wrote a moment ago is as young as any other. A bind that drew
  before such a row was made would have had to run longer than ``grace``;
  ``statement_timeout`` ends it first, as long as ``grace`` exceeds it (and the
  instances' clock skew).

SQLite needs neither: its writers take turns, and a bind draws from the counter row
after it holds the write lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Delete,
    Update,
    bindparam,
    delete,
    update,
)

from session_repo.backends.sql.model import bindings

__all__ = [
    "ANY_EPOCH",
    "NO_EPOCH",
    "cut",
    "dead_by",
    "grace",
    "released_view",
    "removal",
    "tombstone",
]


def tombstone() -> dict[str, Any]:
    """What a server's delete sets: ``expires_at = -now``, dead at any clock, generation kept."""
    return {"expires_at": -bindparam("now", type_=BigInteger)}


def removal(dialect: str, *where: ColumnElement[bool]) -> Delete | Update:
    """Remove the bindings ``where`` picks: SQLite deletes them, the servers tombstone them.

    Args:
        dialect: the database's dialect name.
        where: which bindings.
    """
    if dialect == "sqlite":
        return delete(bindings).where(*where)
    return update(bindings).where(*where).values(tombstone())


def grace(grace_ms: int) -> BindParameter[int]:
    """The ``grace`` parameter, bound to its constant (text statements name it too).

    Args:
        grace_ms: how long cleanup keeps a dead row, in ms.
    """
    return bindparam("grace", value=grace_ms, type_=BigInteger)


def cut(grace_ms: int) -> ColumnElement[int]:
    """``now - grace``: a row dead at or before it has been dead for the whole grace.

    Args:
        grace_ms: how long cleanup keeps a dead row, in ms (bound as a constant).
    """
    now: Any = bindparam("now", type_=BigInteger)
    line: ColumnElement[int] = now - grace(grace_ms)
    return line


def dead_by(grace_ms: int) -> ColumnElement[bool]:
    """The bindings dead for at least ``grace_ms``: expired or deleted at or before ``cut``.

    Args:
        grace_ms: how long cleanup keeps a dead row, in ms.
    """
    line = cut(grace_ms)
    dead: ColumnElement[bool] = bindings.c.expires_at.between(-line, line)
    return dead


ANY_EPOCH = -1
"""``released_view`` of a release with no owner row: a binding of any epoch was live."""
NO_EPOCH = -2
"""``released_view`` of a release whose owner row had lapsed: no binding was live."""


def released_view(owner_row: tuple[int, int] | None, now: int) -> int:
    """The ``epoch`` a server's release judges bindings by, from the owner row it removed.

    The row is removed first, in the release's transaction (locked until it ends, so
    no heartbeat moved it in between); the bindings are then judged as of it.

    Args:
        owner_row: the removed owner row's ``(expires_at, epoch)``, or None without one.
        now: the caller's clock, in ms.
    """
    if owner_row is None:
        return ANY_EPOCH
    owner_end, epoch = owner_row
    return NO_EPOCH if owner_end <= now else int(epoch)
