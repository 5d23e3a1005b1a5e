"""Helpers for testing code that uses session-repo."""

from session_repo.testing.fake_clock import FakeClock

__all__ = ["FakeClock"]
