"""The data every stage shares: findings, summaries, verdicts.

Declared once here so the parser, the judge and the reports agree on names.
Finding kinds are memcheck's own XML kind names (InvalidRead, Leak_DefinitelyLost,
...), so results line up with other valgrind tools.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Verdict(enum.Enum):
    """The closed set of outcomes of one run.  `rank` orders precedence when
    several apply (the highest wins); every finding is still listed."""

    CLEAN = ("clean", 0)
    UNRESOLVED = ("unresolved", 1)
    LEAK = ("leak", 2)
    MEMORY_ERROR = ("memory-error", 3)
    STARTUP_FAILURE = ("startup-failure", 4)
    HANG = ("hang", 5)
    CRASH = ("crash", 6)

    def __init__(self, label: str, rank: int) -> None:
        self.label = label
        self.rank = rank

    @property
    def is_finding(self) -> bool:
        """A verdict that says the target has a bug (exit status 1)."""
        return self in (Verdict.LEAK, Verdict.MEMORY_ERROR, Verdict.CRASH,
                        Verdict.HANG, Verdict.STARTUP_FAILURE)

    @classmethod
    def from_label(cls, label: str) -> "Verdict":
        for v in cls:
            if v.label == label:
                return v
        raise ValueError(f"unknown verdict {label!r} (expected one of "
                         f"{', '.join(v.label for v in cls)})")


# The detectors the harness can run a server under, in the order reports show them.
DETECTORS = ("memcheck", "asan", "helgrind", "drd")

# Leak kinds as users name them in settings, and memcheck's kind for each.
LEAK_KINDS = {
    "definite": "Leak_DefinitelyLost",
    "indirect": "Leak_IndirectlyLost",
    "possible": "Leak_PossiblyLost",
    "reachable": "Leak_StillReachable",
}
LEAK_KIND_BY_WORDS = {
    "definitely lost": "Leak_DefinitelyLost",
    "indirectly lost": "Leak_IndirectlyLost",
    "possibly lost": "Leak_PossiblyLost",
    "still reachable": "Leak_StillReachable",
}


@dataclass(frozen=True, slots=True)
class Frame:
    fn: str
    file: str | None = None
    line: int | None = None
    obj: str | None = None
    addr: int | None = None         # the instruction's address in the process

    def to_json(self) -> dict:
        return {"fn": self.fn, "file": self.file, "line": self.line, "obj": self.obj}

    def where(self) -> str:
        if self.file:
            return f"{self.fn} ({self.file}:{self.line})" if self.line else f"{self.fn} ({self.file})"
        if self.obj:
            return f"{self.fn} (in {self.obj})"
        return self.fn


@dataclass(slots=True)
class Aux:
    """An auxiliary part of an error record: 'Address 0x.. is 8 bytes inside a
    block of size 16 free'd' with its stack, 'Block was alloc'd at', ..."""

    what: str
    stack: list[Frame] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"what": self.what, "stack": [f.to_json() for f in self.stack]}


@dataclass(slots=True)
class Finding:
    kind: str
    what: str
    stack: list[Frame] = field(default_factory=list)
    aux: list[Aux] = field(default_factory=list)
    bytes: int | None = None
    blocks: int | None = None
    direct_bytes: int | None = None
    indirect_bytes: int | None = None
    pid: int | None = None
    detector: str = "memcheck"
    tool_kind: str | None = None     # the detector's own name: 'heap-use-after-free', 'Race', ...
    suppression: str | None = None   # valgrind's own entry for it (--gen-suppressions=all)

    @property
    def is_leak(self) -> bool:
        return self.kind.startswith("Leak_")

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "what": self.what,
            "bytes": self.bytes,
            "blocks": self.blocks,
            "direct_bytes": self.direct_bytes,
            "indirect_bytes": self.indirect_bytes,
            "pid": self.pid,
            "detector": self.detector,
            "tool_kind": self.tool_kind,
            "suppression": self.suppression,
            "stack": [f.to_json() for f in self.stack],
            "aux": [a.to_json() for a in self.aux],
        }


@dataclass(frozen=True)
class Amount:
    bytes: int
    blocks: int

    def to_json(self) -> dict:
        return {"bytes": self.bytes, "blocks": self.blocks}


@dataclass
class HeapSummary:
    in_use: Amount | None = None
    allocs: int | None = None
    frees: int | None = None
    allocated_bytes: int | None = None
    definitely_lost: Amount | None = None
    indirectly_lost: Amount | None = None
    possibly_lost: Amount | None = None
    still_reachable: Amount | None = None
    suppressed: Amount | None = None
    all_freed: bool = False

    LEAK_FIELDS = ("definitely_lost", "indirectly_lost", "possibly_lost",
                   "still_reachable", "suppressed")

    def to_json(self) -> dict:
        out: dict = {"in_use": self.in_use.to_json() if self.in_use else None}
        for name in self.LEAK_FIELDS:
            amount = getattr(self, name)
            out[name] = amount.to_json() if amount else None
        out["total"] = (None if self.allocs is None else
                        {"allocs": self.allocs, "frees": self.frees,
                         "bytes": self.allocated_bytes})
        out["all_freed"] = self.all_freed
        return out


@dataclass(frozen=True)
class ErrorSummary:
    count: int
    contexts: int
    suppressed: int = 0
    suppressed_contexts: int = 0

    def to_json(self) -> dict:
        return {"count": self.count, "contexts": self.contexts,
                "suppressed": self.suppressed,
                "suppressed_contexts": self.suppressed_contexts}


@dataclass
class FatalSignal:
    number: int
    name: str
    fault: str | None = None      # 'Access not within mapped region at address 0x0'
    address: str | None = None    # '0x0'
    stack: list[Frame] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"number": self.number, "name": self.name, "fault": self.fault,
                "address": self.address, "stack": [f.to_json() for f in self.stack]}


@dataclass
class ExitInfo:
    """How a server process ended."""

    returncode: int | None          # negative: killed by that signal
    stop_signal: int | None         # what the harness sent, if anything
    hung: bool = False              # ignored the stop signal; SIGKILLed
    exited_early: bool = False      # gone before the harness stopped it
    stop_seconds: float | None = None


class Outcome(enum.Enum):
    """What a case means for the gate (lit's ResultCode).  A buggy variant
    that stops reproducing is XPASS: a failure of the gate, not a success."""

    PASS = ("pass", False, "clean, as expected")
    XFAIL = ("xfail", False, "the expected finding, reproduced")
    KNOWN = ("known", False, "only findings accepted in the baseline")
    INFO = ("info", False, "a detector the manifest does not name: shown in the detector table")
    FAIL = ("fail", True, "a new finding")
    XPASS = ("xpass", True, "the expected finding did not reproduce: the detector lost sensitivity")
    TIMEOUT = ("timeout", True, "the server did not stop (hang)")
    UNRESOLVED = ("unresolved", True, "the harness could not decide")

    def __init__(self, label: str, fails: bool, meaning: str) -> None:
        self.label = label
        self.fails = fails
        self.meaning = meaning


@dataclass(frozen=True)
class ConfigTemplate:
    """A file copied into the run folder as `name`, with {port} and {run_dir}
    filled in; {config} in the command is the first one's path."""

    source: Path
    name: str
