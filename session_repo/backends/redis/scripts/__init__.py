"""The Redis backend's Lua scripts, one file each; the write scripts run after ``bind.lua``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["load"]

_AFTER_BIND = {"upsert", "claim", "touch", "delete"}


@cache
def load(name: str) -> str:
    """The source of ``<name>.lua``, with ``bind.lua`` first for the write scripts.

    Args:
        name: the script's file name without ``.lua``.
    """
    here = files(__package__)
    body = (here / f"{name}.lua").read_text(encoding="utf-8")
    if name in _AFTER_BIND:
        return (here / "bind.lua").read_text(encoding="utf-8") + body
    return body
