"""``FlyRequest`` against a model written here: a server's headers, made odd on purpose.

Servers hand over lowercase bytes pairs, each name once; a parser may take a shortcut
for that shape (a dict of the pairs, a lookup per field), which is only right if it
notices everything else: a name in any case, a name sent twice (the first session key
wins, disagreeing lengths are -1, cookies are joined), a ``str``, ``bytearray`` or
``None`` where bytes belong (``None`` reads as empty, not as absent), an item that is no
pair but iterates as two. Each example is such a list with none to three of these in
it, so a shortcut that misses one of them fails here; the model is the plain loop.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from session_repo.fly.request import FlyRequest

READ = [
    b"mcp-session-id",
    b"content-length",
    b"mcp-protocol-version",
    b"cookie",
    b"transfer-encoding",
    b"fly-replay-src",
    b"fly-replay-failed",
    b"fly-replay-cache-status",
]
OTHER = [b"host", b"mcp-s\xe9ssion", b"123", b""]  # unread, non-ASCII, no cased letter
LIMIT = 4096
VALUE = st.one_of(
    st.sampled_from([b"sid1", b"5", b" 7 ", b"+5", b"\xb2", b"chunked", b"a=1; sid=s2", b""]),
    st.sampled_from([b" Hit\t", b"2026-07-28", b"s 3", b"x" * (LIMIT + 1)]),
    st.binary(max_size=8),
)
# What servers send: lowercase bytes names, each once.
SERVER = st.lists(
    st.tuples(st.sampled_from(READ + OTHER), VALUE), unique_by=lambda p: p[0], max_size=7
)


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""


def recased(name: bytes, flips: list[bool]) -> bytes:
    """``name`` with the ASCII letters where ``flips`` says in the other case (and the
    Latin-1 ones, which a lowercase bytes name keeps as they are)."""
    return bytes(
        c ^ 32 if flip and chr(c).isalpha() else c for c, flip in zip(name, flips, strict=True)
    )


def odd_item(draw: st.DrawFn, item: tuple[bytes, bytes]) -> Any:
    """``item`` made odd in one way a buggy server or app might."""
    name, value = item
    how = draw(st.sampled_from(["case", "name", "value", "item", "twice"]))
    if how == "case":
        return recased(name, draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name))))
    if how == "name":
        return (draw(st.sampled_from([name.decode("latin-1"), bytearray(name)])), value)
    if how == "value":
        odd = [value.decode("latin-1"), bytearray(value), memoryview(value), None, 7]
        return (name, draw(st.sampled_from(odd)))
    if how == "item":
        keys = dict.fromkeys([name, value])  # iterates as two names, but is no pair
        odd = [[name, value], keys, (name, value, b"x"), (name,), "xy", b"ab", None, 5]
        return draw(st.sampled_from(odd))
    return None  # "twice": see headers


def bytes_pair(item: Any) -> bool:
    return type(item) is tuple and len(item) == 2 and all(type(x) is bytes for x in item)


@st.composite
def headers(draw: st.DrawFn) -> list[Any]:
    """A server's headers, as they are or with one to three oddities."""
    pairs: list[Any] = list(draw(SERVER))
    for _ in range(draw(st.integers(0, 3))):
        plain = [i for i, p in enumerate(pairs) if bytes_pair(p)]
        if not plain:
            break
        at = draw(st.sampled_from(plain))
        odd = odd_item(draw, pairs[at])
        if isinstance(odd, bytes):
            pairs[at] = (odd, pairs[at][1])
        elif odd is None:  # the same name again, as sent or in capitals, anywhere
            name = pairs[at][0]
            again = (name if draw(st.booleans()) else name.upper(), draw(VALUE))
            pairs.insert(draw(st.integers(0, len(pairs))), again)
        else:
            pairs[at] = odd
    return pairs


def length(raw: bytes, seen: int | None) -> int:
    value = raw.strip(b" \t")
    sent = int(value) if value and len(value) <= 18 and set(value) <= set(b"0123456789") else -1
    return sent if seen is None or seen == sent else -1


def model(scope: dict[str, Any], header: bytes, cookie: str | None) -> dict[str, Any]:
    """The request's attributes, by the plain loop over the pairs as bytes."""
    header = header if cookie is None else b""
    got: dict[str, Any] = dict.fromkeys(
        ["session_id", "content_length", "protocol_version", "replay_src", "replay_failed"]
    )
    got.update(chunked=False, cache_status=None, cacheable=True)
    cookies = []
    for item in scope["headers"]:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            continue
        name, value = as_bytes(item[0]).lower(), as_bytes(item[1])
        if header and name == header and got["session_id"] is None:
            got["session_id"] = value.decode("latin-1")
        elif name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name == b"content-length":
            got["content_length"] = length(value, got["content_length"])
        elif name == b"transfer-encoding":
            got["chunked"] = got["chunked"] or b"chunked" in value.lower()
        elif name == b"mcp-protocol-version" and got["protocol_version"] is None:
            got["protocol_version"] = value[:LIMIT]
        elif name == b"fly-replay-src" and got["replay_src"] is None:
            got["replay_src"] = value.decode("latin-1") if len(value) <= LIMIT else None
        elif name == b"fly-replay-failed" and got["replay_failed"] is None:
            got["replay_failed"] = value[:LIMIT].decode("latin-1")
        elif name == b"fly-replay-cache-status" and got["cache_status"] is None:
            got["cache_status"] = value[:LIMIT].strip(b" \t").lower()
    if cookie is not None and cookies:
        got["session_id"] = None
        for part in "; ".join(cookies).split(";"):
            key, sep, value_ = part.strip().partition("=")
            if sep and key == cookie:
                got["session_id"] = value_.strip().strip('"')
                break
    key = got["session_id"]
    if key is not None and not (0 < len(key) <= 1024 and all("!" <= c <= "~" for c in key)):
        got["session_id"] = None
    return got


@settings(max_examples=1500, deadline=None)
@given(
    pairs=headers(),
    header=st.sampled_from([b"mcp-session-id", b"content-length", b"mcp-s\xe9ssion", b""]),
    cookie=st.sampled_from([None, "sid"]),
)
def test_the_request_reads_what_the_model_reads(
    pairs: list[Any], header: bytes, cookie: str | None
) -> None:
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": pairs}
    request = FlyRequest(scope, header, cookie)
    assert {name: getattr(request, name) for name in model(scope, header, cookie)} == model(
        scope, header, cookie
    )
    assert (request.method, request.path) == ("POST", "/mcp")


def test_a_name_sent_twice_is_read_as_the_loop_reads_it() -> None:
    pairs = [
        (b"mcp-session-id", b"first"),
        (b"content-length", b"5"),
        (b"cookie", b"a=1"),
        (b"mcp-session-id", b"second"),
        (b"content-length", b"6"),
        (b"cookie", b"sid=s2"),
    ]
    request = FlyRequest({"headers": pairs}, b"mcp-session-id", None)
    assert (request.session_id, request.content_length) == ("first", -1)
    assert FlyRequest({"headers": pairs}, b"", "sid").session_id == "s2"


def test_a_value_that_is_none_reads_as_empty_not_as_absent() -> None:
    request = FlyRequest({"headers": [(b"content-length", None)]}, b"mcp-session-id", None)
    assert request.content_length == -1  # an empty Content-Length: unusable, not missing
