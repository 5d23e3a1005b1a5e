"""The data a run works on: preloaded sessions and each scenario's operations.

Everything derives from one seed, so every subject sees the same keys in the
same order. Session ids look like real ones (32 hex digits, as a UUID4 hex);
alloc ids like Fly.io machine ids (14 hex digits).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "ALLOC_IDS",
    "CLAIMER",
    "OPS",
    "TTL_MS",
    "TTL_S",
    "Dataset",
    "Row",
    "digest",
    "make_dataset",
    "operations",
    "rows_of",
]

Row = tuple[bytes, str, int]  # (session key, alloc id, expires_at ms): one stored binding

# Long enough that nothing expires during a run.
TTL_S = 3600
TTL_MS = TTL_S * 1000  # as the stores take it
ALLOC_IDS = tuple(f"{n:014x}" for n in range(0x148E21EA7D5E80, 0x148E21EA7D5E88))
CLAIMER = "e784079b449483"
OPS = ("lookup", "upsert", "claim")


@dataclass
class Dataset:
    """The preloaded sessions: (session id, alloc id) pairs, live until ``expires_at_ms``."""

    sessions: list[tuple[str, str]]
    expires_at_ms: int
    seed: int
    fresh_used: int = 0

    def fresh_ids(self, count: int) -> list[str]:
        """Session ids never preloaded nor handed out before (claims of them should win)."""
        start = self.fresh_used
        self.fresh_used += count
        return [f"f{self.seed:07x}{n:024x}" for n in range(start, start + count)]


def digest(session_id: str) -> bytes:
    """The stored key, as the library computes it (SHA-256 of the UTF-8 session id)."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


def rows_of(dataset: Dataset) -> Iterator[Row]:
    """The dataset's bindings as stored rows, for bulk loading."""
    expires = dataset.expires_at_ms
    return ((digest(sid), alloc, expires) for sid, alloc in dataset.sessions)


def _session_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def make_dataset(sessions: int, seed: int = 20240601) -> Dataset:
    rng = random.Random(seed)
    pairs = [(_session_id(rng), rng.choice(ALLOC_IDS)) for _ in range(sessions)]
    expires = int(time.time() * 1000) + TTL_MS
    return Dataset(sessions=pairs, expires_at_ms=expires, seed=seed)


def operations(dataset: Dataset, op: str, count: int, rng: random.Random) -> list[tuple[str, ...]]:
    """``count`` argument tuples for ``op``.

    lookup: a random preloaded session (always a hit). upsert: a random
    preloaded session rebound to a random alloc id. claim: a session nobody
    holds, claimed by ``CLAIMER`` (the claim wins, as when a session is created).
    """
    ids = [sid for sid, _ in dataset.sessions]
    if op == "lookup":
        return [(rng.choice(ids),) for _ in range(count)]
    if op == "upsert":
        return [(rng.choice(ids), rng.choice(ALLOC_IDS)) for _ in range(count)]
    if op == "claim":
        return [(sid, CLAIMER) for sid in dataset.fresh_ids(count)]
    raise ValueError(f"unknown operation {op!r}")
