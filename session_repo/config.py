"""``SessionStoreConfig``: every setting, read from ``SESSION_STORE_*`` variables."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Self

from session_repo.errors import ConfigError

__all__ = ["DEFAULT_URL", "SessionStoreConfig", "mask_url"]

DEFAULT_URL = "sqlite+aiosqlite:///session-store.sqlite"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_URL_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "redis", "rediss", "memory")


@dataclass(frozen=True, slots=True)
class SessionStoreConfig:
    """Settings for ``create_session_repository``; times are in seconds."""

    enabled: bool = True
    url: str = DEFAULT_URL
    ttl: float = 600.0
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

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={mask_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"SessionStoreConfig({shown})"

    def __post_init__(self) -> None:
        _check_url("url", self.url)
        _check_number("ttl", self.ttl, minimum=0, inclusive=False)
        _check_number("cleanup_interval", self.cleanup_interval, minimum=0)
        _check_int("cleanup_batch", self.cleanup_batch, minimum=1)
        _check_int("retry_count", self.retry_count, minimum=1)
        _check_number("retry_delay", self.retry_delay, minimum=0)
        _check_int("max_sessions", self.max_sessions, minimum=1)
        _check_int("pool_size", self.pool_size, minimum=1)
        _check_number("connect_timeout", self.connect_timeout, minimum=0, inclusive=False)
        _check_number("statement_timeout", self.statement_timeout, minimum=0, inclusive=False)
        _check_number("busy_timeout", self.busy_timeout, minimum=0, inclusive=False)
        _check_int("journal_max", self.journal_max, minimum=1)
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

        Raises:
            ConfigError: a value is malformed; the message names the variable and the value.
        """
        env = _Env(os.environ if environ is None else environ)
        url = env.get("SESSION_STORE_URL")
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
            url=env.checked("SESSION_STORE_URL", url, _check_url),
            ttl=env.millis("SESSION_STORE_TTL_MS", 600_000, positive=True),
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
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Self:
        """A copy with some fields replaced, checked like a new config.

        Args:
            overrides: field names to their new values.

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


def _check_url(name: str, url: object) -> None:
    if not isinstance(url, str) or "://" not in url:
        shown = repr(mask_url(url)) if isinstance(url, str) else type(url).__name__
        raise ConfigError(f"{name} must be a URL like {DEFAULT_URL!r}, not {shown}")
    full = url.split("://", 1)[0]
    if not _SCHEME.fullmatch(full):
        raise ConfigError(f"{name} must start with a scheme like 'sqlite+aiosqlite://'")
    scheme = full.split("+", 1)[0].lower()
    if scheme not in _URL_SCHEMES:
        raise ConfigError(
            f"{name} has unsupported scheme {scheme!r}; use one of: {', '.join(_URL_SCHEMES)}"
        )


def _check_number(name: str, value: object, *, minimum: float, inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        rule = ">=" if inclusive else ">"
        raise ConfigError(f"{name} must be {rule} {minimum}, not {value!r}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, not {value!r}")


def mask_url(text: str) -> str:
    """``text`` with anything that looks like a URL's password shown as ``***``.

    Works on any string, parsable or not: everything between ``user:`` and the last
    ``@`` of the part after ``scheme://`` (or of the whole text without a scheme) is
    hidden, so a password with an unescaped ``@``, ``/`` or ``#`` is hidden whole.

    Args:
        text: a URL, or any text that may hold one (a log line, an error message).
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
