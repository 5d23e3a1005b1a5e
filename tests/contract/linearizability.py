"""A linearizability checker for histories of repository calls (a pure module, no I/O).

Wing & Gong's search with Lowe's memoization, as Porcupine and Knossos do it: the calls
and returns of one key's operations sit in a time-ordered linked list; the search
linearizes the earliest call it can, lifts it out of the list, and backtracks when it
meets a return whose call it could not place. A cache of (linearized set, model state)
prunes every configuration it has already explored. Keys are checked one by one
(linearizability is compositional over independent objects).

The model is one binding: (owner, generation, least). The histories use a ttl long
enough that nothing expires while they run. ``generation`` is the live binding's once
an answer has shown it, else ``None`` (upsert and claim take a fresh one unseen; a later
``lease``/``acquire`` or successful conditional op pins it). ``least`` is the least
value a fresh generation may have: above every one the key had (the live binding's is
always the greatest issued), so 1 + the last one shown. An unseen fresh one is >= least
too, and the next fresh one after it is taken to need only that (not + 1 per unseen
step: lenient, so that unseen steps do not multiply the states the memo tells apart).
An operation that raised is indeterminate: it may or may not have taken effect, so its
return is at +infinity and any result is accepted (leaving it out of the linearization
is "no effect"); one that cannot change the binding (``lookup``, ``lease``, ``touch``) is
then dropped. ``fencing_faults`` checks what needs no search.

``heartbeat`` and ``release`` name an owner, not a key: they are recorded once, on
``EVERY_KEY``, and ``check_history`` puts them in every key's history. On one key,
``release(a)`` ends the binding if ``a`` holds it (a later one is made anew, with a fresh
generation); its count is a sum over keys (and over keys the history never saw), so
only a count of 0 says something of one key: ``a`` held none there. A heartbeat whose
ttl outlasts the run changes no binding and answers nothing: it may stand anywhere, so
the search leaves it out (the reports still show it, where it interleaved). After a
release the owner has no heartbeat, which is what an owner that never heartbeated has:
nothing for the model to tell apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "EVERY_KEY",
    "INITIAL",
    "Op",
    "Verdict",
    "check_history",
    "check_key",
    "fencing_faults",
    "step",
]

Owner = str | None
State = tuple[Owner, int | None, int]  # (owner, generation if shown, least fresh one)
INITIAL: State = (None, None, 1)  # no binding; generations are >= 1
EVERY_KEY = "*"  # the key of an operation on an owner: it is in every key's history
_NO_EFFECT = ("lookup", "lease", "touch", "heartbeat")
_SILENT = ("heartbeat",)  # no effect and no answer on one key: left out of the search
_INFINITY = float("inf")


@dataclass(frozen=True, slots=True)
class Op:
    """One call: what was asked, when (ns, one clock for every process), what came back.

    ``ret`` is ``None`` for a call that raised: indeterminate. ``acquire`` and ``lease``
    answer ``(owner, generation)`` (``lease``: or ``None``).
    """

    client: str
    key: str
    kind: str  # lookup, lease, upsert, claim, acquire, touch, delete, heartbeat, release
    call: int
    ret: int | None
    result: object = None
    owner: str | None = None  # the alloc id of upsert, claim, acquire, heartbeat, release
    replacing: str | None = None  # claim's and acquire's ``replacing=``
    generation: int | None = None  # touch's and delete's ``generation=``

    @property
    def definite(self) -> bool:
        return self.ret is not None

    def describe(self, origin: int = 0) -> str:
        args = [repr(self.owner)] if self.owner is not None else []
        if self.replacing is not None:
            args.append(f"replacing={self.replacing!r}")
        if self.generation is not None:
            args.append(f"generation={self.generation}")
        ret = "?" if self.ret is None else f"{(self.ret - origin) / 1e6:9.3f}"
        outcome = "raised (indeterminate)" if self.ret is None else repr(self.result)
        return (
            f"[{(self.call - origin) / 1e6:9.3f} .. {ret} ms] {self.client:<8} "
            f"{self.kind}({', '.join(args)}) -> {outcome}"
        )


def _shown(state: State, answer: object) -> tuple[bool, State]:
    """Whether ``answer`` (owner, generation) is the live binding of ``state``; pins it."""
    owner, generation, least = state
    if not isinstance(answer, tuple) or owner is None or answer[0] != owner:
        return False, state
    shown: int = answer[1]
    if generation is not None:
        return shown == generation, state
    return shown >= least, (owner, shown, shown + 1)


def _held(state: State, wanted: int) -> tuple[bool, State]:
    """Whether the live binding may have generation ``wanted``; the state if it has."""
    owner, generation, least = state
    if owner is None:
        return False, state
    if generation is not None:
        return generation == wanted, state
    return wanted >= least, (owner, wanted, wanted + 1)


def step(state: State, op: Op) -> tuple[bool, State]:
    """The model: whether ``op`` may return its result in ``state``, and the state after.

    A conditional op that failed while the generation is unknown teaches nothing (the
    model keeps no "not g"): lenient there, never wrong.
    """
    owner, generation, least = state
    kind, result, definite = op.kind, op.result, op.ret is not None
    if kind == "lookup":
        return (not definite or result == owner), state
    if kind == "lease":
        if not definite:
            return True, state
        return (result is None, state) if owner is None else _shown(state, result)
    if kind == "upsert":
        return True, state if owner == op.owner else (op.owner, None, least)
    if kind in ("claim", "acquire"):
        if owner is not None and (owner != op.replacing or owner == op.owner):
            after = state  # lost, or claimed its own binding: nothing changes
        else:
            after = (op.owner, None, least)
        if not definite:
            return True, after
        return (result == after[0], after) if kind == "claim" else _shown(after, result)
    wanted = op.generation
    if kind == "touch":
        if wanted is None:
            return (not definite or result == (owner is not None)), state
        if not definite:
            return True, state
        held, pinned = _held(state, wanted)
        if result is True:
            return held, pinned
        return result is False and (generation is None or not held), state
    if kind == "delete":
        if wanted is None:
            return (not definite or result == (owner is not None)), (None, None, least)
        held, pinned = _held(state, wanted)
        if not definite or result is True:  # linearized, an indeterminate one took effect
            return held, (None, None, pinned[2])
        return result is False and (generation is None or not held), state
    if kind == "heartbeat":
        return True, state
    if kind == "release":
        if owner != op.owner:
            return True, state
        return (not definite or result != 0), (None, None, least)
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


def _search(ops: Sequence[Op], initial: State, budget: int) -> tuple[bool, int]:
    """Wing & Gong with memoization; (linearizable, steps). Raises ``BudgetExhausted``."""
    # Indeterminate calls that cannot change the binding are dropped: any result, no effect;
    # so are silent ones, which fit anywhere.
    ops = [
        op for op in ops if (op.definite or op.kind not in _NO_EFFECT) and op.kind not in _SILENT
    ]
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
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[int, State]] = []
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


def _linearizable(ops: Sequence[Op], initials: Iterable[State], budget: int) -> tuple[bool, int]:
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
    the owner and generation were then. Calls that raised before that instant stay in
    the stretch (they may have taken effect after it); one that took effect before it
    lands, unobserved, at the end of a linearization of the stretch, so the stretch is a
    sound witness.
    """
    returns = sorted({op.ret for op in ops if op.ret is not None})
    lo, hi = 0, len(returns) - 1
    while lo < hi:  # the first cut that fails
        mid = (lo + hi) // 2
        if _linearizable(_cut(ops, returns[mid]), [INITIAL], budget)[0]:
            lo = mid + 1
        else:
            hi = mid
    end = returns[lo]
    prefix = _cut(ops, end)
    culprit = next((op for op in prefix if op.ret == end), None)
    names = sorted({op.owner for op in ops if op.owner is not None})
    starts_from = [INITIAL, *((name, None, 1) for name in names)]  # of any generation
    starts = sorted({op.call for op in prefix}, reverse=True)
    for start in starts:
        if any(op.ret is not None and op.call < start <= op.ret for op in prefix):
            continue  # an answered call in flight across this instant: not a clean start
        window = [
            op
            for op in prefix
            if op.call >= start or (op.ret is None and op.kind not in _NO_EFFECT)
        ]
        if not _linearizable(window, starts_from, budget)[0]:
            return window, culprit
    return prefix, culprit


def _shown_by(op: Op) -> tuple[int, str | None] | None:
    """The generation a definite answer shows the key's live binding had, and its owner."""
    if op.ret is None:
        return None
    if op.kind in ("acquire", "lease") and isinstance(op.result, tuple):
        return op.result[1], op.result[0]
    if op.kind in ("touch", "delete") and op.generation is not None and op.result is True:
        return op.generation, None  # a conditional op that succeeded: the owner unsaid
    return None


def fencing_faults(ops: Iterable[Op]) -> list[tuple[str, Op, Op]]:
    """What needs no search: (fault, earlier op, later op) for one key's ``ops``.

    A generation belongs to one owner, and the live binding's is the greatest the key
    was ever issued: so an answer whose call came after another's return never shows a
    smaller generation (a successful conditional op shows its own; a stale one that
    succeeded after a newer one was seen is caught here).
    """
    shown = [(op, *seen) for op in ops if (seen := _shown_by(op)) is not None]
    faults: list[tuple[str, Op, Op]] = []
    holders: dict[int, tuple[str, Op]] = {}
    for op, generation, owner in shown:
        if owner is not None:
            first = holders.setdefault(generation, (owner, op))
            if first[0] not in (owner, ""):
                faults.append((f"generation {generation} held by two owners", first[1], op))
                holders[generation] = ("", first[1])  # told once
    by_return = sorted(shown, key=lambda seen: seen[0].ret or 0)
    highest: tuple[Op, int, str | None] | None = None
    returned = 0
    for op, generation, _ in sorted(shown, key=lambda seen: seen[0].call):
        while returned < len(by_return) and (by_return[returned][0].ret or 0) < op.call:
            if highest is None or by_return[returned][1] > highest[1]:
                highest = by_return[returned]
            returned += 1
        if highest is not None and generation < highest[1]:
            faults.append(
                (f"generation went back from {highest[1]} to {generation}", highest[0], op)
            )
    return faults


def _fencing_verdict(key: str, ops: Sequence[Op], faults: list[tuple[str, Op, Op]]) -> Verdict:
    origin = ops[0].call
    lines = [f"key {key!r}: fencing broken ({len(ops)} ops; times in ms from the first call):"]
    for what, earlier, later in faults[:5]:
        lines += [f"  {what}:", f"    {earlier.describe(origin)}", f"    {later.describe(origin)}"]
    return Verdict(False, key, len(ops), report="\n".join(lines), witness=list(faults[0][1:]))


def check_key(
    key: str, ops: Sequence[Op], *, budget: int = 2_000_000, fencing: bool = True
) -> Verdict:
    """Whether one key's history is linearizable from no binding.

    Args:
        key: the key, for the report.
        ops: that key's operations, in any order.
        budget: the most search steps to spend; past it the verdict is "exhausted".
        fencing: run ``fencing_faults`` first (a fault there is the verdict).
    """
    ordered = sorted(ops, key=lambda op: (op.call, op.ret is None, op.ret or 0))
    faults = fencing_faults(ordered) if fencing else []
    if faults:
        return _fencing_verdict(key, ordered, faults)
    try:
        ok, steps = _linearizable(ordered, [INITIAL], budget)
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
        f" {len(window)} ops, from any owner and generation (times in ms from its first call):",
        *(("  * " if op is culprit else "    ") + op.describe(origin) for op in window),
        "  (* the return by which the history already cannot be linearized)",
    ]
    return Verdict(False, key, len(ordered), steps, report="\n".join(lines), witness=window)


def check_history(
    ops: Iterable[Op], *, budget: int = 2_000_000, fencing: bool = True
) -> list[Verdict]:
    """Check every key of a history on its own; one verdict per key, sorted by key.

    Operations on ``EVERY_KEY`` (an owner's) are in every key's history.

    Args:
        ops: every operation of the run, of any keys.
        budget: search steps allowed per key.
        fencing: run ``fencing_faults`` first on each key (see ``check_key``).
    """
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    everywhere = by_key.pop(EVERY_KEY, [])
    return [
        check_key(key, [*by_key[key], *everywhere], budget=budget, fencing=fencing)
        for key in sorted(by_key)
    ]
