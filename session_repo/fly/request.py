"""What ``FlyReplayMiddleware`` reads from a request, before its body.

A request is read once from the scope's raw headers: routing never waits for the
body. Every header is client input, so this is the one place that parses them, and
it cannot raise: a value that does not parse (a ``Content-Length`` of ``\\xb2`` or
``+5``, a session key with a space, bytes in no encoding) counts as absent or, for a
length, as unknown.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

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
# The request headers routing reads besides the session's own, by (lowercase) name.
_COOKIE, _CONTENT_LENGTH, _TRANSFER_ENCODING, _REPLAY_SRC, _REPLAY_FAILED = range(5)
_FIELDS = {
    b"cookie": _COOKIE,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"fly-replay-src": _REPLAY_SRC,
    b"fly-replay-failed": _REPLAY_FAILED,
}


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


def as_bytes(value: Any) -> bytes:
    """A header name or value as bytes, whatever the server handed over.

    Args:
        value: ``bytes``, ``bytearray``, ``memoryview`` or ``str`` (anything else is
            taken as empty).

    Returns:
        The bytes; a ``str`` is encoded as UTF-8, lone surrogates included.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b""


def text(value: bytes) -> str:
    """Header bytes as text; latin-1 maps every byte, so this cannot fail.

    Args:
        value: the raw header bytes.

    Returns:
        One character per byte.
    """
    return value.decode("latin-1")


def header_pairs(headers: Any) -> list[tuple[bytes, bytes]]:
    """ASGI ``(name, value)`` header pairs as bytes; anything else in the list is skipped.

    Args:
        headers: a scope's or a response start's ``headers``, as a server or an app
            gave them (None and non-iterables give no pairs).

    Returns:
        The well-formed pairs, in order.
    """
    if type(headers) is list:  # what servers hand over: bytes pairs, taken as they are
        try:
            plain = all(type(name) is bytes and type(value) is bytes for name, value in headers)
        except Exception:  # an item that is no pair: sorted out below
            plain = False
        if plain:
            return headers
    pairs: list[tuple[bytes, bytes]] = []
    try:
        items = list(headers or ())
    except TypeError:
        return pairs
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            pairs.append((as_bytes(item[0]), as_bytes(item[1])))
    return pairs


def query_value(query: bytes, name: bytes) -> str | None:
    """The value of parameter ``name`` in a URL's query, as Starlette reads it.

    Names and values are percent-decoded (``+`` is a space); of several with the
    name, the last counts, as in Starlette's ``request.query_params``, so the
    middleware routes by the very key the app will use.

    Args:
        query: the raw query (an ASGI scope's ``query_string``, or after the ``?``).
        name: the parameter's name, as bytes.

    Returns:
        Its value as text (one character per byte), or None when the query has none.
    """
    found: bytes | None = None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if _unquote(key) == name:
            found = value
    return None if found is None else text(_unquote(found))


def _unquote(raw: bytes) -> bytes:
    if b"%" not in raw and b"+" not in raw:
        return raw
    return unquote_to_bytes(raw.replace(b"+", b" "))


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header.

    Args:
        header: the ``Cookie`` header (several joined with ``"; "``).
        name: the cookie's name.

    Returns:
        Its value, unquoted, or None when the header has no such cookie.
    """
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class FlyRequest:
    """The parts of an HTTP or websocket request that routing looks at.

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
        pairs: the request's headers, as ``header_pairs`` gives them.
        content_length: the ``Content-Length``; None when absent, -1 when it does not
            parse or several disagree.
        chunked: whether ``Transfer-Encoding`` says chunked.
        replay_src: the ``fly-replay-src`` header, None when absent or too long.
        replay_failed: the ``fly-replay-failed`` header, None when absent.
    """

    __slots__ = (
        "cacheable",
        "chunked",
        "content_length",
        "method",
        "pairs",
        "path",
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
        self.content_length: int | None = None  # -1: sent, but unusable
        self.chunked = False
        self.replay_src: str | None = None
        self.replay_failed: str | None = None
        key: str | None = None
        cookies: list[str] = []
        self.pairs = header_pairs(scope.get("headers"))
        read_header = header if cookie is None else b""
        for raw_name, raw_value in self.pairs:
            name = raw_name.lower()
            if name == read_header and key is None and header:
                key = raw_value.decode("latin-1")
                continue
            field = _FIELDS.get(name)
            if field is None:
                continue
            if field == _COOKIE:
                if cookie is not None:
                    cookies.append(text(raw_value))
            elif field == _CONTENT_LENGTH:
                self.content_length = _length(raw_value, self.content_length)
            elif field == _TRANSFER_ENCODING:
                self.chunked = self.chunked or b"chunked" in raw_value.lower()
            elif field == _REPLAY_SRC:
                if self.replay_src is None and len(raw_value) <= MAX_FIELD:
                    self.replay_src = text(raw_value)
            elif self.replay_failed is None:  # _REPLAY_FAILED
                self.replay_failed = text(raw_value[:MAX_FIELD])
        if cookie is not None and cookies:
            key = cookie_value("; ".join(cookies), cookie)
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

    def protocol_version(self) -> bytes | None:
        """The ``MCP-Protocol-Version`` header (read only when needed: not on the hot path).

        Returns:
            Its first value (at most 4096 bytes), or None when absent.
        """
        for name, value in self.pairs:
            if name.lower() == b"mcp-protocol-version":
                return value[:MAX_FIELD]
        return None

    def cache_status(self) -> bytes | None:
        """The ``fly-replay-cache-status`` header, lowercase (read only for a misrouted request).

        Fly sends it to a replay's target: ``hit`` (delivered by the replay cache,
        straight past the machine that issued the replay), ``miss`` (replayed by a
        machine), ``bypass`` (the cache was skipped); absent when not replayed.

        Returns:
            Its first value (at most 4096 bytes), stripped and lowercase, or None.
        """
        for name, value in self.pairs:
            if name.lower() == b"fly-replay-cache-status":
                return value[:MAX_FIELD].strip(_OWS).lower()
        return None

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


def _length(raw: bytes, seen: int | None) -> int:
    """A ``Content-Length`` value; -1 if it is not plain ASCII digits or disagrees with one
    sent before it (RFC 9110 section 8.6)."""
    value = raw.strip(_OWS)
    # bytes.isdigit() is ASCII digits only: no sign, no "\xb2"; 18 digits cannot overflow.
    length = int(value) if value.isdigit() and len(value) <= 18 else -1
    return length if seen is None or seen == length else -1
