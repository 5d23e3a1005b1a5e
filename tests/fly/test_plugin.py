"""The pytest plugin is registered by entry point and its fixtures work in a user's suite."""

from __future__ import annotations

import pytest


def test_fixtures_work_in_a_fresh_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        from session_repo import MemorySessionRepository
        from session_repo.testing import FakeClock

        def test_fake_clock(fake_clock):
            assert isinstance(fake_clock, FakeClock)
            start = fake_clock.now()
            fake_clock.advance(2.5)
            assert fake_clock.now() == start + 2.5

        def test_repository_follows_the_fake_clock(session_repository, fake_clock):
            assert isinstance(session_repository, MemorySessionRepository)

            async def scenario():
                await session_repository.upsert("s", "machine-a", ttl=10)
                assert await session_repository.lookup("s") == "machine-a"
                fake_clock.advance(10)
                assert await session_repository.lookup("s") is None
                await session_repository.close()

            asyncio.run(scenario())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_is_an_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="pytest11")}
    assert "session_repo.testing.plugin" in names
