"""Redis Cluster: the ``redis+cluster://`` URL, its client, and a layout in many slots.

On a cluster every key a script touches must be in one hash slot. The single-node
layout (one expiries set for all bindings) cannot be: here the bindings are spread
over ``BUCKETS`` buckets by the first byte of their digest, and each bucket is a hash
tag, so a binding and every key its scripts read or write share a slot::

    <prefix>{<bucket>}s:<digest hex>    the binding ("owner generation epoch expires_at", PX)
    <prefix>{<bucket>}e                 the bucket's expiries (digest -> expiry ms)
    <prefix>{<bucket>}o:<alloc id>      an owner's index in the bucket
    <prefix>{<bucket>}g                 the bucket's generation counter (never expires)
    <prefix>{<bucket>}M                 marks: alloc id -> epoch, owners that heartbeat
    <prefix>{<bucket>}h:<alloc id>      an owner's heartbeat in the bucket (PX)

A generation is monotonic per session since the session's bucket is fixed. Every
bucket keeps its own copy of each owner's mark and heartbeat: a heartbeat is one
script per bucket (64 small writes, pipelined, every few seconds), and then a
lookup, a claim or a write reads the owner's liveness in the binding's own slot.

Each write (upsert, claim, touch, delete) is still one script on one slot, so it is
atomic as on one node. Heartbeats, ``release``, ``delete_owner``, ``cleanup``,
``owners`` and the gauges visit every bucket (the client sends each command to the
node serving its slot). The lookups of one tick are one script per bucket, sent to
every node at once. A ``key_prefix`` with a hash tag of its own (``"{sessions}:"``)
wins over the bucket's: everything is then in one slot, on one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from session_repo.backends.redis.clients import ClientFamily
from session_repo.backends.redis.storage import RedisStorage
from session_repo.errors import ConfigError

__all__ = ["BUCKETS", "ClusterAddress", "ClusterStorage", "parse_cluster_url"]

BUCKETS = 64
"""Buckets (hash tags) the bindings are spread over: 21-22 per master of three."""
_MASK = BUCKETS - 1


@dataclass(frozen=True)
class ClusterAddress:
    """What a ``redis+cluster://`` URL says: the startup nodes and the credentials."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool

    def __repr__(self) -> str:  # never the password
        nodes = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"ClusterAddress({nodes}, ssl={self.ssl})"

    def client(self, family: ClientFamily, *, max_connections: int) -> Any:
        """A ``RedisCluster`` (``ValkeyCluster``) on these nodes, not yet connected.

        Args:
            family: the client library.
            max_connections: connections per node, at most.
        """
        return family.cluster_class()(
            startup_nodes=[family.cluster.ClusterNode(host, port) for host, port in self.nodes],
            username=self.username,
            password=self.password,
            ssl=self.ssl,
            decode_responses=True,
            max_connections=max_connections,
            socket_timeout=10,
            socket_connect_timeout=10,
            health_check_interval=30,
        )


def parse_cluster_url(url: str) -> ClusterAddress:
    """The nodes and credentials of ``redis+cluster://[user:password@]host:port[,...]/``.

    ``rediss+cluster://`` (and ``valkeys+cluster://``) use TLS. A node without a port
    is on 6379; an IPv6 address goes in brackets (``[::1]:7000``). The path may be
    empty or ``/`` (a cluster has database 0 only); the URL takes no query options.

    Args:
        url: the URL.

    Raises:
        ConfigError: the URL names no node, a port is not a number in 1..65535, or it
            has a database, path or query. The message never shows the password.
    """
    scheme, _, rest = url.partition("://")
    userinfo, _, location = rest.rpartition("@")
    shown = f"{scheme}://{location}"  # what messages may show: no credentials
    hosts, _, path = location.partition("/")
    path, _, query = path.partition("?")
    if "?" in hosts:
        hosts, _, query = hosts.partition("?")
    if query:
        raise ConfigError(f"a Redis Cluster URL takes no options (?{query}): {shown!r}")
    if path.strip("/") not in ("", "0"):
        raise ConfigError(
            f"a Redis Cluster has database 0 only, not path /{path}: {shown!r}"
            " (use key_prefix to keep services apart)"
        )
    nodes = tuple(_node(part, shown) for part in hosts.split(","))
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    tls = scheme.lower().startswith(("rediss", "valkeys"))
    return ClusterAddress(nodes, username, password, tls)


def _node(part: str, shown: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, _, port_text = part[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ConfigError(f"a Redis Cluster URL needs host:port[,host:port...]: {shown!r}")
    if not port_text:
        return host, 6379
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"node {part!r} has no valid port (1..65535) in {shown!r}")
    return host, int(port_text)


class ClusterStorage(RedisStorage):
    """``RedisStorage`` over a ``RedisCluster`` client, in the bucketed layout above.

    Args:
        client: a ``redis.asyncio.cluster.RedisCluster`` (with ``decode_responses``).
        prefix: starts every key.
        kwargs: as ``RedisStorage`` takes them.
    """

    def __init__(self, client: Any, prefix: str, **kwargs: Any) -> None:
        super().__init__(client, prefix, **kwargs)
        self._bucket_tags = [f"{prefix}{{{bucket}}}" for bucket in range(BUCKETS)]

    def _tag(self, key: bytes) -> str:
        return self._bucket_tags[key[0] & _MASK]

    def _tags(self) -> list[str]:
        return self._bucket_tags

    def _index_pattern(self) -> str:
        return f"{self._prefix}{{*}}o:*"

    def _parse_index(self, index: str) -> tuple[str, str]:
        rest = index[len(self._prefix) :]
        tag_end = rest.index("}") + 1
        return f"{self._prefix}{rest[:tag_end]}", rest[tag_end + 2 :]

    def _wait_groups(self, requests: list[Any]) -> list[tuple[dict[str, Any], list[int]]]:
        """One ``WAIT`` per master written, on the connection that wrote there."""
        nodes: dict[str, tuple[Any, list[int]]] = {}
        for n, (_, keys, _) in enumerate(requests):
            node = self._client.get_node_from_key(keys[0])
            nodes.setdefault(node.name, (node, []))[1].append(n)
        return [({"target_nodes": node}, members) for node, members in nodes.values()]

    async def ping(self) -> str:
        async with self._slots:
            await self._client.ping()
        nodes = self._client.get_nodes()
        primaries = len(self._client.get_primaries())
        return f"redis cluster: {primaries} masters, {len(nodes)} nodes; prefix {self._prefix!r}"
