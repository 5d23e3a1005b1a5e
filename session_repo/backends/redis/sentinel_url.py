"""Sentinel URLs: which sentinels, which service, which db, and whose password.

``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``;
``rediss+sentinel://`` is TLS, ``valkey+sentinel://`` and ``valkeys+sentinel://`` are
valkey-py's. The user and password are the master's; ``?sentinel_password=`` (and
``sentinel_username=``) are the sentinels' own. A port defaults to 26379, a db to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from session_repo.errors import ConfigError

__all__ = ["SentinelUrl", "is_sentinel_url", "parse_sentinel_url"]

# scheme -> (client library, TLS)
_SCHEMES = {
    "redis+sentinel": ("redis", False),
    "rediss+sentinel": ("redis", True),
    "valkey+sentinel": ("valkey", False),
    "valkeys+sentinel": ("valkey", True),
}
_DEFAULT_PORT = 26379
_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelUrl:
    """What a sentinel URL says, its secrets kept out of ``repr``."""

    library: str
    ssl: bool
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names sentinels (``redis+sentinel://`` and its kin).

    Args:
        url: any store URL.
    """
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme in _SCHEMES


def _address(part: str, scheme: str) -> tuple[str, int]:
    if part.startswith("["):  # [::1]:26379
        host, bracket, rest = part[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{scheme} URL: bad sentinel address {part!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ConfigError(f"{scheme} URL: a sentinel address has no host: {part!r}")
    if not port_text:
        return host, _DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            f"{scheme} URL: bad port {port_text!r} for sentinel {host!r} (want 1-65535)"
        )
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split a sentinel URL into its parts.

    Args:
        url: ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``
            (or ``rediss+``, ``valkey+``, ``valkeys+sentinel://``), optionally with
            ``?sentinel_username=...&sentinel_password=...``.

    Raises:
        ConfigError: not a sentinel URL, no sentinel hosts, a bad port, no service
            name, a bad db or an unknown option. The message never shows a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(f"not a sentinel URL (want one of {', '.join(_SCHEMES)}://)")
    library, ssl = _SCHEMES[scheme]
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    parts = [part for part in hosts.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"{scheme} URL names no sentinel hosts (want host:port[,host:port])")
    sentinels = tuple(_address(part.strip(), scheme) for part in parts)

    segments = path.split("/") if path else []
    if segments and segments[-1] == "":  # a trailing slash
        segments.pop()
    if not segments or not segments[0]:
        raise ConfigError(f"{scheme} URL names no service (want .../service_name[/db])")
    if len(segments) > 2:
        raise ConfigError(f"{scheme} URL: too many path parts (want /service_name[/db])")
    service_name = unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(
                f"{scheme} URL: bad db {segments[1]!r} (want a number >= 0 after the service)"
            )
        db = int(segments[1])

    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ConfigError(
                f"{scheme} URL: unknown option {key!r} (known: {', '.join(_OPTIONS)})"
            )
        options[key] = value
    return SentinelUrl(
        library=library,
        ssl=ssl,
        sentinels=sentinels,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )
