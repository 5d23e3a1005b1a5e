"""Redis Sentinel: a master client that asks the sentinels where the master is.

``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`` names
the sentinels, not the master (``session_repo.backends.redis.sentinel_url`` reads it).

The client is the library's ``Sentinel(...).master_for(service_name)``: its
``SentinelConnectionPool`` asks the sentinels for the master's address on every new
connection and drops idle connections when the address changes. That alone follows a
master that died, not one that a ``SENTINEL FAILOVER`` (or a partition) leaves
running: open connections keep writing to the old master, which answers until the
sentinels demote it, some ten seconds later, and all those acknowledged writes are
lost when it resyncs. So the pool here also asks the sentinels every
``FOLLOW_INTERVAL`` seconds and drops every connection once they name a new master.

A failover shows up as a dropped connection, a ``ReadOnlyError`` on a demoted master
(which the pool turns into a ``ConnectionError`` after disconnecting), or a
``MasterNotFoundError`` (a ``ConnectionError``) while no master is agreed on: all
transient, all retried.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any

from session_repo.backends.redis.clients import ClientFamily
from session_repo.backends.redis.sentinel_url import (
    SentinelUrl,
    is_sentinel_url,
    parse_sentinel_url,
)
from session_repo.errors import ConfigError

__all__ = ["SentinelUrl", "is_sentinel_url", "parse_sentinel_url", "sentinel_client"]

logger = logging.getLogger("session_repo")

# How often a client asks the sentinels whether the master has moved.
FOLLOW_INTERVAL = 0.5
# Once one sentinel has answered, how long the others get to answer too.
STRAGGLER_WAIT = 0.5

_MADE: dict[tuple[str, type[Any]], type[Any]] = {}


def _answered(ask: asyncio.Future[Any]) -> bool:
    return ask.done() and not ask.cancelled() and ask.exception() is None


async def _newest_master(pool: Any, not_found: type[Exception]) -> tuple[str, int]:
    """The master in the newest configuration (highest config epoch) any sentinel reports.

    The library asks the sentinels one by one and takes the first that calls some
    node master; just after a failover that can be one that has not heard of it yet
    (they learn from each other every two seconds), naming the old master, which
    still says it is one. A sentinel that does not answer within ``STRAGGLER_WAIT``
    of the first one is left out.
    """
    manager = pool.sentinel_manager
    asks = [asyncio.ensure_future(node.sentinel_masters()) for node in manager.sentinels]
    try:
        pending = set(asks)
        while pending and not any(_answered(ask) for ask in asks):
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending, timeout=STRAGGLER_WAIT)
    finally:
        unfinished = [ask for ask in asks if not ask.done()]
        for ask in unfinished:
            ask.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
    best: dict[str, Any] | None = None
    for ask in asks:
        if not _answered(ask):
            continue
        state = ask.result().get(pool.service_name)
        if not state or not manager.check_master_state(state, pool.service_name):
            continue
        if best is None or state["config-epoch"] > best["config-epoch"]:
            best = state
    if best is None:
        raise not_found(f"No master found for {pool.service_name!r}")
    return best["ip"], best["port"]


async def _follow_master(pool: Any, interval: float) -> None:
    """Drop every connection, busy ones too, as soon as the sentinels name a new master.

    The library's pool asks the sentinels only when it opens a connection, and a
    demoted master answers writes until the sentinels reconfigure it (about ten
    seconds after a ``SENTINEL FAILOVER``, all of them lost); this bounds that to
    ``interval`` after a sentinel knows. No answer is no error here: the next
    connection's own lookup reports it.
    """
    while True:
        await asyncio.sleep(interval)
        known = pool.master_address
        if known is None:  # not connected yet: the first connection asks
            continue
        try:
            address = await pool.newest_master()
        except Exception as exc:  # whatever it is, the next round asks again
            logger.debug("Redis Sentinel: no master for %r right now: %r", pool.service_name, exc)
            continue
        if tuple(address) != tuple(known):
            logger.warning(
                "Redis Sentinel: the master of %r moved from %s:%s to %s:%s; reconnecting",
                pool.service_name,
                *known,
                *address,
            )
            pool.master_address = address
            await pool.disconnect(inuse_connections=True)


def _pool_class(sentinel_module: Any) -> type[Any]:
    base: type[Any] = sentinel_module.SentinelConnectionPool
    if (made := _MADE.get(("pool", base))) is not None:
        return made

    class FollowingPool(base):  # type: ignore[misc]
        """``SentinelConnectionPool`` that trusts the newest configuration and follows it."""

        _follower: asyncio.Task[None] | None = None
        # The last answer and when it came (loop time): a burst of new connections,
        # or one with a sentinel down (its stragglers' wait), asks once per interval.
        _answer: tuple[str, int] | None = None
        _answered_at = 0.0
        master_address: tuple[str, int] | None

        async def newest_master(self) -> tuple[str, int]:
            address = await _newest_master(self, sentinel_module.MasterNotFoundError)
            self._answer, self._answered_at = address, asyncio.get_running_loop().time()
            return address

        async def get_master_address(self) -> tuple[str, int]:
            fresh = asyncio.get_running_loop().time() - self._answered_at < FOLLOW_INTERVAL
            address = self._answer if fresh and self._answer else await self.newest_master()
            if self.master_address != address:
                self.master_address = address
                await self.disconnect(inuse_connections=False)
            return address

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            if self._follower is None or self._follower.done():
                self._follower = asyncio.get_running_loop().create_task(
                    _follow_master(self, FOLLOW_INTERVAL),
                    name=f"session-repo sentinel follower ({self.service_name})",
                )
            return await super().get_connection(*args, **kwargs)

        async def stop_following(self) -> None:
            follower, self._follower = self._follower, None
            if follower is not None:
                follower.cancel()
                await asyncio.wait([follower])

    _MADE[("pool", base)] = FollowingPool
    return FollowingPool


def _master_class(base: type[Any]) -> type[Any]:
    if (made := _MADE.get(("client", base))) is not None:
        return made

    class SentinelMaster(base):  # type: ignore[misc]
        """The master client; closing its pool stops the follower and the sentinels' clients.

        ``Sentinel`` keeps one client per sentinel and ``master_for`` leaves them to
        the caller; this ties their lifetime to the client the repository closes.
        """

        _sentinel: Any = None

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            closes_pool = close_connection_pool or (
                close_connection_pool is None and self.auto_close_connection_pool
            )
            if closes_pool:
                await self.connection_pool.stop_following()
            try:
                await super().aclose(close_connection_pool)
            finally:
                if closes_pool and self._sentinel is not None:
                    # One client per sentinel (valkey-py's Sentinel has no aclose()).
                    await asyncio.gather(*(node.aclose() for node in self._sentinel.sentinels))

    SentinelMaster.__name__ = SentinelMaster.__qualname__ = f"Sentinel{base.__name__}"
    _MADE[("client", base)] = SentinelMaster
    return SentinelMaster


def sentinel_client(url: str, family: ClientFamily, **connection_kwargs: Any) -> Any:
    """A client of the master the sentinels name, following it through failovers.

    Nothing is connected yet: the first command asks the sentinels. While in use,
    the client asks them again every ``FOLLOW_INTERVAL`` seconds and, when the
    master has moved, drops its connections (commands in flight fail with a
    transient ``ConnectionError``) so that the next ones go to the new master.

    Args:
        url: a sentinel URL (see :func:`parse_sentinel_url`).
        family: the client library (redis-py or valkey-py) the URL's scheme names.
        **connection_kwargs: for the master's connection pool (``max_connections``,
            ``decode_responses``, ``socket_timeout``, ...); the ``socket_*`` ones serve
            the sentinels too.

    Raises:
        ConfigError: a bad URL, or one whose library is not ``family``.
    """
    parsed = parse_sentinel_url(url)
    if parsed.library != family.name:
        raise ConfigError(
            f"a {parsed.library}+sentinel URL needs the {parsed.library} client, not {family.name}"
        )
    sentinel_module = import_module(f"{family.name}.asyncio.sentinel")
    sentinel_kwargs: dict[str, Any] = {
        key: value for key, value in connection_kwargs.items() if key.startswith("socket_")
    }
    if parsed.sentinel_username is not None:
        sentinel_kwargs["username"] = parsed.sentinel_username
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
    master_kwargs = dict(connection_kwargs, db=parsed.db)
    if parsed.username is not None:
        master_kwargs["username"] = parsed.username
    if parsed.password is not None:
        master_kwargs["password"] = parsed.password
    if parsed.ssl:
        sentinel_kwargs["ssl"] = True
        master_kwargs["ssl"] = True
    sentinel = sentinel_module.Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
    master = sentinel.master_for(
        parsed.service_name,
        # redis_class= / valkey_class=
        **{f"{family.name}_class": _master_class(family.client_class())},
        connection_pool_class=_pool_class(sentinel_module),
        **master_kwargs,
    )
    master._sentinel = sentinel
    return master
