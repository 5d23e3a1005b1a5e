"""Hypothesis throws anything at every public method: the answer is a typed error
(``TypeError`` or ``InvalidInput``) with nothing written, or a correct result."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_repo import InvalidInput, MemorySessionRepository, SqlSessionRepository
from session_repo._inputs import MAX_ALLOC_ID, MAX_SESSION_ID
from session_repo.repository import SessionRepository

ANYTHING = st.one_of(
    st.text(max_size=MAX_SESSION_ID + 20),  # any unicode, surrogates included
    st.text(alphabet=st.characters(codec="ascii"), max_size=300),
    st.binary(max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
)
SQL_INJECTION = st.sampled_from(
    ["'; DROP TABLE session_bindings; --", "x' OR '1'='1", 'a"b', "%s%s%n", "\\x00"]
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def valid_session_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_SESSION_ID
        and not any(c < " " or c == "\x7f" for c in value)
    )


def valid_alloc_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_ALLOC_ID
        and all("!" <= c <= "~" for c in value)
    )


def valid_ttl(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        seconds = float(value)
    except OverflowError:
        return False
    return math.isfinite(seconds) and 0 < seconds <= 100 * 365 * 24 * 3600


@pytest.fixture(params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[asyncio.Runner, SessionRepository]]:
    runner = asyncio.Runner()
    repo: SessionRepository
    if request.param == "memory":
        repo = MemorySessionRepository()
    else:
        repo = SqlSessionRepository(f"sqlite+aiosqlite:///{tmp_path}/f.sqlite", cleanup_interval=0)
    runner.run(repo.upsert("sentinel", "machine-sentinel"))
    yield runner, repo
    runner.run(repo.close())
    runner.close()


def unchanged(runner: asyncio.Runner, repo: SessionRepository, before: int) -> None:
    metrics = runner.run(repo.metrics())
    assert metrics.sessions == before
    assert runner.run(repo.lookup("sentinel")) == "machine-sentinel"


@SETTINGS
@given(session_id=ANYTHING | SQL_INJECTION, alloc_id=ANYTHING | SQL_INJECTION, ttl=ANYTHING)
def test_upsert_claim_touch(harness: Any, session_id: Any, alloc_id: Any, ttl: Any) -> None:
    runner, repo = harness
    before = runner.run(repo.metrics()).sessions
    ok = valid_session_id(session_id) and valid_alloc_id(alloc_id) and valid_ttl(ttl)
    for call in (
        lambda: repo.upsert(session_id, alloc_id, ttl),
        lambda: repo.claim(session_id, alloc_id, ttl, replacing=alloc_id),
    ):
        if ok:
            runner.run(call())
            assert runner.run(repo.lookup(session_id)) == alloc_id
        else:
            with pytest.raises((TypeError, InvalidInput)) as info:
                runner.run(call())
            if isinstance(session_id, str) and len(session_id) >= 8:
                assert session_id not in str(info.value)  # never echoed
            unchanged(runner, repo, before)
    if ok:
        assert runner.run(repo.touch(session_id, ttl)) is True
        assert runner.run(repo.delete(session_id)) is True
        unchanged(runner, repo, before)


@SETTINGS
@given(value=ANYTHING | SQL_INJECTION)
def test_single_argument_methods(harness: Any, value: Any) -> None:
    runner, repo = harness
    before = runner.run(repo.metrics()).sessions
    for method, valid in (
        (repo.lookup, valid_session_id),
        (repo.delete, valid_session_id),
        (repo.touch, valid_session_id),
        (repo.delete_owner, valid_alloc_id),
    ):
        if valid(value):
            result = runner.run(method(value))
            assert result in (None, False, 0) or value == "machine-sentinel"
        else:
            with pytest.raises((TypeError, InvalidInput)):
                runner.run(method(value))
        unchanged(runner, repo, before)
