"""Header values as an ASGI server or app hands them over, as bytes and text, never raising.

Names and values may come as ``bytes``, ``bytearray``, ``memoryview`` or ``str`` from a
buggy server or app; these read them all the same way, and skip what is no pair.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = ["PAIR_TYPES", "as_bytes", "cookie_value", "header_pairs", "query_value", "text"]

PAIR_TYPES = frozenset({tuple, list})  # what a header pair may be


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
    # what servers hand over, a list of tuples of bytes, is taken as it is
    if type(headers) is list and PAIR_TYPES.issuperset(map(type, headers)):
        try:
            plain = all(type(name) is bytes and type(value) is bytes for name, value in headers)
        except ValueError:  # an item that is no pair: sorted out below
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
