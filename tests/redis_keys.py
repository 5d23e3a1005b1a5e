"""What the shared suite's Redis backends do behind the repository's back: clear, read.

One client per call, given by the backend (a single node, a cluster, the master the
sentinels name), closed after.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bindings_under", "delete_under"]


async def delete_under(client: Any, prefix: str) -> None:
    """Delete every key starting with ``prefix`` (on every node, for a cluster client)."""
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


async def bindings_under(client: Any, match: str) -> list[tuple[bytes, str]]:
    """Every binding whose key matches ``match``: (digest, owner); the client decodes."""
    rows: list[tuple[bytes, str]] = []
    try:
        async for key in client.scan_iter(match=match, count=1000):
            value = await client.get(key)
            if value is not None:  # "owner generation epoch expires_at"
                rows.append((bytes.fromhex(key.rsplit(":", 1)[1]), value.partition(" ")[0]))
    finally:
        await client.aclose()
    return rows
