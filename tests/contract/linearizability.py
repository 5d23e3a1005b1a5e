"""A linearizability checker for histories of repository calls (a pure module, no I/O).

Wing & Gong's search with Lowe's memoization, as Porcupine and Knossos do it: the calls
and returns of one key's operations sit in a time-ordered linked list; the search
linearizes the earliest call it can, lifts it out of the list, and backtracks when it
meets a return whose call it could not place. A cache of (linearized set, model state)
prunes every configuration it has already explored. Keys are checked one by one
(linearizability is compositional over independent objects).

The model is one binding's owner (``None`` for no binding): the histories use a ttl long
enough that nothing expires while they run. An operation that raised is indeterminate: it
may or may not have taken effect, so its return is at +infinity and any result is
accepted; one that has no effect on the owner (``lookup``, ``touch``) is then dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = ["Op", "Verdict", "check_history", "check_key", "step"]

Owner = str | None
_INFINITY = float("inf")


@dataclass(frozen=True, slots=True)
class Op:
    """One call: what was asked, when (ns, one clock for every process), what came back.

    ``ret`` is ``None`` for a call that raised: indeterminate.
    """

    client: str
    key: str
    kind: str  # lookup, upsert, claim, touch, delete
    call: int
    ret: int | None
    result: object = None
    owner: str | None = None  # the alloc id given to upsert / claim
    replacing: str | None = None  # claim's ``replacing=``

    @property
    def definite(self) -> bool:
        return self.ret is not None

    def describe(self, origin: int = 0) -> str:
        args = [repr(self.owner)] if self.owner is not None else []
        if self.replacing is not None:
            args.append(f"replacing={self.replacing!r}")
        ret = "?" if self.ret is None else f"{(self.ret - origin) / 1e6:9.3f}"
        outcome = "raised (indeterminate)" if self.ret is None else repr(self.result)
        return (
            f"[{(self.call - origin) / 1e6:9.3f} .. {ret} ms] {self.client:<8} "
            f"{self.kind}({', '.join(args)}) -> {outcome}"
        )


def step(state: Owner, op: Op) -> tuple[bool, Owner]:
    """The model: whether ``op`` may return its result in ``state``, and the state after."""
    kind = op.kind
    if kind == "lookup":
        return (not op.definite or op.result == state), state
    if kind == "upsert":
        return True, op.owner
    if kind == "claim":
        if state is not None and state != op.replacing:
            return (not op.definite or op.result == state), state
        return (not op.definite or op.result == op.owner), op.owner
    if kind == "touch":
        return (not op.definite or op.result == (state is not None)), state
    if kind == "delete":
        return (not op.definite or op.result == (state is not None)), None
    raise ValueError(f"unknown operation {kind!r}")


@dataclass
class Verdict:
    """The outcome for one key (or the first key that failed)."""

    ok: bool
    key: str = ""
    ops: int = 0
    steps: int = 0
    exhausted: bool = False  # the step budget ran out: no answer
    report: str = ""
    witness: list[Op] = field(default_factory=list)


class BudgetExhausted(Exception):
    pass


def _search(ops: Sequence[Op], initial: Owner, budget: int) -> tuple[bool, int]:
    """Wing & Gong with memoization; (linearizable, steps). Raises ``BudgetExhausted``."""
    # Indeterminate calls that cannot change the owner are dropped: any result, no effect.
    ops = [op for op in ops if op.definite or op.kind not in ("lookup", "touch")]
    n = len(ops)
    if n == 0:
        return True, 0
    # Entries: 2i is op i's call, 2i+1 its return; head sentinel is 2n.
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, 2 * i))  # calls sort before returns at one instant
        events.append((_INFINITY if op.ret is None else op.ret, 1, 2 * i + 1))
    events.sort()
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = head
    for _, _, entry in events:
        nxt[last] = entry
        prv[entry] = last
        last = entry
    definite_left = sum(1 for op in ops if op.definite)
    cache: set[tuple[int, Owner]] = set()
    stack: list[tuple[int, Owner]] = []
    linearized = 0
    state = initial
    entry = nxt[head]
    steps = 0
    while definite_left:
        steps += 1
        if steps > budget:
            raise BudgetExhausted(steps)
        if entry % 2 == 0:  # a call: try to linearize it now
            i = entry // 2
            ok, after = step(state, ops[i])
            if ok:
                marked = linearized | (1 << i)
                if (marked, after) not in cache:
                    cache.add((marked, after))
                    stack.append((entry, state))
                    state, linearized = after, marked
                    if ops[i].definite:
                        definite_left -= 1
                    ret = entry + 1  # lift call and return out of the list
                    nxt[prv[entry]] = nxt[entry]
                    if nxt[entry] != -1:
                        prv[nxt[entry]] = prv[entry]
                    nxt[prv[ret]] = nxt[ret]
                    if nxt[ret] != -1:
                        prv[nxt[ret]] = prv[ret]
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
            continue
        # A return whose call is not linearized: undo the last choice.
        if not stack:
            return False, steps
        entry, state = stack.pop()
        i = entry // 2
        linearized &= ~(1 << i)
        if ops[i].definite:
            definite_left += 1
        ret = entry + 1  # unlift, in the reverse order
        nxt[prv[ret]] = ret
        if nxt[ret] != -1:
            prv[nxt[ret]] = ret
        nxt[prv[entry]] = entry
        if nxt[entry] != -1:
            prv[nxt[entry]] = entry
        entry = nxt[entry]
    return True, steps


def _linearizable(ops: Sequence[Op], initials: Iterable[Owner], budget: int) -> tuple[bool, int]:
    total = 0
    for initial in initials:
        ok, steps = _search(ops, initial, budget)
        total += steps
        if ok:
            return True, total
    return False, total


def _cut(ops: Sequence[Op], at: int) -> list[Op]:
    """The history as it stood at ``at``: later calls gone, unfinished ones indeterminate."""
    kept = []
    for op in ops:
        if op.call > at:
            continue
        kept.append(op if op.ret is not None and op.ret <= at else replace(op, ret=None))
    return kept


def _witness(ops: Sequence[Op], budget: int) -> tuple[list[Op], Op | None]:
    """A short stretch of ``ops`` that is not linearizable, and the call it ends with.

    The end: the earliest return at which the history so far is already wrong (a
    history's prefix that cannot be linearized proves the whole cannot). The start: the
    latest quiescent instant (no call in flight) from which that stretch fails whatever
    the owner was then. Calls that raised before that instant stay in the stretch (they
    may have taken effect after it); one that took effect before it lands, unobserved,
    at the end of a linearization of the stretch, so the stretch is a sound witness.
    """
    returns = sorted({op.ret for op in ops if op.ret is not None})
    lo, hi = 0, len(returns) - 1
    while lo < hi:  # the first cut that fails
        mid = (lo + hi) // 2
        if _linearizable(_cut(ops, returns[mid]), [None], budget)[0]:
            lo = mid + 1
        else:
            hi = mid
    end = returns[lo]
    prefix = _cut(ops, end)
    culprit = next((op for op in prefix if op.ret == end), None)
    owners: list[Owner] = [None, *sorted({op.owner for op in ops if op.owner is not None})]
    starts = sorted({op.call for op in prefix}, reverse=True)
    for start in starts:
        if any(op.ret is not None and op.call < start <= op.ret for op in prefix):
            continue  # an answered call in flight across this instant: not a clean start
        window = [
            op
            for op in prefix
            if op.call >= start or (op.ret is None and op.kind not in ("lookup", "touch"))
        ]
        if not _linearizable(window, owners, budget)[0]:
            return window, culprit
    return prefix, culprit


def check_key(key: str, ops: Sequence[Op], *, budget: int = 2_000_000) -> Verdict:
    """Whether one key's history is linearizable from no binding.

    Args:
        key: the key, for the report.
        ops: that key's operations, in any order.
        budget: the most search steps to spend; past it the verdict is "exhausted".
    """
    ordered = sorted(ops, key=lambda op: (op.call, op.ret is None, op.ret or 0))
    try:
        ok, steps = _linearizable(ordered, [None], budget)
    except BudgetExhausted as exc:
        return Verdict(
            False,
            key,
            len(ordered),
            int(exc.args[0]),
            exhausted=True,
            report=f"key {key!r}: no answer within {budget} search steps ({len(ordered)} ops)",
        )
    if ok:
        return Verdict(True, key, len(ordered), steps)
    try:
        window, culprit = _witness(ordered, budget)
    except BudgetExhausted:  # proven wrong, but no shorter window within the budget
        window, culprit = ordered, None
    origin = window[0].call
    what = "the shortest failing window" if culprit else "all of it (no shorter window in budget)"
    lines = [
        f"key {key!r}: not linearizable ({len(ordered)} ops); {what},"
        f" {len(window)} ops, starting from any owner (times in ms from its first call):",
        *(("  * " if op is culprit else "    ") + op.describe(origin) for op in window),
        "  (* the return by which the history already cannot be linearized)",
    ]
    return Verdict(False, key, len(ordered), steps, report="\n".join(lines), witness=window)


def check_history(ops: Iterable[Op], *, budget: int = 2_000_000) -> list[Verdict]:
    """Check every key of a history on its own; one verdict per key, sorted by key.

    Args:
        ops: every operation of the run, of any keys.
        budget: search steps allowed per key.
    """
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return [check_key(key, by_key[key], budget=budget) for key in sorted(by_key)]
