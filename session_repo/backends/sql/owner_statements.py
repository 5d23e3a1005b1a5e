"""The statements of owner heartbeats, and of cleanup, which removes what lapsed owners leave.

Parameters: alloc, expires, now, batch, epoch (``grace`` is bound when built).

A lapsed owner row is removed only once none of its bindings is left (each
cleanup batch removes bindings first, then the rows with ``NOT EXISTS`` one of
theirs): a binding that outlived its owner's row would count as one of an owner
that never heartbeated, and come back to life.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    Insert,
    Select,
    TextClause,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningDelete

from session_repo.backends.sql.model import bindings, owners
from session_repo.backends.sql.tombstones import ANY_EPOCH, cut, grace, removal, tombstone

__all__ = ["OwnerStatements", "owner_statements_for"]

_o = owners.c
_b = bindings.c


@dataclass(frozen=True, slots=True)
class OwnerStatements:
    """``heartbeat``; ``owners``; ``release`` (after ``delete_owner``); cleanup's two steps.

    ``release_rest`` removes the bindings ``delete_owner`` left (dead ones), then
    ``release_owner`` the row (SQLite, whose writers take turns; on the servers
    ``release_rest`` tombstones them). On the servers a concurrent write can land
    between two statements, so ``release_row`` removes the row first (locking out
    heartbeats), then ``release_live`` tombstones the bindings that were live as of
    it (``tombstones.released_view``: parameter ``epoch``), counted, and
    ``release_dead`` those that were dead but would come alive without the row. A
    binding written in between that was live as of the row outlives the release, as
    one bound after it.
    ``cleanup_lapsed`` removes up to ``batch`` bindings of lapsed owners (on the
    servers, ``marks_lapsed``: tombstones them), and ``cleanup_owners`` the lapsed
    owner rows with no binding left.
    """

    heartbeat: Insert | TextClause
    owners: Select[str, int]
    release_rest: Delete | Update
    release_owner: Delete
    release_row: ReturningDelete[int, int]
    release_live: Update
    release_dead: Update
    cleanup_lapsed: Delete | Update | TextClause
    cleanup_owners: Delete
    marks_lapsed: bool


def _heartbeat(dialect: str) -> Insert | TextClause:
    if dialect in ("mysql", "mariadb"):
        # Assignments run left to right: the epoch is decided on the old expiry.
        return text(
            "INSERT INTO session_owners (alloc_id, expires_at, epoch) "
            "VALUES (:alloc, :expires, 0) ON DUPLICATE KEY UPDATE "
            "epoch = IF(expires_at > :now, epoch, epoch + 1), expires_at = VALUES(expires_at)"
        )
    make = sqlite.insert if dialect == "sqlite" else postgresql.insert
    insert = make(owners).values(
        alloc_id=bindparam("alloc"), expires_at=bindparam("expires"), epoch=literal_column("0")
    )
    # A live row keeps its epoch; a lapsed one starts a new incarnation.
    epoch = case((_o.expires_at > bindparam("now"), _o.epoch), else_=_o.epoch + literal_column("1"))
    set_: dict[str, Any] = {"expires_at": insert.excluded.expires_at, "epoch": epoch}
    heartbeat: Insert = insert.on_conflict_do_update(index_elements=[_o.alloc_id], set_=set_)
    return heartbeat


def _lapsed(dialect: str, grace_ms: int) -> ColumnElement[bool]:
    """Owner rows that lapsed at or before the cut (SQLite: at or before now)."""
    if dialect == "sqlite":
        return _o.expires_at <= bindparam("now")
    return _o.expires_at <= cut(grace_ms)


def _cleanup_lapsed(dialect: str, grace_ms: int) -> Delete | Update | TextClause:
    """Up to ``batch`` bindings of owners lapsed by the cut: SQLite deletes them.

    The servers tombstone them instead (``tombstones``), and cleanup removes them a
    grace later: a binding a dead owner wrote just now is as young as any other.
    """
    if dialect in ("mysql", "mariadb"):
        return text(
            "UPDATE session_bindings SET expires_at = -:now WHERE expires_at > 0 AND alloc_id IN "
            "(SELECT alloc_id FROM session_owners WHERE expires_at <= :now - :grace) LIMIT :batch"
        ).bindparams(grace(grace_ms))
    lapsed = select(_o.alloc_id).where(_lapsed(dialect, grace_ms))
    keys = (
        select(bindings.c.session_key)
        .where(bindings.c.alloc_id.in_(lapsed.scalar_subquery()), bindings.c.expires_at > 0)
        .limit(bindparam("batch"))
    )
    if dialect == "postgresql":  # several instances clean at once: each takes its own rows
        keys = keys.with_for_update(skip_locked=True)
    return removal(dialect, bindings.c.session_key.in_(keys.scalar_subquery()))


def owner_statements_for(dialect: str, grace_ms: int = 0) -> OwnerStatements:
    """Owner statements for a dialect.

    Args:
        dialect: "sqlite", "postgresql", "mysql" or "mariadb".
        grace_ms: how long cleanup keeps what a lapsed owner left, on a server.
    """
    alloc: Any = bindparam("alloc")
    epoch: Any = bindparam("epoch", type_=BigInteger)
    of_alloc = _b.alloc_id == alloc
    was_live = and_(
        _b.expires_at > bindparam("now"), or_(_b.owner_epoch == epoch, epoch == ANY_EPOCH)
    )
    orphan = ~exists().where(bindings.c.alloc_id == _o.alloc_id)
    return OwnerStatements(
        heartbeat=_heartbeat(dialect),
        owners=select(_o.alloc_id, _o.expires_at).where(_o.expires_at > bindparam("now")),
        release_rest=removal(dialect, of_alloc, _b.expires_at > 0),
        release_owner=delete(owners).where(_o.alloc_id == alloc),
        release_row=delete(owners).where(_o.alloc_id == alloc).returning(_o.expires_at, _o.epoch),
        release_live=update(bindings).where(of_alloc, was_live).values(tombstone()),
        release_dead=update(bindings)
        .where(of_alloc, _b.expires_at > 0, ~was_live)
        .values(tombstone()),
        cleanup_lapsed=_cleanup_lapsed(dialect, grace_ms),
        cleanup_owners=delete(owners).where(_lapsed(dialect, grace_ms), orphan),
        marks_lapsed=dialect != "sqlite",
    )
