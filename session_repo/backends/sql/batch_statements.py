"""The statements that carry a tick's requests together: reads of many keys, many claims.

Each is the single statement's rule, row by row (``bind_statements``,
``liveness``), with one ``now`` for all the rows a write carries (the latest of
its callers', read before the statement ran).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    Select,
    String,
    TextClause,
    bindparam,
    case,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.dml import ReturningInsert

from session_repo.backends.sql.bind_statements import (
    mariadb_claim,
    mariadb_row,
    mariadb_upsert,
)
from session_repo.backends.sql.liveness import fresh_generation, live, owner_epoch, rows_with_owners
from session_repo.backends.sql.model import bindings

__all__ = ["mariadb_claims", "mariadb_upserts", "pg_claims", "rows_of_keys"]

_b = bindings.c


def rows_of_keys(count: int) -> Select[Any]:
    """``liveness.OWNED_ROW`` of ``count`` keys, one parameter each (``key0``, ``key1``, ..).

    For a fast path that compiles a statement once per size, where an expanding
    ``keys`` list would need SQLAlchemy's execution step to render.

    Args:
        count: how many keys the statement takes.
    """
    keys = [bindparam(f"key{i}", type_=LargeBinary) for i in range(count)]
    return rows_with_owners(lambda column: column.in_(keys))


def pg_claims() -> ReturningInsert[bytes, str, int, int]:
    """PostgreSQL's claims of many sessions as one statement (a tick's claims, one trip).

    ``keys``, ``allocs`` and ``expireses`` are arrays, one entry per claim, keys
    distinct (a row is updated once per statement); one ``now`` serves them all.
    It is ``claim``'s always-update, row by row: each row locked, ``RETURNING`` the
    key and the lease it was left with. A claim naming ``replacing`` goes alone.
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
    fresh = fresh_generation("postgresql")
    names = ["session_key", "alloc_id", "expires_at", "generation", "owner_epoch"]
    values = select(
        rows.c.session_key, rows.c.alloc_id, rows.c.expires_at, fresh, owner_epoch(rows.c.alloc_id)
    )
    insert = postgresql.insert(bindings).from_select(names, values)
    take = ~live(bindparam("now"), conflict=True)
    set_: dict[str, Any] = {
        name: case((take, insert.excluded[name]), else_=_b[name])
        for name in ("alloc_id", "expires_at", "owner_epoch")
    }
    set_["generation"] = case((take, fresh), else_=_b.generation)
    claims = insert.on_conflict_do_update(index_elements=[_b.session_key], set_=set_)
    returning: ReturningInsert[bytes, str, int, int] = claims.returning(
        _b.session_key, _b.alloc_id, _b.generation, _b.expires_at
    )
    return returning


def mariadb_claims(count: int) -> TextClause:
    """MariaDB's claims of ``count`` sessions as one statement (10.5 and later).

    Values ``key0, alloc0, expires0, ..``, keys distinct, one ``now`` for all; each
    row is the single claim's, and ``RETURNING`` gives every row's key and lease.

    Args:
        count: how many claims the statement carries.
    """
    rows = [mariadb_row(str(n)) for n in range(count)]
    return mariadb_claim(
        rows, replacing=False, returning="session_key, alloc_id, generation, expires_at"
    )


def mariadb_upserts(count: int) -> TextClause:
    """MariaDB's upserts of ``count`` sessions as one statement, in the order given.

    Values ``key0, alloc0, expires0, ..`` and one ``now``. A key may repeat: the row
    later in the statement updates what the earlier one wrote, as in turn.

    Args:
        count: how many upserts the statement carries.
    """
    return mariadb_upsert([mariadb_row(str(n)) for n in range(count)])
