"""The lease commands: ``owners`` (the live heartbeats) and ``lease SID`` (who holds it, fenced).

Times are shown in UTC to the millisecond, with how long is left by this machine's
clock; ``--json`` gives ISO 8601. A session id is never echoed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import datetime

from session_repo.cli.output import EXIT_MISSING, json_default
from session_repo.cli.store import open_store, read_session_id

__all__ = ["lease", "owners", "when"]


def when(moment: datetime, now: float | None = None) -> str:
    """A moment as the commands show it: UTC to the millisecond, and how far away.

    Args:
        moment: a timezone-aware datetime.
        now: seconds since the epoch to measure from; ``None`` for this machine's clock.

    Returns:
        E.g. ``"2026-12-02T18:40:00.123+00:00 (in 12.3 s)"``, or ``"(12.3 s ago)"``.
    """
    left = moment.timestamp() - (time.time() if now is None else now)
    ahead = f"in {left:.1f} s" if left >= 0 else f"{-left:.1f} s ago"
    return f"{moment.isoformat(timespec='milliseconds')} ({ahead})"


async def owners(args: argparse.Namespace) -> int:
    """List the owners with a live heartbeat and when each lapses.

    session-repo owners          # machine-a  2026-12-02T18:40:00.123+00:00 (in 12.3 s)
    session-repo owners --json   # {"machine-a": "2026-12-02T18:40:00.123000+00:00"}
    """
    async with open_store(args) as repo:
        ordered = dict(sorted((await repo.owners()).items()))
    if args.json:
        print(json.dumps(ordered, default=json_default))
        return 0
    if not ordered:
        print("no owner has a live heartbeat")
        return 0
    width = max(len(owner) for owner in ordered)
    for owner, lapses in ordered.items():
        print(f"{owner:<{width}}  {when(lapses)}")
    return 0


async def lease(args: argparse.Namespace) -> int:
    """Show a live binding's owner, fencing generation and expiry; exit 1 if there is none.

    session-repo lease 7f3c9a0e-5b1d-4c2e-9f00-1a2b3c4d5e6f   # owner, generation, expires_at
    session-repo lease - --json < session-id.txt
    """
    session_id = read_session_id(args.session_id)
    async with open_store(args) as repo:
        held = await repo.lease(session_id)
    if args.json:
        print(json.dumps(None if held is None else dataclasses.asdict(held), default=json_default))
    elif held is not None:
        print(f"owner       {held.owner}")
        print(f"generation  {held.generation}")
        print(f"expires_at  {when(held.expires_at)}")
    return EXIT_MISSING if held is None else 0
