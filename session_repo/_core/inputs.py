"""The contract's input rules, checked before any I/O.

A wrong type raises ``TypeError``; a wrong value raises ``InvalidInput``. Messages
name the argument and the rule and never echo a session id (it is a secret).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from session_repo.errors import InvalidInput

__all__ = [
    "DEFAULT_TTL",
    "DEFAULT_TTL_MS",
    "Ttl",
    "check_alloc_id",
    "check_generation",
    "check_session_id",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
    "ttl_ms",
]

Ttl = int | float | timedelta

DEFAULT_TTL = 600
"""A binding's life in seconds when neither the call nor the repository says."""
DEFAULT_TTL_MS = DEFAULT_TTL * 1000

MAX_SESSION_ID = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f]")
MAX_ALLOC_ID = 255


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is 1..1024 characters with no control characters."""
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, not {type(session_id).__name__}")
    if not 1 <= len(session_id) <= MAX_SESSION_ID:
        raise InvalidInput(
            f"session_id must be 1..{MAX_SESSION_ID} characters long (got {len(session_id)})"
        )
    if session_id.isascii() and session_id.isprintable():  # the common case, in C
        return session_id
    control = _CONTROL.search(session_id)
    if control is not None:
        raise InvalidInput(
            f"session_id must not contain control characters (one at position {control.start()})"
        )
    return session_id


MAX_GENERATION = 2**63 - 1
"""The largest generation a BIGINT column (and a Redis integer) can hold."""


def check_generation(generation: object) -> int:
    """Return ``generation`` if it is an ``int`` (not ``bool``) in 1..2**63-1."""
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise TypeError(f"generation must be an int, not {type(generation).__name__}")
    if not 1 <= generation <= MAX_GENERATION:
        raise InvalidInput(f"generation must be 1..{MAX_GENERATION} (got {generation})")
    return generation


def check_alloc_id(alloc_id: object, name: str = "alloc_id") -> str:
    """Return ``alloc_id`` if it is 1..255 printable ASCII characters without whitespace."""
    if not isinstance(alloc_id, str):
        raise TypeError(f"{name} must be a str, not {type(alloc_id).__name__}")
    if not 1 <= len(alloc_id) <= MAX_ALLOC_ID:
        raise InvalidInput(
            f"{name} must be 1..{MAX_ALLOC_ID} characters long (got {len(alloc_id)})"
        )
    if alloc_id.isascii() and alloc_id.isprintable() and " " not in alloc_id:
        return alloc_id
    for position, char in enumerate(alloc_id):
        if not "!" <= char <= "~":
            # Not echoed: a caller who swapped the arguments would leak a session id.
            raise InvalidInput(
                f"{name} must be printable ASCII without whitespace (not at position {position})"
            )
    return alloc_id


def ttl_ms(ttl: object, default_ms: int) -> int:
    """Milliseconds for ``ttl`` (seconds or timedelta; None means ``default_ms``).

    Rounded up, so any positive ttl lasts at least one millisecond.
    """
    if ttl is None:
        return default_ms
    if type(ttl) is int and 0 < ttl <= _MAX_TTL_S:  # the common case, first and cheap
        return ttl * 1000
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be int, float, timedelta or None, not {type(ttl).__name__}")
    else:
        try:
            seconds = float(ttl)
        except OverflowError:  # an int too big for a float is far too long anyway
            raise InvalidInput(f"ttl must be at most {MAX_TTL_MS // 1000} seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"ttl must be finite and > 0 seconds (got {seconds!r})")
    if seconds > _MAX_TTL_S:  # before scaling: a huge finite float times 1000 is inf
        raise InvalidInput(f"ttl must be at most {_MAX_TTL_S} seconds (got {seconds!r})")
    return math.ceil(seconds * 1000)


# A century: keeps now + ttl inside a signed 64-bit millisecond column.
MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000
_MAX_TTL_S = MAX_TTL_MS // 1000


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds")
    return float(value)


def positive_seconds(name: str, value: object) -> float:
    """``value`` as float seconds if it is a finite number > 0 (``bool`` is refused)."""
    seconds = _number(name, value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"{name} must be finite and > 0 seconds")
    return seconds


def non_negative_seconds(name: str, value: object) -> float:
    """``value`` as float seconds if it is a finite number >= 0 (0 turns a thing off)."""
    seconds = _number(name, value)
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(f"{name} must be finite and >= 0 (0 turns it off)")
    return seconds


def non_negative_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` >= 0 (0 turns a thing off; ``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if value < 0:
        raise InvalidInput(f"{name} must be >= 0 (0 turns it off)")
    return value


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` >= 1 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if value < 1:
        raise InvalidInput(f"{name} must be >= 1")
    return value
