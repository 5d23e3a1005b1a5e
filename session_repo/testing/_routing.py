"""Where Fly's proxy sends a ``fly-replay``, as Fly documents it, as plain functions.

Each takes the machines that are running now (id -> region) and the simulator's
``choose`` (its seedable pick among several), and answers with a machine id, or None
when nothing that matches is running.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["fallback_target", "refusal", "replay_src", "replay_target", "replay_wait"]

Choose = Callable[[Sequence[str]], str]
_DURATION = re.compile(r"([0-9]{1,9})(ms|s)")


def replay_target(
    fields: Mapping[str, str], sender: str, running: Mapping[str, str], choose: Choose
) -> str | None:
    """Where a replay goes: ``instance``, else ``prefer_instance``, else ``region``, else any.

    Args:
        fields: the ``fly-replay`` fields.
        sender: the machine that answered with the replay (``elsewhere=true`` skips it).
        running: the running machines, id -> region.
        choose: picks one of several machine ids.

    Returns:
        The machine id, or None when no running machine matches.
    """
    candidates = [m for m in running if fields.get("elsewhere") != "true" or m != sender]
    for name in ("instance", "prefer_instance"):
        if name in fields:
            wanted = fields[name]
            if wanted in candidates:
                return wanted
            if name == "instance":
                return None
    if "region" in fields:
        for region in (r.strip() for r in fields["region"].split(",")):
            here = [m for m in candidates if region == "any" or running[m] == region]
            if here:
                return choose(here)
        return None
    return choose(candidates) if candidates else None


def fallback_target(
    mode: str | None, sender: str, running: Mapping[str, str], choose: Choose
) -> str | None:
    """Where a request goes when its replay target is unreachable (``fallback``).

    Args:
        mode: the ``fallback`` field: ``force_self`` (back to the sender),
            ``prefer_self`` (the sender, else any machine), or None (no fallback).
        sender: the machine that answered with the replay.
        running: the running machines, id -> region.
        choose: picks one of several machine ids.

    Returns:
        The machine id, or None when the request fails (502).
    """
    if mode in ("force_self", "prefer_self") and sender in running:
        return sender
    if mode == "prefer_self" and running:
        return choose(list(running))
    return None


def refusal(
    body_size: int, replays: int, fell_back: bool, max_body: int, max_replays: int
) -> str | None:
    """Why the proxy will not follow one more replay of a request, if it will not.

    Args:
        body_size: the request body's size, in bytes.
        replays: how many replays it has taken.
        fell_back: whether it was sent back with ``fly-replay-failed``.
        max_body: the largest body the proxy replays.
        max_replays: the most replays one request may take.

    Returns:
        The reason (the 502's detail), or None to follow the replay.
    """
    if fell_back:
        return "a request that fell back cannot be replayed again"
    if body_size > max_body:
        return f"requests larger than {max_body} bytes cannot be replayed"
    if replays >= max_replays:
        return "too many replays"
    return None


def replay_src(sender: str, region: str, state: str | None) -> str:
    """The ``fly-replay-src`` a replayed request carries.

    Args:
        sender: the machine that answered with the replay.
        region: its region.
        state: the replay's ``state`` field, passed on as is (None: absent).

    Returns:
        ``instance=...;region=...;t=<microseconds>[;state=...]``.
    """
    src = f"instance={sender};region={region};t={time.time_ns() // 1000}"
    return src if state is None else f"{src};state={state}"


def replay_wait(timeout: str | None) -> float:
    """How long Fly's proxy tries to reach a replay target that is down before giving up.

    Fly: ``timeout`` "sets how long the proxy should try to reach the replay target
    before giving up"; without one, "a replay will try for a while" (unbounded here).

    Args:
        timeout: the ``fly-replay`` ``timeout`` field (``"5s"``, ``"800ms"``), or None.

    Returns:
        Seconds; ``math.inf`` with no (or an unreadable) ``timeout``.
    """
    shape = _DURATION.fullmatch(timeout.strip()) if timeout is not None else None
    if shape is None:
        return math.inf
    number, unit = shape.groups()
    return int(number) / (1000 if unit == "ms" else 1)
