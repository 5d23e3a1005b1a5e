"""The raw Redis baselines' Lua: the library's upsert and claim scripts as they were before
leases (0.x), kept here so the baselines do the plain work of a binding, whatever the
library's own scripts become."""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["load"]

_HERE = Path(__file__).parent


@cache
def load(name: str) -> str:
    """``bind.lua`` then ``<name>.lua`` (``upsert`` or ``claim``)."""
    bind = (_HERE / "bind.lua").read_text(encoding="utf-8")
    return bind + (_HERE / f"{name}.lua").read_text(encoding="utf-8")
