"""Staying up through a storage outage: retries, a fallback, and write-back on recovery."""

from session_repo.resilience.wrapper import ClaimLostListener, ResilientSessionRepository

__all__ = ["ClaimLostListener", "ResilientSessionRepository"]
