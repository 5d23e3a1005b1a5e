"""The library through PgBouncer in transaction mode (``.ci/pgbouncer``), as a user
constructs it: the URL of the pooler, no option."""

from __future__ import annotations

import os
import socket

from sqlalchemy.engine import make_url

from benchmarks.postgres import PostgresTemplate
from benchmarks.subjects.base import Setup
from benchmarks.subjects.library import LibrarySubject
from session_repo import SessionRepository, SqlSessionRepository

__all__ = ["PGBOUNCER_PORT", "RepoPgPgbouncer", "through_pgbouncer"]

# Transaction mode, 5 server connections per database (.ci/pgbouncer).
PGBOUNCER_PORT = int(os.environ.get("SESSION_REPO_BENCH_PGBOUNCER_PORT", "6432"))


def through_pgbouncer(postgres: PostgresTemplate) -> str:
    """The benchmark database's URL through PgBouncer (same host, PgBouncer's port).

    Raises:
        RuntimeError: PgBouncer does not answer there.
    """
    url = make_url(postgres.url).set(port=PGBOUNCER_PORT)
    try:
        with socket.create_connection((url.host or "127.0.0.1", PGBOUNCER_PORT), timeout=1):
            pass
    except OSError as exc:
        raise RuntimeError(
            f"PgBouncer not reachable at {url.host}:{PGBOUNCER_PORT} ({exc}): .ci/pgbouncer start"
        ) from None
    return url.render_as_string(hide_password=False)


class RepoPgPgbouncer(LibrarySubject):
    name = "repo-pg-pgbouncer"
    description = "SqlSessionRepository('postgresql+asyncpg://...') through PgBouncer, defaults"
    server: str | None = "postgresql"

    async def build(self, setup: Setup) -> SessionRepository:
        postgres = setup.need_postgres()
        url = through_pgbouncer(postgres)
        await postgres.reset()  # directly: the rows, copied in
        return SqlSessionRepository(url)
