"""The Fly middleware's logger, and the structured fields every record of it carries."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["fields", "logger"]

logger = logging.getLogger("session_repo.fly")


def fields(operation: str, outcome: str, **more: Any) -> dict[str, Any]:
    """Structured fields for a log record (its ``extra``).

    Sessions appear in them only as ``session_repo.contract.session_ref`` references.

    Args:
        operation: what the middleware was doing ("claim", "replay", "lookup"...).
        outcome: how it went ("lost", "store_failed"...).
        **more: further fields (``session``, ``owner``, ``error``...).

    Returns:
        The fields, with ``component`` set to ``"fly"``.
    """
    return {"component": "fly", "operation": operation, "outcome": outcome, **more}
