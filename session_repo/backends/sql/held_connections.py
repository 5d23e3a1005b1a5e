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

__all__ = ["Held", "HeldConnections"]

Held = tuple[AsyncConnection, Any]
"""A lent connection: (its SQLAlchemy connection, the driver's)."""


class HeldConnections:
    """Up to ``limit`` connections of ``engine``, lent one caller at a time.

    The connections wait in a last-in, first-out queue (a quiet path keeps reusing
    one), with a ``None`` for each connection not made yet: whoever takes a ``None``
    checks one out. ``idle`` and ``give_back`` are plain calls, so an operation that
    finds a connection waiting pays for no extra coroutine.

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
        self._is_closed = is_closed
        self._options = options or {}
        self._ready: asyncio.LifoQueue[Held | None] = asyncio.LifoQueue()
        for _ in range(limit):
            self._ready.put_nowait(None)
        self._all: set[AsyncConnection] = set()

    def idle(self) -> Held | None:
        """A connection waiting to be lent, taken at once; None when there is none
        (then ``acquire``). Give it back with ``give_back`` or ``release``."""
        ready = self._ready
        if ready.empty():
            return None
        held = ready.get_nowait()
        if held is None or self._is_closed(held[1]):  # acquire() makes it, or drops it first
            ready.put_nowait(held)
            return None
        return held

    async def acquire(self) -> Held:
        """A connection for one caller: ``(its SQLAlchemy connection, the driver's)``.

        Waits while ``limit`` are lent. Give it back with ``give_back`` or ``release``.
        """
        held = await self._ready.get()
        if held is not None and not self._is_closed(held[1]):
            return held
        try:
            if held is not None:  # the server closed it while it waited: a fresh one
                await self._forget(held[0])
            conn = await self._engine.connect()
            try:
                if self._options:
                    await conn.execution_options(**self._options)
                raw = await conn.get_raw_connection()
            except BaseException:
                await conn.close()
                raise
        except BaseException:
            self._ready.put_nowait(None)
            raise
        self._all.add(conn)
        return conn, raw.driver_connection

    def give_back(self, held: Held) -> bool:
        """Take back a connection whose statement finished; False (and nothing taken
        back) when the server closed it: ``release(held, broken=True)`` drops it.

        Args:
            held: what ``idle`` or ``acquire`` lent.
        """
        if self._is_closed(held[1]):
            return False
        self._ready.put_nowait(held)
        return True

    async def release(self, held: Held, *, broken: bool = False) -> None:
        """Take back what was lent; a closed or broken connection is invalidated.

        Args:
            held: what ``idle`` or ``acquire`` lent.
            broken: its last statement was cut off (cancelled, failed mid-protocol), so
                the connection may still be busy: it is dropped, never lent again.
        """
        if not broken and self.give_back(held):
            return
        try:
            await self._forget(held[0])
        finally:
            self._ready.put_nowait(None)  # the next caller makes a fresh one

    async def _forget(self, conn: AsyncConnection) -> None:
        """Drop a connection that is closed or may be busy; what dropping it raises
        changes nothing (it is gone either way)."""
        self._all.discard(conn)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._drop(conn))  # a cancelled caller still drops it

    @staticmethod
    async def _drop(conn: AsyncConnection) -> None:
        try:
            await conn.invalidate()
        finally:
            await conn.close()

    async def close(self) -> None:
        """Give every connection back to the engine's pool (callers have finished)."""
        while not self._ready.empty():
            self._ready.get_nowait()
        connections, self._all = self._all, set()
        for conn in connections:
            try:
                await conn.close()
            except Exception:  # the server dropped it while idle: the pool forgets it
                with contextlib.suppress(Exception):
                    await conn.invalidate()
