"""The statements each SQL dialect runs, built once per repository.

Every read and write of a binding follows the one liveness rule
(``liveness.live``: unexpired, and its owner's heartbeat, if it ever beat, live
and of the binding's epoch); the writes that (re)bind follow the generation rules
(``bind_statements``), the owner heartbeats and cleanup ``owner_statements``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    LargeBinary,
    Select,
    TextClause,
    Update,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.dml import Insert, ReturningInsert

from session_repo.backends.sql.bind_statements import (
    LEASE,
    mariadb_claim,
    mariadb_row,
    mariadb_upsert,
    pg_or_sqlite_claim,
    pg_or_sqlite_upsert,
)
from session_repo.backends.sql.liveness import LEASE_WIDTH, LOOKUP_WIDTH, live, rows_with_owners
from session_repo.backends.sql.model import bindings, owners
from session_repo.backends.sql.owner_statements import OwnerStatements, owner_statements_for
from session_repo.backends.sql.tombstones import dead_by, grace, removal

__all__ = ["Statements", "statements_for"]

_b = bindings.c
_ONE: Any = literal_column("1")
_ZERO: Any = literal_column("0")

# Bytes the tables take, per dialect: SQLite's whole file, the others' tables and indexes.
_STORAGE_SIZE = {
    "sqlite": "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
    "postgresql": (
        "SELECT pg_total_relation_size('session_bindings') "
        "+ pg_total_relation_size('session_owners')"
    ),
    "mysql": (
        "SELECT SUM(data_length + index_length) FROM information_schema.tables "
        "WHERE table_schema = DATABASE() "
        "AND table_name IN ('session_bindings', 'session_owners')"
    ),
}


@dataclass(frozen=True, slots=True)
class Statements:
    """Parameters: key, keys, alloc, expires, now, replacing, generation, batch.

    ``claim`` returns the lease (``alloc_id, generation, expires_at``) where
    ``claim_returns_lease``: always on PostgreSQL, when it took the session on
    SQLite; otherwise ``current`` reads it in the same transaction, where the row
    is locked. ``claim_returning`` (MariaDB 10.5 and later only, None elsewhere) is
    ``claim`` returning the lease as the statement left it: one round trip.

    ``rows`` and ``rows_many`` read ``liveness.OWNED_ROW`` whatever the liveness
    (the batched lookups decide with each caller's ``now``): ``rows_many`` takes an
    expanding ``keys`` list (SQLite, MariaDB) or one array (PostgreSQL's ``= ANY``);
    ``row_for_lookup`` and ``row_for_lease`` read one key's, only the columns each
    judges (MariaDB sends a result's column metadata anew every time).
    ``touch_held`` and ``delete_held`` act only on a live binding of ``generation``.
    On the servers the deletes leave a tombstone, and cleanup removes a dead row only
    once it has been dead for the grace (``tombstones``).
    ``cleanup_batch`` removes up to ``batch`` expired bindings; then the
    ``owner`` statements' ``cleanup_lapsed`` and ``cleanup_owners`` run.
    ``gauges`` reads (live, dead, live owners).
    """

    lookup: Select[str]
    lease: Select[str, int, int]
    rows: Select[Any]
    rows_many: Select[Any]
    row_for_lookup: Select[Any]
    row_for_lease: Select[Any]
    storage_size: TextClause
    current: Select[str, int, int]
    upsert: Insert | TextClause
    claim: ReturningInsert[str, int, int] | TextClause
    claim_returns_lease: bool
    claim_returning: TextClause | None
    touch: Update
    touch_held: Update
    delete: Delete | Update
    delete_held: Delete | Update
    delete_owner: Delete | Update
    cleanup_batch: Delete | TextClause
    gauges: Select[Any]
    owner: OwnerStatements


def _cleanup_expired(dialect: str, grace_ms: int) -> Delete | TextClause:
    if dialect in ("mysql", "mariadb"):
        return text(
            "DELETE FROM session_bindings WHERE expires_at BETWEEN :grace - :now AND :now - :grace "
            "ORDER BY expires_at LIMIT :batch"
        ).bindparams(grace(grace_ms))
    dead = _b.expires_at <= bindparam("now") if dialect == "sqlite" else dead_by(grace_ms)
    keys = select(_b.session_key).where(dead).limit(bindparam("batch"))
    if dialect == "postgresql":
        # Several instances may clean at once: each takes rows nobody else holds.
        keys = keys.with_for_update(skip_locked=True)
    return delete(bindings).where(_b.session_key.in_(keys.scalar_subquery()))


def _gauges() -> Select[Any]:
    """(live, dead, live owners): the bindings outer-joined to their owners' rows."""
    now: Any = bindparam("now")
    o = owners.c
    alive = and_(
        _b.expires_at > now,
        or_(o.alloc_id.is_(None), and_(o.expires_at > now, o.epoch == _b.owner_epoch)),
    )
    live_owners = select(func.count()).select_from(owners).where(o.expires_at > now)
    joined = bindings.outerjoin(owners, o.alloc_id == _b.alloc_id)
    return select(
        func.sum(case((alive, _ONE), else_=_ZERO)),
        func.sum(case((alive, _ZERO), else_=_ONE)),
        live_owners.scalar_subquery().correlate(None),
    ).select_from(joined)


def _is_key(column: Any) -> ColumnElement[bool]:
    picked: ColumnElement[bool] = column == bindparam("key")
    return picked


def _any_of_keys(column: Any) -> ColumnElement[bool]:
    picked: ColumnElement[bool] = column == any_(bindparam("keys", type_=ARRAY(LargeBinary)))
    return picked


def _in_keys(column: Any) -> ColumnElement[bool]:
    picked: ColumnElement[bool] = column.in_(bindparam("keys", expanding=True))
    return picked


def statements_for(dialect: str, *, cleanup_grace_ms: int = 0) -> Statements:
    """Statements for a dialect.

    Args:
        dialect: "sqlite", "postgresql", "mysql" or "mariadb".
        cleanup_grace_ms: how long cleanup keeps a dead row on a server
            (``tombstones``); SQLite removes it at once.

    Raises:
        ValueError: another dialect.
    """
    claim: ReturningInsert[str, int, int] | TextClause
    upsert: Insert | TextClause
    claim_returning: TextClause | None = None
    if dialect in ("sqlite", "postgresql"):
        upsert = pg_or_sqlite_upsert(dialect)
        claim = pg_or_sqlite_claim(dialect)
        claim_returns_lease = True
    elif dialect in ("mysql", "mariadb"):
        upsert = mariadb_upsert([mariadb_row()])
        claim = mariadb_claim([mariadb_row()], replacing=True)
        # MariaDB's RETURNING gives the row as the statement left it (the row stays
        # locked until the statement ends): the lease, with no second read.
        claim_returning = mariadb_claim(
            [mariadb_row()], replacing=True, returning="alloc_id, generation, expires_at"
        )
        claim_returns_lease = False
    else:  # pragma: no cover - parse_url refuses other dialects first
        raise ValueError(f"unsupported dialect {dialect!r}")
    now: Any = bindparam("now")
    is_live = live(now)
    key = _b.session_key == bindparam("key")
    held = and_(key, is_live, _b.generation == bindparam("generation", type_=BigInteger))
    many = _any_of_keys if dialect == "postgresql" else _in_keys
    extend: dict[str, Any] = {"expires_at": bindparam("expires")}
    return Statements(
        lookup=select(_b.alloc_id).where(key, is_live),
        lease=select(*LEASE).where(key, is_live),
        rows=rows_with_owners(_is_key),
        rows_many=rows_with_owners(many),
        row_for_lookup=rows_with_owners(_is_key, LOOKUP_WIDTH),
        row_for_lease=rows_with_owners(_is_key, LEASE_WIDTH),
        storage_size=text(_STORAGE_SIZE["mysql" if dialect == "mariadb" else dialect]),
        current=select(*LEASE).where(key),
        upsert=upsert,
        claim=claim,
        claim_returns_lease=claim_returns_lease,
        claim_returning=claim_returning,
        touch=update(bindings).where(key, is_live).values(extend),
        touch_held=update(bindings).where(held).values(extend),
        delete=removal(dialect, key, is_live),
        delete_held=removal(dialect, held),
        delete_owner=removal(dialect, _b.alloc_id == bindparam("alloc"), is_live),
        cleanup_batch=_cleanup_expired(dialect, cleanup_grace_ms),
        gauges=_gauges(),
        owner=owner_statements_for(dialect, cleanup_grace_ms),
    )
