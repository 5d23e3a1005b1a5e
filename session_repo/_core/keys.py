"""How a session id is kept: never in clear, only as its SHA-256 digest."""

from __future__ import annotations

import hashlib

__all__ = ["log_ref", "session_key"]


def session_key(session_id: str) -> bytes:
    """The 32-byte SHA-256 digest under which a session is stored."""
    # surrogatepass: every str hashes, even one with lone surrogates.
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


def log_ref(key: bytes) -> str:
    """A short, non-reversible reference to a session for logs."""
    return key.hex()[:12]
