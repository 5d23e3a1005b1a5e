"""Which client library serves a URL or a client: redis-py, or valkey-py (its fork).

Both speak to Redis and Valkey servers alike and share one API under two package
names; the backend takes either, and this is the one place that tells them apart.
Each has a single-node client (``Redis``, ``Valkey``) and a Redis Cluster client
(``RedisCluster``, ``ValkeyCluster``), chosen by a ``+cluster`` URL scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import import_module
from types import ModuleType
from typing import Any

from session_repo.errors import ConfigError

__all__ = [
    "ClientFamily",
    "families",
    "family_of_client",
    "family_of_url",
    "is_cluster_client",
    "is_cluster_url",
]


@dataclass(frozen=True)
class ClientFamily:
    """A client library: its name, its asyncio modules and its exceptions module."""

    name: str
    client: ModuleType
    errors: ModuleType
    cluster: ModuleType

    @property
    def base_error(self) -> type[Exception]:
        """The library's root error class (``RedisError``, ``ValkeyError``)."""
        error: type[Exception] = getattr(self.errors, f"{self.name.capitalize()}Error")
        return error

    def client_class(self) -> type[Any]:
        """``redis.asyncio.Redis`` or ``valkey.asyncio.Valkey``."""
        cls: type[Any] = getattr(self.client, self.name.capitalize())
        return cls

    def cluster_class(self) -> type[Any]:
        """``redis.asyncio.cluster.RedisCluster`` or ``valkey.asyncio.cluster.ValkeyCluster``."""
        cls: type[Any] = getattr(self.cluster, f"{self.name.capitalize()}Cluster")
        return cls

    def error(self, name: str) -> type[Exception]:
        """One of the library's exception classes, by its name without the library's.

        Args:
            name: ``"ClusterException"`` for ``RedisClusterException``, else the
                class's own name (``"ClusterDownError"``).
        """
        prefixed = f"{self.name.capitalize()}{name}"
        error: type[Exception] = getattr(self.errors, prefixed, None) or getattr(self.errors, name)
        return error


# (package, the extra that brings it, the URL schemes it serves)
_LIBRARIES = (
    (
        "redis",
        "redis",
        (
            "redis://",
            "rediss://",
            "unix://",
            "redis+cluster://",
            "rediss+cluster://",
            "redis+sentinel://",
            "rediss+sentinel://",
        ),
    ),
    (
        "valkey",
        "valkey",
        (
            "valkey://",
            "valkeys://",
            "valkey+cluster://",
            "valkeys+cluster://",
            "valkey+sentinel://",
            "valkeys+sentinel://",
        ),
    ),
)
_CLUSTER_SCHEMES = (
    "redis+cluster://",
    "rediss+cluster://",
    "valkey+cluster://",
    "valkeys+cluster://",
)


@cache
def _load(name: str) -> ClientFamily | None:
    try:
        return ClientFamily(
            name,
            import_module(f"{name}.asyncio"),
            import_module(f"{name}.exceptions"),
            import_module(f"{name}.asyncio.cluster"),
        )
    except ImportError:
        return None


def families() -> list[ClientFamily]:
    """The client libraries installed here."""
    return [family for name, _, _ in _LIBRARIES if (family := _load(name)) is not None]


def family_of_url(url: str) -> ClientFamily:
    """The library for a URL: valkey-py for ``valkey://``/``valkeys://``, else redis-py.

    Args:
        url: a ``redis://``, ``rediss://``, ``unix://``, ``valkey://`` or ``valkeys://``
            URL, or one of the ``+cluster`` schemes (``redis+cluster://``).

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
        if isinstance(client, (family.client_class(), family.cluster_class())):
            return family
    return None


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``valkey+cluster://``).

    Args:
        url: a URL ``family_of_url`` accepts.
    """
    return url.lower().startswith(_CLUSTER_SCHEMES)


def is_cluster_client(client: object) -> bool:
    """Whether ``client`` is a ``RedisCluster`` (or ``ValkeyCluster``).

    Args:
        client: a client ``family_of_client`` recognizes.
    """
    return any(isinstance(client, family.cluster_class()) for family in families())
