"""What each MCP era's requests and answers look like to the middleware.

Three eras share one endpoint on a dual-era server:

- 2026-07-28 and later: no protocol session at all. A request names its revision in
  ``MCP-Protocol-Version``; one that also carries no session key needs no affinity
  (``sessionless``), so it passes with no storage I/O.
- the handshake era (2025-03-26 .. 2025-11-25, Streamable HTTP): the server hands out
  ``Mcp-Session-Id`` in a response header; routed by that header.
- the deprecated HTTP+SSE transport (2024-11-05): the client opens a GET event
  stream, whose first event, ``endpoint``, names the message endpoint with the
  session in its query (``/messages/?session_id=<hex>`` in the Python SDK); the
  client then POSTs there. ``EndpointScanner`` reads that event from the answer's
  body as it streams, so the session is bound before the client can use it.

Everything here reads client or app input and never raises on it.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from session_repo.fly.request import query_value, text, valid_key

__all__ = ["STATELESS_SINCE", "EndpointScanner", "SseEndpoint", "sessionless"]

STATELESS_SINCE = date(2026, 7, 28)  # the revision that removed protocol sessions
_VERSION = re.compile(rb"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_SCAN_LIMIT = 8192  # bytes of an event stream read for the endpoint event, at most
_LINE = re.compile(rb"\r\n|\r|\n")
# a line's end, then an empty line: where an event ends
_BLANK = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


@lru_cache(maxsize=16)  # clients send a handful of versions; the parse is 10x a lookup
def sessionless(version: bytes | None) -> bool:
    """Whether an ``MCP-Protocol-Version`` names a revision without protocol sessions.

    Args:
        version: the header's raw value, or None when absent.

    Returns:
        True for a real date of 2026-07-28 or later (surrounding spaces allowed);
        False for an earlier one, or anything that is not a ``YYYY-MM-DD`` date.
    """
    if version is None:
        return False
    shape = _VERSION.fullmatch(version.strip(b" \t"))
    if shape is None:
        return False
    try:
        day = date(*(int(part) for part in shape.groups()))
    except ValueError:  # 2026-02-30, month 13...
        return False
    return day >= STATELESS_SINCE


class SseEndpoint:
    """The message endpoint an ``endpoint`` event names.

    Args:
        path: its path, percent-decoded (as an ASGI scope's ``path`` will be).
        session_id: the session key in its query.
    """

    __slots__ = ("path", "session_id")

    def __init__(self, path: str, session_id: str) -> None:
        self.path = path
        self.session_id = session_id


class EndpointScanner:
    """Reads an event stream's first chunks for the HTTP+SSE ``endpoint`` event.

    It looks at most ``_SCAN_LIMIT`` bytes, and only until the first event with data:
    the 2024-11-05 transport sends ``endpoint`` first. After that it is ``done`` and
    costs nothing more.

    Args:
        param: the query parameter that carries the session key, as bytes.
    """

    __slots__ = ("_buffer", "_param", "_seen", "done")

    def __init__(self, param: bytes) -> None:
        self._param = param
        self._buffer = b""
        self._seen = 0  # bytes of whole blocks read so far
        self.done = False

    def feed(self, chunk: bytes) -> SseEndpoint | None:
        """Take the next body chunk.

        Args:
            chunk: the bytes of one ``http.response.body`` message.

        Returns:
            The endpoint, once its event is complete and names a usable key; None
            before that, and forever after (then ``done`` is set).
        """
        if self.done:
            return None
        room = _SCAN_LIMIT + 4 - self._seen - len(self._buffer)  # 4: a block's blank line
        self._buffer += chunk[: max(room, 0)]  # (a huge first chunk is not copied whole)
        while True:
            block, end, rest = _split_event(self._buffer)
            if end < 0 or self._seen + len(block) > _SCAN_LIMIT:
                if self._seen + len(self._buffer) > _SCAN_LIMIT:
                    self._finish()  # no endpoint event within the first _SCAN_LIMIT bytes
                return None
            self._seen += end
            self._buffer = rest
            event, data = _fields(block)
            if data is None:  # a comment or retry: not an event
                continue
            self._finish()
            return self._endpoint(data) if event == b"endpoint" else None

    def _finish(self) -> None:
        self.done, self._buffer = True, b""

    def _endpoint(self, data: bytes) -> SseEndpoint | None:
        try:
            parts = urlsplit(text(data.strip()))
        except ValueError:  # "http://[::1" and the like
            return None
        key = query_value(parts.query.encode("latin-1"), self._param)
        if key is None or not valid_key(key):
            return None
        return SseEndpoint(unquote(parts.path), key)


def _split_event(buffer: bytes) -> tuple[bytes, int, bytes]:
    """The first event block (up to a blank line), where the blank line ends (-1 when the
    block is not complete yet), and the rest."""
    blank = _BLANK.search(buffer)
    if blank is None:
        return buffer, -1, b""
    return buffer[: blank.start()], blank.end(), buffer[blank.end() :]


def _fields(block: bytes) -> tuple[bytes, bytes | None]:
    """An event block's type (``message`` when unnamed) and data (None: no data line)."""
    event, data = b"message", None
    for line in _LINE.split(block):
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            event = value
        elif name == b"data":
            data = value if data is None else data + b"\n" + value
    return event, data
