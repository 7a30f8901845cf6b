"""Parse AddressSanitizer, LeakSanitizer and UBSan reports into the same
findings as valgrind's.  Pure: text in, dataclasses out.

Each sanitizer report becomes a Finding whose `kind` is memcheck's name for
the same thing where there is one (heap-use-after-free READ -> InvalidRead,
attempting double-free -> InvalidFree, Direct leak -> Leak_DefinitelyLost,
...), so results line up across detectors, and whose `tool_kind` keeps the
sanitizer's own name ('heap-use-after-free', 'stack-use-after-return',
'double-free', ...).  A SEGV report becomes the process's fatal signal.
"""
from __future__ import annotations

import re
from typing import Iterable

from ..model import Amount, Aux, ErrorSummary, FatalSignal, Finding, Frame
from .vglog import LogParseError, ProcessLog, ValgrindLog

_ERROR = re.compile(r"^==(?P<pid>\d+)==ERROR: (?P<tool>AddressSanitizer|LeakSanitizer): "
                    r"(?P<rest>.*)$")
_FRAME = re.compile(r"^\s+#\d+ 0x[0-9a-fA-F]+ (?:in (?P<fn>.+?) )?"
                    r"(?:(?P<file>[^\s()]+?):(?P<line>\d+)(?::\d+)?|\((?P<obj>[^()]*)\)|(?P<bare>\S+))$")
_LEAK = re.compile(r"^(?P<which>Direct|Indirect) leak of (?P<bytes>\d+) byte\(s\) in "
                   r"(?P<blocks>\d+) object\(s\) allocated from:")
_ACCESS = re.compile(r"^(?P<rw>READ|WRITE) of size (?P<size>\d+) at 0x[0-9a-f]+ thread T\d+")
_UBSAN = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):\d+: runtime error: (?P<what>.*)$")
_SIGNALS = {"SEGV": (11, "SIGSEGV"), "BUS": (7, "SIGBUS"), "FPE": (8, "SIGFPE"),
            "ILL": (4, "SIGILL"), "ABRT": (6, "SIGABRT")}
# Lines that open an auxiliary part (with its own stack) of an ASan report.
_AUX_HEADS = ("freed by thread", "previously allocated by thread", "allocated by thread",
              "Thread T", "Address 0x", "0x")


def _frame(line: str) -> Frame | None:
    m = _FRAME.match(line)
    if not m:
        return None
    fn = m["fn"] or "???"
    if m["file"]:
        return Frame(fn=fn, file=m["file"].rsplit("/", 1)[-1], line=int(m["line"]))
    return Frame(fn=fn, obj=m["obj"] or m["bare"])


def _memcheck_kind(tool_kind: str, access: str | None) -> str:
    if tool_kind in ("double-free", "attempting double-free", "bad-free", "attempting free"):
        return "InvalidFree"
    if tool_kind.startswith("alloc-dealloc-mismatch"):
        return "MismatchedFree"
    if access == "WRITE":
        return "InvalidWrite"
    return "InvalidRead"


class _Report:
    """One '==PID==ERROR:' block, up to its SUMMARY line."""

    def __init__(self, pid: int, tool: str, rest: str) -> None:
        self.pid = pid
        self.tool = tool
        self.head = rest
        self.lines: list[str] = []


def _error_finding(rep: _Report) -> tuple[Finding | None, FatalSignal | None]:
    # 'heap-use-after-free on address 0x... at pc ...', 'attempting double-free on 0x...',
    # 'SEGV on unknown address 0x0000 (pc ...)', 'stack-use-after-return on address ...'
    tool_kind = rep.head.split(" on ", 1)[0].strip()
    if tool_kind.startswith("attempting "):
        tool_kind = tool_kind[len("attempting "):]
    access = None
    part: Aux | None = None
    stack: list[Frame] = []
    aux: list[Aux] = []
    for line in rep.lines:
        frame = _frame(line)
        if frame:
            (part.stack if part else stack).append(frame)
            continue
        text = line.strip()
        m = _ACCESS.match(text)
        if m:
            access = m["rw"]
            continue
        if text.startswith(_AUX_HEADS):
            part = Aux(what=text.rstrip(":"))
            aux.append(part)
    sig_name = tool_kind.split()[0] if tool_kind else ""
    if sig_name in _SIGNALS or tool_kind.startswith("deadly signal"):
        number, name = _SIGNALS.get(sig_name, (0, "SIG?"))
        addr = re.search(r"address (0x[0-9a-f]+)", rep.head)
        return None, FatalSignal(number=number, name=name, fault=rep.head, stack=stack,
                                 address=hex(int(addr[1], 16)) if addr else None)
    finding = Finding(kind=_memcheck_kind(tool_kind, access), what=f"{rep.tool}: {rep.head}",
                      stack=stack, aux=aux, pid=rep.pid, detector="asan", tool_kind=tool_kind)
    return finding, None


def _leak_findings(rep: _Report) -> list[Finding]:
    out: list[Finding] = []
    current: Finding | None = None
    for line in rep.lines:
        m = _LEAK.match(line.strip())
        if m:
            kind = "Leak_DefinitelyLost" if m["which"] == "Direct" else "Leak_IndirectlyLost"
            current = Finding(kind=kind, what=line.strip(), bytes=int(m["bytes"]),
                              blocks=int(m["blocks"]), pid=rep.pid, detector="asan",
                              tool_kind=f"{m['which'].lower()}-leak")
            out.append(current)
            continue
        frame = _frame(line)
        if frame and current is not None:
            current.stack.append(frame)
    return out


def parse_asan_lines(lines: Iterable[str]) -> ValgrindLog:
    """All reports of one or several processes (ASan's log_path files, or a
    stderr that holds them).  Raises LogParseError if there is no report at
    all in a non-empty text that does not look like a sanitizer's."""
    procs: dict[int, ProcessLog] = {}
    report: _Report | None = None
    reports: list[_Report] = []
    ubsan: list[Finding] = []
    for raw in lines:
        line = raw.rstrip("\n")
        m = _ERROR.match(line)
        if m:
            report = _Report(int(m["pid"]), m["tool"], m["rest"])
            reports.append(report)
            continue
        u = _UBSAN.match(line.strip())
        if u:
            ubsan.append(Finding(kind="UndefinedBehavior", what=f"runtime error: {u['what']}",
                                 stack=[Frame(fn="?", file=u["file"].rsplit("/", 1)[-1],
                                              line=int(u["line"]))],
                                 detector="ubsan", tool_kind="undefined-behavior"))
            report = None
            continue
        if report is not None:
            if line.startswith("SUMMARY:") or line.endswith("==ABORTING"):
                report = None
            else:
                report.lines.append(line)
    for rep in reports:
        proc = procs.setdefault(rep.pid, ProcessLog(pid=rep.pid, tool="asan"))
        if rep.tool == "LeakSanitizer":
            leaks = _leak_findings(rep)
            proc.findings.extend(leaks)
            for attr, kind in (("definitely_lost", "Leak_DefinitelyLost"),
                               ("indirectly_lost", "Leak_IndirectlyLost")):
                chosen = [f for f in leaks if f.kind == kind]
                setattr(proc.heap, attr, Amount(sum(f.bytes or 0 for f in chosen),
                                                sum(f.blocks or 0 for f in chosen)))
            proc.leak_summary_seen = True
            continue
        finding, fatal = _error_finding(rep)
        if finding:
            proc.findings.append(finding)
        if fatal:
            proc.fatal_signal = fatal
    if ubsan:
        proc = procs.setdefault(0, ProcessLog(pid=0, tool="ubsan"))
        proc.findings.extend(ubsan)
    for proc in procs.values():
        errors = [f for f in proc.findings if not f.is_leak]
        proc.errors = ErrorSummary(count=len(errors), contexts=len(errors))
    return ValgrindLog(processes=list(procs.values()))


def read_asan_logs(paths: list, stderr_text: str = "") -> ValgrindLog:
    """The reports in ASan's log_path files, or in the server's stderr when
    there are none; a run without any report is a clean process."""
    lines: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines.extend(f)
    if not lines:
        lines = stderr_text.splitlines()
    log = parse_asan_lines(lines)
    if not log.processes:
        clean = ProcessLog(pid=0, tool="asan", errors=ErrorSummary(0, 0))
        log.processes.append(clean)
    return log


__all__ = ["parse_asan_lines", "read_asan_logs", "LogParseError"]
