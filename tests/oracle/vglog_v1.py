# Frozen copy of harness/logs/vglog.py at commit fc5af49, before issue 13's speed work:
# the oracle that tests/test_parser_equivalence.py and make bench compare the
# fast parser with.  Do not edit: it is the reference for 'same results'.
"""Parse valgrind's text log: text in, dataclasses out.  Pure: no processes,
no files.

The log is read line by line (``parse_lines`` takes any iterable of lines), so
a log of any size is parsed in one pass; findings past ``max_findings`` in
process are counted, not kept, which keeps memory flat on huge logs.

What is read, per process (logs can hold several PIDs):
- the header (tool, command, parent PID);
- every error record: headline, stack, auxiliary parts with their stacks;
- every loss record: bytes, blocks, direct/indirect, leak kind;
- HEAP SUMMARY, LEAK SUMMARY or 'All heap blocks were freed', ERROR SUMMARY;
- 'Process terminating with default action of signal N (SIGX)' with its
  fault line and stack.
Thousands separators and the '(+N)' deltas of incremental leak checks are
accepted, and so are the 'Thread N:' lines heading records of multi-threaded
programs; the errors -s or -v list again after the ERROR SUMMARY are not
counted twice.  A process is `complete` once its whole ERROR SUMMARY line has
been seen: a log cut short (SIGKILL) has none.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from harness.model import (LEAK_KIND_BY_WORDS, Amount, Aux, ErrorSummary, FatalSignal,
                    Finding, Frame, HeapSummary)


class LogParseError(ValueError):
    """The text is not a valgrind log the harness can read."""


_XML_HINT = "this is valgrind's XML output: read it with harness.vgxml"


# '==123== text', '--123-- text' (valgrind's own notes), '**123** text'
_PREFIX = re.compile(r"^(==|--|\*\*)(\d+)\1 ?(.*)$")
_FRAME = re.compile(r"^(?:at|by) 0x[0-9A-Fa-f]+: (?P<fn>.*?)"
                    r"(?: \((?:in (?P<obj>[^()]*)|(?P<file>[^():]*?)(?::(?P<line>\d+))?)\))?$")
_DELTA = re.compile(r" \([+-]\d[\d,]*\)")
_LOSS = re.compile(
    r"^(?P<bytes>\d[\d,]*) (?:\((?P<direct>\d[\d,]*) direct, (?P<indirect>\d[\d,]*) indirect\) )?"
    r"bytes in (?P<blocks>\d[\d,]*) blocks are (?P<kind>definitely lost|indirectly lost|"
    r"possibly lost|still reachable)(?: \(.*?\))? in (?:new |increased |decreased |)?"
    r"loss record \d[\d,]* of \d[\d,]*$")
_AMOUNT = re.compile(r"^(?P<bytes>\d[\d,]*) bytes in (?P<blocks>\d[\d,]*) blocks$")
_TOTAL = re.compile(r"^total heap usage: (?P<allocs>\d[\d,]*) allocs, (?P<frees>\d[\d,]*) frees,"
                    r" (?P<bytes>\d[\d,]*) bytes allocated$")
# The whole line (valgrind always writes the '(suppressed: ...)' part): a log
# cut inside its last line ('... contexts (suppressed: 0 fr') is not complete.
_ERRSUM = re.compile(r"^ERROR SUMMARY: (?P<n>\d[\d,]*) errors from (?P<c>\d[\d,]*) contexts"
                     r" \(suppressed: (?P<s>\d[\d,]*) from (?P<sc>\d[\d,]*)\)$")
_SIGNAL = re.compile(r"^Process terminating with default action of signal (?P<num>\d+)"
                     r"(?: \((?P<name>SIG\w+)\))?")
_ADDRESS = re.compile(r"address (0x[0-9A-Fa-f]+)")
# 'Thread 2:' (or 'Thread 2 name:') heads a record whenever its thread differs
# from the previous record's, loss records included.
_THREAD = re.compile(r"^Thread \d+(?: .*)?:$")
# With -s or -v each error is listed again after the ERROR SUMMARY, headed by
# '1 errors in context 1 of 2:': a repeat, not a new finding.
_RELISTED = re.compile(r"^\d[\d,]* errors in context \d[\d,]* of \d[\d,]*:$")
_PARENT = re.compile(r"^Parent PID: (\d+)$")
# valgrind itself failing: printed without the ==PID== prefix.
_TOOL_FAILURE = re.compile(r"^(?:\w[\w-]*: \S+:\d+ \(.*\): Assertion .* failed\.|"
                           r"valgrind: the 'impossible' happened:.*|"
                           r"valgrind: m_\S+: .*(?:Assertion|assertion).*)$")
_TOOL = re.compile(r"^(\w[\w-]*), a [\w -]+ detector$")

# Headline prefixes of memcheck's error kinds, in the order they are tried.
_ERROR_KINDS: tuple[tuple[str, str], ...] = (
    ("Invalid read of size", "InvalidRead"),
    ("Invalid write of size", "InvalidWrite"),
    ("Invalid free() / delete / delete[] / realloc()", "InvalidFree"),
    ("Mismatched free() / delete / delete []", "MismatchedFree"),
    ("Mismatched new/delete size", "MismatchedAllocateDeallocateSize"),
    ("Jump to the invalid address stated on the next line", "InvalidJump"),
    ("Syscall param ", "SyscallParam"),
    ("Conditional jump or move depends on uninitialised value", "UninitCondition"),
    ("Use of uninitialised value of size", "UninitValue"),
    ("Source and destination overlap in ", "Overlap"),
    ("Argument 'size' of function ", "FishyValue"),
    ("Argument 'alignment' of function ", "InvalidAlignment"),
    ("Illegal memory pool address", "InvalidMemPool"),
    ("Unaddressable byte(s) found during client check request", "ClientCheck"),
    ("Uninitialised byte(s) found during client check request", "ClientCheck"),
    ("realloc() with size 0", "ReallocSizeZero"),
)

# Lines of a block that carry no finding.
_INFO_PREFIXES = (
    "Copyright", "Using Valgrind", "Command:", "Parent PID:", "For lists of detected",
    "For counts of detected", "For a detailed leak analysis", "Use --track-origins",
    "Searching for pointers",
    "Checked ", "Reachable blocks", "To see them, rerun", "Rerun with", "Warning:",
    "WARNING:", "More than ", "Will no longer", "Final error counts", "Estimated ",
    "begin", "end", "The main thread stack size", "Increase it with", "If you believe",
    "This is probably caused by", "sizeof", "Note:", "Valgrind's memory management",
    "HINT:", "Continuing", "set address range perms", "Command line", "Use --history-level",
    "the cost of reduced accuracy",
)


def _num(text: str) -> int:
    return int(text.replace(",", ""))


# helgrind's and DRD's headlines (their XML kind names; both tools' data
# races are kind "Race", DRD's own name kept as tool_kind).
_THREAD_KINDS: tuple[tuple[re.Pattern, str, str | None], ...] = (
    (re.compile(r"^Possible data race during (read|write) of size \d+"), "Race", None),
    (re.compile(r"^Conflicting (load|store) by thread \d+"), "Race", "ConflictingAccess"),
    (re.compile(r"^Thread #\d+ unlocked a not-locked lock"), "UnlockUnlocked", None),
    (re.compile(r"^Thread #\d+ unlocked lock at .* currently held by"), "UnlockForeign", None),
    (re.compile(r"^Thread #\d+: lock order .* violated"), "LockOrder", None),
    (re.compile(r"^Thread #\d+'s call to pthread_"), "PthAPIerror", None),
    (re.compile(r"^Thread #\d+: Exiting thread still holds"), "Misc", None),
    (re.compile(r"^(Mutex|Reader-writer lock|Condition variable|Semaphore|Barrier) "), "MutexErr",
     None),
)


def kind_of_headline(headline: str) -> str | None:
    """The tool's XML kind for an error headline, or None if not an error."""
    for prefix, kind in _ERROR_KINDS:
        if headline.startswith(prefix):
            return kind
    for pattern, kind, _ in _THREAD_KINDS:
        if pattern.match(headline):
            return kind
    return None


def _tool_kind(headline: str) -> str | None:
    for pattern, _, tool_kind in _THREAD_KINDS:
        if tool_kind and pattern.match(headline):
            return tool_kind
    return None


def parse_frame(text: str) -> Frame | None:
    """'at 0x1091: main (t.c:6)' -> Frame; None when the text is no frame."""
    m = _FRAME.match(text)
    if not m:
        return None
    line = m.group("line")
    return Frame(fn=m.group("fn"), file=m.group("file") or None,
                 line=int(line) if line else None, obj=m.group("obj"))


@dataclass
class ProcessLog:
    pid: int
    tool: str | None = None
    command: str | None = None
    parent_pid: int | None = None
    findings: list[Finding] = field(default_factory=list)
    dropped_findings: int = 0
    heap: HeapSummary = field(default_factory=HeapSummary)
    heap_seen: bool = False
    leak_summary_seen: bool = False
    errors: ErrorSummary | None = None
    fatal_signal: FatalSignal | None = None
    notes: list[str] = field(default_factory=list)
    tool_failure: str | None = None   # valgrind's own assertion: nothing after it is the program's

    @property
    def complete(self) -> bool:
        """The process got as far as its ERROR SUMMARY (the last thing
        valgrind writes); a log cut short never does."""
        return self.errors is not None


@dataclass
class ValgrindLog:
    processes: list[ProcessLog]

    @property
    def main(self) -> ProcessLog:
        """The process the log was started for: the first whose parent is not
        itself in the log."""
        pids = {p.pid for p in self.processes}
        for proc in self.processes:
            if proc.parent_pid not in pids:
                return proc
        return self.processes[0]

    @property
    def tool(self) -> str | None:
        return self.main.tool

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.processes)

    def findings(self) -> list[Finding]:
        return [f for p in self.processes for f in p.findings]


class _Block:
    """The lines of one record (up to a blank line), with their indentation."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def add(self, text: str) -> None:
        stripped = text.lstrip(" ")
        self.lines.append((len(text) - len(stripped), stripped.rstrip()))


class _ProcessParser:
    def __init__(self, pid: int, budget: "_Budget") -> None:
        self.proc = ProcessLog(pid=pid)
        self.block = _Block()
        self.budget = budget
        self.marked = False

    def feed(self, text: str) -> None:
        stripped = text.strip()
        if stripped in ("begin", "end"):
            # --error-markers: one record, blank lines and all, in between.
            self.flush()
            self.marked = stripped == "begin"
            return
        if stripped == "":
            if self.marked:
                self.block.add("")
            else:
                self.flush()
            return
        if text.startswith(("ERROR SUMMARY:", "For lists of detected", "For counts of detected")):
            # The closing lines come without a blank line between them.
            self.flush()
            self.block.add(text)
            self.flush()
            return
        self.block.add(text)

    def flush(self) -> None:
        if self.block.lines:
            self._record(self.block.lines)
        self.block = _Block()

    def _add_finding(self, finding: Finding) -> None:
        finding.pid = self.proc.pid
        if self.budget.take():
            self.proc.findings.append(finding)
        else:
            self.proc.dropped_findings += 1

    def _record(self, lines: list[tuple[int, str]]) -> None:
        if _RELISTED.match(lines[0][1]):
            return      # -s/-v: an error listed again (its record, without markers)
        if len(lines) > 1 and _THREAD.match(lines[0][1]):
            lines = lines[1:]
        head = _DELTA.sub("", lines[0][1])
        if head == "HEAP SUMMARY:":
            self._heap_summary(lines[1:])
        elif head == "LEAK SUMMARY:":
            self._leak_summary(lines[1:])
        elif head.startswith("All heap blocks were freed"):
            self.proc.heap.all_freed = True
            self.proc.leak_summary_seen = True
        elif (m := _ERRSUM.match(head)):
            self.proc.errors = ErrorSummary(_num(m["n"]), _num(m["c"]), _num(m["s"]), _num(m["sc"]))
        elif (m := _SIGNAL.match(head)):
            self._fatal_signal(m, lines[1:])
        elif (m := _LOSS.match(head)):
            self._loss_record(m, lines)
        elif (m := _TOOL.match(head)):
            self.proc.tool = m.group(1).lower()
            self._header(lines[1:])
        elif head.startswith(("Command:", "Parent PID:")):
            self._header(lines)
        else:
            self._error_record(lines)

    def _header(self, lines: list[tuple[int, str]]) -> None:
        for _, text in lines:
            if text.startswith("Command: "):
                self.proc.command = text[len("Command: "):]
            elif (m := _PARENT.match(text)):
                self.proc.parent_pid = int(m.group(1))

    def _heap_summary(self, lines: list[tuple[int, str]]) -> None:
        self.proc.heap_seen = True
        for _, raw in lines:
            text = _DELTA.sub("", raw)
            if text.startswith("in use at exit: "):
                m = _AMOUNT.match(text[len("in use at exit: "):])
                if m:
                    self.proc.heap.in_use = Amount(_num(m["bytes"]), _num(m["blocks"]))
            elif (m := _TOTAL.match(text)):
                self.proc.heap.allocs = _num(m["allocs"])
                self.proc.heap.frees = _num(m["frees"])
                self.proc.heap.allocated_bytes = _num(m["bytes"])

    def _leak_summary(self, lines: list[tuple[int, str]]) -> None:
        self.proc.leak_summary_seen = True
        for _, raw in lines:
            text = _DELTA.sub("", raw)
            name, _, rest = text.partition(": ")
            m = _AMOUNT.match(rest)
            attr = name.strip().replace(" ", "_")
            if m and attr in HeapSummary.LEAK_FIELDS:
                setattr(self.proc.heap, attr, Amount(_num(m["bytes"]), _num(m["blocks"])))

    def _fatal_signal(self, m: re.Match, lines: list[tuple[int, str]]) -> None:
        number = int(m["num"])
        sig = FatalSignal(number=number, name=m["name"] or f"SIG{number}")
        for _, text in lines:
            frame = parse_frame(text)
            if frame:
                sig.stack.append(frame)
            elif sig.fault is None and not sig.stack:
                sig.fault = text
                a = _ADDRESS.search(text)
                sig.address = a.group(1) if a else None
        self.proc.fatal_signal = sig

    def _loss_record(self, m: re.Match, lines: list[tuple[int, str]]) -> None:
        finding = Finding(
            kind=LEAK_KIND_BY_WORDS[m["kind"]], what=lines[0][1],
            bytes=_num(m["bytes"]), blocks=_num(m["blocks"]),
            direct_bytes=_num(m["direct"]) if m["direct"] else None,
            indirect_bytes=_num(m["indirect"]) if m["indirect"] else None)
        finding.stack = [f for _, t in lines[1:] if (f := parse_frame(t))]
        self._add_finding(finding)

    def _error_record(self, lines: list[tuple[int, str]]) -> None:
        if self.proc.errors is not None:
            return      # after the ERROR SUMMARY: -s/-v listing the errors again
        if self.proc.tool_failure is not None:
            return      # valgrind's own crash report (host stacktrace, sched status)
        # helgrind opens a record with thread announcements: start at the error.
        start = next((i for i, (_, t) in enumerate(lines) if kind_of_headline(t)), 0)
        lines = [(n, t) for n, t in lines[start:] if t and not t.startswith("Locks held:")] or lines
        head = lines[0][1]
        frames = [parse_frame(t) for _, t in lines[1:]]
        kind = kind_of_headline(head)
        if kind is None:
            if not any(frames):
                if not head.startswith(_INFO_PREFIXES):
                    self.proc.notes.append(head)
                return
            kind = "Unclassified"
        finding = Finding(kind=kind, what=head, tool_kind=_tool_kind(head))
        part: Aux | None = None
        for (_, text), frame in zip(lines[1:], frames):
            if frame is None:
                part = Aux(what=text)
                finding.aux.append(part)
            elif part is None:
                finding.stack.append(frame)
            else:
                part.stack.append(frame)
        self._add_finding(finding)


class _Budget:
    """How many findings the whole log may still keep (all processes)."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def parse_lines(lines: Iterable[str], max_findings: int = 5000) -> ValgrindLog:
    """Parse a valgrind text log given as lines (a file object will do)."""
    parsers: dict[int, _ProcessParser] = {}
    budget = _Budget(max_findings)
    order: list[int] = []
    seen_any = False
    other = 0
    first_other = ""
    for line in lines:
        m = _PREFIX.match(line.rstrip("\r\n"))
        if not m and order and _TOOL_FAILURE.match(line.strip()):
            failed = parsers[order[-1]]
            failed.flush()
            failed.proc.tool_failure = failed.proc.tool_failure or line.strip()
            continue
        if not m:
            if line.strip():
                other += 1
                first_other = first_other or line.strip()
            continue
        seen_any = True
        pid = int(m.group(2))
        parser = parsers.get(pid)
        if parser is None:
            parser = parsers[pid] = _ProcessParser(pid, budget)
            order.append(pid)
        if m.group(1) == "==":
            parser.feed(m.group(3))
        else:
            parser.proc.notes.append(m.group(3))
    if not seen_any:
        if other == 0:
            raise LogParseError("the log is empty: valgrind wrote nothing")
        if first_other.lstrip("\ufeff").startswith(("<?xml", "<valgrindoutput")):
            raise LogParseError(_XML_HINT)
        raise LogParseError("not a valgrind log: no line starts with '==PID=='")
    for parser in parsers.values():
        parser.flush()
    return ValgrindLog(processes=[parsers[pid].proc for pid in order])


def parse_text(text: str, max_findings: int = 5000) -> ValgrindLog:
    if text.lstrip().startswith("<?xml"):
        raise LogParseError(_XML_HINT)
    return parse_lines(text.splitlines(), max_findings)

