"""The writer's side of the SQLite pipeline: a group of writes on the writer connection.

A write request is one flat tuple, ``(run, sql, *values)``: ``run(conn, request)``
executes ``sql`` with the values and returns the caller's outcome. A tuple, not a
closure: a request waiting in a batch holds one object the garbage collector
tracks instead of five (function, closure, cells, values), and at 64 callers
those were enough to set off a collection every few batches, inside a loop
callback.

The requests of a group share one ``BEGIN IMMEDIATE .. COMMIT`` (group commit);
one that fails fails only its own caller (SQLite rolls back just that statement),
unless the group cannot go on. A request alone runs in autocommit: one statement is
its own transaction in SQLite, committed before ``execute`` returns (or its rows
are all fetched), so a BEGIN and a COMMIT around it would be two statements for
nothing.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from session_repo.backends.sql.errors import file_is_bad

__all__ = ["Write", "claim", "execute", "rowcount", "run_group"]

Write = tuple[Any, ...]
"""``(run, sql, *values)``; ``run(conn, request)`` gives the caller's outcome."""


def run_group(conn: sqlite3.Connection, requests: list[Write]) -> list[Any]:
    """Each request's outcome, in order: a result, or the ``sqlite3.Error`` it met.

    Raises:
        sqlite3.Error: a request alone failed, or the group's BEGIN or COMMIT did,
            or a statement failed in a way that ends the transaction (a bad file).
    """
    if len(requests) == 1 and not conn.in_transaction:
        (request,) = requests
        return [request[0](conn, request)]
    conn.execute("BEGIN IMMEDIATE")
    try:
        results: list[Any] = []
        for request in requests:
            try:
                results.append(request[0](conn, request))
            except sqlite3.Error as exc:
                if file_is_bad(exc) or not conn.in_transaction:  # the group cannot go on
                    raise
                results.append(exc)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def execute(conn: sqlite3.Connection, request: Write) -> None:
    """``(execute, sql, *values)``: the statement, nothing to answer."""
    conn.execute(request[1], request[2:])


def rowcount(conn: sqlite3.Connection, request: Write) -> int:
    """``(rowcount, sql, *values)``: how many rows the statement changed."""
    return int(conn.execute(request[1], request[2:]).rowcount)


def claim(conn: sqlite3.Connection, request: Write) -> str:
    """``(claim, (claim_sql, owner_sql), key, *values)``: who holds the session after.

    The claim statement answers the new owner when it took the session. If it did
    not: in a group, the owner is read in the group's transaction; alone, in
    autocommit, the claim runs again with the owner's read in one ``BEGIN
    IMMEDIATE`` transaction, so the owner answered held the session as it lost.
    """
    (claim_sql, owner_sql), values = request[1], request[2:]
    taken = conn.execute(claim_sql, values).fetchall()  # to the end: alone, that commits
    if taken:
        return str(taken[0][0])
    if conn.in_transaction:
        return str(conn.execute(owner_sql, values[:1]).fetchone()[0])
    conn.execute("BEGIN IMMEDIATE")
    try:
        taken = conn.execute(claim_sql, values).fetchall()
        taken = taken or conn.execute(owner_sql, values[:1]).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return str(taken[0][0])
