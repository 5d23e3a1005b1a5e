"""The few header operations the proxy simulator does, on raw ASGI header pairs."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "HOP_HEADERS",
    "endpoint_session",
    "header",
    "query_param",
    "replay_fields",
    "session_ref",
    "with_hop_header",
]

_ENDPOINT = re.compile(rb"event: ?endpoint\r?\ndata: ?([^\r\n]*)")

# What the proxy adds on a replay; a client's or an earlier hop's copy is dropped first.
HOP_HEADERS = (b"fly-replay-src", b"fly-replay-failed")


def header(headers: Any, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase bytes) as text, None if absent.

    Args:
        headers: ASGI ``(name, value)`` pairs.
        name: the header's name, lowercase.

    Returns:
        The value, decoded as latin-1, or None.
    """
    for key, value in headers:
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def with_hop_header(headers: list[Any], name: bytes, value: str) -> list[Any]:
    """``headers`` without any fly-replay-src/-failed, plus ``name: value``.

    Args:
        headers: the request's ASGI header pairs.
        name: the hop header to set (one of ``HOP_HEADERS``).
        value: its value.

    Returns:
        A new list of header pairs.
    """
    kept = [(k, v) for k, v in headers if bytes(k).lower() not in HOP_HEADERS]
    return [*kept, (name, value.encode("latin-1"))]


def replay_fields(value: str) -> dict[str, str]:
    """The fields of a ``fly-replay`` value: ``a=1;b="x,y"`` gives {"a": "1", "b": "x,y"}.

    Args:
        value: the header's value.

    Returns:
        Field name (lowercase) -> value, unquoted.
    """
    fields = {}
    for part in value.split(";"):
        key, sep, item = part.partition("=")
        if sep:
            fields[key.strip().lower()] = item.strip().strip('"')
    return fields


def session_ref(session_id: str) -> str:
    """A short digest of a session header's value, for the simulator's records.

    Unlike ``session_repo.contract.session_ref`` it takes any text (a client may send
    anything), never raising.

    Args:
        session_id: the header's value.

    Returns:
        The first 12 hex digits of its SHA-256.
    """
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def query_param(query: Any, name: str) -> str | None:
    """The last value of query parameter ``name`` (as Starlette reads it), None if absent.

    Args:
        query: a scope's ``query_string`` (bytes) or a URL's query (str).
        name: the parameter's name.

    Returns:
        Its value, percent-decoded, or None.
    """
    if isinstance(query, bytes | bytearray):
        query = bytes(query).decode("latin-1")
    if not isinstance(query, str) or not query:
        return None
    found = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            found = value
    return found


def endpoint_session(chunk: bytes, name: str) -> str | None:
    """The session an HTTP+SSE ``endpoint`` event names, if ``chunk`` holds that event.

    Args:
        chunk: a body chunk of an event stream.
        name: the query parameter that carries the session (``session_id``).

    Returns:
        The session id in the event's URI, or None.
    """
    event = _ENDPOINT.search(chunk)
    if event is None:
        return None
    try:
        return query_param(urlsplit(event.group(1).decode("latin-1")).query, name)
    except ValueError:
        return None
