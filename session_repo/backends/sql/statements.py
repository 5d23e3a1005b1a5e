"""The statements each SQL dialect runs, built once per repository.

``claim`` is a single atomic statement per dialect, never select-then-insert:
SQLite uses ``INSERT .. ON CONFLICT DO UPDATE .. WHERE`` with ``RETURNING`` (its
writers take turns); PostgreSQL always updates (``SET col = CASE WHEN <may take>
THEN new ELSE col END``) so the row is locked and ``RETURNING`` names the owner as
of the conflict check itself; MariaDB/MySQL use ``ON DUPLICATE KEY UPDATE`` whose condition is
evaluated once into a session variable (assignments there run left to right).
When the conflicting row is live and not ``replacing``, nothing is updated and
the owner is read back inside the same transaction, where the row is locked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Delete,
    LargeBinary,
    Select,
    String,
    TextClause,
    Update,
    any_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.dml import Insert, ReturningInsert

from session_repo.backends.sql.model import bindings

__all__ = ["Statements", "claims_of", "pg_claims", "rows_of_keys", "statements_for"]

_key = bindings.c.session_key
_alloc = bindings.c.alloc_id
_expires = bindings.c.expires_at


# Bytes the table takes, per dialect: SQLite's whole file, the others' table and indexes.
_STORAGE_SIZE = {
    "sqlite": "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
    "postgresql": "SELECT pg_total_relation_size('session_bindings')",
    "mysql": (
        "SELECT data_length + index_length FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = 'session_bindings'"
    ),
}


@dataclass(frozen=True, slots=True)
class Statements:
    """Parameters: key, keys, alloc, expires, now, replacing, batch.

    ``claim_returning`` (MariaDB 10.5 and later only, None elsewhere) is ``claim``
    returning the row's owner as the statement left it: one round trip.

    ``rows`` and ``rows_many`` read rows whatever their expiry (the batched
    lookups compare each caller's ``now`` themselves): ``rows_many`` takes an
    expanding ``keys`` list (SQLite, MariaDB) or one array (PostgreSQL's ``= ANY``).
    """

    lookup: Select[str]
    rows: Select[bytes, str, int]
    rows_many: Select[bytes, str, int]
    storage_size: TextClause
    owner: Select[str]
    upsert: Insert
    claim: ReturningInsert[str] | TextClause
    claim_returns_owner: bool
    claim_returning: TextClause | None
    touch: Update
    delete: Delete
    delete_owner: Delete
    cleanup_batch: Delete | TextClause
    gauges: Select[int | None, int | None]


def statements_for(dialect: str) -> Statements:
    """Statements for a dialect.

    Args:
        dialect: "sqlite", "postgresql", "mysql" or "mariadb".

    Raises:
        ValueError: another dialect.
    """
    values: dict[str, Any] = {
        "session_key": bindparam("key"),
        "alloc_id": bindparam("alloc"),
        "expires_at": bindparam("expires"),
    }
    claimable = or_(_expires <= bindparam("now"), _alloc == bindparam("replacing"))
    expired_keys = select(_key).where(_expires <= bindparam("now")).limit(bindparam("batch"))
    claim: ReturningInsert[str] | TextClause
    claim_returning: TextClause | None = None
    cleanup_batch: Delete | TextClause
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(bindings)
        insert = insert.values(values)
        excluded = {"alloc_id": insert.excluded.alloc_id, "expires_at": insert.excluded.expires_at}
        upsert: Insert = insert.on_conflict_do_update(index_elements=[_key], set_=excluded)
        if dialect == "sqlite":  # writes are serialized (BEGIN IMMEDIATE): no race to lose
            claim = insert.on_conflict_do_update(
                index_elements=[_key], set_=excluded, where=claimable
            ).returning(_alloc)
        else:
            # Always update, keeping the old values when not taking over: the row is then
            # locked and RETURNING gives its latest version. With a WHERE that fails,
            # READ COMMITTED would leave the row unlocked and return nothing, and the
            # holder could only be read from an older snapshot.
            keep = {
                name: case((claimable, value), else_=bindings.c[name])
                for name, value in excluded.items()
            }
            claim = insert.on_conflict_do_update(index_elements=[_key], set_=keep).returning(_alloc)
        claim_returns_owner = True
        if dialect == "postgresql":
            # Several instances may clean at once: each takes rows nobody else holds.
            expired_keys = expired_keys.with_for_update(skip_locked=True)
        cleanup_batch = delete(bindings).where(_key.in_(expired_keys.scalar_subquery()))
    elif dialect in ("mysql", "mariadb"):
        insert_my = mysql_insert(bindings).values(values)
        upsert = insert_my.on_duplicate_key_update(
            alloc_id=insert_my.inserted.alloc_id, expires_at=insert_my.inserted.expires_at
        )
        claim_sql = (
            "INSERT INTO session_bindings (session_key, alloc_id, expires_at) "
            "VALUES (:key, :alloc, :expires) ON DUPLICATE KEY UPDATE "
            "alloc_id = IF(@session_repo_take := (expires_at <= :now OR alloc_id = :replacing), "
            "VALUES(alloc_id), alloc_id), "
            "expires_at = IF(@session_repo_take, VALUES(expires_at), expires_at)"
        )
        claim = text(claim_sql)
        # MariaDB's RETURNING gives the row as the statement left it (the row stays
        # locked until the statement ends): the owner, with no second read.
        claim_returning = text(claim_sql + " RETURNING alloc_id")
        claim_returns_owner = False
        cleanup_batch = text(
            "DELETE FROM session_bindings WHERE expires_at <= :now ORDER BY expires_at LIMIT :batch"
        )
    else:  # pragma: no cover - parse_url refuses other dialects first
        raise ValueError(f"unsupported dialect {dialect!r}")
    live = _expires > bindparam("now")
    rows = select(_key, _alloc, _expires)
    if dialect == "postgresql":
        many = _key == any_(bindparam("keys", type_=ARRAY(LargeBinary)))
    else:
        many = _key.in_(bindparam("keys", expanding=True))
    return Statements(
        lookup=select(_alloc).where(_key == bindparam("key"), live),
        rows=rows.where(_key == bindparam("key")),
        rows_many=rows.where(many),
        storage_size=text(_STORAGE_SIZE["mysql" if dialect == "mariadb" else dialect]),
        owner=select(_alloc).where(_key == bindparam("key")),
        upsert=upsert,
        claim=claim,
        claim_returns_owner=claim_returns_owner,
        claim_returning=claim_returning,
        touch=update(bindings)
        .where(_key == bindparam("key"), live)
        .values(expires_at=bindparam("expires")),
        delete=delete(bindings).where(_key == bindparam("key"), live),
        delete_owner=delete(bindings).where(_alloc == bindparam("alloc"), live),
        cleanup_batch=cleanup_batch,
        gauges=select(
            func.sum(case((live, 1), else_=0)),
            func.sum(case((live, 0), else_=1)),
        ),
    )


def rows_of_keys(count: int) -> Select[bytes, str, int]:
    """``rows`` for ``count`` keys, one bound parameter each (``key0``, ``key1``, ..).

    For a fast path that compiles a statement once per size, where an expanding
    ``keys`` list would need SQLAlchemy's execution step to render.

    Args:
        count: how many keys the statement takes.
    """
    keys = [bindparam(f"key{i}", type_=LargeBinary) for i in range(count)]
    return select(_key, _alloc, _expires).where(_key.in_(keys))


def pg_claims() -> ReturningInsert[bytes, str]:
    """PostgreSQL's claims of many sessions as one statement (a tick's claims, one trip).

    ``keys``, ``allocs`` and ``expireses`` are arrays, one entry per claim, keys
    distinct (a row is updated once per statement); one ``now`` serves them all.
    It is ``claim``'s always-update, row by row: each row locked, ``RETURNING`` the
    owner it was left with. A claim naming ``replacing`` goes alone.
    """
    rows = (
        func.unnest(
            bindparam("keys", type_=ARRAY(LargeBinary)),
            bindparam("allocs", type_=ARRAY(String)),
            bindparam("expireses", type_=ARRAY(BigInteger)),
        )
        .table_valued("session_key", "alloc_id", "expires_at")
        .render_derived()
    )
    names = ["session_key", "alloc_id", "expires_at"]
    insert = postgresql.insert(bindings).from_select(names, select(*(rows.c[n] for n in names)))
    claimable = _expires <= bindparam("now")
    keep = {
        name: case((claimable, insert.excluded[name]), else_=bindings.c[name])
        for name in ("alloc_id", "expires_at")
    }
    return insert.on_conflict_do_update(index_elements=[_key], set_=keep).returning(_key, _alloc)


def claims_of(count: int) -> TextClause:
    """MariaDB's claims of ``count`` sessions as one statement (10.5 and later).

    Values ``key0, alloc0, expires0, ..``, keys distinct, one ``now`` for all; each
    row is ``claim_returning``'s, and ``RETURNING`` gives every row as left.

    Args:
        count: how many claims the statement carries.
    """
    values = ", ".join(f"(:key{n}, :alloc{n}, :expires{n})" for n in range(count))
    return text(
        "INSERT INTO session_bindings (session_key, alloc_id, expires_at) "
        f"VALUES {values} ON DUPLICATE KEY UPDATE "
        "alloc_id = IF(@session_repo_take := (expires_at <= :now), VALUES(alloc_id), alloc_id), "
        "expires_at = IF(@session_repo_take, VALUES(expires_at), expires_at) "
        "RETURNING session_key, alloc_id"
    )
