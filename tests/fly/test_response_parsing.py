"""``response_key`` against a plain reference, on any headers an app's answer may carry.

In header mode it reads an app's list of pairs as it is, looking only at names as long as
the session header's, and reads the whole list again the slow way at the first odd thing:
it must find exactly the key the obvious loop finds, and never raise.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from session_repo.fly.request import as_bytes, valid_key
from session_repo.fly.response import response_key
from tests.fly.test_request_parsing import odd_pairs

NAMES = [
    b"mcp-session-id",
    b"Mcp-Session-Id",
    b"mcp-session-ix",  # as long, another name
    b"content-type",
    b"x-key",
    b"X-KEY",
    b"x-kez",
    b"Mcp-S\xe9ssion",
]
VALUES = st.one_of(
    st.sampled_from([b"s1", b"s 2", b"", b"abc-123", b"\xe9t\xe9", b"x" * 1025]),
    st.binary(max_size=8),
)
BYTES_PAIR = st.tuples(st.sampled_from(NAMES), VALUES)
PAIR = st.one_of(
    *odd_pairs(BYTES_PAIR),
    # a str that lowers to an ASCII name (KELVIN SIGN), and one that encodes longer
    st.sampled_from([("x-\u212aey", "k1"), ("x-k\xe9y", "k2"), (b"x-key", "k3")]),
)
# Lists that pass the first checks (tuples and lists only), odd only in a name or a value.
NEARLY_PLAIN = st.lists(
    st.one_of(
        BYTES_PAIR,
        BYTES_PAIR.map(lambda p: (p[0].decode("latin-1"), p[1])),
        BYTES_PAIR.map(lambda p: [p[0], p[1].decode("latin-1")]),
        BYTES_PAIR.map(lambda p: (bytearray(p[0]), p[1])),
    ),
    max_size=6,
)
HEADERS = [b"mcp-session-id", b"x-key", b"mcp-s\xe9ssion"]


def reference(headers: Any, header: bytes) -> str | None:
    """The first usable key in a well-formed pair named ``header``, names and values as bytes."""
    try:
        items = list(headers or ())
    except TypeError:
        return None
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            name, value = as_bytes(item[0]).lower(), as_bytes(item[1]).decode("latin-1")
            if name == header and valid_key(value):
                return value
    return None


@settings(max_examples=500)
@given(
    headers=st.one_of(st.lists(PAIR, max_size=6), st.lists(BYTES_PAIR, max_size=6), NEARLY_PLAIN),
    header=st.sampled_from(HEADERS),
    as_tuple=st.booleans(),
)
def test_the_answer_hands_out_what_the_plain_loop_finds(
    headers: list[Any], header: bytes, as_tuple: bool
) -> None:
    sent = tuple(headers) if as_tuple else headers
    assert response_key(sent, header, None, 0.0) == (reference(headers, header), False)


def test_the_first_usable_key_counts_and_case_does_not() -> None:
    headers = [
        (b"Mcp-Session-Id", b"not usable"),
        (b"MCP-SESSION-ID", b"k1"),
        (b"mcp-session-id", b"k2"),
    ]
    assert response_key(headers, b"mcp-session-id", None, 0.0) == ("k1", False)


def test_a_name_or_value_not_bytes_is_read_as_its_bytes() -> None:
    for headers in (
        [(b"content-type", b"x"), ("Mcp-Session-Id", b"k1")],
        [(bytearray(b"mcp-session-id"), b"k1")],
        [[memoryview(b"mcp-session-id"), b"k1"], (b"mcp-session-id", b"k2")],
        [(b"mcp-session-id", bytearray(b"k1"))],
        [(b"mcp-session-id", "k1")],
    ):
        assert response_key(headers, b"mcp-session-id", None, 0.0) == ("k1", False), headers
    kelvin = [("x-\u212aey", "k1"), (b"x-key", b"k2")]  # lowers to x-key as text, not as bytes
    assert response_key(kelvin, b"x-key", None, 0.0) == ("k2", False)


def test_an_answer_with_no_headers_hands_out_nothing() -> None:
    for headers in ([], (), None, 5, "mcp-session-id"):
        assert response_key(headers, b"mcp-session-id", None, 0.0) == (None, False)
