"""Owners and upkeep on Redis: heartbeats, release, ``delete_owner``, cleanup, gauges.

An owner that heartbeats has a mark in its tag's ``M`` hash (owner -> epoch), which
never expires, and a heartbeat key ``h:<owner>`` whose native ttl (``PX``) is its
life. Its bindings are live while the heartbeat key lives and they carry the mark's
epoch. When the heartbeat key expires the mark stays: that is what keeps the lapse
final (without it, the bindings would read as a never-heartbeating owner's, live
again). The next heartbeat starts a new epoch and removes, in the same script, what
the lapse killed. ``release`` removes an owner's bindings, then its mark and
heartbeat; cleanup removes a lapsed owner's bindings, then its mark, each tag's mark
only in the script that finds its index empty.

On a cluster every bucket holds its own mark and heartbeat key for the owner (a
heartbeat is one small script per bucket, pipelined), so that a binding's liveness
is read in its own slot. Each bucket decides alone: if a heartbeat reaches some
buckets only (the call fails, transient), the owner's bindings in a bucket whose
heartbeat lapsed there are dead, and stay so. ``owners`` lists an owner only while
its heartbeat lives in every bucket that marks it, until the earliest end.
"""

from __future__ import annotations

from typing import Any

from session_repo._core.cancel import cancel_requests, reraise_swallowed
from session_repo._core.storage import Gauges
from session_repo.backends.redis.runner import ScriptRunner

__all__ = ["OwnerOps"]


class OwnerOps(ScriptRunner):
    """The operations on owners and on the whole store, tag by tag.

    Args:
        client: as ``ScriptRunner`` takes it.
        prefix: starts every key.
        batch: the most index entries one cleanup, release or ``delete_owner`` step handles.
        kwargs: as ``ScriptRunner`` takes them.
    """

    def __init__(self, client: Any, prefix: str, *, batch: int, **kwargs: Any) -> None:
        super().__init__(client, prefix, **kwargs)
        self._batch = batch
        self._heartbeat = self._script("heartbeat")
        self._drop_owner = self._script("drop_owner")
        self._owners = self._script("owners")
        self._gauges = self._script("gauges")
        self._prune = self._script("prune")
        self._forget = self._script("forget")

    async def heartbeat(self, alloc_id: str, expires_at: int, now: int) -> None:
        ttl = max(expires_at - now, 1)
        await self._each_tag(
            [
                (
                    self._heartbeat,
                    [f"{tag}M", f"{tag}h:{alloc_id}"],
                    [tag, alloc_id, expires_at, ttl],
                )
                for tag in self._tags()
            ]
        )

    async def release(self, alloc_id: str, now: int) -> int:
        return (await self._drop(alloc_id, "release", self._tags()))[1]

    async def delete_owner(self, alloc_id: str, now: int) -> int:
        return (await self._drop(alloc_id, "bindings", self._tags()))[1]

    async def _drop(self, alloc_id: str, mode: str, tags: list[str]) -> tuple[int, int]:
        """Run ``drop_owner.lua`` on each tag until it says none is left: (removed, live).

        A release is a write (``WAIT``-ed, if asked); ``delete_owner`` and cleanup are
        upkeep, as before leases.
        """
        removed = live = 0
        before = cancel_requests()
        while tags:
            requests = [
                (
                    self._drop_owner,
                    [f"{tag}o:{alloc_id}", f"{tag}e", f"{tag}M"],
                    [tag, alloc_id, self._batch, mode],
                )
                for tag in tags
            ]
            send = self._each_tag if mode == "release" else self._direct
            replies = await send(requests)
            reraise_swallowed(before)  # a long loop stops at once when cancelled
            left = []
            for tag, (gone, were_live, done) in zip(tags, replies, strict=True):
                removed += int(gone)
                live += int(were_live)
                if not int(done):
                    left.append(tag)
            tags = left
        return removed, live

    async def _marked(self) -> list[tuple[str, dict[str, int | None]]]:
        """Per tag: every marked owner, and its heartbeat's end (``None``: lapsed)."""
        tags = self._tags()
        replies = await self._direct([(self._owners, [f"{tag}M"], [tag]) for tag in tags])
        marked = []
        for tag, reply in zip(tags, replies, strict=True):
            flat = [self._text(item) for item in reply]
            pairs = zip(flat[::2], flat[1::2], strict=True)
            ends = {owner: int(end) if end else None for owner, end in pairs}
            marked.append((tag, ends))
        return marked

    async def owners(self, now: int) -> dict[str, int]:
        live: dict[str, int] = {}
        lapsed: set[str] = set()
        for _, ends in await self._marked():
            for owner, end in ends.items():
                if end is None:
                    lapsed.add(owner)
                else:
                    live[owner] = min(end, live.get(owner, end))
        return {owner: end for owner, end in live.items() if owner not in lapsed}

    async def cleanup(self, now: int, batch: int) -> int:
        """Forget the expiries Redis has expired, prune the indexes, drop lapsed owners."""
        removed = 0
        async with self._slots:  # one command at a time: one connection
            for tag in self._tags():
                removed += await self._sweep(self._forget, f"{tag}e", tag, now, batch)
            async for raw_index in self._client.scan_iter(match=self._index_pattern(), count=1000):
                index = self._text(raw_index)
                tag, owner = self._parse_index(index)
                await self._sweep(self._prune, index, tag, now, batch, tag, owner)
        for tag, ends in await self._marked():
            for owner, end in ends.items():
                if end is None:
                    removed += (await self._drop(owner, "lapsed", [tag]))[0]
        return removed

    async def _sweep(
        self, script: Any, zset: str, tag: str, now: int, batch: int, *lead: str
    ) -> int:
        """Run ``script`` over the entries of ``zset`` scored <= now, a batch at a time.

        It gets ``KEYS = [zset, *bindings]`` and ``ARGV = [*lead, *digests]`` and says
        how many entries it dropped; those it keeps are skipped, so the sweep ends.
        """
        dropped = start = 0
        before = cancel_requests()
        while found := await self._client.zrangebyscore(zset, "-inf", now, start=start, num=batch):
            reraise_swallowed(before)  # a long sweep stops at once when cancelled
            digests = [self._text(digest) for digest in found]
            keys = [zset, *(f"{tag}s:{digest}" for digest in digests)]
            gone = int(await script(keys=keys, args=[*lead, *digests]))
            dropped += gone
            start += len(digests) - gone
            if len(digests) < batch:
                break
        return dropped

    async def gauges(self, now: int) -> Gauges:
        """Live and other bindings, and live owners: one script per tag, one round trip."""
        tags = self._tags()
        requests = [(self._gauges, [f"{tag}e", f"{tag}M"], [tag, now]) for tag in tags]
        sessions = other = 0
        beating: set[str] = set()
        lapsed: set[str] = set()
        for live, rest, beats, lapses in await self._direct(requests):
            sessions += int(live)
            other += int(rest)
            beating.update(self._text(owner) for owner in beats)
            lapsed.update(self._text(owner) for owner in lapses)
        return Gauges(sessions, other, None, len(beating - lapsed))
