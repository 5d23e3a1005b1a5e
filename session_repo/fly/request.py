"""What ``FlyReplayMiddleware`` reads from a request, before its body.

A request is read once from the scope's raw headers: routing never waits for the
body. Every header is client input, so this is the one place that parses them, and
it cannot raise: a value that does not parse (a ``Content-Length`` of ``\\xb2`` or
``+5``, a session key with a space, bytes in no encoding) counts as absent or, for a
length, as unknown.
"""

from __future__ import annotations

from typing import Any

from session_repo.fly.headers import (
    PAIR_TYPES,
    as_bytes,
    cookie_value,
    header_pairs,
    query_value,
    text,
)

__all__ = [
    "BODY_METHODS",
    "MAX_FIELD",
    "MAX_KEY",
    "FlyRequest",
    "as_bytes",
    "cookie_value",
    "header_pairs",
    "query_value",
    "text",
    "valid_key",
]

MAX_KEY = 1024
MAX_FIELD = 4096  # a fly-replay-src longer than this is not Fly's: ignored
# Methods whose requests carry a body; without a Content-Length its size is unknown.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_OWS = b" \t"
# The request headers routing reads, by lowercase name; the session's own is added per
# name (``_table``). A ``str`` spelling of one means the server handed over something other
# than bytes pairs: such a request is read again through ``header_pairs``.
_SESSION, _LENGTH, _VERSION, _COOKIE, _CHUNKED, _SRC, _FAILED, _CACHE, _IRREGULAR = range(9)
_FIELDS = {
    b"content-length": _LENGTH,
    b"mcp-protocol-version": _VERSION,
    b"cookie": _COOKIE,
    b"transfer-encoding": _CHUNKED,
    b"fly-replay-src": _SRC,
    b"fly-replay-failed": _FAILED,
    b"fly-replay-cache-status": _CACHE,
}
# session header name -> what to read (None: no fast path for it, see _table), and the
# lengths of those names: a name of any other length is none of them, unread
_TABLES: dict[bytes, tuple[dict[Any, int] | None, frozenset[int]]] = {}


class _Irregular(Exception):
    """A header that is not a pair of bytes: read the request again, the slow way."""


def valid_key(value: str) -> bool:
    """Whether ``value`` is a usable session key.

    Args:
        value: a key as read from a header or cookie.

    Returns:
        True for 1..1024 characters of visible ASCII (0x21-0x7E).
    """
    # isprintable() on ASCII is 0x20-0x7E: all of it but the space (C, not a char loop).
    return (
        0 < len(value) <= MAX_KEY and value.isascii() and value.isprintable() and " " not in value
    )


class FlyRequest:
    """The parts of an HTTP or websocket request that routing looks at.

    The scope's headers are read in one pass with one dict lookup per header, as the
    server handed them over when they are a list of tuples (or lists); anything there
    that turns out not to be a pair of bytes sends the request through
    ``header_pairs`` instead. Either way it reads what a plain loop would.

    Args:
        scope: the request's ASGI scope.
        header: the session header's name, lowercase bytes (``b""``: read no header).
        cookie: the session cookie's name; when given, the key is read from it and
            not from ``header``.
        query: a query parameter's name (bytes) to read the key from when the header
            or cookie gives none (the HTTP+SSE transport's ``session_id``).

    Attributes:
        method: the HTTP method (``"GET"`` when the scope has none).
        path: the path (``""`` when the scope has none).
        session_id: the session key, or None when there is no usable one.
        cacheable: whether the key came from where a ``fly.toml`` replay-cache rule can
            key on it (the header or the cookie), not from the query string.
        content_length: the ``Content-Length``; None when absent, -1 when it does not
            parse or several disagree.
        chunked: whether ``Transfer-Encoding`` says chunked.
        protocol_version: the first ``MCP-Protocol-Version`` (at most 4096 bytes), None
            when absent.
        replay_src: the ``fly-replay-src`` header, None when absent or too long.
        replay_failed: the ``fly-replay-failed`` header, None when absent.
        cache_status: the first ``fly-replay-cache-status`` (at most 4096 bytes),
            stripped and lowercase, None when absent. Fly sends it to a replay's target:
            ``hit`` (delivered by the replay cache, straight past the machine that
            issued the replay), ``miss`` (replayed by a machine), ``bypass``.
    """

    __slots__ = (
        "cache_status",
        "cacheable",
        "chunked",
        "content_length",
        "method",
        "path",
        "protocol_version",
        "replay_failed",
        "replay_src",
        "session_id",
    )

    def __init__(
        self, scope: Any, header: bytes, cookie: str | None, query: bytes | None = None
    ) -> None:
        method = scope.get("method", "GET")
        self.method: str = method if isinstance(method, str) else "GET"
        path = scope.get("path", "")
        self.path: str = path if isinstance(path, str) else ""
        headers = scope.get("headers")
        header = header if cookie is None else b""
        table, lengths = _TABLES[header] if header in _TABLES else _table(header)
        # a list: read as it is, unless _read finds that it is not of bytes pairs
        plain = table is not None and type(headers) is list
        key: str | None = None
        if plain:
            try:
                key = self._read(headers, table or _FIELDS, lengths, cookie)
            except Exception:  # see _read: read them as header_pairs gives them
                plain = False
        if not plain:
            fields = _fields(header)
            key = self._read(header_pairs(headers), fields, frozenset(map(len, fields)), cookie)
        if key is not None and not valid_key(key):
            key = None
        self.cacheable = True
        if key is None and query:  # no usable header or cookie: the HTTP+SSE query parameter
            raw_query = scope.get("query_string")
            if raw_query and isinstance(raw_query, bytes | bytearray):
                key = query_value(bytes(raw_query), query)
                key = key if key is not None and valid_key(key) else None
                self.cacheable = False
        self.session_id = key

    def _read(
        self, pairs: list[Any], table: dict[Any, int], lengths: frozenset[int], cookie: str | None
    ) -> str | None:
        """Read the headers; return the session key as sent (None: none).

        Only a name of one of ``lengths`` can be one read here: lowering keeps a length,
        and a ``str`` that ``header_pairs`` would encode to an ASCII name is as long as
        those bytes. On the fast path ``pairs`` is the server's list, unchecked: a name of
        such a length that is not ``bytes`` raises (``bytearray``: unhashable;
        ``memoryview``: no ``islower``; ``None``: no length; an item that cannot unpack
        into two: the unpacking) or, as a ``str``, is found as ``_IRREGULAR`` if it spells a
        header read here; a value read here that is not ``bytes``, or an item read here
        that is no tuple or list (a dict of two keys), raises ``_Irregular``. Any of these
        sends the request through ``header_pairs`` instead, and a name read nowhere is
        skipped either way. A name as servers send it, lowercase, is looked up as it is.
        """
        key: str | None = None
        length: int | None = None
        chunked = False
        version = src = failed = status = None
        cookies: list[str] | None = None
        for pair in pairs:
            raw_name, raw_value = pair
            if len(raw_name) not in lengths:
                continue
            field = table.get(raw_name)
            if field is None and not raw_name.islower():
                field = table.get(raw_name.lower())
            if field is None:
                continue
            if type(raw_value) is not bytes or field == _IRREGULAR or type(pair) not in PAIR_TYPES:
                raise _Irregular
            if field == _SESSION:
                if key is None:
                    key = raw_value.decode("latin-1")
                    continue
                field = _FIELDS.get(raw_name.lower())  # the session header, again
                if field is None:
                    continue
            if field == _LENGTH:
                value = raw_value.strip(_OWS)
                # bytes.isdigit() is ASCII only: no sign, no "\xb2"; 18 digits cannot overflow
                sent = int(value) if value.isdigit() and len(value) <= 18 else -1
                length = sent if length is None or length == sent else -1  # RFC 9110 8.6
            elif field == _VERSION:
                version = raw_value[:MAX_FIELD] if version is None else version
            elif field == _COOKIE:
                if cookie is not None:
                    cookies = [] if cookies is None else cookies
                    cookies.append(text(raw_value))
            elif field == _CHUNKED:
                chunked = chunked or b"chunked" in raw_value.lower()
            elif field == _SRC:
                if src is None and len(raw_value) <= MAX_FIELD:
                    src = text(raw_value)
            elif field == _FAILED:
                failed = text(raw_value[:MAX_FIELD]) if failed is None else failed
            elif status is None:  # _CACHE, the one left
                status = raw_value[:MAX_FIELD].strip(_OWS).lower()
        self.content_length: int | None = length
        self.chunked = chunked
        self.protocol_version: bytes | None = version
        self.replay_src: str | None = src
        self.replay_failed: str | None = failed
        self.cache_status: bytes | None = status
        if cookie is not None and cookies:
            return cookie_value("; ".join(cookies), cookie)
        return key

    def replayable(self, max_body: int) -> bool:
        """Whether Fly can replay this request: its body is known and small enough.

        Args:
            max_body: the largest body, in bytes, that may be replayed.

        Returns:
            False for a chunked body, an unusable ``Content-Length``, a body method
            with no length, or a length over ``max_body``.
        """
        if self.chunked or (self.content_length is not None and self.content_length < 0):
            return False
        if self.content_length is None:
            return self.method not in BODY_METHODS
        return self.content_length <= max_body


def _fields(header: bytes) -> dict[Any, int]:
    """``_FIELDS`` and the session header (``b""``: none, and then the cookie's), by
    lowercase name: a session header means no cookie is read."""
    if not header:
        return dict(_FIELDS)
    fields = {name: field for name, field in _FIELDS.items() if field != _COOKIE}
    return {**fields, header: _SESSION}


def _table(header: bytes) -> tuple[dict[Any, int] | None, frozenset[int]]:
    """What the fast path reads, by lowercase name: ``_fields`` and the ``str`` spelling of
    each as ``_IRREGULAR``. None for a non-ASCII header name: a ``str`` could spell it
    other than as its ``text``, so such requests are always read the slow way."""
    fields = _fields(header)
    table: dict[Any, int] | None = None
    if header.isascii():
        table = {**fields, **{text(name): _IRREGULAR for name in fields}}
    entry = table, frozenset(map(len, fields))
    if len(_TABLES) < 64:  # names come from configuration, not clients; bounded anyway
        _TABLES[header] = entry
    return entry
