"""Driver connections checked out of the engine's own pool, held while in use.

The fast paths (PostgreSQL on asyncpg, MariaDB on asyncmy) run their statements on
the driver's connections directly (one round trip each), but they take them from
the repository's ``AsyncEngine`` (``AsyncConnection.get_raw_connection()``), so one
pool and one set of connect arguments (the dialect's reading of the URL, the
engine's ``connect_args`` and ``connect`` events) serve migrations and operations
alike.

Checking a connection out of SQLAlchemy's pool per operation would cost more
than the operation (a greenlet hop, and a pre-ping round trip), so a connection,
once checked out, stays with the path: idle ones wait in a list, at most ``limit``
exist, and each goes back to the engine's pool when the path closes (SQLAlchemy
resets what ``execution_options`` changed, an ``AUTOCOMMIT`` isolation level
included). One the server dropped is invalidated (the engine forgets it) and the
next caller checks out a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["HeldConnections"]


class HeldConnections:
    """Up to ``limit`` connections of ``engine``, lent one caller at a time.

    Args:
        engine: the repository's engine.
        limit: the most connections held at once.
        is_closed: whether a driver connection was closed (by the server or network).
        options: ``execution_options`` set on each connection when it is checked
            out (``isolation_level="AUTOCOMMIT"`` for a driver that opens
            transactions itself); the pool undoes them when it is given back.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        limit: int,
        *,
        is_closed: Callable[[Any], bool],
        options: dict[str, Any] | None = None,
    ) -> None:
        self._engine = engine
        self._free = asyncio.Semaphore(limit)
        self._is_closed = is_closed
        self._options = options or {}
        self._idle: list[tuple[AsyncConnection, Any]] = []
        self._all: set[AsyncConnection] = set()

    async def acquire(self) -> tuple[AsyncConnection, Any]:
        """A connection for one caller: ``(its SQLAlchemy connection, the driver's)``.

        Give it back with ``release``.
        """
        await self._free.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            conn = await self._engine.connect()
            try:
                if self._options:
                    await conn.execution_options(**self._options)
                raw = await conn.get_raw_connection()
            except BaseException:
                await conn.close()
                raise
        except BaseException:
            self._free.release()
            raise
        self._all.add(conn)
        return conn, raw.driver_connection

    async def release(self, held: tuple[AsyncConnection, Any], *, broken: bool = False) -> None:
        """Take back what ``acquire`` lent; a closed or broken connection is invalidated.

        Args:
            held: what ``acquire`` returned.
            broken: its last statement was cut off (cancelled, failed mid-protocol), so
                the connection may still be busy: it is dropped, never lent again.
        """
        conn, driver = held
        try:
            if broken or self._is_closed(driver):  # cut off, or the server dropped it
                self._all.discard(conn)
                await asyncio.shield(self._drop(conn))  # a cancelled caller still drops it
            else:
                self._idle.append(held)
        finally:
            self._free.release()

    @staticmethod
    async def _drop(conn: AsyncConnection) -> None:
        try:
            await conn.invalidate()
        finally:
            await conn.close()

    async def close(self) -> None:
        """Give every connection back to the engine's pool (callers have finished)."""
        self._idle.clear()
        connections, self._all = self._all, set()
        for conn in connections:
            try:
                await conn.close()
            except Exception:  # the server dropped it while idle: the pool forgets it
                with contextlib.suppress(Exception):
                    await conn.invalidate()
