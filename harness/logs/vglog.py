"""Parse valgrind's text log: text in, dataclasses out.  Pure: no processes,
no files.

The log is read in one pass, as texts of whole lines (``parse_texts``, what
the harness gives it from ``source.log_texts``) or as lines (``parse_lines``
takes any iterable of lines), so a log of any size is parsed; findings past
``max_findings`` in process are counted, not kept, which keeps memory flat
on huge logs.

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

Speed (a log can be hundreds of MB): lines come in texts of about 64 KB (or
batches of lines, joined); a text of one process's lines (the usual case) is
checked with two string counts, the few lines that open or close a record
are found with one regex over it, and the others are kept as they came, as
slices of the text, split into lines only when their record is read.  No
Python step runs per line of a loss record past the budget, and reading
fills no fresh memory per chunk (a fresh process pays a page fault for each
4 KB page it fills, about 12 us here).  A record is classified by its
first line: a loss record past the findings budget is only counted, its
lines never stripped.  Frames are parsed once per distinct text (a log
repeats a few hundred frames thousands of times; Frame is frozen, so findings
share them).  Any other batch is read line by line, the current process's
lines told by their prefix with a string test.  Memory stays flat: a text,
one record per process and the bounded frame caches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from operator import itemgetter
from typing import Iterable

from ..model import (LEAK_KIND_BY_WORDS, Amount, Aux, ErrorSummary, FatalSignal,
                    Finding, Frame, HeapSummary)


class LogParseError(ValueError):
    """The text is not a valgrind log the harness can read."""


_XML_HINT = "this is valgrind's XML output: read it with harness.vgxml"


# '==123== text', '--123-- text' (valgrind's own notes), '**123** text'
_PREFIX = re.compile(r"^(==|--|\*\*)(\d+)\1 ?(.*)$")
_FRAME = re.compile(r"^(?:at|by) 0x(?P<addr>[0-9A-Fa-f]+): (?P<fn>.*?)"
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


# The first character of every headline above (the _ERROR_KINDS prefixes;
# Possible, Conflicting, Thread, Mutex, Reader-writer lock, Condition variable,
# Semaphore, Barrier): any other line (a frame, an 'Address ...' part) is no
# headline, without trying 24 prefixes on it.
_HEADLINE_FIRST = frozenset([p[0] for p, _ in _ERROR_KINDS] + ["P", "C", "T", "M", "R", "S", "B"])


def kind_of_headline(headline: str) -> str | None:
    """The tool's XML kind for an error headline, or None if not an error."""
    if headline[:1] not in _HEADLINE_FIRST:
        return None
    for prefix, kind in _ERROR_KINDS:
        if headline.startswith(prefix):
            return kind
    for pattern, kind, _ in _THREAD_KINDS:
        if pattern.match(headline):
            return kind
    return None


_TOOL_KINDS = [(pattern, tool_kind) for pattern, _, tool_kind in _THREAD_KINDS if tool_kind]
# The kinds whose headline may have a tool kind: no other headline matches its pattern.
_TOOL_KIND_KINDS = frozenset(kind for _, kind, tool_kind in _THREAD_KINDS if tool_kind)


def _tool_kind(headline: str) -> str | None:
    for pattern, tool_kind in _TOOL_KINDS:
        if pattern.match(headline):
            return tool_kind
    return None


def parse_frame(text: str) -> Frame | None:
    """'at 0x1091: main (t.c:6)' -> Frame; None when the text is no frame."""
    m = _FRAME.match(text)
    if not m:
        return None
    addr, fn, obj, file, line = m.groups()
    return Frame(fn=fn, file=file or None, line=int(line) if line else None, obj=obj,
                 addr=int(addr, 16))


class _Frames(dict):
    """parse_frame by the frame's text, each distinct text parsed once:
    frames[text] is its Frame or None.  Bounded: emptied when full."""

    LIMIT = 50_000

    def __missing__(self, text: str) -> Frame | None:
        if len(self) >= self.LIMIT:
            self.clear()
        frame = self[text] = parse_frame(text)
        return frame


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


# Read line by line (_LogParser.one_by_one), a line goes through
# _ProcessParser.feed when its text has 5 characters at most or starts with
# one of these: it may open, close or end a record ('', 'begin', 'end',
# 'ERROR SUMMARY: ...', 'For ... detected', odd whitespace).  Any other line
# is a line of the record, kept as it is.
_CAREFUL_FIRST = frozenset(c for c in map(chr, range(0x3000 + 1))    # U+3000: the last space
                            if c.isspace()) | {"E", "F"}
_CLOSING = ("ERROR SUMMARY:", "For lists of detected", "For counts of detected")
_LAST = itemgetter(slice(-1, None))


def _texts(block: list) -> list[str]:
    """A block's lines as stored texts.  An entry is a stored text, or a run
    of whole lines kept as they came, in one text ('==PID==' and newlines
    included), with the length of the prefix to cut off each: split and
    stripped only when their record is read in full (a loss record never
    is, see _ProcessParser.flush)."""
    out: list[str] = []
    for entry in block:
        if entry.__class__ is str:
            out.append(entry)
        else:
            size, run = entry
            # A kept line has no whitespace but spaces before its text, so
            # strip() is the stored text's lstrip(" ").rstrip().
            out.extend(map(str.strip, map(_cut(size), run.split("\n")[:-1])))
    return out


@lru_cache(maxsize=None)
def _cut(size: int) -> itemgetter:
    """What cuts a prefix of `size` characters off a line."""
    return itemgetter(slice(size, None))


class _RawFrames(dict):
    """Frames by the raw line of a run ('==PID==    at 0x...: f (a.c:1)'):
    a log's frame lines repeat, and most are never stripped."""

    LIMIT = 50_000

    def __init__(self, frames: _Frames) -> None:
        super().__init__()
        self.frames = frames

    def __missing__(self, line: str) -> Frame | None:
        if len(self) >= self.LIMIT:
            self.clear()
        frame = self[line] = self.frames[line[line.index("==", 2) + 2:].strip()]
        return frame


class _ProcessParser:
    def __init__(self, pid: int, budget: "_Budget", frames: _Frames,
                 raw_frames: _RawFrames) -> None:
        self.proc = ProcessLog(pid=pid)
        # The lines of one record (up to a blank line): stored texts and runs
        # of raw lines (see _texts).  Emptied in place, never replaced:
        # _LogParser holds its append.
        self.block: list = []
        self.budget = budget
        self.frames = frames
        self.raw_frames = raw_frames
        self.marked = False
        self.last: Finding | None = None    # the finding of the record read last, if kept

    def feed(self, text: str) -> None:
        stripped = text.strip()
        if stripped in ("begin", "end"):
            # --error-markers: one record, blank lines and all, in between.
            self.flush()
            self.marked = stripped == "begin"
            return
        if stripped == "":
            if self.marked:
                self.block.append("")
            else:
                self.flush()
            return
        if text.startswith(_CLOSING):
            # The closing lines come without a blank line between them.
            self.flush()
            self.block.append(text.lstrip(" ").rstrip())
            self.flush()
            return
        self.block.append(text.lstrip(" ").rstrip())

    def flush(self) -> None:
        """The block is a record: read it.  A loss record (most of a big
        log) is read from its first line and the frames of the others."""
        block = self.block
        if not block:
            return
        self.last = None
        first = block[0]
        head = first if first.__class__ is str else \
            first[1][first[0]:first[1].index("\n")].strip()
        if head[:1].isdecimal():
            # (A loss record's headline is never an error listed again.)
            text = _DELTA.sub("", head) if "(+" in head or "(-" in head else head
            if (m := _LOSS.match(text)):
                if self.budget.take():
                    self._leak(m, head, self._stack(block))
                else:
                    self.proc.dropped_findings += 1     # counted, not built
                block.clear()
                return
        self._record(_texts(block))
        block.clear()

    def _stack(self, block: list) -> list[Frame]:
        """The frames among a block's lines after its first."""
        stack: list[Frame] = []
        for i, entry in enumerate(block):
            if entry.__class__ is str:
                if i and (frame := self.frames[entry]):
                    stack.append(frame)
            else:
                lines = entry[1].split("\n")
                lines.pop()                 # after the last newline: nothing
                stack.extend(filter(None, map(self.raw_frames.__getitem__,
                                              lines if i else islice(lines, 1, None))))
        return stack

    def _record(self, lines: list[str]) -> None:
        first = lines[0]
        if first[:1].isdecimal() and _RELISTED.match(first):
            return      # -s/-v: an error listed again (its record, without markers)
        if first[:1] == "T" and len(lines) > 1 and _THREAD.match(first):
            lines = lines[1:]
            first = lines[0]
        head = _DELTA.sub("", first) if "(+" in first or "(-" in first else first
        if head[:1].isdecimal():
            # Only a loss record, a tool's banner or an error record can
            # start with a digit (no summary, no signal line does).
            if (m := _LOSS.match(head)):
                self._loss_record(m, lines)
                return
        elif head == "HEAP SUMMARY:":
            self._heap_summary(lines[1:])
            return
        elif head == "LEAK SUMMARY:":
            self._leak_summary(lines[1:])
            return
        elif head.startswith("All heap blocks were freed"):
            self.proc.heap.all_freed = True
            self.proc.leak_summary_seen = True
            return
        elif head.startswith("ERROR SUMMARY: ") and (m := _ERRSUM.match(head)):
            self.proc.errors = ErrorSummary(_num(m["n"]), _num(m["c"]), _num(m["s"]), _num(m["sc"]))
            return
        elif head.startswith("Process terminating ") and (m := _SIGNAL.match(head)):
            self._fatal_signal(m, lines[1:])
            return
        if head.endswith(" detector") and (m := _TOOL.match(head)):
            self.proc.tool = m.group(1).lower()
            self._header(lines[1:])
        elif head.startswith(("Command:", "Parent PID:")):
            self._header(lines)
        else:
            self._error_record(lines)

    def _header(self, lines: list[str]) -> None:
        for text in lines:
            if text.startswith("Command: "):
                self.proc.command = text[len("Command: "):]
            elif (m := _PARENT.match(text)):
                self.proc.parent_pid = int(m.group(1))

    def _heap_summary(self, lines: list[str]) -> None:
        self.proc.heap_seen = True
        for raw in lines:
            text = _DELTA.sub("", raw)
            if text.startswith("in use at exit: "):
                m = _AMOUNT.match(text[len("in use at exit: "):])
                if m:
                    self.proc.heap.in_use = Amount(_num(m["bytes"]), _num(m["blocks"]))
            elif (m := _TOTAL.match(text)):
                self.proc.heap.allocs = _num(m["allocs"])
                self.proc.heap.frees = _num(m["frees"])
                self.proc.heap.allocated_bytes = _num(m["bytes"])

    def _leak_summary(self, lines: list[str]) -> None:
        self.proc.leak_summary_seen = True
        for raw in lines:
            text = _DELTA.sub("", raw)
            name, _, rest = text.partition(": ")
            m = _AMOUNT.match(rest)
            attr = name.strip().replace(" ", "_")
            if m and attr in HeapSummary.LEAK_FIELDS:
                setattr(self.proc.heap, attr, Amount(_num(m["bytes"]), _num(m["blocks"])))

    def _fatal_signal(self, m: re.Match, lines: list[str]) -> None:
        number = int(m["num"])
        sig = FatalSignal(number=number, name=m["name"] or f"SIG{number}")
        for text in lines:
            frame = self.frames[text]
            if frame:
                sig.stack.append(frame)
            elif sig.fault is None and not sig.stack:
                sig.fault = text
                a = _ADDRESS.search(text)
                sig.address = a.group(1) if a else None
        self.proc.fatal_signal = sig

    def _loss_record(self, m: re.Match, lines: list[str]) -> None:
        if self.budget.take():
            self._leak(m, lines[0], list(filter(None, map(self.frames.__getitem__, lines[1:]))))
        else:
            self.proc.dropped_findings += 1     # counted, not built

    def _leak(self, m: re.Match, what: str, stack: list[Frame]) -> None:
        self.last = Finding(
            kind=LEAK_KIND_BY_WORDS[m["kind"]], what=what, stack=stack,
            bytes=_num(m["bytes"]), blocks=_num(m["blocks"]),
            direct_bytes=_num(m["direct"]) if m["direct"] else None,
            indirect_bytes=_num(m["indirect"]) if m["indirect"] else None, pid=self.proc.pid)
        self.proc.findings.append(self.last)

    def _error_record(self, lines: list[str]) -> None:
        if self.proc.errors is not None:
            return      # after the ERROR SUMMARY: -s/-v listing the errors again
        if self.proc.tool_failure is not None:
            return      # valgrind's own crash report (host stacktrace, sched status)
        # helgrind opens a record with thread announcements: start at the error.
        kind, start = None, 0
        for i, text in enumerate(lines):
            if (kind := kind_of_headline(text)):
                start = i
                break
        if kind and self.budget.left <= 0:
            self.proc.dropped_findings += 1     # counted, not built
            return
        body = lines[start:]
        if "" in body or "Locks held:" in "\n".join(body):
            body = [t for t in body if t and not t.startswith("Locks held:")]
        lines = body or lines
        head = lines[0]
        frames = list(map(self.frames.__getitem__, lines[1:]))
        if kind is None:
            if not any(frames):
                if not head.startswith(_INFO_PREFIXES):
                    self.proc.notes.append(head)
                return
            kind = "Unclassified"
        if not self.budget.take():
            self.proc.dropped_findings += 1     # counted, not built
            return
        finding = Finding(kind=kind, what=head, pid=self.proc.pid,
                          tool_kind=_tool_kind(head) if kind in _TOOL_KIND_KINDS else None)
        part: Aux | None = None
        for text, frame in zip(lines[1:], frames):
            if frame is None:
                part = Aux(what=text)
                finding.aux.append(part)
            elif part is None:
                finding.stack.append(frame)
            else:
                part.stack.append(frame)
        self.proc.findings.append(finding)
        self.last = finding


class _Budget:
    """How many findings the whole log may still keep (all processes)."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


# In a text of one process's lines (each starts with the same '==PID=='): the
# newline before a line that _ProcessParser.feed must see (blank, 'begin',
# 'end', 'ERROR SUMMARY: ...', 'For ...', odd whitespace); every other line is
# kept as it is.  Compiled per prefix: the regex engine then skips to each
# '\n==PID==' as one literal (a third faster than '\n==[^=\n]*==').
@lru_cache(maxsize=64)
def _fed(prefix: str) -> re.Pattern:
    return re.compile(re.escape("\n" + prefix) + r"(?= *+(?:[EF\s]|(?:begin|end)[^\S\n]*\n))")
_BATCH = 1024       # lines: a batch stays in the CPU's caches
_MAX_SUPPRESSION = 64   # lines of a suppression entry (valgrind's --num-callers is 500 at most)


class _LogParser:
    """The whole log: each line to the parser of its process."""

    def __init__(self, max_findings: int) -> None:
        self.parsers: dict[int, _ProcessParser] = {}
        self.order: list[int] = []
        self.budget = _Budget(max_findings)
        self.frames = _Frames()
        self.raw_frames = _RawFrames(self.frames)
        self.seen_any = False
        self.other = 0
        self.first_other = ""
        # The '==PID==' of the last process line and its parser: a line that
        # starts with it is that process's line (what _PREFIX would say),
        # with no regex.  None yet: the empty tuple, which no line starts with.
        self.prefix: str | tuple = ()
        self.parser: _ProcessParser | None = None
        self.suppression: list[str] | None = None   # a '{ ... }' block being read

    def feed(self, lines: Iterable[str]) -> None:
        """Batches of lines: those of one process, each ending with one
        newline (or none at all), in bulk; any other batch line by line."""
        it = iter(lines)
        while batch := list(islice(it, _BATCH)):
            self.one_by_one(batch[:1])      # it may start another process
            if len(batch) > 1 and not self.in_bulk(batch[1:]):
                self.one_by_one(batch[1:])

    def feed_texts(self, texts: Iterable[str]) -> None:
        """Texts of whole lines, each ending with a newline (the last text
        may end without one): a text of the current process's lines in
        bulk, any other line by line."""
        for text in texts:
            nl = text.find("\n")
            if nl < 0 or nl == len(text) - 1:
                self.one_by_one([text])
                continue
            self.one_by_one([text[:nl + 1]])        # it may start another process
            whole = text[-1] == "\n"
            if not (whole and self.in_text(text, nl)):
                self.one_by_one(text[nl + 1:len(text) - whole].split("\n"))   # (last newline off)

    def in_bulk(self, lines: list[str]) -> bool:
        """A batch of lines, in bulk (in_text) if each is a whole line, all
        ending with a newline or none with one."""
        n = len(lines)
        if not self.prefix:
            return False
        joined = "".join(lines)
        newlines = joined.count("\n")
        if newlines == 0:                   # str.splitlines(): no line ends
            joined = "\n" + "\n".join(lines) + "\n"
        elif newlines != n or set(map(_LAST, lines)) != {"\n"}:
            return False
        else:
            joined = "\n" + joined
        return self.in_text(joined, 0)

    def in_text(self, text: str, nl: int) -> bool:
        """The whole lines after the newline at text[nl] (the text ends with
        one), if they all are the current process's: the few that open or
        close a record found with one regex over the text, the others kept
        as they are in runs."""
        prefix = self.prefix
        # Every newline from nl on but the last is followed by the prefix:
        # each line starts with it.
        if not prefix or text.count("\n" + prefix, nl) != text.count("\n", nl) - 1:
            return False
        parser, size, blank = self.parser, len(prefix), prefix + " \n"
        keep, flush, find = parser.block.append, parser.flush, text.index
        done = nl + 1
        for m in _fed(prefix).finditer(text, nl):
            start = m.start() + 1                   # the line after that newline
            if start > done:
                keep((size, text[done:start]))
            done = find("\n", start) + 1
            line = text[start:done]
            if line == blank and not parser.marked:
                flush()                            # the usual end of a record
            else:
                body = line.rstrip("\r\n")
                parser.feed(body[size + 1:] if body[size:size + 1] == " " else body[size:])
        if done < len(text):
            keep((size, text[done:]))
        return True

    def one_by_one(self, lines: list[str]) -> None:
        """Any lines: each told apart by its prefix ('==PID==' of the current
        process tested first, then the regex), stripped and kept or fed."""
        prefix, parser = self.prefix, self.parser
        size = len(prefix)
        keep = parser.block.append if parser else None
        for line in lines:
            if line.startswith(prefix):
                body = line.rstrip("\r\n")
                if "\n" not in body:            # else _PREFIX's '.' stops: no match
                    text = body[size:].lstrip(" ").rstrip()
                    if len(text) > 5 and text[0] not in _CAREFUL_FIRST:
                        keep(text)              # most lines: a frame, a part of a record
                    else:
                        parser.feed(body[size + 1:] if body[size:size + 1] == " " else body[size:])
                    continue
            m = _PREFIX.match(line.rstrip("\r\n"))
            if not m and self.suppression_block(line):
                continue
            if not m and self.order and _TOOL_FAILURE.match(line.strip()):
                failed = self.parsers[self.order[-1]]
                failed.flush()
                failed.proc.tool_failure = failed.proc.tool_failure or line.strip()
                continue
            if not m:
                if line.strip():
                    self.other += 1
                    self.first_other = self.first_other or line.strip()
                continue
            self.seen_any = True
            pid = int(m.group(2))
            found = self.parsers.get(pid)
            if found is None:
                found = self.parsers[pid] = _ProcessParser(pid, self.budget, self.frames,
                                                                  self.raw_frames)
                self.order.append(pid)
            if m.group(1) == "==":
                prefix = self.prefix = f"=={m.group(2)}=="
                size, parser, keep = len(prefix), found, found.block.append
                self.parser = found
                found.feed(m.group(3))
            else:
                found.proc.notes.append(m.group(3))

    def suppression_block(self, line: str) -> bool:
        """--gen-suppressions=all writes, without the '==PID==' prefix, a
        '{ ... }' block right after each record: the suppression entry of
        the finding just read (of the process that wrote last)."""
        stripped = line.strip()
        if self.suppression is None:
            if stripped != "{" or self.parser is None:
                return False
            self.suppression = ["{"]
            return True
        self.suppression.append("   " + stripped if stripped not in ("{", "}") else stripped)
        if stripped == "}" or len(self.suppression) > _MAX_SUPPRESSION:
            finding = self.parser.last
            if finding is not None and stripped == "}" and finding.suppression is None:
                finding.suppression = "\n".join(self.suppression) + "\n"
            self.suppression = None
        return True

    def result(self) -> ValgrindLog:
        if not self.seen_any:
            if self.other == 0:
                raise LogParseError("the log is empty: valgrind wrote nothing")
            if self.first_other.lstrip("\ufeff").startswith(("<?xml", "<valgrindoutput")):
                raise LogParseError(_XML_HINT)
            raise LogParseError("not a valgrind log: no line starts with '==PID=='")
        for parser in self.parsers.values():
            parser.flush()
        return ValgrindLog(processes=[self.parsers[pid].proc for pid in self.order])


def parse_lines(lines: Iterable[str], max_findings: int = 5000) -> ValgrindLog:
    """Parse a valgrind text log given as lines (a file object will do)."""
    parser = _LogParser(max_findings)
    parser.feed(lines)
    return parser.result()


def parse_texts(texts: Iterable[str], max_findings: int = 5000) -> ValgrindLog:
    """Parse a valgrind text log given as texts of whole lines, each ending
    with a newline but perhaps the last (source.log_texts gives them): the
    same as parse_lines over their lines split at '\\n', without a Python
    step per line."""
    parser = _LogParser(max_findings)
    parser.feed_texts(texts)
    return parser.result()


def parse_text(text: str, max_findings: int = 5000) -> ValgrindLog:
    if text.lstrip().startswith("<?xml"):
        raise LogParseError(_XML_HINT)
    return parse_lines(text.splitlines(), max_findings)
