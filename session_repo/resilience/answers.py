"""``claim``/``acquire`` and ``lookup``/``lease``: one call each, answered two ways.

``claim`` answers the winner, ``acquire`` the winner's lease; ``lookup`` the owner,
``lease`` the owner's lease. The wrapper serves each pair on one path (the tries
after a failed first one, the fallback, the journal), told by one of these which
storage call to make and how to read its answer: its owner, and its lease if it is
one. What is kept of an answer follows from that alone: a lease carries its expiry
and its generation (a fencing token), a bare owner neither.

The healthy paths stay inline in the wrapper's public methods, without these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from session_repo._core.storage import LeaseRow, Storage

__all__ = ["ACQUIRE", "CLAIM", "LEASE", "LOOKUP", "Read", "Take"]

A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class Take(Generic[A]):
    """A claim answering ``A``.

    Attributes:
        operation: its name in latencies, errors and logs (and the storage method's).
        method: the storage's claim method that answers ``A``.
        owner: the winner in an answer.
        lease: the answer as a lease, if it is one.
    """

    operation: str
    method: Callable[[Storage], Callable[[bytes, str, int, int, str | None], Awaitable[A]]]
    owner: Callable[[A], str]
    lease: Callable[[A], LeaseRow | None]


@dataclass(frozen=True, slots=True)
class Read(Generic[A]):
    """A read answering ``A``.

    Attributes:
        operation: its name in latencies, errors and logs (and the storage method's).
        method: the storage's read method that answers ``A``.
        owner: the owner in an answer; ``None`` for no live binding.
        lease: the answer as a lease, if it is one.
    """

    operation: str
    method: Callable[[Storage], Callable[[bytes, int], Awaitable[A]]]
    owner: Callable[[A], str | None]
    lease: Callable[[A], LeaseRow | None]


def _itself(answer: A) -> A:
    return answer


def _no_lease(answer: object) -> None:
    return None


def _owner(row: LeaseRow) -> str:
    return row.owner


def _owner_if_any(row: LeaseRow | None) -> str | None:
    return None if row is None else row.owner


CLAIM: Take[str] = Take("claim", lambda s: s.claim, _itself, _no_lease)
ACQUIRE: Take[LeaseRow] = Take("acquire", lambda s: s.acquire, _owner, _itself)
LOOKUP: Read[str | None] = Read("lookup", lambda s: s.lookup, _itself, _no_lease)
LEASE: Read[LeaseRow | None] = Read("lease", lambda s: s.lease, _owner_if_any, _itself)
