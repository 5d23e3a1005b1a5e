"""One process of the linearizability workload: random calls on a few hot keys, recorded.

With ``Plan.leases`` the calls include ``acquire``, ``lease``, touch/delete given a
generation (one this process saw for the key, sometimes an older one: stale), and the
owners' ``heartbeat`` (a ttl that outlasts the run) and ``release``, recorded on
``EVERY_KEY``: they act on every key at once.
Each process has its own repository on the shared store and runs a few asyncio tasks;
every call is recorded with ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for
every process of the machine) before it is sent and after its answer arrives. A call
that raised a storage error (or hung past ``OP_TIMEOUT``) is recorded as indeterminate.
Also home to the planted bugs that tests/contract/test_linearizability.py must catch.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from session_repo import (
    Lease,
    MemorySessionRepository,
    RedisSessionRepository,
    SessionRepository,
    SqlSessionRepository,
    StorageError,
    SystemClock,
)
from session_repo.contract import Ttl
from tests.contract.linearizability import EVERY_KEY, Op

__all__ = [
    "Plan",
    "RacyClaims",
    "RacyMemoryClaims",
    "StaleLookups",
    "build",
    "owner_names",
    "record",
    "run_process",
]

# Long enough that nothing expires during a run: the model is owner-or-none.
TTL = 600
OP_TIMEOUT = 20.0
KINDS = ("lookup", "upsert", "claim", "claim-replacing", "touch", "delete")
WEIGHTS = (20, 10, 20, 25, 10, 15)
LEASE_KINDS = (
    *KINDS,
    *("lease", "acquire", "acquire-replacing", "touch-generation", "delete-generation"),
    *("heartbeat", "release"),
)
LEASE_WEIGHTS = (6, 6, 6, 6, 4, 4, 14, 14, 14, 13, 13, 4, 3)
OWNER_KINDS = ("heartbeat", "release")  # of an owner, on every key
NAMED_OWNER = ("upsert", "claim", "acquire", *OWNER_KINDS)  # recorded with their alloc id
# What each kind is recorded as (the rest: itself).
RECORDED = {
    "claim-replacing": "claim",
    "acquire-replacing": "acquire",
    "touch-generation": "touch",
    "delete-generation": "delete",
}


@dataclass(frozen=True)
class Plan:
    """The workload's shape."""

    tasks: int = 3
    keys: int = 4
    owners: int = 4
    duration: float = 5.0  # seconds each task runs at most
    max_ops: int = 200  # calls each task makes at most
    think: float = 0.005  # longest pause between a task's calls, seconds
    bug: str | None = None  # a planted bug (see ``build``), or None for the real store
    leases: bool = False  # also acquire, lease, conditional touch/delete, heartbeat, release
    key_prefix: str = "hot-key-"  # the keys are this and a number
    owner_prefix: str = "machine-"  # and the owners (their heartbeats outlive a run)
    redis_prefix: str | None = None  # a Redis store's key prefix (None: the suite's)


async def _racy_claim(
    repo: SessionRepository, session_id: str, alloc_id: str, ttl: Ttl | None, replacing: str | None
) -> str:
    """Planted bug: claim reads, waits, then writes: two transactions, not one."""
    owner = await repo.lookup(session_id)
    if owner is not None and owner != replacing:
        return owner
    await asyncio.sleep(0.005)
    await repo.upsert(session_id, alloc_id, ttl)
    return alloc_id


class RacyClaims(SqlSessionRepository):
    async def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        return await _racy_claim(self, session_id, alloc_id, ttl, replacing)


class RacyMemoryClaims(MemorySessionRepository):
    async def claim(
        self,
        session_id: str,
        alloc_id: str,
        ttl: Ttl | None = None,
        *,
        replacing: str | None = None,
    ) -> str:
        return await _racy_claim(self, session_id, alloc_id, ttl, replacing)


class StaleLookups(SqlSessionRepository):
    """Planted bug: lookup answers from this process's cache for 50 ms."""

    _seen: dict[str, tuple[str | None, float]]

    async def lookup(self, session_id: str) -> str | None:
        seen: dict[str, tuple[str | None, float]] = self.__dict__.setdefault("_seen", {})
        now = time.monotonic()
        hit = seen.get(session_id)
        if hit is not None and now - hit[1] < 0.05:
            return hit[0]
        owner = await super().lookup(session_id)
        seen[session_id] = (owner, now)
        return owner


def build(backend_name: str, url: str | None, plan: Plan) -> SessionRepository:
    """This process's repository (unopened): the real one, or one with a planted bug."""
    options: dict[str, Any] = {"cleanup_interval": 0, "default_ttl": TTL}
    if plan.bug is not None:
        bugged = {"racy-claim": RacyClaims, "stale-lookup": StaleLookups}[plan.bug]
        assert url is not None, "the planted bugs live on a SQLite file"
        return bugged(url, **options)
    if backend_name == "redis" and plan.redis_prefix is not None:
        assert url is not None
        return RedisSessionRepository(url, key_prefix=plan.redis_prefix, **options)
    if backend_name in ("sqlite", "postgresql", "mariadb"):
        assert url is not None
        return SqlSessionRepository(url, **options)  # as the suite builds it, fewer imports
    from tests.conftest import BACKENDS

    return BACKENDS[backend_name].build(url, SystemClock(), options)


def owner_names(plan: Plan) -> list[str]:
    """The alloc ids the workload binds, heartbeats and releases."""
    return [f"{plan.owner_prefix}{n}" for n in range(plan.owners)]


def _answer(lease: Lease | None) -> tuple[str, int] | None:
    return None if lease is None else (lease.owner, lease.generation)


async def _invoke(
    repo: SessionRepository, kind: str, key: str, owner: str, other: str, generation: int
) -> Any:
    if kind == "lookup":
        return await repo.lookup(key)
    if kind == "lease":
        return _answer(await repo.lease(key))
    if kind == "upsert":
        return await repo.upsert(key, owner, TTL)
    if kind in ("claim", "claim-replacing"):
        return await repo.claim(key, owner, TTL, replacing=other if "-" in kind else None)
    if kind in ("acquire", "acquire-replacing"):
        return _answer(
            await repo.acquire(key, owner, TTL, replacing=other if "-" in kind else None)
        )
    if kind == "touch":
        return await repo.touch(key, TTL)
    if kind == "touch-generation":
        return await repo.touch(key, TTL, generation=generation)
    if kind == "delete-generation":
        return await repo.delete(key, generation=generation)
    if kind == "heartbeat":
        return await repo.heartbeat(owner, TTL)
    if kind == "release":
        return await repo.release(owner)
    return await repo.delete(key)


def _generation(rng: random.Random, seen: list[int]) -> int:
    """Mostly the last generation seen for the key; sometimes an older one (stale)."""
    if not seen:
        return rng.randint(1, 3)
    if rng.random() < 0.7:
        return seen[-1]
    return rng.choice(seen[:-1]) if len(seen) > 1 else max(1, seen[-1] - 1)


async def _task(
    repo: SessionRepository,
    client: str,
    rng: random.Random,
    plan: Plan,
    history: list[Op],
    seen: dict[str, list[int]],
) -> None:
    keys = [f"{plan.key_prefix}{n}" for n in range(plan.keys)]
    owners = owner_names(plan)
    kinds, weights = (LEASE_KINDS, LEASE_WEIGHTS) if plan.leases else (KINDS, WEIGHTS)
    deadline = time.monotonic() + plan.duration
    for _ in range(plan.max_ops):
        if time.monotonic() >= deadline:
            return
        kind = rng.choices(kinds, weights)[0]
        key, owner, other = rng.choice(keys), rng.choice(owners), rng.choice(owners)
        generation = _generation(rng, seen.setdefault(key, []))
        call = time.monotonic_ns()
        try:
            result = await asyncio.wait_for(
                _invoke(repo, kind, key, owner, other, generation), OP_TIMEOUT
            )
        except (StorageError, TimeoutError) as exc:
            ret, result = None, type(exc).__name__
        else:
            ret = time.monotonic_ns()
            if isinstance(result, tuple) and result[1] not in seen[key][-1:]:
                seen[key].append(result[1])
        history.append(
            Op(
                client=client,
                key=EVERY_KEY if kind in OWNER_KINDS else key,
                kind=RECORDED.get(kind, kind),
                call=call,
                ret=ret,
                result=result,
                owner=owner if kind.startswith(NAMED_OWNER) else None,
                replacing=other if kind.endswith("-replacing") else None,
                generation=generation if kind.endswith("-generation") else None,
            )
        )
        await asyncio.sleep(rng.uniform(0, plan.think))


async def record(repo: SessionRepository, name: str, plan: Plan, seed: int) -> list[Op]:
    """Run ``plan.tasks`` tasks on an opened ``repo``; every call they made.

    Args:
        repo: the repository, opened.
        name: this process's name, the prefix of its tasks' client names.
        plan: the workload.
        seed: seeds the tasks' choices.
    """
    history: list[Op] = []
    seen: dict[str, list[int]] = {}  # the generations this process saw, per key
    await asyncio.gather(
        *(
            _task(repo, f"{name}t{n}", random.Random(seed * 100 + n), plan, history, seen)
            for n in range(plan.tasks)
        )
    )
    return history


async def _run(
    backend_name: str, url: str | None, index: int, plan: Plan, barrier: Barrier
) -> list[Op]:
    async with build(backend_name, url, plan) as repo:
        await repo.health()  # connected and schema checked before the start line
        await asyncio.to_thread(barrier.wait, 60)
        return await record(repo, f"p{index}", plan, seed=index + 1)


def run_process(
    backend_name: str,
    url: str | None,
    index: int,
    plan: Plan,
    barrier: Barrier,
    results: Queue[Any],
) -> None:
    """A spawned process's target: run the workload, send back (index, history, error)."""
    try:
        history = asyncio.run(_run(backend_name, url, index, plan, barrier))
    except BaseException:
        barrier.abort()
        results.put((index, None, traceback.format_exc()))
    else:
        results.put((index, history, None))
