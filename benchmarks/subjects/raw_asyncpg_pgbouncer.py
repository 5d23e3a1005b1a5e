"""Baseline: raw ``asyncpg`` through the same PgBouncer, as it must be configured there.

As ``raw_asyncpg`` (a pool of 10, one query per operation, no reset on release), with
``statement_cache_size=0``: in transaction mode a named statement prepared on one
server connection is not on the next, so asyncpg's unnamed statements (parsed again
with each Bind) are the only ones that work.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from benchmarks.subjects.base import Setup
from benchmarks.subjects.raw_asyncpg import RawAsyncpg, _no_reset
from benchmarks.subjects.repo_pg_pgbouncer import through_pgbouncer

__all__ = ["RawAsyncpgPgbouncer"]


class RawAsyncpgPgbouncer(RawAsyncpg):
    name = "asyncpg-pgbouncer"
    description = "raw asyncpg pool (10) through PgBouncer, statement_cache_size=0, no reset"
    server: str | None = "postgresql"

    async def open(self, setup: Setup) -> None:
        postgres = setup.need_postgres()
        url = make_url(through_pgbouncer(postgres)).set(drivername="postgresql")
        await postgres.reset()
        self._pool = await asyncpg.create_pool(
            url.render_as_string(hide_password=False), reset=_no_reset, statement_cache_size=0
        )
