"""Fencing tokens the fallback issued: good against the fallback, never against the primary.

While degraded, ``acquire`` and ``lease`` answer with the fallback's generations,
from a counter of its own: the same number can be another binding's generation on
the primary, and a token the primary issued can match a fallback binding by chance.
Either way a stale token would act. So the wrapper keeps, per session, the
generations the fallback handed out (and to whom):

- while degraded, a conditional ``touch``/``delete`` acts only with one of them
  (the fallback then checks it is the live binding's); any other (a primary token)
  answers ``False`` with no I/O;
- on the primary (recovered, or a session already written back), a conditional
  call with one answers ``False`` with no I/O. A primary answer for the session
  retires those below its generation (the session's generations only grow) and the
  one equal to it if the same owner holds it (then it names that owner's binding).

Process-local, like the tokens it guards. Bounded (``max_sessions`` sessions each):
past it the oldest session goes; while degraded its tokens are then refused, after
recovery a collision becomes possible again for it.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["FallbackTokens"]


class FallbackTokens:
    """Session digest -> {generation: owner} the fallback issued, this outage and before.

    Args:
        max_sessions: the most sessions kept in each of the two maps.
    """

    def __init__(self, max_sessions: int) -> None:
        self._max = max_sessions
        self._issued: OrderedDict[bytes, dict[int, str]] = OrderedDict()  # this outage
        self.stale: OrderedDict[bytes, dict[int, str]] = OrderedDict()
        """Earlier outages' tokens still guarded (the healthy path reads it: never rebound)."""

    def issued(self, key: bytes, generation: int, owner: str) -> None:
        """The fallback answered ``key``'s lease with ``generation``, held by ``owner``."""
        tokens = self._issued.get(key)
        if tokens is None:
            tokens = self._issued[key] = {}
            if len(self._issued) > self._max:
                self._issued.popitem(last=False)
        tokens[generation] = owner

    def honoured(self, key: bytes, generation: int) -> bool:
        """Whether the fallback may act on ``generation`` (one it issued this outage)."""
        tokens = self._issued.get(key)
        return tokens is not None and generation in tokens

    def refused(self, key: bytes, generation: int) -> bool:
        """Whether ``generation`` is a fallback token the primary must not see."""
        for guarded in (self._issued, self.stale):
            tokens = guarded.get(key)
            if tokens is not None and generation in tokens:
                return True
        return False

    def answered(self, key: bytes, generation: int, owner: str) -> None:
        """The primary answered ``key``'s lease: retire what can no longer collide."""
        tokens = self.stale.get(key)
        if tokens is None:
            return
        for old in [
            g for g, held in tokens.items() if g < generation or (g, held) == (generation, owner)
        ]:
            del tokens[old]
        if not tokens:
            del self.stale[key]

    def recovered(self) -> None:
        """The outage ended: its tokens are stale from now on."""
        stale = self.stale
        for key, tokens in self._issued.items():
            stale.setdefault(key, {}).update(tokens)
            stale.move_to_end(key)
            if len(stale) > self._max:
                stale.popitem(last=False)
        self._issued.clear()
