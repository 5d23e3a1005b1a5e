"""The ``?option=value`` part of a ``postgresql+asyncpg`` URL, checked and typed.

SQLAlchemy's asyncpg dialect hands every query option to ``asyncpg.connect`` as a
string (it converts only ``port`` and ``prepared_statement_cache_size``). An option
asyncpg does not know, or a number left as text, would fail every connect with a
``TypeError``; here it fails once, up front, as a ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

from session_repo.errors import ConfigError

__all__ = ["asyncpg_query_options"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


# Options a URL may carry, each with how its text becomes the value asyncpg expects.
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "prepared_statement_cache_size": int,  # SQLAlchemy's own statement cache
    "statement_cache_size": int,
    "max_cached_statement_lifetime": float,
    "max_cacheable_statement_size": int,
    "timeout": float,
    "command_timeout": float,
    "ssl": str,
    "direct_tls": _boolean,
    "passfile": str,
    "service": str,
    "servicefile": str,
    "target_session_attrs": str,
    "krbsrvname": str,
    "gsslib": str,
    # Read by the dialect itself (a Unix socket directory, several hosts).
    "host": str,
    "port": str,
}


def asyncpg_query_options(url: URL) -> dict[str, Any]:
    """The URL's query options as ``asyncpg.connect`` arguments.

    Raises:
        ConfigError: an option asyncpg does not take, given twice, or of the wrong type.
    """
    options: dict[str, Any] = {}
    for name, value in url.query.items():
        convert = _OPTIONS.get(name)
        if convert is None:
            known = ", ".join(sorted(_OPTIONS))
            raise ConfigError(
                f"unknown option {name!r} in a postgresql+asyncpg URL; known: {known}"
            )
        if not isinstance(value, str):
            if name in ("host", "port"):  # several hosts: the dialect pairs them itself
                continue
            raise ConfigError(f"option {name!r} is given more than once in the URL")
        if name in ("host", "port"):
            continue
        try:
            options[name] = convert(value)
        except ValueError:
            raise ConfigError(f"option {name}={value!r} in the URL is not valid") from None
        if name.endswith("timeout") and options[name] <= 0:
            raise ConfigError(f"option {name}={value!r} in the URL must be > 0")
    return options
