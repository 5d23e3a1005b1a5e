"""What ``FlyReplayMiddleware`` reads from the app's answer, and how it answers instead.

The app hands out a session key in a response header or a ``Set-Cookie`` (and ends
a cookie session by clearing the cookie); like request headers, these are parsed
without ever raising. An answer in the app's place is an HTTP response, or for a
websocket the denial-response extension when the server has it, else a close.
"""

from __future__ import annotations

import re
from typing import Any

from session_repo._asgi import Headers, Receive, Send, send_response
from session_repo.fly.headers import PAIR_TYPES
from session_repo.fly.request import header_pairs, text, valid_key

__all__ = ["SetCookie", "parse_set_cookie", "respond", "response_key"]

_MAX_AGE = re.compile(r"-?[0-9]{1,18}")


class SetCookie:
    """What one ``Set-Cookie`` does to a cookie: sets ``value``, or ``cleared`` it.

    Args:
        value: the cookie's new value (empty when cleared that way).
        cleared: whether the header removes the cookie.
    """

    __slots__ = ("cleared", "value")

    def __init__(self, value: str, cleared: bool) -> None:
        self.value = value
        self.cleared = cleared


def parse_set_cookie(header: str, name: str, now: float) -> SetCookie | None:
    """What a ``Set-Cookie`` response header does to cookie ``name``.

    It clears the cookie with an empty value, ``Max-Age`` of 0 or less, or (with no
    ``Max-Age``) an ``Expires`` at or before ``now``, as a browser would (RFC 6265).

    Args:
        header: one ``Set-Cookie`` header value.
        name: the cookie's name.
        now: the time, in seconds since the epoch, to judge ``Expires`` by.

    Returns:
        What it does to the cookie, or None when it is about another cookie.
    """
    first, *attributes = header.split(";")
    key, sep, raw = first.strip().partition("=")
    if not sep or key.strip() != name:
        return None
    value = raw.strip().strip('"')
    max_age: str | None = None
    expires: str | None = None
    for attribute in attributes:
        attr, _, attr_value = attribute.strip().partition("=")
        if attr.strip().lower() == "max-age":
            max_age = attr_value.strip()
        elif attr.strip().lower() == "expires":
            expires = attr_value.strip()
    if max_age is not None and _MAX_AGE.fullmatch(max_age):
        return SetCookie(value, not value or int(max_age) <= 0)
    return SetCookie(value, not value or (expires is not None and _expired(expires, now)))


def _expired(expires: str, now: float) -> bool:
    # Imported here: email.utils costs a sixth of `import session_repo.fly`, and only a
    # cookie with an Expires and no Max-Age needs it.
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(expires).timestamp() <= now
    except (TypeError, ValueError, OverflowError, IndexError):  # not a date: no expiry
        return False


def response_key(
    headers: Any, header: bytes, cookie: str | None, now: float
) -> tuple[str | None, bool]:
    """The session key an app's response hands out, and whether it clears the cookie.

    Args:
        headers: the ``headers`` of the app's ``http.response.start``.
        header: the session header's name, lowercase bytes (header mode).
        cookie: the session cookie's name (cookie mode), or None for header mode.
        now: the time, in seconds since the epoch, to judge a cookie's ``Expires`` by.

    Returns:
        The first usable key handed out (None if none), and whether a ``Set-Cookie``
        clears the session cookie.
    """
    if cookie is None and type(headers) is list and header.isascii():
        try:  # header mode, a list as apps hand it over: one pass, no copy
            return _header_key(headers, header), False
        except Exception:  # not pairs of bytes after all: read them as header_pairs gives
            headers = header_pairs(headers)
    given: str | None = None
    cleared = False
    for raw_name, raw_value in header_pairs(headers):
        name = raw_name.lower()
        if cookie is None and name == header:
            value = text(raw_value)
            if given is None and valid_key(value):
                given = value
        elif cookie is not None and name == b"set-cookie":
            parsed = parse_set_cookie(text(raw_value), cookie, now)
            if parsed is not None and parsed.cleared:
                cleared = True
            elif parsed is not None and given is None and valid_key(parsed.value):
                given = parsed.value
    return given, cleared


def _header_key(headers: list[Any], header: bytes) -> str | None:
    """``response_key``'s header mode on an unchecked list: raises on what is not bytes pairs.

    Only a name as long as ``header`` is looked at: lowering keeps a length, and a
    ``str`` that ``header_pairs`` would encode to an ASCII name is as long as those
    bytes (one of another length is skipped, as ``header_pairs`` would skip or encode it).
    An item that cannot unpack into two, a name with no length, or where it is looked at
    a name not ``bytes``, an item no tuple or list (a dict of two keys) or a value with no
    ``decode``, raises (a ``bytearray``'s decodes to what its bytes would).
    """
    size = len(header)
    for pair in headers:
        name, value = pair
        if len(name) != size:
            continue
        if type(name) is not bytes or type(pair) not in PAIR_TYPES:
            raise TypeError("not a pair of bytes")
        if name.lower() == header:
            key: str = value.decode("latin-1")
            if valid_key(key):
                return key
    return None


async def respond(
    scope: Any, receive: Receive, send: Send, status: int, headers: Headers, body: bytes = b""
) -> None:
    """Answer in the app's place: an HTTP response; for a websocket, a denial response.

    A websocket gets the denial-response extension's answer when the server offers
    it, else a close with code 1013 ("try again later").

    Args:
        scope: the request's ASGI scope.
        receive: its ``receive`` (a websocket's connect message is read first).
        send: its ``send``.
        status: the HTTP status.
        headers: the headers, without ``Content-Length`` (added here).
        body: the body.
    """
    if scope["type"] == "http":
        await send_response(send, status, headers, body)
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        start = {"type": "websocket.http.response.start", "status": status, "headers": headers}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013})  # "try again later"
