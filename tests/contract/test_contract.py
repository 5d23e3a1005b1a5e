"""The contract, once, against every backend (the ``repo`` fixture in conftest).

Expiry is checked at its boundary: a binding is live at ``expires_at - 1 ms``
and gone at ``expires_at``. Times are set on the fake clock, which starts at
``T0``; rows expire by that clock only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from session_repo import (
    InvalidInput,
    MemorySessionRepository,
    RepositoryClosed,
    SessionRepository,
    SessionStoreMetrics,
)
from session_repo.testing import FakeClock
from session_repo.testing.plugin import FAKE_CLOCK_START as T0
from tests.conftest import BACKENDS, Backend, RepoFactory, backend_params

SID = "session-0001"


def just_before(clock: FakeClock, t: float) -> None:
    """Set the clock 1 ms before ``t`` (exactly, in the backends' millisecond terms)."""
    clock.set(t - 0.001)
    assert math.floor(clock.now() * 1000) == round(t * 1000) - 1


async def assert_expires_at(
    repo: SessionRepository, clock: FakeClock, session_id: str, owner: str, t: float
) -> None:
    """``session_id`` belongs to ``owner`` until just before ``t`` and is gone at ``t``."""
    saved = clock.now()
    just_before(clock, t)
    assert await repo.lookup(session_id) == owner
    clock.set(t)
    assert await repo.lookup(session_id) is None
    clock.set(saved)


def snapshot(metrics: SessionStoreMetrics) -> dict[str, Any]:
    """Every field but the backend-specific storage size."""
    fields = dataclasses.asdict(metrics)
    del fields["storage_bytes"]
    return fields


# -- the basics ------------------------------------------------------------


async def test_satisfies_the_protocol(repo: SessionRepository) -> None:
    assert isinstance(repo, SessionRepository)


async def test_upsert_then_lookup_round_trips(repo: SessionRepository) -> None:
    assert await repo.upsert(SID, "machine-a") is None
    assert await repo.lookup(SID) == "machine-a"
    assert await repo.lookup("some-other-session") is None


async def test_sessions_are_independent(repo: SessionRepository) -> None:
    await repo.upsert("s-1", "machine-a")
    await repo.upsert("s-2", "machine-b")
    await repo.upsert("S-1", "machine-c")  # case matters
    assert [await repo.lookup(s) for s in ("s-1", "s-2", "S-1")] == [
        "machine-a",
        "machine-b",
        "machine-c",
    ]


async def test_upsert_again_rebinds_owner_and_expiry(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 5)
    await repo.upsert(SID, "machine-b", ttl=10)
    assert await repo.lookup(SID) == "machine-b"
    await assert_expires_at(repo, expiry_clock, SID, "machine-b", T0 + 15)


async def test_upsert_can_shorten_expiry(repo: SessionRepository, expiry_clock: FakeClock) -> None:
    await repo.upsert(SID, "machine-a", ttl=100)
    await repo.upsert(SID, "machine-a", ttl=5)
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 5)


async def test_upsert_revives_an_expired_binding(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 20)
    await repo.upsert(SID, "machine-b", ttl=10)
    await assert_expires_at(repo, expiry_clock, SID, "machine-b", T0 + 30)


# -- expiry at the boundary ----------------------------------------------------


async def test_live_one_millisecond_before_expiry(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    just_before(expiry_clock, T0 + 10)
    assert await repo.lookup(SID) == "machine-a"
    assert await repo.claim(SID, "newcomer") == "machine-a"
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.expired) == (1, 0)


async def _lookup_is_none(repo: SessionRepository) -> None:
    assert await repo.lookup(SID) is None


async def _touch_is_false(repo: SessionRepository) -> None:
    assert await repo.touch(SID, ttl=100) is False
    assert await repo.lookup(SID) is None  # not revived


async def _delete_is_false(repo: SessionRepository) -> None:
    assert await repo.delete(SID) is False


async def _claim_wins(repo: SessionRepository) -> None:
    assert await repo.claim(SID, "newcomer") == "newcomer"
    assert await repo.lookup(SID) == "newcomer"


async def _delete_owner_counts_none(repo: SessionRepository) -> None:
    assert await repo.delete_owner("machine-a") == 0


async def _gauges_say_expired(repo: SessionRepository) -> None:
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.expired) == (0, 1)


@pytest.mark.parametrize(
    "check",
    [
        _lookup_is_none,
        _touch_is_false,
        _delete_is_false,
        _claim_wins,
        _delete_owner_counts_none,
        _gauges_say_expired,
    ],
)
async def test_gone_exactly_at_expiry(
    repo: SessionRepository,
    expiry_clock: FakeClock,
    check: Callable[[SessionRepository], Awaitable[None]],
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 10)
    await check(repo)


# -- ttl forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [
        pytest.param(7, 7, id="int"),
        pytest.param(2.5, 2.5, id="float"),
        pytest.param(0.0001, 0.001, id="tiny-float-rounds-up-to-1ms"),
        pytest.param(timedelta(seconds=90), 90, id="timedelta"),
        pytest.param(timedelta(milliseconds=1500), 1.5, id="timedelta-ms"),
        pytest.param(None, 600, id="none-is-600s"),
    ],
)
async def test_ttl_forms(
    repo: SessionRepository, expiry_clock: FakeClock, ttl: Any, seconds: float
) -> None:
    await repo.upsert("by-upsert", "machine-a", ttl=ttl)
    assert await repo.claim("by-claim", "machine-a", ttl=ttl) == "machine-a"
    await repo.upsert("by-touch", "machine-a", ttl=1)
    assert await repo.touch("by-touch", ttl=ttl) is True
    for session_id in ("by-upsert", "by-claim", "by-touch"):
        await assert_expires_at(repo, expiry_clock, session_id, "machine-a", T0 + seconds)


@pytest.mark.parametrize(
    ("default_ttl", "seconds"),
    [(30, 30), (2.5, 2.5), (timedelta(minutes=2), 120)],
    ids=["int", "float", "timedelta"],
)
async def test_configured_default_ttl(
    make_repo: RepoFactory, expiry_clock: FakeClock, default_ttl: Any, seconds: float
) -> None:
    async with make_repo(default_ttl=default_ttl) as repo:
        await repo.upsert("by-upsert", "machine-a")
        await repo.claim("by-claim", "machine-a")
        await repo.upsert("by-touch", "machine-a", ttl=1)
        assert await repo.touch("by-touch") is True
        for session_id in ("by-upsert", "by-claim", "by-touch"):
            await assert_expires_at(repo, expiry_clock, session_id, "machine-a", T0 + seconds)


# -- claim -------------------------------------------------------------------------


async def test_claim_of_a_new_session_wins(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    assert await repo.claim(SID, "machine-a", ttl=10) == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 10)


async def test_claim_of_a_live_session_returns_its_owner_and_changes_nothing(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 4)
    assert await repo.claim(SID, "machine-b", ttl=100) == "machine-a"
    assert await repo.lookup(SID) == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 10)


async def test_reclaim_by_the_owner_returns_it_without_extending(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    assert await repo.claim(SID, "machine-a", ttl=10) == "machine-a"
    expiry_clock.set(T0 + 5)
    assert await repo.claim(SID, "machine-a", ttl=100) == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 10)


async def test_claim_replacing_the_current_owner_takes_over(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 5)
    assert await repo.claim(SID, "machine-b", ttl=20, replacing="machine-a") == "machine-b"
    assert await repo.lookup(SID) == "machine-b"
    await assert_expires_at(repo, expiry_clock, SID, "machine-b", T0 + 25)


async def test_claim_replacing_itself_renews(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.claim(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 5)
    assert await repo.claim(SID, "machine-a", ttl=10, replacing="machine-a") == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 15)


async def test_claim_replacing_someone_else_does_not_take_over(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    assert await repo.claim(SID, "machine-b", ttl=100, replacing="machine-c") == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 10)


async def test_claim_replacing_is_case_sensitive(repo: SessionRepository) -> None:
    await repo.upsert(SID, "Machine-A")
    assert await repo.claim(SID, "machine-b", replacing="machine-a") == "Machine-A"
    assert await repo.claim(SID, "machine-b", replacing="MACHINE-A") == "Machine-A"
    assert await repo.lookup(SID) == "Machine-A"


async def test_claim_replacing_on_a_new_session_wins(repo: SessionRepository) -> None:
    assert await repo.claim(SID, "machine-b", replacing="machine-a") == "machine-b"
    assert await repo.lookup(SID) == "machine-b"


async def test_claim_over_an_expired_binding_wins(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 10)
    assert await repo.claim(SID, "machine-b", ttl=10) == "machine-b"
    await assert_expires_at(repo, expiry_clock, SID, "machine-b", T0 + 20)


async def test_claim_over_an_expired_binding_of_the_same_owner_renews(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 30)
    assert await repo.claim(SID, "machine-a", ttl=10) == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 40)


# -- touch -------------------------------------------------------------------------


async def test_touch_extends_a_live_binding(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 8)
    assert await repo.touch(SID, ttl=10) is True
    assert await repo.lookup(SID) == "machine-a"
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 18)


async def test_touch_that_leaves_expiry_unchanged_still_reports_true(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    # MySQL counts changed rows, not matched ones, unless told otherwise.
    await repo.upsert(SID, "machine-a", ttl=10)
    assert await repo.touch(SID, ttl=10) is True
    assert await repo.touch(SID, ttl=10) is True
    await assert_expires_at(repo, expiry_clock, SID, "machine-a", T0 + 10)


async def test_touch_of_a_missing_session_is_false(repo: SessionRepository) -> None:
    assert await repo.touch(SID) is False
    assert await repo.lookup(SID) is None


async def test_touch_of_an_expired_session_is_false(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert(SID, "machine-a", ttl=10)
    expiry_clock.set(T0 + 11)
    assert await repo.touch(SID, ttl=100) is False
    assert await repo.lookup(SID) is None


# -- delete and delete_owner ----------------------------------------------------------


async def test_delete_is_true_once_then_false(repo: SessionRepository) -> None:
    await repo.upsert(SID, "machine-a")
    await repo.upsert("bystander", "machine-a")
    assert await repo.delete(SID) is True
    assert await repo.lookup(SID) is None
    assert await repo.delete(SID) is False
    assert await repo.delete("never-bound") is False
    assert await repo.lookup("bystander") == "machine-a"


async def test_a_deleted_session_can_be_claimed_again(repo: SessionRepository) -> None:
    await repo.upsert(SID, "machine-a")
    await repo.delete(SID)
    assert await repo.claim(SID, "machine-b") == "machine-b"


async def test_delete_owner_removes_only_that_owners_live_bindings(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    await repo.upsert("a-expired", "machine-a", ttl=1)
    for n in range(3):
        await repo.upsert(f"a-{n}", "machine-a", ttl=100)
        await repo.upsert(f"b-{n}", "machine-b", ttl=100)
    await repo.upsert("other-case", "MACHINE-A", ttl=100)
    expiry_clock.set(T0 + 1)
    assert await repo.delete_owner("machine-a") == 3
    for n in range(3):
        assert await repo.lookup(f"a-{n}") is None
        assert await repo.lookup(f"b-{n}") == "machine-b"
    assert await repo.lookup("other-case") == "MACHINE-A"
    assert await repo.delete_owner("machine-a") == 0
    assert await repo.delete_owner("nobody") == 0
    assert (await repo.metrics()).sessions == 4


# -- cleanup ---------------------------------------------------------------------------


async def test_cleanup_removes_exactly_the_expired_rows(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    assert await repo.cleanup() == 0
    for n in range(5):
        await repo.upsert(f"short-{n}", "machine-a", ttl=10)
    for n in range(3):
        await repo.upsert(f"long-{n}", "machine-b", ttl=100)
    expiry_clock.set(T0 + 10)
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.expired) == (3, 5)
    assert await repo.cleanup() == 5
    assert await repo.cleanup() == 0
    metrics = await repo.metrics()
    assert (metrics.sessions, metrics.expired, metrics.cleaned) == (3, 0, 5)
    for n in range(3):
        assert await repo.lookup(f"long-{n}") == "machine-b"
    assert await repo.claim("short-0", "machine-c") == "machine-c"


@pytest.mark.parametrize("expired", [10, 9], ids=["10-rows", "exact-multiple"])
async def test_cleanup_in_small_batches_removes_everything(
    make_repo: RepoFactory, expiry_clock: FakeClock, expired: int
) -> None:
    async with make_repo(cleanup_batch=3) as repo:
        for n in range(expired):
            await repo.upsert(f"short-{n}", "machine-a", ttl=10)
        await repo.upsert("long", "machine-b", ttl=100)
        expiry_clock.set(T0 + 50)
        assert await repo.cleanup() == expired
        metrics = await repo.metrics()
        assert (metrics.sessions, metrics.expired, metrics.cleaned) == (1, 0, expired)
        assert await repo.lookup("long") == "machine-b"


# -- metrics and health ---------------------------------------------------------------------


class MetricsTracker:
    """The metrics we expect; ``step(**changes)`` applies changes and compares."""

    def __init__(self, repo: SessionRepository, expected: dict[str, Any]) -> None:
        self.repo = repo
        self.expected = expected

    async def step(self, **changes: Any) -> None:
        self.expected.update(changes)
        assert snapshot(await self.repo.metrics()) == self.expected


async def test_counters_move_exactly_with_operations(
    repo: SessionRepository, fake_clock: FakeClock, backend: Backend
) -> None:
    tomb = 1 if backend.tombstones else 0  # a deleted row stays, dead, until cleanup
    metrics = MetricsTracker(repo, snapshot(SessionStoreMetrics(sessions=0, expired=0)))
    step = metrics.step
    await step()
    await repo.upsert("s-1", "machine-a", ttl=10)
    await step(upserts=1, sessions=1)
    await repo.lookup("s-1")
    await step(lookups=1, hits=1)
    await repo.lookup("s-2")
    await step(lookups=2, misses=1)
    await repo.claim("s-2", "machine-b", ttl=10)
    await step(claims=1, sessions=2)
    await repo.claim("s-2", "machine-c", ttl=10)  # lost: still a claim
    await step(claims=2)
    await repo.touch("s-1", ttl=20)
    await step(touches=1)
    await repo.touch("missing")
    await step(touches=2)
    await repo.delete("s-2")
    await step(deletes=1, sessions=1, expired=tomb)
    await repo.delete("s-2")  # nothing removed, nothing counted
    await step()
    await repo.upsert("s-3", "machine-a", ttl=10)
    await step(upserts=2, sessions=2)
    assert await repo.delete_owner("machine-a") == 2
    await step(deletes=3, sessions=0, expired=3 * tomb)
    assert await repo.delete_owner("machine-a") == 0
    await step()
    assert await repo.cleanup() == 3 * tomb
    await step(expired=0, cleaned=3 * tomb, last_cleanup_at=datetime.fromtimestamp(T0, UTC))
    last = (await repo.metrics()).last_cleanup_at
    assert last is not None
    assert last.utcoffset() == timedelta(0)  # timezone-aware, UTC
    fake_clock.set(T0 + 1.5)
    await repo.cleanup()
    await step(last_cleanup_at=datetime.fromtimestamp(T0 + 1.5, UTC))
    final = await repo.metrics()
    assert (final.errors, final.retries, final.fallback_active) == (0, 0, False)
    assert final.storage_bytes is None or final.storage_bytes >= 0


async def test_gauges_and_cleanup_follow_the_clock(
    repo: SessionRepository, expiry_clock: FakeClock
) -> None:
    metrics = MetricsTracker(repo, snapshot(SessionStoreMetrics(sessions=0, expired=0)))
    step = metrics.step
    for n in range(3):
        await repo.upsert(f"e-{n}", "machine-a", ttl=5)
    await repo.upsert("live", "machine-a", ttl=50)
    await step(upserts=4, sessions=4)
    expiry_clock.set(T0 + 5)
    await step(sessions=1, expired=3)
    await repo.lookup("e-0")
    await step(lookups=1, misses=1)
    assert await repo.touch("e-1") is False
    await step(touches=1)
    assert await repo.delete("e-2") is False
    await step()
    assert await repo.cleanup() == 3
    await step(expired=0, cleaned=3, last_cleanup_at=datetime.fromtimestamp(T0 + 5, UTC))
    expiry_clock.set(T0 + 50)
    await step(sessions=0, expired=1)
    assert await repo.cleanup() == 1
    await step(expired=0, cleaned=4, last_cleanup_at=datetime.fromtimestamp(T0 + 50, UTC))


async def test_health_is_ok_and_names_the_backend(
    repo: SessionRepository, backend: Backend
) -> None:
    health = await repo.health()
    assert health.status == "ok"
    assert health.backend == backend.health_name
    assert isinstance(health.detail, str)


# -- lifecycle -------------------------------------------------------------------------------

AFTER_CLOSE: list[Callable[[SessionRepository], Awaitable[object]]] = [
    lambda r: r.upsert(SID, "machine-a"),
    lambda r: r.lookup(SID),
    lambda r: r.claim(SID, "machine-a"),
    lambda r: r.claim(SID, "machine-a", replacing="machine-b"),
    lambda r: r.touch(SID),
    lambda r: r.delete(SID),
    lambda r: r.delete_owner("machine-a"),
    lambda r: r.cleanup(),
    lambda r: r.metrics(),
    lambda r: r.health(),
    lambda r: r.__aenter__(),
]


async def test_every_method_after_close_raises_repository_closed(
    repo: SessionRepository,
) -> None:
    await repo.upsert(SID, "machine-a")
    await repo.close()
    await repo.close()  # idempotent
    for call in AFTER_CLOSE:
        with pytest.raises(RepositoryClosed):
            await call(repo)


async def test_close_without_ever_opening(make_repo: RepoFactory) -> None:
    repo = make_repo()
    await repo.close()
    for call in AFTER_CLOSE:
        with pytest.raises(RepositoryClosed):
            await call(repo)


async def test_async_with_closes(make_repo: RepoFactory) -> None:
    async with make_repo() as repo:
        await repo.upsert(SID, "machine-a")
        assert await repo.lookup(SID) == "machine-a"
    with pytest.raises(RepositoryClosed):
        await repo.lookup(SID)


async def test_async_with_closes_on_error(make_repo: RepoFactory) -> None:
    repo = make_repo()
    with pytest.raises(KeyError):
        async with repo:
            raise KeyError("boom")
    with pytest.raises(RepositoryClosed):
        await repo.lookup(SID)


async def test_lazy_open_on_first_use(make_repo: RepoFactory) -> None:
    repo = make_repo()
    try:
        assert await repo.claim(SID, "machine-a") == "machine-a"
        assert await repo.lookup(SID) == "machine-a"
        assert (await repo.health()).status == "ok"
    finally:
        await repo.close()
    with pytest.raises(RepositoryClosed):
        await repo.lookup(SID)


@pytest.mark.parametrize(
    "backend_name",
    backend_params(*(name for name, b in BACKENDS.items() if b.shares_store)),
)
async def test_two_repositories_on_one_store_agree(
    repo: SessionRepository, make_repo: RepoFactory
) -> None:
    async with make_repo() as other:
        await repo.upsert(SID, "machine-a")
        assert await other.lookup(SID) == "machine-a"
        assert await other.claim(SID, "machine-b") == "machine-a"
        assert await other.delete(SID) is True
        assert await repo.lookup(SID) is None


async def test_memory_evicts_the_least_recently_used(fake_clock: FakeClock) -> None:
    async with MemorySessionRepository(clock=fake_clock, max_sessions=3) as repo:
        for n in range(3):
            await repo.upsert(f"s-{n}", "machine-a")
        assert await repo.lookup("s-0") == "machine-a"  # s-1 is now least recently used
        await repo.upsert("s-3", "machine-a")
        assert [await repo.lookup(f"s-{n}") for n in range(4)] == [
            "machine-a",
            None,
            "machine-a",
            "machine-a",
        ]
        assert (await repo.metrics()).sessions == 3


# -- inputs ------------------------------------------------------------------------------------

# A prefix that must never show up in an error message.
SECRET = "TOPSECRET"
VICTIM = "victim-session"
OWNER = "machine-a"

SessionCall = Callable[[SessionRepository, Any], Awaitable[object]]
SESSION_CALLS: dict[str, SessionCall] = {
    "upsert": lambda r, s: r.upsert(s, "machine-b"),
    "lookup": lambda r, s: r.lookup(s),
    "claim": lambda r, s: r.claim(s, "machine-b"),
    "touch": lambda r, s: r.touch(s),
    "delete": lambda r, s: r.delete(s),
}
ALLOC_CALLS: dict[str, SessionCall] = {
    "upsert": lambda r, a: r.upsert(VICTIM, a),
    "claim": lambda r, a: r.claim(VICTIM, a),
    "claim-new": lambda r, a: r.claim("new-session", a),
    "delete_owner": lambda r, a: r.delete_owner(a),
}
REPLACING_CALLS: dict[str, SessionCall] = {
    "claim": lambda r, a: r.claim(VICTIM, "machine-b", replacing=a),
    "claim-new": lambda r, a: r.claim("new-session", "machine-b", replacing=a),
}
TTL_CALLS: dict[str, SessionCall] = {
    "upsert": lambda r, t: r.upsert(VICTIM, "machine-b", ttl=t),
    "upsert-new": lambda r, t: r.upsert("new-session", "machine-b", ttl=t),
    "claim": lambda r, t: r.claim(VICTIM, "machine-b", ttl=t, replacing=OWNER),
    "claim-new": lambda r, t: r.claim("new-session", "machine-b", ttl=t),
    "touch": lambda r, t: r.touch(VICTIM, ttl=t),
}


async def _assert_rejected(
    repo: SessionRepository,
    backend: Backend,
    clock: FakeClock,
    calls: dict[str, SessionCall],
    value: object,
    error: type[Exception],
    argument: str,
) -> None:
    """Every call with ``value`` raises ``error`` naming ``argument`` and writes nothing."""
    await repo.upsert(VICTIM, OWNER, ttl=10)
    rows = sorted(await backend.stored(repo))
    metrics = snapshot(await repo.metrics())
    for name, call in calls.items():
        with pytest.raises(error) as raised:
            await call(repo, value)
        message = str(raised.value)
        assert argument in message, (name, message)
        assert SECRET not in message, name
        assert sorted(await backend.stored(repo)) == rows, name
        assert snapshot(await repo.metrics()) == metrics, name
    assert await repo.lookup("new-session") is None
    if backend.expires_by_fake_clock:
        await assert_expires_at(repo, clock, VICTIM, OWNER, T0 + 10)
    else:
        assert await repo.lookup(VICTIM) == OWNER


@pytest.mark.parametrize(
    "session_id",
    [
        pytest.param("", id="empty"),
        pytest.param(SECRET + "x" * 1016, id="1025-chars"),
        pytest.param(SECRET + "\x00tail", id="nul"),
        pytest.param(SECRET + "\ntail", id="newline"),
        pytest.param(SECRET + "\rtail", id="carriage-return"),
        pytest.param(SECRET + "\ttail", id="tab"),
        pytest.param(SECRET + "\x1f", id="unit-separator"),
        pytest.param(SECRET + "\x7f", id="delete"),
        pytest.param("\x1b[31m" + SECRET, id="escape"),
    ],
)
async def test_bad_session_id_is_invalid_input(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, session_id: str
) -> None:
    assert issubclass(InvalidInput, ValueError)
    await _assert_rejected(
        repo, backend, fake_clock, SESSION_CALLS, session_id, InvalidInput, "session_id"
    )


@pytest.mark.parametrize(
    "session_id",
    [pytest.param(1234, id="int"), pytest.param(SECRET.encode(), id="bytes"), None],
)
async def test_session_id_of_the_wrong_type_is_type_error(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, session_id: object
) -> None:
    await _assert_rejected(
        repo, backend, fake_clock, SESSION_CALLS, session_id, TypeError, "session_id"
    )


BAD_ALLOC_IDS = [
    pytest.param("", id="empty"),
    pytest.param("m" * 256, id="256-chars"),
    pytest.param("machine a", id="space"),
    pytest.param("machine\ta", id="tab"),
    pytest.param("machine\na", id="newline"),
    pytest.param("machine\x7f", id="delete"),
    pytest.param("machine-\u00e9", id="non-ascii"),
    pytest.param("machine-\U0001f680", id="emoji"),
    pytest.param("machine\u00a0a", id="nbsp"),
]


@pytest.mark.parametrize("alloc_id", BAD_ALLOC_IDS)
async def test_bad_alloc_id_is_invalid_input(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, alloc_id: str
) -> None:
    await _assert_rejected(
        repo, backend, fake_clock, ALLOC_CALLS, alloc_id, InvalidInput, "alloc_id"
    )


@pytest.mark.parametrize("alloc_id", [1234, b"machine-a", None], ids=["int", "bytes", "none"])
async def test_alloc_id_of_the_wrong_type_is_type_error(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, alloc_id: object
) -> None:
    await _assert_rejected(repo, backend, fake_clock, ALLOC_CALLS, alloc_id, TypeError, "alloc_id")


@pytest.mark.parametrize("replacing", BAD_ALLOC_IDS)
async def test_bad_replacing_is_invalid_input(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, replacing: str
) -> None:
    await _assert_rejected(
        repo, backend, fake_clock, REPLACING_CALLS, replacing, InvalidInput, "replacing"
    )


@pytest.mark.parametrize("replacing", [1234, b"machine-a"], ids=["int", "bytes"])
async def test_replacing_of_the_wrong_type_is_type_error(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, replacing: object
) -> None:
    await _assert_rejected(
        repo, backend, fake_clock, REPLACING_CALLS, replacing, TypeError, "replacing"
    )


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param(0, id="zero"),
        pytest.param(0.0, id="zero-float"),
        pytest.param(-1, id="negative"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="minus-inf"),
        pytest.param(timedelta(0), id="timedelta-zero"),
        pytest.param(timedelta(seconds=-5), id="timedelta-negative"),
        pytest.param(10**400, id="int-beyond-float"),
        pytest.param(1e300, id="centuries"),
        pytest.param(1e306, id="near-float-max"),  # times 1000 is inf
        pytest.param(timedelta.max, id="timedelta-max"),
    ],
)
async def test_bad_ttl_is_invalid_input(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, ttl: object
) -> None:
    await _assert_rejected(repo, backend, fake_clock, TTL_CALLS, ttl, InvalidInput, "ttl")


@pytest.mark.parametrize(
    "ttl", [True, False, "10", b"10", [10]], ids=["true", "false", "str", "bytes", "list"]
)
async def test_ttl_of_the_wrong_type_is_type_error(
    repo: SessionRepository, backend: Backend, fake_clock: FakeClock, ttl: object
) -> None:
    await _assert_rejected(repo, backend, fake_clock, TTL_CALLS, ttl, TypeError, "ttl")


@pytest.mark.parametrize(
    "session_id",
    [
        pytest.param("s" * 1024, id="1024-chars"),
        pytest.param("\U0001f680" * 1024, id="1024-emoji"),
        pytest.param("caf\u00e9-\u6f22\u5b57-\U0001f600", id="non-ascii"),
        pytest.param("with spaces and 'quotes'", id="spaces"),
        pytest.param("x", id="one-char"),
        pytest.param("\ud800-lone-surrogate", id="lone-surrogate"),
    ],
)
async def test_unusual_valid_session_ids_work(
    repo: SessionRepository, backend: Backend, session_id: str
) -> None:
    assert await repo.claim(session_id, "machine-a") == "machine-a"
    assert await repo.lookup(session_id) == "machine-a"
    assert await repo.claim(session_id, "machine-b") == "machine-a"
    assert await repo.touch(session_id) is True
    keys = {key for key, _ in await backend.stored(repo)}
    assert keys == {hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()}
    assert await repo.delete(session_id) is True
    assert await repo.lookup(session_id) is None


@pytest.mark.parametrize(
    "alloc_id",
    [
        pytest.param("m" * 255, id="255-chars"),
        pytest.param("10.0.0.7:8080", id="host-port"),
        pytest.param("pod-7f9c_a.b/c~!#$%&*+=?@^`|", id="punctuation"),
        pytest.param("9", id="one-char"),
    ],
)
async def test_unusual_valid_alloc_ids_work(repo: SessionRepository, alloc_id: str) -> None:
    assert await repo.claim(SID, alloc_id) == alloc_id
    assert await repo.lookup(SID) == alloc_id
    assert await repo.claim(SID, "machine-b", replacing=alloc_id) == "machine-b"
    await repo.upsert(SID, alloc_id)
    assert await repo.delete_owner(alloc_id) == 1


# -- what is stored --------------------------------------------------------------------------------


async def test_only_the_sha256_digest_of_a_session_id_is_stored(
    repo: SessionRepository, backend: Backend
) -> None:
    session_ids = [f"raw-secret-session-{n}" for n in range(3)]
    for session_id in session_ids:
        await repo.upsert(session_id, "machine-a")
    rows = await backend.stored(repo)
    assert sorted(rows) == sorted(
        (hashlib.sha256(s.encode()).digest(), "machine-a") for s in session_ids
    )
    for key, owner in rows:
        assert len(key) == 32
        assert b"raw-secret" not in key
        assert "raw-secret" not in owner


INJECTION_SESSION_IDS = [
    "'; DROP TABLE session_bindings; --",
    "x' OR '1'='1",
    '" OR ""="',
    "x'); DELETE FROM session_bindings; --",
    "%s %(key)s :key ? $1 @session_repo_take",
    "\\'; SELECT 1; --",
]
INJECTION_ALLOC_IDS = [
    "';DROP_TABLE_session_bindings;--",
    "x'OR'1'='1",
    ":alloc",
    "%(alloc)s",
    "?",
    "\\",
]


async def test_sql_looking_inputs_round_trip_harmlessly(
    repo: SessionRepository, backend: Backend
) -> None:
    await repo.upsert("bystander", "machine-z")
    for session_id, alloc_id in zip(INJECTION_SESSION_IDS, INJECTION_ALLOC_IDS, strict=True):
        assert await repo.claim(session_id, alloc_id) == alloc_id
        assert await repo.lookup(session_id) == alloc_id
        assert await repo.claim(session_id, "machine-b") == alloc_id
        assert await repo.claim(session_id, "machine-b", replacing="machine-c") == alloc_id
        assert await repo.touch(session_id) is True
    for session_id, alloc_id in zip(INJECTION_SESSION_IDS, INJECTION_ALLOC_IDS, strict=True):
        assert await repo.lookup(session_id) == alloc_id
    assert len(await backend.stored(repo)) == len(INJECTION_SESSION_IDS) + 1
    assert await repo.delete(INJECTION_SESSION_IDS[0]) is True
    for alloc_id in INJECTION_ALLOC_IDS[1:]:
        assert await repo.delete_owner(alloc_id) == 1
    tombstones = len(INJECTION_SESSION_IDS) if backend.tombstones else 0
    assert len(await backend.stored(repo)) == 1 + tombstones
    assert await repo.cleanup() == tombstones
    assert await backend.stored(repo) == [(hashlib.sha256(b"bystander").digest(), "machine-z")]
    assert await repo.lookup("bystander") == "machine-z"
