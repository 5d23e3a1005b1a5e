"""Which client library serves a URL or a client: redis-py, or valkey-py (its fork).

Both speak to Redis and Valkey servers alike and share one API under two package
names; the backend takes either, and this is the one place that tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import import_module
from types import ModuleType
from typing import Any

from session_repo.errors import ConfigError

__all__ = ["ClientFamily", "families", "family_of_client", "family_of_url"]


@dataclass(frozen=True)
class ClientFamily:
    """A client library: its name, its asyncio module and its exceptions module."""

    name: str
    client: ModuleType
    errors: ModuleType

    @property
    def base_error(self) -> type[Exception]:
        """The library's root error class (``RedisError``, ``ValkeyError``)."""
        error: type[Exception] = getattr(self.errors, f"{self.name.capitalize()}Error")
        return error

    def client_class(self) -> type[Any]:
        """``redis.asyncio.Redis`` or ``valkey.asyncio.Valkey``."""
        cls: type[Any] = getattr(self.client, self.name.capitalize())
        return cls


# (package, the extra that brings it, the URL schemes it serves)
_LIBRARIES = (
    ("redis", "redis", ("redis://", "rediss://", "unix://")),
    ("valkey", "valkey", ("valkey://", "valkeys://")),
)


@cache
def _load(name: str) -> ClientFamily | None:
    try:
        return ClientFamily(
            name, import_module(f"{name}.asyncio"), import_module(f"{name}.exceptions")
        )
    except ImportError:
        return None


def families() -> list[ClientFamily]:
    """The client libraries installed here."""
    return [family for name, _, _ in _LIBRARIES if (family := _load(name)) is not None]


def family_of_url(url: str) -> ClientFamily:
    """The library for a URL: valkey-py for ``valkey://``/``valkeys://``, else redis-py.

    Args:
        url: a ``redis://``, ``rediss://``, ``unix://``, ``valkey://`` or ``valkeys://`` URL.

    Raises:
        ConfigError: the URL is none of those, or its library's extra is not installed.
    """
    for name, extra, schemes in _LIBRARIES:
        if url.startswith(schemes):
            family = _load(name)
            if family is None:
                raise ConfigError(f"{schemes[0]} URLs need: pip install 'session-repo[{extra}]'")
            return family
    raise ConfigError(f"not a Redis or Valkey URL: {url.split('@')[-1]!r}")


def family_of_client(client: object) -> ClientFamily | None:
    """The library whose asyncio client ``client`` is, or None.

    Args:
        client: what the caller passed instead of a URL.
    """
    for family in families():
        if isinstance(client, family.client_class()):
            return family
    return None
