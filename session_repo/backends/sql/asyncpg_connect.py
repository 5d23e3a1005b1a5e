"""asyncpg connections for one engine, made for PostgreSQL itself or for a pooler in front.

Reached directly, a connection carries ``statement_timeout`` and ``lock_timeout`` as
startup parameters (the server bounds every statement) and asyncpg prepares named
statements once per connection (one round trip per statement after that).

A pooler in transaction mode (PgBouncer, Supavisor, a host's managed pooler) lends a
server connection for one transaction at a time, so none of that holds: a named
statement prepared on one server connection is missing from the next ("prepared
statement ... does not exist") or already taken there by another client, and a
session setting would leak to the clients that share the server connection next.
PgBouncer refuses the startup parameters ("unsupported startup parameter"), or drops
them when told to ignore them; either way the engine's first connection finds out
(a refusal, or a server whose ``statement_timeout`` is not the one sent), and from
then on each of its connections is made for a pooler:

- no startup parameters: asyncpg's ``command_timeout`` is the statement bound, and
  asyncpg cancels a statement that runs over it (a CancelRequest, which the pooler
  forwards to the server connection running it);
- ``statement_cache_size=0``: asyncpg's unnamed statements, parsed again in the same
  ``Sync`` as their ``Bind`` (asyncpg >= 0.29), so one server connection sees both.
  The connection keeps each statement it runs with arguments (``UnnamedStatements``):
  its description is known, so a call is one round trip (Parse, Bind, Execute,
  Sync), not asyncpg's two (Parse and Describe first, for every call).
  SQLAlchemy's statements (migrations, the schema check) are unnamed too: with its
  cache off, asyncpg's ``prepare()`` names none (so none is left on a shared server
  connection for another client to collide with, as uniquely named ones would be).

A URL with ``statement_cache_size=0`` gets unnamed statements from the first
connection on: the one option for a pooler that passes startup parameters on and so
cannot be told from PostgreSQL itself. Session mode is handled the same way (it
refuses the startup parameters too), which is correct there as well.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["AsyncpgConnect", "unnamed_statements_class"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


def _refused_startup_parameter(exc: BaseException) -> bool:
    """PgBouncer's refusal of a startup parameter it does not track (SQLSTATE 08P01)."""
    return (
        getattr(exc, "sqlstate", None) == "08P01"
        and "unsupported startup parameter" in str(exc).lower()
    )


_KEPT_MAX = 64  # statements kept per connection; the fast path runs about ten


def unnamed_statements_class() -> type[Any]:
    """``asyncpg.Connection`` keeping its unnamed statements (made once, on first use).

    For a connection whose statement cache is off (``statement_cache_size=0``):
    ``fetch``, ``fetchval``, ``fetchrow``, ``execute`` and ``executemany`` with
    arguments run through a ``PreparedStatement`` kept per query. asyncpg prepares it
    unnamed and marks it to be parsed again with every Bind, so it never depends on
    what a server connection has prepared: nothing is prepared there between calls.
    """
    global _UNNAMED_CLASS
    if _UNNAMED_CLASS is None:
        _UNNAMED_CLASS = _make_unnamed_class()
    return _UNNAMED_CLASS


_UNNAMED_CLASS: type[Any] | None = None


def _make_unnamed_class() -> type[Any]:
    import asyncpg

    class UnnamedStatements(asyncpg.Connection):  # type: ignore[misc]
        __slots__ = ("_kept",)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._kept: dict[str, Any] = {}

        @property
        def kept(self) -> list[str]:
            """The queries whose statements this connection keeps, oldest first."""
            return list(self._kept)

        async def _run(self, query: str, call: Callable[[Any], Awaitable[T]]) -> T:
            statement = self._kept.get(query)
            if statement is None:
                statement = await self.prepare(query)  # unnamed: the cache is off
                if len(self._kept) < _KEPT_MAX:
                    self._kept[query] = statement
            try:
                return await call(statement)
            except BaseException:
                # An outdated schema cache closes it, a cancellation may cut it off:
                # the next call prepares it afresh.
                self._kept.pop(query, None)
                raise

        async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args or kwargs:
                return await super().fetch(query, *args, **kwargs)
            return await self._run(query, lambda s: s.fetch(*args))

        async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args or kwargs:
                return await super().fetchval(query, *args, **kwargs)
            return await self._run(query, lambda s: s.fetchval(*args))

        async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args or kwargs:
                return await super().fetchrow(query, *args, **kwargs)
            return await self._run(query, lambda s: s.fetchrow(*args))

        async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args or kwargs:  # no arguments: the simple query protocol, as asyncpg
                return await super().execute(query, *args, **kwargs)

            async def status(statement: Any) -> str:
                await statement.fetch(*args)
                return str(statement.get_statusmsg())

            return await self._run(query, status)

        async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
            if kwargs:
                return await super().executemany(command, args, **kwargs)
            return await self._run(command, lambda s: s.executemany(args))

    return UnnamedStatements


class AsyncpgConnect:
    """``asyncpg.connect`` for one engine (SQLAlchemy's ``async_creator_fn``).

    Args:
        statement_timeout: seconds a statement may take, lock waits included.
        unnamed: use unnamed statements from the first connection on (the URL
            asked for ``statement_cache_size=0``).
    """

    def __init__(self, *, statement_timeout: float, unnamed: bool = False) -> None:
        self._statement_timeout = statement_timeout
        self._statement_ms = max(1, round(statement_timeout * 1000))
        self._unnamed = unnamed
        # None until the first connection tells: True behind a pooler.
        self.pooled: bool | None = None

    def _direct(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = dict(kwargs)
        # The server's own timeouts act first; asyncpg's catches a server that hangs.
        options.setdefault("command_timeout", self._statement_timeout + 1)
        options["server_settings"] = {
            **options.get("server_settings", {}),
            "statement_timeout": str(self._statement_ms),
            "lock_timeout": str(self._statement_ms),
        }
        if self._unnamed:
            options["statement_cache_size"] = 0
            options.setdefault("connection_class", unnamed_statements_class())
        return options

    def _through_pooler(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = dict(kwargs)
        options.pop("server_settings", None)
        options.setdefault("command_timeout", self._statement_timeout)
        options["statement_cache_size"] = 0
        options.setdefault("connection_class", unnamed_statements_class())
        return options

    def _found_pooler(self, how: str) -> None:
        if not self.pooled:
            _log.info(
                "PostgreSQL is behind a connection pooler (%s): unnamed statements, "
                "statements bounded by the client",
                how,
            )
        self.pooled = True

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import asyncpg

        if self.pooled:
            return await asyncpg.connect(*args, **self._through_pooler(kwargs))
        try:
            conn = await asyncpg.connect(*args, **self._direct(kwargs))
        except asyncpg.PostgresError as exc:
            if not _refused_startup_parameter(exc):
                raise
            self._found_pooler("it refused the startup parameters")
            return await asyncpg.connect(*args, **self._through_pooler(kwargs))
        if self.pooled is None:
            try:
                applied = await self._settings_applied(conn)
            except BaseException:
                conn.terminate()
                raise
            if not applied:
                await conn.close()
                self._found_pooler("it dropped the startup parameters")
                return await asyncpg.connect(*args, **self._through_pooler(kwargs))
            self.pooled = False
        return conn

    async def _settings_applied(self, conn: Any) -> bool:
        # The simple query protocol (no arguments): no prepared statement, one round
        # trip, whatever stands in between. "SELECT 1" when the server has our value.
        status = await conn.execute(
            "SELECT 1 FROM pg_catalog.pg_settings WHERE name = 'statement_timeout' "
            f"AND setting = '{self._statement_ms}'"
        )
        return str(status) == "SELECT 1"
