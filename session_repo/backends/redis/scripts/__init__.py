"""The Redis backend's Lua scripts, one file each, after the shared parts they use.

``lib.lua`` (the key layout, a binding's value, the liveness rule) comes first in
every script but ``forget``; ``bind.lua`` (generations, writing a binding) next in
the write scripts.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["load"]

_PRELUDES = {
    "forget": (),
    "upsert": ("lib", "bind"),
    "upserts": ("lib", "bind"),
    "acquire": ("lib", "bind"),
    "touch": ("lib", "bind"),
    "delete": ("lib", "bind"),
}


@cache
def load(name: str) -> str:
    """The source of ``<name>.lua``, after the shared parts it uses.

    Args:
        name: the script's file name without ``.lua``.
    """
    here = files(__package__)
    parts = (*_PRELUDES.get(name, ("lib",)), name)
    return "".join((here / f"{part}.lua").read_text(encoding="utf-8") for part in parts)
