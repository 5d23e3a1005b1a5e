"""How one call to the primary is tried again: tenacity, exponential backoff with jitter.

Only a transient ``StorageError`` is tried again; a permanent one, or a store
that another call already gave up on, ends the tries at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from session_repo._core.counters import Counters
from session_repo.errors import StorageError

__all__ = ["MAX_RETRY_WAIT", "RetryPolicy"]

T = TypeVar("T")

# The longest wait between two tries of one call, whatever the delay says.
MAX_RETRY_WAIT = 5.0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exc.transient


class RetryPolicy:
    """``count`` tries of a call, the first wait ``delay`` seconds, doubling, with jitter.

    The first try is the caller's own (nothing between it and the store on the
    healthy path); ``again`` takes over once it has failed.

    Args:
        count: tries in all (1: no retry).
        delay: the first wait between tries, in seconds.
        counters: where errors met and retries made are counted.
        give_up: says when to stop trying at once (the store degraded or closed).
    """

    def __init__(
        self, count: int, delay: float, counters: Counters, give_up: Callable[[], bool]
    ) -> None:
        self.count = count
        self.delay = delay
        self._counters = counters
        self._give_up = give_up

    async def again(self, call: Callable[[], Awaitable[T]], failed: StorageError) -> T:
        """``call()`` tried again after its first try failed with ``failed``.

        Args:
            call: makes one try.
            failed: the first try's error (counted here).

        Raises:
            StorageError: ``failed`` if it is not worth another try, else the last try's.
        """
        self._counters.errors += 1
        if not failed.transient or self.count == 1 or self._give_up():
            raise failed
        first: StorageError | None = failed  # tenacity's attempt 1 is this one
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=self._stop,
            wait=wait_exponential(multiplier=self.delay, max=MAX_RETRY_WAIT)
            + wait_random(0, self.delay),
            before_sleep=self._count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:
                    error, first = first, None
                    raise error
                try:
                    return await call()
                except StorageError:
                    self._counters.errors += 1
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _stop(self, state: RetryCallState) -> bool:
        return state.attempt_number >= self.count or self._give_up()

    def _count_retry(self, state: RetryCallState) -> None:
        self._counters.retries += 1
