"""What a backend is made of, for writing one: a ``Storage`` beneath a ``StoreFront``.

A ``Storage`` stores bindings keyed by the session's digest with integer
millisecond expiries; the ``StoreFront`` gives it the whole ``SessionRepository``
contract (input rules, clock, counters, latencies, error translation, lifecycle,
background cleanup). ``ResilientSessionRepository`` wraps any ``StoreFront``::

    store = StoreFront(connect=open_my_storage, backend="mine", clock=None, default_ttl=600)
"""

from session_repo._core.front import Connect, StoreFront
from session_repo._core.storage import Gauges, Storage

__all__ = ["Connect", "Gauges", "Storage", "StoreFront"]
