"""Helpers for testing code that uses session-repo."""

from session_repo.testing.fake_clock import FakeClock
from session_repo.testing.simulator import Delivery, FlyProxySimulator, ReplayCacheRule

__all__ = ["Delivery", "FakeClock", "FlyProxySimulator", "ReplayCacheRule"]
