"""What the SQLite writer thread runs: a group of writes in one commit, and the writes
that take more than one statement.

A write alone is one statement in autocommit: SQLite makes it its own transaction,
committed before the statement returns. A write of several statements (a claim
that lost and reads the holder's row, a release) runs them in one ``BEGIN
IMMEDIATE`` transaction when alone, or inside its group's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from session_repo._core.storage import LeaseRow
from session_repo.backends.sql.errors import file_is_bad

__all__ = ["Job", "claim", "in_transaction", "run_alone", "run_writes"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


def run_writes(conn: sqlite3.Connection, requests: list[Job]) -> list[Any]:
    """One transaction for the whole group; each request's statements stand alone.

    A request alone runs in autocommit (its error raised as the driver raised it);
    in a group, a request whose statement fails fails only its own caller (SQLite
    rolls back just that statement), and a failed BEGIN or COMMIT the whole group.
    """
    if len(requests) == 1 and not conn.in_transaction:
        return [requests[0](conn)]
    try:
        conn.execute("BEGIN IMMEDIATE")  # in a transaction left open, it fails: rolled back
        results: list[Any] = []
        for request in requests:
            try:
                results.append(request(conn))
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


def run_alone(job: Job, conn: sqlite3.Connection) -> Any:
    """A write with nothing to group with: ``job`` in autocommit, no list around it.

    What ``run_writes`` does with a group of one, one call and two objects less; a
    transaction a failed group left open goes through it too (and fails this write).
    The connection comes last, for ``functools.partial(run_alone, job)``.
    """
    if not conn.in_transaction:
        return job(conn)
    (outcome,) = run_writes(conn, [job])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def in_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """``work``'s statements in one transaction: the group's, else a ``BEGIN IMMEDIATE``.

    Inside a group, a statement that fails after others succeeded leaves them to the
    group's commit: ``work`` must put its statements in an order that is safe to
    stop at any point (bindings before their owner's row).
    """
    if conn.in_transaction:
        return work()
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def claim(
    statement: str, args: tuple[Any, ...], current: str, key: bytes, conn: sqlite3.Connection
) -> LeaseRow:
    """The claim statement's lease; if it did not take the session, the holder's.

    The connection comes last: ``functools.partial(claim, statement, args, current,
    key)`` is the job, with no closure (and no Python frame) around it.

    In a group, the holder's row is read in the group's transaction. Alone, in
    autocommit, the claim runs again with the read in one ``BEGIN IMMEDIATE``
    transaction: the lease answered is the one that held the session as it lost.

    Args:
        statement: the claim, returning ``alloc_id, generation, expires_at`` if it took.
        args: the claim's arguments.
        current: the row's lease, by its key.
        key: the session's digest.
        conn: the writer connection.
    """
    taken = conn.execute(statement, args).fetchall()  # to the end: alone, that commits it
    if taken:
        return LeaseRow(*taken[0])
    if conn.in_transaction:
        return LeaseRow(*conn.execute(current, (key,)).fetchone())

    def again() -> Any:
        return conn.execute(statement, args).fetchall() or conn.execute(current, (key,)).fetchall()

    return LeaseRow(*in_transaction(conn, again)[0])
