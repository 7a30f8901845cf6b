"""Delta debugging over a scenario's data: pure, no processes.

`Reducer` shrinks a scenario (its data, as Scenario.data() has it) while
an oracle says the finding still shows.  Three moves, repeated until none
helps:

  connections  ddmin over the connections the scenario opens: dropping one
               drops its `open` (or its name from an `open`'s list) and
               every step on it
  steps        ddmin over the steps (Zeller's ddmin: subsets, then
               complements, doubling the granularity); a candidate keeps
               only the steps whose connection is still opened before them
  payloads     smaller numbers and shorter payloads: `send` sizes, texts,
               hex bytes and repeat counts, pauses, group counts, a storm's
               count, an unexpanded fuzz's operations, `min_queued`

plus one-shot simplifications (every `may_fail`, every `nodelay` dropped).
The last full pass over the steps leaves the scenario 1-minimal: removing
any single step (with the steps that then name a connection nobody opened)
loses the finding.

The oracle is `first(candidates) -> index or None`: the index of the first
candidate (in order) that reproduces, evaluating them as it likes (in
parallel batches).  It raises OutOfBudget when its runs or time are spent;
the Reducer then keeps the best scenario found so far.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

Data = dict[str, Any]


class OutOfBudget(Exception):
    """The run budget or the deadline is spent."""


class Oracle(Protocol):
    def first(self, candidates: list[Data]) -> int | None: ...


# -- connections ----------------------------------------------------------------------
def opened_names(step: dict) -> list[str]:
    """The names an `open` step gives, as written (a group counts once)."""
    return ([step["conn"]] if "conn" in step else []) + list(step.get("conns", []))


def _members(step: dict) -> dict[str, list[str]]:
    count = step.get("count", 1)
    return {name: ([name] if count == 1 else [f"{name}{i}" for i in range(1, count + 1)])
            for name in opened_names(step)}


def connections(steps: list[dict]) -> list[str]:
    return [name for s in steps if s.get("do") == "open" for name in opened_names(s)]


def closure(steps: list[dict]) -> list[dict]:
    """The steps that can still run: each step on a connection comes after
    an `open` of it (a group or one of its members)."""
    live: set[str] = set()
    out = []
    for step in steps:
        if step.get("do") == "open":
            for name, members in _members(step).items():
                live.add(name)
                live.update(members)
            out.append(step)
        elif "conn" not in step or step["conn"] in live:
            out.append(step)
    return out


def without_connections(steps: list[dict], gone: set[str]) -> list[dict]:
    """Drop these connections: their names from every `open`, and every
    step on them (or on a member of a dropped group)."""
    out = []
    for step in steps:
        if step.get("do") != "open":
            out.append(step)
            continue
        names = opened_names(step)
        if not set(names) & gone:
            out.append(step)
            continue
        kept = [n for n in names if n not in gone]
        if not kept:
            continue
        new = {k: v for k, v in step.items() if k not in ("conn", "conns")}
        if len(kept) == 1 and "count" not in step:
            new = {"do": "open", "conn": kept[0], **{k: v for k, v in new.items() if k != "do"}}
        else:
            new = {"do": "open", "conns": kept, **{k: v for k, v in new.items() if k != "do"}}
        out.append(new)
    return closure(out)


# -- payloads ---------------------------------------------------------------------------
def smaller_numbers(value: int | float, low: int | float) -> list[int | float]:
    """Candidates below `value`, smallest first: the lowest allowed, then
    value/16, value/4, value/2 (integers stay integers)."""
    if value <= low:
        return []
    if isinstance(value, int):
        picks = [low, value // 16, value // 4, value // 2]
    else:
        picks = [low, value / 16, value / 4, value / 2]
    out = sorted({p for p in picks if low <= p < value})
    return out


# step -> key -> lowest value worth trying
NUMBERS: dict[str, dict[str, int | float]] = {
    "send": {"size": 1, "repeat": 1},
    "pause": {"seconds": 0.0},
    "open": {"count": 1},
    "storm": {"count": 1, "stall_bytes": 1, "lines": 0},
    "fuzz": {"ops": 1, "max_conns": 1},
    "wait_read": {"min_queued": 0},
}


def payload_edits(step: dict) -> list[tuple[str, list[Any]]]:
    """(key, smaller values, smallest first) for each thing of this step
    that can be made smaller."""
    edits = []
    for key, low in NUMBERS.get(step.get("do", ""), {}).items():
        if isinstance(step.get(key), (int, float)) and not isinstance(step.get(key), bool):
            values = smaller_numbers(step[key], low)
            if values:
                edits.append((key, values))
    if step.get("do") == "send" and isinstance(step.get("text"), str):
        text = step["text"]
        edits.append(("text", _cuts(text)))
    if step.get("do") == "send" and isinstance(step.get("hex"), str):
        data = bytes.fromhex(step["hex"])
        edits.append(("hex", [d.hex() for d in _cuts(data)]))
    return [(k, v) for k, v in edits if v]


def _cuts(payload):
    """Shorter payloads, shortest first: its start and its end, each a
    sixteenth, a quarter and a half of it (and one character)."""
    out = []
    for n in smaller_numbers(len(payload), 1):
        for cut in (payload[:n], payload[len(payload) - n:]):
            if cut not in out:
                out.append(cut)
    return out


CHAR_DDMIN = 32     # a payload this short is reduced character by character


# -- the reducer -----------------------------------------------------------------------------
@dataclass
class Reducer:
    data: Data                      # the scenario, known to reproduce
    oracle: Oracle
    valid: Callable[[Data], bool]   # parses as a scenario (checked before any run)
    progress: Callable[[str, Data], None] = lambda phase, data: None
    minimal: bool = False           # the last pass over the steps finished
    log: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    def _with(self, steps: list[dict]) -> Data | None:
        steps = closure(steps)
        if not steps:
            return None
        candidate = dict(self.data, steps=steps)
        return candidate if self.valid(candidate) else None

    def _try(self, candidates: list[Data | None]) -> int | None:
        """The index of the first candidate that reproduces (invalid ones,
        None, are skipped without a run)."""
        kept = [(i, c) for i, c in enumerate(candidates) if c is not None]
        if not kept:
            return None
        hit = self.oracle.first([c for _, c in kept])
        return None if hit is None else kept[hit][0]

    def run(self) -> Data:
        """Reduce until no move helps (or the budget is spent: OutOfBudget
        propagates, self.data is the best so far)."""
        self.reduce_connections()
        for _ in range(20):     # bounded: a round that shrinks nothing ends the loop
            self.reduce_steps()
            before = self.size()
            self.reduce_payloads()
            if self.size() == before:
                break
        else:
            return self.data    # still shrinking after 20 rounds: not proven minimal
        self.simplify()
        self.reduce_steps()     # mostly answered from the cache
        self.minimal = True
        return self.data

    def size(self) -> tuple[int, int]:
        """Steps, then the sum of what the payload moves shrink."""
        total = 0
        for step in self.steps:
            for key, _ in payload_edits(step):
                value = step[key]
                total += len(value) if isinstance(value, str) else int(value)
        return len(self.steps), total

    def _accept(self, candidate: Data, phase: str) -> None:
        self.data = candidate
        self.progress(phase, candidate)

    # -- moves
    def simplify(self) -> None:
        for key in ("may_fail", "nodelay"):
            if not any(key in s for s in self.steps):
                continue
            candidate = self._with([{k: v for k, v in s.items() if k != key} for s in self.steps])
            if candidate is not None and self._try([candidate]) == 0:
                self._accept(candidate, f"without {key}")

    def reduce_connections(self) -> None:
        names = connections(self.steps)
        if len(names) < 2:
            return
        everything = list(self.steps)

        def build(kept: list[str]) -> Data | None:
            gone = set(names) - set(kept)
            return self._with(without_connections(everything, gone))

        self._ddmin(names, build, "connections")

    def reduce_steps(self) -> None:
        everything = list(self.steps)
        indexes = list(range(len(everything)))

        def build(kept: list[int]) -> Data | None:
            return self._with([everything[i] for i in kept])

        self._ddmin(indexes, build, "steps")

    def reduce_payloads(self) -> None:
        for i in range(len(self.steps)):
            self._reduce_numbers(i)
            for key in ("text", "hex"):
                self._reduce_characters(i, key)

    def _reduce_characters(self, i: int, key: str) -> None:
        """ddmin over the characters (or bytes) of a short send."""
        step = self.steps[i]
        if step.get("do") != "send" or not isinstance(step.get(key), str):
            return
        whole = step[key] if key == "text" else bytes.fromhex(step[key])
        if not 1 < len(whole) <= CHAR_DDMIN:
            return

        def build(kept: list[int]) -> Data | None:
            part = "".join(whole[k] for k in kept) if key == "text" else \
                bytes(whole[k] for k in kept).hex()
            steps = [dict(s) for s in self.steps]
            steps[i][key] = part
            return self._with(steps)

        self._ddmin(list(range(len(whole))), build, f"step {i + 1} {key}")

    def _reduce_numbers(self, i: int) -> None:
        """Smaller numbers and shorter payloads (halving), as long as one helps."""
        for key, _ in payload_edits(self.steps[i]):
            for _ in range(64):     # bounded: each round at least halves
                edits = dict(payload_edits(self.steps[i])).get(key)
                if not edits:
                    break
                candidates = []
                for value in edits:
                    steps = [dict(s) for s in self.steps]
                    steps[i][key] = value
                    candidates.append(self._with(steps))
                hit = self._try(candidates)
                if hit is None:
                    break
                self._accept(candidates[hit], f"step {i + 1} {key}")

    def _ddmin(self, units: list, build: Callable[[list], Data | None], phase: str) -> list:
        """Zeller's ddmin: the smallest sublist of `units` whose build still
        reproduces, 1-minimal when it finishes."""
        n = 2
        for _ in range(100_000):    # bounded: every round shrinks or refines
            if len(units) < 2:
                break
            chunks = _split(units, n)
            subsets = chunks if n > 2 else []
            complements = [[u for c in chunks[:k] + chunks[k + 1:] for u in c]
                           for k in range(len(chunks))]
            tries = subsets + complements
            built = [build(t) for t in tries]
            hit = self._try(built)
            if hit is None:
                if n >= len(units):
                    break
                n = min(2 * n, len(units))
                continue
            units, n = tries[hit], (2 if hit < len(subsets) else max(n - 1, 2))
            self._accept(built[hit], phase)     # kept at once: a spent budget loses nothing
        return units


def _split(units: list, n: int) -> list[list]:
    """`units` in n nearly equal consecutive parts."""
    size, extra = divmod(len(units), n)
    out, at = [], 0
    for k in range(n):
        end = at + size + (1 if k < extra else 0)
        out.append(units[at:end])
        at = end
    return [c for c in out if c]


def tidy(data: Data) -> Data:
    """Keys that say what their default says, left out (a group of one:
    `count = 1`; `repeat = 1`; `chunk = "all"`): nothing on the wire changes.
    A storm's and a fuzz's keys stay as they are (their defaults depend on
    one another)."""
    from ..drive.scenario import STEPS
    steps = []
    for step in data["steps"]:
        keys = STEPS.get(step.get("do"), ({}, ""))[0]
        if step.get("do") in ("storm", "fuzz"):
            steps.append(step)
            continue
        steps.append({k: v for k, v in step.items()
                      if k == "do" or k not in keys or keys[k].default is None
                      or keys[k].default != v or type(keys[k].default) is not type(v)})
    return dict(data, steps=steps)
