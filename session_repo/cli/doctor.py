"""``session-repo doctor``: check a deployment's store and say what to fix.

Each check reports ok, warn or fail with one line, and a fix for anything not ok:
the URL, the SQLite file's permissions and WAL mode (read on a read-only
connection, so the check changes nothing), the schema revision, the connection,
and the clock against the database server's. Driver errors are translated by each
backend's own error table, as the library's operations are.
"""

from __future__ import annotations

import math
import os
import stat
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from session_repo.backends.sql.engine import create_engine, parse_url, sqlite_file
from session_repo.backends.sql.errors import storage_errors
from session_repo.backends.sql.migrate import MIGRATE_HINT, head_revision, schema_revision
from session_repo.config import SessionStoreConfig, store_kind, url_scheme
from session_repo.errors import ConfigError, SessionRepoError

__all__ = ["Finding", "diagnose"]

Level = Literal["ok", "warn", "fail"]
# Instances and the database disagreeing by more than this skews expiry visibly.
CLOCK_TOLERANCE_S = 2.0
_CLOCK_QUERIES = {
    "postgresql": "SELECT extract(epoch FROM clock_timestamp())",
    "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))",
    "mariadb": "SELECT UNIX_TIMESTAMP(NOW(6))",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result, with what to do about it.

    Args:
        level: "ok", "warn" or "fail".
        check: what was checked ("url", "file", "permissions", "schema", "wal",
            "connect", "clock" or "store").
        message: what the check found, in one line.
        fix: what to do when the level is not "ok" (empty when there is nothing to do).
    """

    level: Level
    check: str
    message: str
    fix: str = ""


async def diagnose(config: SessionStoreConfig) -> list[Finding]:
    """Every check that applies to ``config``, in order; changes nothing in the store.

    Args:
        config: the settings to check, as the library would use them.

    Returns:
        The findings; a failure to connect is a finding, not an exception.
    """
    if not config.enabled:
        return [
            Finding(
                "warn", "store", "disabled: nothing is stored", "set SESSION_STORE_ENABLED=true"
            )
        ]
    kind = store_kind(config.url)
    findings = [Finding("ok", "url", f"{url_scheme(config.url)} store configured")]
    if kind == "memory":
        findings.append(
            Finding(
                "warn",
                "store",
                "memory:// is per process: instances do not share it",
                "use a SQLite file (one machine) or PostgreSQL/Redis (a fleet)",
            )
        )
        return findings
    if kind == "redis":
        findings += await _redis_checks(config)
        return findings
    try:
        url = parse_url(config.url)
    except SessionRepoError as exc:
        return [Finding("fail", "url", str(exc), "fix SESSION_STORE_URL")]
    path = sqlite_file(url)
    if path is not None:
        findings += _file_checks(path)
        if not path.exists():  # checking the schema would create it: nothing more to see
            return findings
        findings += await _sqlite_file_state(path)
        return findings
    if url.get_backend_name() == "sqlite":
        findings.append(
            Finding(
                "warn", "store", "an in-memory SQLite database lives in one process",
                "use a SQLite file, or memory:// for tests",
            )
        )  # fmt: skip
        return findings
    findings += await _sql_checks(config, url.get_backend_name())
    return findings


def _file_checks(path: os.PathLike[str] | str) -> list[Finding]:
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.exists(name):
        if os.access(folder, os.W_OK) or not os.path.exists(folder):
            return [Finding("ok", "file", f"{name} does not exist yet; it will be created (0600)")]
        return [
            Finding(
                "fail",
                "file",
                f"cannot create {name}: {folder} is not writable",
                f"make {folder} writable by this user, or point SESSION_STORE_URL elsewhere",
            )
        ]
    findings = []
    for candidate in (name, f"{name}-wal", f"{name}-shm"):
        if not os.path.exists(candidate):
            continue
        mode = stat.S_IMODE(os.stat(candidate).st_mode)
        if mode & 0o077:
            findings.append(
                Finding(
                    "warn",
                    "permissions",
                    f"{candidate} is mode {mode:o}: others can read session data",
                    f"chmod 600 {candidate}",
                )
            )
    if not os.access(name, os.R_OK | os.W_OK):
        findings.append(
            Finding(
                "fail",
                "permissions",
                f"{name} is not readable and writable by this user",
                "chown the file to the service user, mode 600",
            )
        )
    if not findings:
        findings.append(Finding("ok", "permissions", f"{name} is owner-only"))
    return findings


async def _sql_checks(config: SessionStoreConfig, backend: str) -> list[Finding]:
    """A server database: connection, schema revision, clock."""
    engine = create_engine(
        config.url,
        pool_size=1,
        connect_timeout=config.connect_timeout,
        statement_timeout=config.statement_timeout,
    )
    findings: list[Finding] = []
    try:
        findings.append(_schema_finding(await schema_revision(engine), backend))
        with storage_errors("clock check"):
            async with engine.connect() as conn:
                server_time = (await conn.execute(text(_CLOCK_QUERIES[backend]))).scalar()
        findings.append(_clock_check(str(server_time)))
    except SessionRepoError as exc:  # the driver's error, translated by its table
        findings.append(
            Finding("fail", "connect", str(exc), "check the URL, the server and the credentials")
        )
    finally:
        await engine.dispose()
    return findings


async def _sqlite_file_state(path: os.PathLike[str] | str) -> list[Finding]:
    """Journal mode and schema as the file has them, on a read-only connection.

    Not the library's engine: it would switch WAL on and migrate, and a check must
    change nothing.
    """
    url = URL.create(
        "sqlite+aiosqlite", database=f"file:{os.fspath(path)}", query={"mode": "ro", "uri": "true"}
    )
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        revision = await schema_revision(engine)
        with storage_errors("journal mode check"):
            async with engine.connect() as conn:
                mode = str((await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()).lower()
    except SessionRepoError as exc:
        return [Finding("fail", "file", f"cannot read the file: {exc}", "restore it from a backup")]
    finally:
        await engine.dispose()
    findings = [_schema_finding(revision, "sqlite")]
    if mode == "wal":
        findings.append(Finding("ok", "wal", "journal_mode is WAL"))
    else:
        findings.append(
            Finding(
                "warn",
                "wal",
                f"journal_mode is {mode}",
                "open it once with session-repo (it sets WAL)",
            )
        )
    return findings


def _schema_finding(revision: str | None, backend: str) -> Finding:
    head = head_revision()
    if revision == head:
        return Finding("ok", "schema", f"at head ({head})")
    level: Level = "warn" if backend == "sqlite" else "fail"
    return Finding(level, "schema", f"at {revision or '(none)'}, head is {head}", MIGRATE_HINT)


async def _redis_checks(config: SessionStoreConfig) -> list[Finding]:
    from session_repo._core.translate import storage_errors as translated
    from session_repo.backends.redis.clients import family_of_url
    from session_repo.backends.redis.errors import is_transient

    try:
        family = family_of_url(config.url)
    except ConfigError as exc:
        return [Finding("fail", "url", str(exc), "fix SESSION_STORE_URL")]
    client = family.client_class().from_url(
        config.url, socket_connect_timeout=config.connect_timeout
    )
    try:
        with translated("connect", is_transient):
            seconds, micros = await client.time()
    except SessionRepoError as exc:  # the driver's error, translated by its table
        return [Finding("fail", "connect", str(exc), "check the URL and that Redis runs")]
    finally:
        await client.aclose()
    return [Finding("ok", "connect", "Redis answers"), _clock_check(f"{seconds}.{micros:06d}")]


def _clock_check(server_time: str) -> Finding:
    try:
        skew = float(server_time) - time.time()
    except ValueError:
        return Finding("warn", "clock", f"could not read the server's clock ({server_time!r})")
    if not math.isfinite(skew) or abs(skew) > CLOCK_TOLERANCE_S:
        return Finding(
            "warn",
            "clock",
            f"this machine's clock is {-skew:+.1f} s off the database's",
            "run NTP (chrony) on every instance: expiry is decided by each instance's clock",
        )
    return Finding("ok", "clock", f"within {abs(skew):.3f} s of the database's")
