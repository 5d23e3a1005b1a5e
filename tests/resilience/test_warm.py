"""``WarmCache``: what the primary answered, bounded, cheap on the healthy path.

The wrapper's tests (test_resilient.py) drive it through outages; these pin the
cache's own rules, the owner numbering behind its rows, and that recording an
answer gives the garbage collector nothing to track.
"""

from __future__ import annotations

import gc

from session_repo.resilience.warm import SPARE_OWNERS, WarmCache


def key(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_rows_keep_their_owner_and_expiry() -> None:
    warm = WarmCache(10)
    warm.put(key(1), "m1", 1_000)
    warm.seen(key(2), "m2", 100, 700)
    assert warm.get(key(1), 999) == ("m1", 1_000)
    assert warm.get(key(1), 1_000) is None  # lapses at exactly its expiry
    assert warm.get(key(2), 100) == ("m2", 700)
    warm.put(key(1), None, 0)
    assert warm.get(key(1), 0) is None
    assert len(warm) == 1


def test_a_confirming_answer_keeps_the_row_a_different_one_replaces_it() -> None:
    warm = WarmCache(10)
    warm.put(key(1), "m1", 1_000)
    warm.seen(key(1), "m1", 100, 700)  # the same owner, live: the write's expiry stays
    assert warm.get(key(1), 100) == ("m1", 1_000)
    warm.seen(key(1), "m2", 100, 700)
    assert warm.get(key(1), 100) == ("m2", 700)
    warm.seen(key(1), "m2", 800, 1_400)  # expired meanwhile: kept again from now
    assert warm.get(key(1), 800) == ("m2", 1_400)
    warm.seen(key(1), None, 900, 1_500)
    assert warm.get(key(1), 900) is None


def test_claims_and_touches() -> None:
    warm = WarmCache(10)
    warm.claimed(key(1), "me", 1_000, 0, renews=False)
    warm.claimed(key(1), "me", 5_000, 10, renews=False)  # already ours: nothing changed
    assert warm.get(key(1), 10) == ("me", 1_000)
    warm.claimed(key(1), "me", 5_000, 10, renews=True)
    assert warm.get(key(1), 10) == ("me", 5_000)
    warm.renew(key(1), 9_000)
    warm.renew(key(2), 9_000)  # unknown: stays unknown
    assert (warm.get(key(1), 10), warm.get(key(2), 10)) == (("me", 9_000), None)


def test_owners_rows_are_found_and_forgotten() -> None:
    warm = WarmCache(10)
    for n, owner in enumerate(["a", "b", "a"]):
        warm.put(key(n), owner, 1_000)
    assert warm.keys_of("a") == [key(0), key(2)]
    assert warm.keys_of("nobody") == []
    warm.forget_owner("a")
    assert (len(warm), warm.get(key(1), 0)) == (1, ("b", 1_000))


def test_more_owners_than_the_numbering_holds_keep_their_rows_right() -> None:
    warm = WarmCache(3)
    for n in range(SPARE_OWNERS * 2 + 10):  # numbered afresh twice on the way
        warm.put(key(n), f"machine-{n}", 1_000 + n)
    last = SPARE_OWNERS * 2 + 9
    assert [warm.get(key(n), 0) for n in (last - 2, last - 1, last)] == [
        (f"machine-{n}", 1_000 + n) for n in (last - 2, last - 1, last)
    ]
    assert len(warm) == 3
    warm.seen(key(last), f"machine-{last}", 0, 5)  # still recognised after renumbering
    assert warm.get(key(last), 0) == (f"machine-{last}", 1_000 + last)


def test_recording_answers_gives_the_collector_nothing_to_track() -> None:
    # Tuples as rows set off a collection every 700 new rows, and now and then a
    # full one over every row (65-80 ms at 100,000, with the event loop stopped).
    warm = WarmCache(20_000)
    owners = [f"machine-{n}" for n in range(8)]
    gc.collect()
    before = sum(stats["collections"] for stats in gc.get_stats())
    for n in range(20_000):
        warm.seen(key(n), owners[n % 8], 0, 1_000)
        warm.put(key(n // 2), owners[n % 3], 2_000)
    after = sum(stats["collections"] for stats in gc.get_stats())
    assert after - before <= 1
