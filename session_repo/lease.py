"""``Lease``: who owns a session, with the fencing token that proves it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Lease"]


@dataclass(frozen=True, slots=True)
class Lease:
    """A live binding with its fencing generation.

    Pass ``generation`` to whatever the owner writes downstream: a store that keeps
    the highest generation it has seen can refuse a write from an owner that lost
    the session meanwhile (a fencing token, as Kleppmann describes it).

    Args:
        owner: the alloc id that holds the session.
        generation: strictly increases for the session whenever its owner changes or
            its binding is made anew (after a delete, an expiry or its owner's death);
            the same while one owner renews, touches or re-upserts it.
        expires_at: when the binding ends unless renewed (timezone-aware UTC); an
            owner whose heartbeat lapses loses it earlier.
    """

    owner: str
    generation: int
    expires_at: datetime

    @classmethod
    def from_ms(cls, owner: str, generation: int, expires_at_ms: int) -> Lease:
        """The lease storage keeps, with its expiry in ms since the epoch.

        Args:
            owner: the alloc id that holds the session.
            generation: the fencing token.
            expires_at_ms: the binding's end, in ms since the epoch.
        """
        return cls(owner, generation, datetime.fromtimestamp(expires_at_ms / 1000, UTC))
