"""Fly's session-based replay cache, as the proxy simulator models it.

``fly.toml`` declares rules, each ``[[http_service.http_options.replay_cache]]`` with
``path_prefix``, ``ttl_seconds`` (Fly: "at least 10 seconds"), ``type`` (``"header"``
or ``"cookie"``) and ``name``. A ``fly-replay`` answer to a request that matches a
rule and carries that header or cookie is cached for that value, unless it cannot
be: Fly documents that "the ``state`` field cannot be set in the ``fly-replay``
intended to be cached" (a replay with ``timeout`` or ``fallback`` is not cached here
either). Later requests with the value go straight to the cached machine with
``fly-replay-cache-status: hit`` and no ``fly-replay-src``; a request replayed by a
machine gets ``miss``; one whose client sent ``fly-replay-cache-control: skip``, for
an entry whose replay said ``fly-replay-cache-allow-bypass: yes``, gets ``bypass``
and goes through the load balancer. A machine that answers a replay with
``fly-replay-cache: invalidate`` drops the entry.

Not documented by Fly, modelled the safe way: an entry whose machine is not running
is dropped and the request load-balanced as a miss ("Replay caching is an
optimization, not a guarantee"); "only one step of lookup is performed", so only the
first replay of a request is cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from session_repo.testing._headers import header, replay_fields

__all__ = ["CACHE_STATUS", "CacheClock", "ReplayCache", "ReplayCacheRule", "with_cache_status"]

CACHE_STATUS = b"fly-replay-cache-status"
_UNCACHEABLE = ("state", "timeout", "fallback")
CacheKey = tuple[int, str]


class CacheClock(Protocol):
    """What the cache reads the time from (``FakeClock`` is one)."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayCacheRule:
    """One ``[[http_service.http_options.replay_cache]]`` rule of ``fly.toml``.

    Args:
        path_prefix: the paths it covers (``"/"``: all).
        ttl_seconds: how long an entry lives; Fly requires at least 10.
        type: ``"header"`` or ``"cookie"``.
        name: the header's or cookie's name.

    Raises:
        ValueError: a field Fly would refuse.
    """

    path_prefix: str
    ttl_seconds: int
    type: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.path_prefix, str) or not self.path_prefix.startswith("/"):
            raise ValueError(f"path_prefix must start with '/': {self.path_prefix!r}")
        ttl = self.ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 10:
            raise ValueError(f"ttl_seconds must be an int >= 10 (Fly's minimum): {ttl!r}")
        if self.type not in ("header", "cookie"):
            raise ValueError(f"type must be 'header' or 'cookie': {self.type!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("name must be a non-empty str")

    @classmethod
    def of(cls, rule: ReplayCacheRule | Mapping[str, Any]) -> ReplayCacheRule:
        """A rule, from itself or from its ``fly.toml`` table as a mapping.

        Args:
            rule: a rule, or ``{"path_prefix": ..., "ttl_seconds": ..., "type": ...,
                "name": ...}``.

        Returns:
            The rule.
        """
        if isinstance(rule, ReplayCacheRule):
            return rule
        return cls(rule["path_prefix"], rule["ttl_seconds"], rule["type"], rule["name"])


@dataclass(slots=True)
class _Entry:
    target: str
    expires: float
    allow_bypass: bool


class ReplayCache:
    """The proxy's cache of replays, per rule and header or cookie value.

    Args:
        rules: the ``fly.toml`` rules (see ``ReplayCacheRule.of``).
        now: the time source, in seconds (a ``FakeClock``'s ``now`` in tests).

    Attributes:
        hits: requests sent straight to a cached machine.
        misses: requests that matched a rule and found no usable entry.
        bypasses: requests that skipped an entry (``fly-replay-cache-control: skip``).
        stored: replays cached.
        invalidations: entries dropped by ``fly-replay-cache: invalidate``.
        gone: entries dropped because their machine was not running.
    """

    def __init__(
        self, rules: Iterable[ReplayCacheRule | Mapping[str, Any]], now: Callable[[], float]
    ) -> None:
        self.rules = [ReplayCacheRule.of(rule) for rule in rules]
        self._now = now
        self._entries: dict[CacheKey, _Entry] = {}
        self.hits = self.misses = self.bypasses = 0
        self.stored = self.invalidations = self.gone = 0

    def key(self, scope: Any) -> CacheKey | None:
        """The entry a request would use: the first rule it matches, and its value.

        Args:
            scope: the request's ASGI scope.

        Returns:
            (rule index, header or cookie value), or None when no rule applies.
        """
        for index, rule in enumerate(self.rules):
            if not str(scope.get("path", "")).startswith(rule.path_prefix):
                continue
            value = _value(scope["headers"], rule)
            if value:
                return index, value
        return None

    def lookup(self, key: CacheKey, headers: Any, running: Sequence[str]) -> tuple[str | None, str]:
        """Where a request with ``key`` goes, as the cache decides.

        Args:
            key: its cache key.
            headers: its headers (for ``fly-replay-cache-control``).
            running: the running machines' ids.

        Returns:
            (the cached machine, ``"hit"``) or (None, ``"miss"`` or ``"bypass"``).
        """
        entry = self._entries.get(key)
        if entry is not None and self._now() >= entry.expires:
            del self._entries[key]
            entry = None
        if entry is not None and entry.target not in running:
            del self._entries[key]
            self.gone += 1
            entry = None
        if entry is None:
            self.misses += 1
            return None, "miss"
        skip = (header(headers, b"fly-replay-cache-control") or "").strip().lower() == "skip"
        if skip and entry.allow_bypass:
            self.bypasses += 1
            return None, "bypass"
        self.hits += 1
        return entry.target, "hit"

    def learn(self, key: CacheKey, replay: str, answer: Any, target: str | None) -> None:
        """What a machine's ``fly-replay`` answer does to the entry for ``key``.

        Args:
            key: the request's cache key.
            replay: the ``fly-replay`` value.
            answer: the answer's headers.
            target: where the replay goes (None: nowhere reachable).
        """
        if (header(answer, b"fly-replay-cache") or "").strip().lower() == "invalidate":
            if self._entries.pop(key, None) is not None:
                self.invalidations += 1
            return
        fields = replay_fields(replay)
        if target is None or any(name in fields for name in _UNCACHEABLE):
            return
        bypass = (header(answer, b"fly-replay-cache-allow-bypass") or "").strip().lower()
        ttl = self.rules[key[0]].ttl_seconds
        self._entries[key] = _Entry(target, self._now() + ttl, bypass == "yes")
        self.stored += 1

    def target(self, value: str) -> str | None:
        """The machine cached for a header or cookie value (under any rule), if live.

        Args:
            value: the session header's or cookie's value.

        Returns:
            The machine id, or None when nothing unexpired is cached for it.
        """
        now = self._now()
        for (_, cached), entry in self._entries.items():
            if cached == value and now < entry.expires:
                return entry.target
        return None


def with_cache_status(headers: list[Any], status: str) -> list[Any]:
    """``headers`` with ``fly-replay-cache-status: <status>`` as the only such header.

    Args:
        headers: the request's ASGI header pairs.
        status: ``hit``, ``miss`` or ``bypass``.

    Returns:
        A new list of header pairs.
    """
    kept = [(k, v) for k, v in headers if bytes(k).lower() != CACHE_STATUS]
    return [*kept, (CACHE_STATUS, status.encode("latin-1"))]


def _value(headers: Any, rule: ReplayCacheRule) -> str | None:
    if rule.type == "header":
        return header(headers, rule.name.lower().encode("latin-1"))
    for key, value in headers:
        if bytes(key).lower() == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                name, sep, item = part.strip().partition("=")
                if sep and name == rule.name:
                    return item.strip().strip('"')
    return None
