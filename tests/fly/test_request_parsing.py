"""``FlyRequest`` and ``valid_key`` against a plain reference, on any headers a client sends.

The parser takes shortcuts on the hot path (a scope's pairs read as they are, unchecked,
one dict lookup per header, anything odd found on the way read again the slow way;
``str`` methods in C for the key check): each must read exactly what the obvious loop
reads, and nothing a client (or a buggy server) can send may raise out of it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from session_repo.fly.request import MAX_FIELD, FlyRequest, as_bytes, valid_key

NAMES = [
    b"mcp-session-id",
    b"Mcp-Session-Id",
    b"cookie",
    b"content-length",
    b"Transfer-Encoding",
    b"fly-replay-src",
    b"fly-replay-failed",
    b"MCP-Protocol-Version",
    b"fly-replay-cache-status",
    b"host",
    b"Mcp-S\xe9ssion",
]
VALUES = st.one_of(
    st.sampled_from([b"s1", b"s 2", b"5", b"+5", b"\xb2", b"chunked", b"sid=abc; x=1", b""]),
    st.binary(max_size=12),
    st.sampled_from([b"2026-07-28", b" Hit ", b"miss", b" 7 ", b"\t12"]),
    st.just(b"x" * (MAX_FIELD + 1)),
)
# A pair as a server hands it over, or the odd things a buggy one might.
BYTES_PAIR = st.tuples(st.sampled_from(NAMES), VALUES)
# What ASGI servers hand over: lowercase names, each once (the parser's fast path).
SERVERS = st.lists(
    st.tuples(st.sampled_from(sorted({n.lower() for n in NAMES})), VALUES),
    unique_by=lambda p: p[0],
    max_size=8,
)


def odd_pairs(pair: st.SearchStrategy[tuple[bytes, bytes]]) -> list[st.SearchStrategy[Any]]:
    """``pair`` as a server or an app may send it: str, bytearray, memoryview, or no pair."""
    return [
        pair,
        pair.map(lambda p: (p[0].decode("latin-1"), p[1].decode("latin-1"))),
        pair.map(lambda p: [bytearray(p[0]), memoryview(p[1])]),
        pair.map(lambda p: (memoryview(p[0]), p[1])),
        pair.map(lambda p: (p[0], bytearray(p[1]))),
        pair.map(lambda p: dict.fromkeys(p)),  # a 2-item iterable, but no pair
        st.sampled_from([None, 5, b"ab", (b"a", b"b", b"c"), (1, 2), [b"x"], "xy", ()]),
    ]


PAIR = st.one_of(*odd_pairs(BYTES_PAIR))


def content_length(raw: bytes, seen: int | None) -> int:
    """RFC 9110 8.6: 1-18 ASCII digits (optional whitespace around), agreeing with any before."""
    value = raw.strip(b" \t")
    ok = 1 <= len(value) <= 18 and all(48 <= byte <= 57 for byte in value)
    length = int(value) if ok else -1
    return length if seen is None or seen == length else -1


def reference(scope: Any, header: bytes, cookie: str | None) -> tuple[Any, ...]:
    """What the request's fields must be: the plain loop, one header at a time."""
    key: str | None = None
    cookies: list[str] = []
    length: int | None = None
    chunked = False
    src = failed = version = status = None
    for item in scope.get("headers") or ():
        if not (isinstance(item, tuple | list) and len(item) == 2):
            continue
        name, value = as_bytes(item[0]).lower(), as_bytes(item[1])
        if name == header and header and cookie is None and key is None:
            key = value.decode("latin-1")
        elif name == b"cookie" and cookie is not None:
            cookies.append(value.decode("latin-1"))
        elif name == b"content-length":
            length = content_length(value, length)
        elif name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif name == b"fly-replay-src" and src is None:
            src = value.decode("latin-1") if len(value) <= MAX_FIELD else None
        elif name == b"fly-replay-failed" and failed is None:
            failed = value[:MAX_FIELD].decode("latin-1")
        elif name == b"mcp-protocol-version" and version is None:
            version = value[:MAX_FIELD]
        elif name == b"fly-replay-cache-status" and status is None:
            status = value[:MAX_FIELD].strip(b" \t").lower()
    if cookie is not None and cookies:
        key = None
        for part in "; ".join(cookies).split(";"):
            name_, sep, value_ = part.strip().partition("=")
            if sep and name_ == cookie:
                key = value_.strip().strip('"')
                break
    if key is not None and not (0 < len(key) <= 1024 and all("!" <= c <= "~" for c in key)):
        key = None
    return key, length, chunked, src, failed, version, status


@settings(max_examples=600, deadline=None)
@given(
    headers=st.one_of(st.lists(PAIR, max_size=8), st.lists(BYTES_PAIR, max_size=8), SERVERS),
    cookie=st.sampled_from([None, "sid"]),
    header=st.sampled_from([b"mcp-session-id", b"", b"content-length", b"mcp-s\xe9ssion"]),
)
def test_the_request_reads_what_the_plain_loop_reads(
    headers: list[Any], cookie: str | None, header: bytes
) -> None:
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    request = FlyRequest(scope, header, cookie)
    got = (
        request.session_id,
        request.content_length,
        request.chunked,
        request.replay_src,
        request.replay_failed,
        request.protocol_version,
        request.cache_status,
    )
    assert got == reference(scope, header, cookie)


def test_headers_that_are_not_a_list_of_pairs_read_as_none() -> None:
    for headers in [None, 5, "host", ((b"content-length", b"5"),), iter([(b"cookie", b"x")])]:
        request = FlyRequest({"headers": headers}, b"mcp-session-id", None)
        assert request.session_id is None
        assert request.method == "GET"
    tupled = FlyRequest({"headers": ((b"content-length", b"5"),)}, b"", None)
    assert tupled.content_length == 5  # a tuple of pairs is read too, the slow way


@given(st.text(max_size=1030))
def test_valid_key_is_one_to_1024_visible_ascii_characters(value: str) -> None:
    expected = 0 < len(value) <= 1024 and all("!" <= c <= "~" for c in value)
    assert valid_key(value) is expected


def test_valid_key_at_its_edges() -> None:
    assert valid_key("!~")
    assert valid_key("a" * 1024)
    for bad in ["", "a" * 1025, "a b", "a\x7f", "a\x1f", "caf\u00e9", "\u2028", "a\tb"]:
        assert not valid_key(bad), repr(bad)
