"""pytest plugin (entry point ``pytest11``): ``fake_clock`` and ``session_repository``.

Both fixtures are plain (not async), so they work with any async test runner.
pytest loads this plugin in every run of a project that installs session-repo, so
it imports no backend until ``session_repository`` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from session_repo.testing.fake_clock import FakeClock

if TYPE_CHECKING:
    from session_repo import MemorySessionRepository

__all__ = ["fake_clock", "session_repository"]

# A fixed, realistic epoch second (2023-11-14), so expiry maths look like production's.
FAKE_CLOCK_START = 1_700_000_000.0


@pytest.fixture
def fake_clock() -> FakeClock:
    """A ``FakeClock`` at a fixed instant; move it with ``advance()`` or ``set()``.

    Returns:
        A new clock at 1_700_000_000.0 (2023-11-14) for each test.
    """
    return FakeClock(FAKE_CLOCK_START)


@pytest.fixture
def session_repository(fake_clock: FakeClock) -> MemorySessionRepository:
    """An in-memory repository on ``fake_clock``; it opens on first use and holds no resources.

    Args:
        fake_clock: the test's clock (the ``fake_clock`` fixture): advance it to expire
            bindings.

    Returns:
        A new, empty ``MemorySessionRepository`` for each test.
    """
    from session_repo import MemorySessionRepository  # here: the backend loads on first use

    return MemorySessionRepository(clock=fake_clock)
