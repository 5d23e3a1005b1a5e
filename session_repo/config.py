"""``SessionStoreConfig``: every setting, read from ``SESSION_STORE_*`` variables."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Self

from session_repo._core.inputs import (
    DEFAULT_TTL_MS,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from session_repo.errors import ConfigError, InvalidInput

__all__ = ["DEFAULT_URL", "SessionStoreConfig", "StoreKind", "mask_url", "store_kind", "url_scheme"]

DEFAULT_URL = "sqlite+aiosqlite:///session-store.sqlite"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")

StoreKind = Literal["sql", "redis", "memory"]
"""The kinds of store a URL can name: a SQL database, Redis, or in-process memory."""

# Each scheme the library serves (without its ``+driver``), and the kind of store it is.
_STORE_KINDS: dict[str, StoreKind] = {
    "sqlite": "sql",
    "postgresql": "sql",
    "postgres": "sql",  # as hosts hand it out; read as postgresql+asyncpg
    "mysql": "sql",
    "mariadb": "sql",
    "redis": "redis",
    "rediss": "redis",
    "valkey": "redis",  # a Valkey server, through valkey-py
    "valkeys": "redis",
    # Named for the error message's list; url_scheme() reads them as "redis" / "valkey".
    "redis+cluster": "redis",  # Redis Cluster: host:port[,host:port...]
    "redis+sentinel": "redis",
    "valkey+cluster": "redis",
    "memory": "memory",
}


@dataclass(frozen=True, slots=True)
class SessionStoreConfig:
    """Settings for ``create_session_repository``; times are in seconds.

    Every field is checked when the config is made; ``from_env`` reads them from the
    ``SESSION_STORE_*`` variables.

    Args:
        enabled: false gives the null store, which keeps nothing.
        url: the store: ``sqlite+aiosqlite:///path``, ``postgresql+asyncpg://...``,
            ``mysql+asyncmy://...``, ``redis://...`` (``redis+cluster://h:p,h:p/``)
            or ``memory://``.
        ttl: a binding's life when a call passes none.
        cleanup_interval: seconds between background cleanups; 0 turns them off.
        cleanup_batch: the most rows one cleanup batch removes.
        retry_count: tries of one call before the fallback serves it.
        retry_delay: the first backoff between tries; it doubles, with jitter.
        max_sessions: the memory store's bound (and the fallback's warm cache's).
        fallback: ``"memory"`` serves from memory while the store fails; ``"none"``
            raises its errors instead.
        auto_migrate: upgrade the schema on open; ``None`` means SQLite only.
        pool_size: connections a server database's pool keeps.
        connect_timeout: the longest wait for a connection.
        statement_timeout: the longest a server statement may run.
        busy_timeout: the longest a SQLite writer waits for the lock.
        sqlite_synchronous: ``"NORMAL"`` or ``"FULL"`` (what a power cut can lose).
        journal_max: outage writes the resilient wrapper keeps for write-back.
        redis_wait_replicas: Redis writes wait (``WAIT``) until this many replicas
            have them; 0 waits for none.
        redis_wait_timeout: the longest a Redis write waits for its replicas.

    Raises:
        ConfigError: a field breaks its rule; the message names it.
    """

    enabled: bool = True
    url: str = DEFAULT_URL
    ttl: float = DEFAULT_TTL_MS / 1000
    cleanup_interval: float = 60.0
    cleanup_batch: int = 5000
    retry_count: int = 3
    retry_delay: float = 0.1
    max_sessions: int = 100_000
    fallback: Literal["memory", "none"] = "memory"
    auto_migrate: bool | None = None
    pool_size: int = 5
    connect_timeout: float = 10.0
    statement_timeout: float = 30.0
    busy_timeout: float = 5.0
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    journal_max: int = 100_000
    redis_wait_replicas: int = 0
    redis_wait_timeout: float = 1.0

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={mask_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"SessionStoreConfig({shown})"

    def __post_init__(self) -> None:
        _check_url("url", self.url)
        for name, check in _FIELD_RULES.items():
            value = getattr(self, name)
            try:
                check(name, value)
            except (TypeError, InvalidInput) as exc:
                raise ConfigError(f"{exc}, not {value!r}") from None
        if self.sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(
                f"sqlite_synchronous must be 'NORMAL' or 'FULL', not {self.sqlite_synchronous!r}"
            )
        if self.fallback not in ("memory", "none"):
            raise ConfigError(f"fallback must be 'memory' or 'none', not {self.fallback!r}")
        for name in ("enabled", "auto_migrate"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "auto_migrate" and value is None):
                raise ConfigError(f"{name} must be a bool, not {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the ``SESSION_STORE_*`` variables; unset or blank ones take the defaults.

        Args:
            environ: the variables to read; ``None`` for ``os.environ``.

        Returns:
            The settings those variables describe.

        Raises:
            ConfigError: a value is malformed; the message names the variable and the value.
        """
        env = _Env(os.environ if environ is None else environ)
        url_name = "SESSION_STORE_URL"
        url = env.get(url_name)
        source = env.get("SESSION_STORE_URL_FROM")
        if url is None and source is not None:  # the variable a host sets, as it sets it
            url_name, url = source, env.get(source)
            if url is None:
                raise ConfigError(f"SESSION_STORE_URL_FROM={source!r}: that variable is not set")
        if url is None:
            path = env.get("SESSION_STORE_PATH")
            if path == ":memory:":
                url = "memory://"
            elif path is not None:
                url = f"sqlite+aiosqlite:///{path}"
            else:
                url = DEFAULT_URL
        return cls(
            enabled=env.boolean("SESSION_STORE_ENABLED", True),
            url=env.checked(url_name, url, _check_url),
            ttl=env.millis("SESSION_STORE_TTL_MS", DEFAULT_TTL_MS, positive=True),
            cleanup_interval=env.millis("SESSION_STORE_CLEANUP_INTERVAL_MS", 60_000),
            cleanup_batch=env.integer("SESSION_STORE_CLEANUP_BATCH", 5000, minimum=1),
            retry_count=env.integer("SESSION_STORE_RETRY_COUNT", 3, minimum=1),
            retry_delay=env.millis("SESSION_STORE_RETRY_DELAY_MS", 100),
            max_sessions=env.integer("SESSION_STORE_MAX_SESSIONS", 100_000, minimum=1),
            fallback=env.choice("SESSION_STORE_FALLBACK", "memory", ("memory", "none")),
            auto_migrate=env.optional_boolean("SESSION_STORE_AUTO_MIGRATE"),
            pool_size=env.integer("SESSION_STORE_POOL_SIZE", 5, minimum=1),
            connect_timeout=env.millis("SESSION_STORE_CONNECT_TIMEOUT_MS", 10_000, positive=True),
            statement_timeout=env.millis(
                "SESSION_STORE_STATEMENT_TIMEOUT_MS", 30_000, positive=True
            ),
            busy_timeout=env.millis("SESSION_STORE_BUSY_TIMEOUT_MS", 5_000, positive=True),
            sqlite_synchronous=env.choice(
                "SESSION_STORE_SQLITE_SYNCHRONOUS", "normal", ("normal", "full")
            ).upper(),
            journal_max=env.integer("SESSION_STORE_JOURNAL_MAX", 100_000, minimum=1),
            redis_wait_replicas=env.integer("SESSION_STORE_REDIS_WAIT_REPLICAS", 0, minimum=0),
            redis_wait_timeout=env.millis(
                "SESSION_STORE_REDIS_WAIT_TIMEOUT_MS", 1_000, positive=True
            ),
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Self:
        """A copy with some fields replaced, checked like a new config.

        Args:
            overrides: field names to their new values.

        Returns:
            The new settings; this one is unchanged.

        Raises:
            ConfigError: a name is not a field, or a value breaks its field's rule.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown session store setting(s): {', '.join(unknown)}")
        return replace(self, **overrides)


class _Env:
    """Typed reads of environment variables; each error names variable and value."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def checked(self, name: str, value: str, check: Any) -> str:
        try:
            check(name, value)
        except ConfigError as exc:
            raise ConfigError(f"{name}={mask_url(value)!r}: {exc}") from None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional_boolean(name)
        return default if value is None else value

    def optional_boolean(self, name: str) -> bool | None:
        raw = self.get(name)
        if raw is None:
            return None
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
        return value

    def millis(self, name: str, default: int, *, positive: bool = False) -> float:
        """Milliseconds in the variable, seconds out."""
        raw = self.get(name)
        if raw is None:
            return default / 1000
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number of milliseconds") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            rule = "> 0" if positive else ">= 0"
            raise ConfigError(f"{name}={raw!r} must be finite and {rule}")
        return value / 1000

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> Any:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() not in options:
            raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(options)}")
        return raw.lower()


# The numeric fields and the contract's rule each keeps (``bool`` is refused by all).
_FIELD_RULES: dict[str, Callable[[str, object], object]] = {
    "ttl": positive_seconds,
    "cleanup_interval": non_negative_seconds,
    "cleanup_batch": positive_int,
    "retry_count": positive_int,
    "retry_delay": non_negative_seconds,
    "max_sessions": positive_int,
    "pool_size": positive_int,
    "connect_timeout": positive_seconds,
    "statement_timeout": positive_seconds,
    "busy_timeout": positive_seconds,
    "journal_max": positive_int,
    "redis_wait_replicas": non_negative_int,
    "redis_wait_timeout": positive_seconds,
}


def url_scheme(url: str) -> str:
    """The scheme a URL starts with, lowercased and without its driver.

    Args:
        url: a store URL, e.g. ``postgresql+asyncpg://app@db/app``.

    Returns:
        ``"postgresql"`` for that example; the text before ``://`` (or the whole
        text, without one) otherwise.
    """
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def store_kind(url: str) -> StoreKind:
    """Which kind of store a URL names: the one place that reads schemes.

    Args:
        url: a store URL, as ``SESSION_STORE_URL`` holds it.

    Returns:
        ``"sql"`` for SQLite, PostgreSQL and MariaDB/MySQL, ``"redis"`` for
        ``redis://``, ``rediss://``, ``valkey://``, ``valkeys://`` and their ``+cluster`` and
        ``+sentinel`` forms, ``"memory"`` for ``memory://``.

    Raises:
        ConfigError: ``url`` is not a URL, or its scheme names no store this library has.
    """
    _check_url("url", url)
    return _STORE_KINDS[url_scheme(url)]


def _check_url(name: str, url: object) -> None:
    if not isinstance(url, str) or "://" not in url:
        shown = repr(mask_url(url)) if isinstance(url, str) else type(url).__name__
        raise ConfigError(f"{name} must be a URL like {DEFAULT_URL!r}, not {shown}")
    if not _SCHEME.fullmatch(url.split("://", 1)[0]):
        raise ConfigError(f"{name} must start with a scheme like 'sqlite+aiosqlite://'")
    scheme = url_scheme(url)
    if scheme not in _STORE_KINDS:
        raise ConfigError(
            f"{name} has unsupported scheme {scheme!r}; use one of: {', '.join(_STORE_KINDS)}"
        )


def mask_url(text: str) -> str:
    """``text`` with anything that looks like a URL's password shown as ``***``.

    Works on any string, parsable or not: everything between ``user:`` and the last
    ``@`` of the part after ``scheme://`` (or of the whole text without a scheme) is
    hidden, so a password with an unescaped ``@``, ``/`` or ``#`` is hidden whole.

    Args:
        text: a URL, or any text that may hold one (a log line, an error message).

    Returns:
        ``text`` with the password, if any, replaced.
    """
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):  # "app:pass://x@host" has no scheme
        scheme, sep, rest = "", "", text
    if rest.startswith("/"):  # no authority (sqlite:///path): no userinfo to hide
        return text
    userinfo, at, host = rest.rpartition("@")
    if not at or (":" not in userinfo and not set(userinfo) & set("/?#")):
        return text  # no "@", or a user name alone
    user = userinfo.split(":", 1)[0]
    shown = "***" if set(user) & set("/?#") else f"{user}:***"
    return f"{scheme}{sep}{shown}@{host}"
