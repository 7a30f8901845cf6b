"""harness.logs.vglog on real valgrind 3.19 logs (tests/inputs/, recorded from
tests/progs/), on logs cut short, and on text that is no valgrind log."""
from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pytest

from harness.judge.verdict import LeakPolicy, judge
from harness.logs.vglog import (LogParseError, ValgrindLog, kind_of_headline, parse_frame,
                           parse_lines, parse_text)
from harness.model import Amount, Verdict

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "tests" / "inputs"
PRELOAD = "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"


def text_of(name: str) -> str:
    return (INPUTS / name).read_text()


def load(name: str) -> ValgrindLog:
    return parse_text(text_of(name))


def frames(stack) -> list[tuple]:
    return [(f.fn, f.file, f.line, f.obj) for f in stack]


def aux_parts(finding) -> list[tuple]:
    return [(a.what, frames(a.stack)) for a in finding.aux]


def without_pid(findings) -> list:
    return [dataclasses.replace(f, pid=None) for f in findings]


def lib(fn: str) -> tuple:
    """A frame in valgrind's preloaded allocator (no debug info: '(in ...)')."""
    return (fn, None, None, PRELOAD)


def src(fn: str, file: str, line: int) -> tuple:
    return (fn, file, line, None)


def k(fn: str, line: int) -> tuple:
    return src(fn, "kinds.c", line)


def by_log(*rows: tuple) -> list:
    """Parameter sets named after their log: ('leaks.log', ...) is 'leaks'."""
    return [pytest.param(*row, id=row[0].removesuffix(".log")) for row in rows]


# -- one test per error kind ----------------------------------------------------
ERROR_CASES = [
    pytest.param(
        "invalid-read.log", "InvalidRead", "Invalid read of size 4",
        [k("invalid_read", 38), k("main", 108)],
        [("Address 0x4a42044 is 4 bytes inside a block of size 16 free'd",
          [lib("free"), k("invalid_read", 37), k("main", 108)]),
         ("Block was alloc'd at", [lib("malloc"), k("invalid_read", 36), k("main", 108)])],
        id="InvalidRead"),
    pytest.param(
        "invalid-write.log", "InvalidWrite", "Invalid write of size 1",
        [k("invalid_write", 43), k("main", 109)],
        [("Address 0x4a42048 is 0 bytes after a block of size 8 alloc'd",
          [lib("malloc"), k("invalid_write", 42), k("main", 109)])],
        id="InvalidWrite"),
    pytest.param(
        "invalid-free.log", "InvalidFree", "Invalid free() / delete / delete[] / realloc()",
        [lib("free"), k("invalid_free", 50), k("main", 110)],
        [("Address 0x4a42040 is 0 bytes inside a block of size 16 free'd",
          [lib("free"), k("invalid_free", 49), k("main", 110)]),
         ("Block was alloc'd at", [lib("malloc"), k("invalid_free", 48), k("main", 110)])],
        id="InvalidFree"),
    pytest.param(
        "mismatched-free.log", "MismatchedFree", "Mismatched free() / delete / delete []",
        [lib("free"), src("main", "mismatched.cpp", 5)],
        [("Address 0x4d6fc80 is 0 bytes inside a block of size 16 alloc'd",
          [lib("operator new[](unsigned long)"), src("main", "mismatched.cpp", 4)])],
        id="MismatchedFree"),
    pytest.param(
        "invalid-jump.log", "InvalidJump", "Jump to the invalid address stated on the next line",
        [("???", None, None, None), k("main", 111)],
        [("Address 0x0 is not stack'd, malloc'd or (recently) free'd", [])],
        id="InvalidJump"),
    pytest.param(
        "syscall-param.log", "SyscallParam",
        "Syscall param write(buf) points to uninitialised byte(s)",
        [src("write", "write.c", 26), k("syscall_param", 60), k("main", 112)],
        [("Address 0x4a42040 is 0 bytes inside a block of size 16 alloc'd",
          [lib("malloc"), k("syscall_param", 59), k("main", 112)])],
        id="SyscallParam"),
    pytest.param(
        "uninit-condition.log", "UninitCondition",
        "Conditional jump or move depends on uninitialised value(s)",
        [k("uninit_condition", 68), k("main", 113)], [],
        id="UninitCondition"),
    pytest.param(
        "uninit-condition-origins.log", "UninitCondition",
        "Conditional jump or move depends on uninitialised value(s)",
        [k("uninit_condition", 68), k("main", 113)],
        [("Uninitialised value was created by a heap allocation",
          [lib("malloc"), k("uninit_condition", 66), k("main", 113)])],
        id="UninitCondition-track-origins"),
    pytest.param(
        "uninit-value.log", "UninitValue", "Use of uninitialised value of size 8",
        [k("uninit_value", 76), k("main", 114)], [],
        id="UninitValue"),
    pytest.param(
        "overlap.log", "Overlap",
        "Source and destination overlap in strncpy(0x4a42047, 0x4a42045, 5)",
        [lib("strncpy"), k("overlap", 85), k("main", 115)], [],
        id="Overlap"),
    pytest.param(
        "fishy.log", "FishyValue",
        "Argument 'size' of function malloc has a fishy (possibly negative) value: -1",
        [lib("malloc"), k("fishy", 91), k("main", 116)], [],
        id="FishyValue"),
]


@pytest.mark.parametrize("name, kind, what, stack, aux", ERROR_CASES)
def test_error_record(name, kind, what, stack, aux) -> None:
    log = load(name)
    [finding] = [f for f in log.findings() if f.kind == kind]
    assert finding.what == what
    assert frames(finding.stack) == stack
    assert aux_parts(finding) == aux
    assert (finding.bytes, finding.blocks) == (None, None)
    assert not finding.is_leak
    assert finding.pid == log.main.pid


@pytest.mark.parametrize("name, kinds", by_log(
    ("invalid-read.log", ["InvalidRead"]),
    ("invalid-jump.log", ["InvalidJump"]),
    ("uninit-value.log", ["UninitValue", "InvalidRead", "Leak_StillReachable"]),
    ("uninit-condition.log", ["UninitCondition"]),
    ("clean.log", []),
    ("abort.log", []),
    ("leaks.log", ["Leak_PossiblyLost", "Leak_IndirectlyLost", "Leak_DefinitelyLost",
                   "Leak_StillReachable"]),
    ("thread-errors.log", ["InvalidWrite", "InvalidRead", "Leak_DefinitelyLost"]),
))
def test_every_record_and_nothing_else(name, kinds) -> None:
    """No info block (header, 'Use --track-origins', summaries) is taken for a finding."""
    log = load(name)
    assert [f.kind for f in log.findings()] == kinds
    assert log.main.notes == []


def test_second_error_of_uninit_value_log_is_the_null_read() -> None:
    [read] = [f for f in load("uninit-value.log").findings() if f.kind == "InvalidRead"]
    assert read.what == "Invalid read of size 4"
    assert frames(read.stack) == [k("uninit_value", 76), k("main", 114)]
    assert aux_parts(read) == [("Address 0x0 is not stack'd, malloc'd or (recently) free'd", [])]


# -- fatal signals ---------------------------------------------------------------
FATAL_CASES = [
    pytest.param("invalid-jump.log", 11, "SIGSEGV",
                 "Bad permissions for mapped region at address 0x0", "0x0",
                 [("???", None, None, None), k("main", 111)], id="SIGSEGV-jump-to-null"),
    pytest.param("uninit-value.log", 11, "SIGSEGV",
                 "Access not within mapped region at address 0x0", "0x0",
                 [k("uninit_value", 76), k("main", 114)], id="SIGSEGV-null-read"),
    pytest.param("abort.log", 6, "SIGABRT", None, None,
                 [src("__pthread_kill_implementation", "pthread_kill.c", 44),
                  src("raise", "raise.c", 26), src("abort", "abort.c", 79), k("main", 118)],
                 id="SIGABRT"),
    pytest.param("abort-core.log", 6, "SIGABRT", None, None,
                 [src("__pthread_kill_implementation", "pthread_kill.c", 44),
                  src("raise", "raise.c", 26), src("abort", "abort.c", 79), k("main", 118)],
                 id="SIGABRT-dumping-core"),
    pytest.param("sigterm-stop.log", 15, "SIGTERM", None, None,
                 [src("clock_nanosleep@@GLIBC_2.17", "clock_nanosleep.c", 71),
                  src("nanosleep", "nanosleep.c", 25),
                  ("???", None, None, "/usr/bin/sleep"), ("???", None, None, "/usr/bin/sleep"),
                  ("???", None, None, "/usr/bin/sleep"),
                  src("(below main)", "libc_start_call_main.h", 58)],
                 id="SIGTERM"),
]


@pytest.mark.parametrize("name, number, sig, fault, address, stack", FATAL_CASES)
def test_fatal_signal(name, number, sig, fault, address, stack) -> None:
    log = load(name)
    fatal = log.main.fatal_signal
    assert (fatal.number, fatal.name, fatal.fault, fatal.address) == (number, sig, fault, address)
    # The 'If you believe this happened as a result of a stack overflow' advice
    # that follows the stack of uninit-value.log is neither fault nor frame.
    assert frames(fatal.stack) == stack
    assert log.complete


@pytest.mark.parametrize("name", ["clean.log", "leaks.log", "invalid-free.log", "fork-leak.log"])
def test_no_fatal_signal(name) -> None:
    assert all(p.fatal_signal is None for p in load(name).processes)


# -- loss records and summaries --------------------------------------------------
LEAK_CASES = [
    pytest.param("Leak_PossiblyLost", 64, 1, None, None,
                 "64 bytes in 1 blocks are possibly lost in loss record 1 of 4",
                 [lib("malloc"), k("leak_every_kind", 26), k("main", 107)], id="possibly-lost"),
    pytest.param("Leak_IndirectlyLost", 64, 2, None, None,
                 "64 bytes in 2 blocks are indirectly lost in loss record 2 of 4",
                 [lib("malloc"), k("make_list", 17), k("leak_every_kind", 25), k("main", 107)],
                 id="indirectly-lost"),
    pytest.param("Leak_DefinitelyLost", 96, 1, 32, 64,
                 "96 (32 direct, 64 indirect) bytes in 1 blocks are definitely lost in loss "
                 "record 3 of 4",
                 [lib("malloc"), k("make_list", 17), k("leak_every_kind", 25), k("main", 107)],
                 id="definitely-lost-direct-indirect"),
    pytest.param("Leak_StillReachable", 100, 1, None, None,
                 "100 bytes in 1 blocks are still reachable in loss record 4 of 4",
                 [lib("malloc"), k("leak_every_kind", 27), k("main", 107)], id="still-reachable"),
]


@pytest.mark.parametrize("kind, nbytes, blocks, direct, indirect, what, stack", LEAK_CASES)
def test_loss_record(kind, nbytes, blocks, direct, indirect, what, stack) -> None:
    log = load("leaks.log")
    [finding] = [f for f in log.findings() if f.kind == kind]
    assert (finding.bytes, finding.blocks) == (nbytes, blocks)
    assert (finding.direct_bytes, finding.indirect_bytes) == (direct, indirect)
    assert finding.what == what
    assert frames(finding.stack) == stack
    assert finding.aux == []
    assert finding.is_leak
    assert finding.pid == 2926


@pytest.mark.parametrize("field, amount", [
    ("definitely_lost", Amount(32, 1)),
    ("indirectly_lost", Amount(64, 2)),
    ("possibly_lost", Amount(64, 1)),
    ("still_reachable", Amount(100, 1)),
    ("suppressed", Amount(0, 0)),
], ids=["definitely-lost", "indirectly-lost", "possibly-lost", "still-reachable", "suppressed"])
def test_leak_summary_line(field, amount) -> None:
    heap = load("leaks.log").main.heap
    assert getattr(heap, field) == amount


def test_leak_summary_seen_and_not_all_freed() -> None:
    proc = load("leaks.log").main
    assert proc.leak_summary_seen and proc.heap_seen
    assert proc.heap.all_freed is False


@pytest.mark.parametrize("name, in_use, allocs, frees, allocated", by_log(
    ("leaks.log", Amount(260, 5), 5, 0, 260),
    ("clean.log", Amount(0, 0), 1, 1, 10),
    ("mismatched-free.log", Amount(0, 0), 2, 2, 72_720),
    ("incremental-leak-check.log", Amount(260, 7), 8, 1, 300_260),
    ("sigterm-stop.log", Amount(11_996, 137), 200, 63, 18_899),
))
def test_heap_summary(name, in_use, allocs, frees, allocated) -> None:
    """'in use at exit: 11,996 bytes in 137 blocks', '300,260 bytes allocated':
    thousands separators are read as numbers."""
    heap = load(name).main.heap
    assert heap.in_use == in_use
    assert (heap.allocs, heap.frees, heap.allocated_bytes) == (allocs, frees, allocated)


@pytest.mark.parametrize("name, count, contexts", by_log(
    ("clean.log", 0, 0),
    ("leaks.log", 2, 2),
    ("invalid-free.log", 1, 1),
    ("uninit-value.log", 2, 2),
    ("thread-errors.log", 3, 3),
    ("incremental-leak-check.log", 7, 7),
))
def test_error_summary(name, count, contexts) -> None:
    errors = load(name).main.errors
    assert (errors.count, errors.contexts, errors.suppressed, errors.suppressed_contexts) == \
        (count, contexts, 0, 0)


@pytest.mark.parametrize("name", ["clean.log", "invalid-free.log", "abort.log"])
def test_all_heap_blocks_freed(name) -> None:
    heap = load(name).main.heap
    assert heap.all_freed is True
    assert heap.in_use == Amount(0, 0)
    assert [getattr(heap, f) for f in heap.LEAK_FIELDS] == [None] * 5


def test_heap_summary_without_leak_check() -> None:
    """--leak-check=no: HEAP SUMMARY only, no LEAK SUMMARY, no loss record."""
    proc = load("leaks-no-leak-check.log").main
    assert proc.heap.in_use == Amount(260, 5)
    assert proc.heap_seen and not proc.leak_summary_seen
    assert [getattr(proc.heap, f) for f in proc.heap.LEAK_FIELDS] == [None] * 5
    assert proc.findings == [] and proc.notes == []
    assert proc.complete


def test_header() -> None:
    log = load("leaks.log")
    proc = log.main
    assert (proc.pid, proc.parent_pid, proc.tool) == (2926, 2919, "memcheck")
    assert proc.command == "../../build/progs/kinds leaks"
    assert log.tool == "memcheck"
    assert [p.pid for p in log.processes] == [2926]


# -- with and without --error-markers -------------------------------------------
@pytest.mark.parametrize("with_markers, without_markers", by_log(
    ("invalid-read.log", "invalid-read-nomarkers.log"),
    ("show-error-list.log", "show-error-list-nomarkers.log"),
))
def test_error_markers_make_no_difference(with_markers, without_markers) -> None:
    a, b = load(with_markers).main, load(without_markers).main
    assert without_pid(a.findings) == without_pid(b.findings)
    assert a.findings  # the comparison is not between two empty lists
    assert (a.heap, a.errors, a.fatal_signal, a.notes) == \
        (b.heap, b.errors, b.fatal_signal, b.notes)
    assert a.complete and b.complete


def test_markers_removed_from_a_log_change_nothing() -> None:
    """The same run, its 'begin'/'end' lines dropped: blank lines alone delimit."""
    text = text_of("leaks.log")
    bare = "\n".join(line for line in text.splitlines()
                     if not re.fullmatch(r"==\d+== (begin|end)", line))
    a, b = parse_text(text).main, parse_text(bare).main
    assert len(bare.splitlines()) == len(text.splitlines()) - 8
    assert a.findings == b.findings and a.heap == b.heap and a.errors == b.errors


# -- several processes in one log --------------------------------------------------
def test_fork_two_processes_child_leak_attributed_to_its_pid() -> None:
    log = load("fork-leak.log")
    assert [p.pid for p in log.processes] == [2936, 2937]
    parent, child = log.processes
    assert log.main is parent
    assert parent.command == "../../build/progs/kinds fork-leak"
    assert parent.parent_pid == 2919
    assert child.parent_pid is None and child.command is None  # forked: no header of its own
    assert parent.findings == [] and parent.heap.all_freed
    [leak] = child.findings
    assert (leak.kind, leak.bytes, leak.blocks, leak.pid) == ("Leak_DefinitelyLost", 40, 1, 2937)
    assert frames(leak.stack) == [lib("malloc"), k("forked_leak", 98), k("main", 117)]
    assert child.heap.definitely_lost == Amount(40, 1)
    assert child.heap.in_use == Amount(40, 1)
    assert (parent.errors.count, child.errors.count) == (0, 1)
    assert parent.complete and child.complete and log.complete
    assert log.findings() == [leak]


def test_interleaved_processes_are_kept_apart() -> None:
    """Two processes writing to one log at once: their lines interleave."""
    lines = text_of("fork-leak.log").splitlines()
    parent = [ln for ln in lines if ln.startswith("==2936==")]
    child = [ln for ln in lines if ln.startswith("==2937==")]
    mixed = []
    for i in range(max(len(parent), len(child))):
        mixed += parent[i:i + 1] + child[i:i + 1]
    a, b = load("fork-leak.log"), parse_lines(mixed)
    assert [p.pid for p in b.processes] == [2936, 2937]
    for pa, pb in zip(a.processes, b.processes):
        assert (pa.findings, pa.heap, pa.errors, pa.parent_pid) == \
            (pb.findings, pb.heap, pb.errors, pb.parent_pid)


def test_main_process_is_the_one_whose_parent_is_not_in_the_log() -> None:
    """A traced child (fork+exec) writes its own header naming its parent: even
    when its lines come first, the parent is the main process."""
    child = text_of("leaks.log").replace("Parent PID: 2919", "Parent PID: 2939")
    log = parse_text(child + text_of("clean.log"))
    assert [p.pid for p in log.processes] == [2926, 2939]
    assert log.main.pid == 2939
    assert log.main.command == "../../build/progs/kinds clean"
    assert len(log.processes[0].findings) == 4


# -- incremental leak checks: '(+N)' and '(-N)' deltas -----------------------------
def test_incremental_leak_check_records() -> None:
    log = load("incremental-leak-check.log")
    findings = log.findings()
    assert len(findings) == 3 + 4 + 4 + 6  # three client-requested checks, then at exit
    by_what = {f.what: f for f in findings}
    both = by_what["96 (+96) (32 (+32) direct, 64 (+64) indirect) bytes in 1 (+1) blocks "
                   "are definitely lost in loss record 5 of 7"]
    assert (both.kind, both.bytes, both.blocks) == ("Leak_DefinitelyLost", 96, 1)
    assert (both.direct_bytes, both.indirect_bytes) == (32, 64)
    assert frames(both.stack) == [lib("malloc"), src("leak_list", "leakcheck_deltas.c", 30),
                                  src("main", "leakcheck_deltas.c", 45)]
    shrunk = by_what["0 (-300,000) bytes in 0 (-1) blocks are still reachable in loss "
                     "record 1 of 8"]
    assert (shrunk.kind, shrunk.bytes, shrunk.blocks) == ("Leak_StillReachable", 0, 0)
    assert frames(shrunk.stack)[1] == src("main", "leakcheck_deltas.c", 39)
    big = by_what["300,000 bytes in 1 blocks are still reachable in loss record 3 of 3"]
    assert (big.bytes, big.blocks) == (300_000, 1)
    grown = by_what["16 (+16) bytes in 1 (+1) blocks are definitely lost in loss record 4 of 8"]
    assert (grown.kind, grown.bytes, grown.blocks) == ("Leak_DefinitelyLost", 16, 1)
    assert [f.kind for f in findings].count("Unclassified") == 0
    assert log.main.notes == []


def _up_to_leak_summary(n: int) -> str:
    """incremental-leak-check.log up to the end of its n-th LEAK SUMMARY."""
    lines = text_of("incremental-leak-check.log").splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.endswith("LEAK SUMMARY:")]
    return "\n".join(lines[:starts[n - 1] + 6])


@pytest.mark.parametrize("n, definite, indirect, possible, reachable", [
    pytest.param(1, Amount(0, 0), Amount(0, 0), Amount(0, 0), Amount(300_116, 3), id="baseline"),
    pytest.param(2, Amount(48, 2), Amount(64, 2), Amount(0, 0), Amount(300_116, 3),
                 id="added-(+48)"),
    pytest.param(3, Amount(64, 3), Amount(64, 2), Amount(0, 0), Amount(132, 2),
                 id="changed-(-299,984)"),
    pytest.param(4, Amount(96, 4), Amount(64, 2), Amount(0, 0), Amount(100, 1), id="at-exit"),
])
def test_leak_summary_with_deltas(n, definite, indirect, possible, reachable) -> None:
    """'definitely lost: 48 (+48) bytes in 2 (+2) blocks' is 48 bytes in 2 blocks."""
    heap = parse_text(_up_to_leak_summary(n)).main.heap
    assert (heap.definitely_lost, heap.indirectly_lost, heap.possibly_lost,
            heap.still_reachable, heap.suppressed) == \
        (definite, indirect, possible, reachable, Amount(0, 0))


# -- records headed by 'Thread N:', errors listed again by -s ----------------------
def test_thread_lines_head_records() -> None:
    """'Thread 2:' before an error and 'Thread 1:' before the first loss record
    are not the records' headlines."""
    log = load("thread-errors.log")
    write, read, leak = log.findings()
    assert write.what == "Invalid write of size 1"
    assert read.what == "Invalid read of size 4" and read.kind == "InvalidRead"
    assert frames(read.stack) == [src("worker", "thread_errors.c", 19),
                                  src("start_thread", "pthread_create.c", 442),
                                  src("clone", "clone.S", 100)]
    assert [a.what for a in read.aux] == [
        "Address 0x4a42044 is 4 bytes inside a block of size 16 free'd", "Block was alloc'd at"]
    assert frames(read.aux[0].stack) == [lib("free"), src("main", "thread_errors.c", 33)]
    assert (leak.kind, leak.bytes, leak.blocks) == ("Leak_DefinitelyLost", 48, 1)
    assert frames(leak.stack)[:2] == [lib("malloc"), src("worker", "thread_errors.c", 20)]
    assert log.main.heap.definitely_lost == Amount(48, 1)


@pytest.mark.parametrize("name", ["show-error-list.log", "show-error-list-nomarkers.log"])
def test_errors_listed_again_by_dash_s_are_not_counted_twice(name) -> None:
    log = load(name)
    assert [f.kind for f in log.findings()] == ["UninitValue", "InvalidRead",
                                                "Leak_StillReachable"]
    assert log.main.errors.count == 2
    assert log.main.notes == []


# -- logs cut short -----------------------------------------------------------------
def _cut(name: str, before: str | None = None, after: str | None = None) -> str:
    """The log cut right before the first `before`, or right after the first `after`."""
    text = text_of(name)
    return text[:text.index(before)] if before else text[:text.index(after) + len(after)]


# leaks.log up to the second frame of its 'definitely lost' loss record
MID_RECORD_3 = ("loss record 3 of 4\n==2926==    at 0x48417B4: malloc (in " + PRELOAD + ")\n"
                "==2926==    by 0x1091FE: make_list (kinds.c:17)\n")
CUTS = [
    pytest.param("clean.log", "==2939== HEAP SUMMARY:", None, id="clean-before-HEAP-SUMMARY"),
    pytest.param("clean.log", None, "total heap usage: 1 allo", id="clean-inside-HEAP-SUMMARY"),
    pytest.param("clean.log", "==2939== All heap blocks", None, id="clean-before-all-freed"),
    pytest.param("clean.log", "==2939== ERROR SUMMARY", None, id="clean-before-ERROR-SUMMARY"),
    pytest.param("clean.log", None, "ERROR SUMMARY: 0 errors fr", id="clean-inside-ERROR-SUMMARY"),
    pytest.param("clean.log", None, "0 contexts (suppressed: 0 fr",
                 id="clean-ERROR-SUMMARY-cut-in-suppressed"),
    pytest.param("clean.log", None, "0 contexts", id="clean-ERROR-SUMMARY-cut-after-contexts"),
    pytest.param("leaks.log", "==2926== HEAP SUMMARY:", None, id="leaks-before-HEAP-SUMMARY"),
    pytest.param("leaks.log", None, MID_RECORD_3, id="leaks-mid-loss-record"),
    pytest.param("leaks.log", None, "96 (32 direct, 64 indirect) bytes in 1 bl",
                 id="leaks-mid-loss-record-headline"),
    pytest.param("leaks.log", "==2926== LEAK SUMMARY", None, id="leaks-before-LEAK-SUMMARY"),
    pytest.param("leaks.log", "==2926==      possibly lost", None, id="leaks-mid-LEAK-SUMMARY"),
    pytest.param("leaks.log", "==2926== For lists", None, id="leaks-before-ERROR-SUMMARY"),
    pytest.param("fork-leak.log", "==2936== For lists", None, id="fork-parent-unfinished"),
    pytest.param("invalid-jump.log", "==2930== Process terminating", None,
                 id="jump-before-signal"),
    pytest.param("uninit-value.log", None, "Process terminating with default action of sig",
                 id="signal-line-cut"),
]


@pytest.mark.parametrize("name, before, after", CUTS)
def test_log_cut_short_is_never_complete_nor_clean(name, before, after) -> None:
    log = parse_text(_cut(name, before, after))
    assert not log.complete
    assert log.main.errors is None
    for policy in (LeakPolicy(), LeakPolicy.parse("definite")):
        judgement = judge(log, None, policy)
        assert judgement.verdict is not Verdict.CLEAN
        assert any("cut short" in r for r in judgement.reasons)


def test_whole_error_summary_line_is_complete() -> None:
    """The control for the cuts above: one character more and it is complete."""
    text = text_of("clean.log")
    assert parse_text(text.rstrip("\n")).complete
    assert not parse_text(text.rstrip("\n")[:-1]).complete


def test_log_cut_in_a_loss_record_keeps_what_was_written() -> None:
    log = parse_text(_cut("leaks.log", after=MID_RECORD_3))
    proc = log.main
    assert [f.kind for f in proc.findings] == ["Leak_PossiblyLost", "Leak_IndirectlyLost",
                                               "Leak_DefinitelyLost"]
    last = proc.findings[-1]
    assert (last.bytes, last.direct_bytes, last.indirect_bytes) == (96, 32, 64)
    assert frames(last.stack) == [lib("malloc"), k("make_list", 17)]
    assert proc.heap.in_use == Amount(260, 5)     # HEAP SUMMARY was written
    assert proc.heap.definitely_lost is None      # LEAK SUMMARY was not
    assert not proc.leak_summary_seen


@pytest.mark.parametrize("name", ["clean.log", "leaks.log", "invalid-jump.log", "fork-leak.log",
                                  "abort.log", "thread-errors.log"])
def test_cut_at_every_character(name) -> None:
    """Wherever a log is cut (before its last line is whole), it is either no
    log yet (LogParseError) or an incomplete one that is never judged clean."""
    text = text_of(name).rstrip("\n")
    policy = LeakPolicy.parse("definite")
    parsed = 0
    for cut in range(len(text)):
        try:
            log = parse_text(text[:cut])
        except LogParseError:
            assert cut < 40, f"a cut at {cut} is no log"
            continue
        parsed += 1
        assert not log.complete, f"complete when cut at {cut}: {text[cut - 40:cut]!r}"
        assert judge(log, None, policy).verdict is not Verdict.CLEAN, cut
    assert parsed > len(text) - 40


def test_real_log_of_a_sigkilled_server() -> None:
    """build/servers/echo/echo under valgrind, SIGKILLed once listening: the
    header and nothing else."""
    log = load("sigkill-truncated.log")
    proc = log.main
    assert (proc.pid, proc.tool) == (5712, "memcheck")
    assert proc.command == "../../build/servers/echo/echo --port 0"
    assert not proc.complete and not log.complete
    assert proc.findings == [] and not proc.heap_seen and proc.fatal_signal is None
    assert judge(log, None, LeakPolicy()).verdict is Verdict.UNRESOLVED


# -- what is no valgrind log ------------------------------------------------------
PYTHON_TRACEBACK = """Traceback (most recent call last):
  File "/usr/lib/python3.11/runpy.py", line 198, in _run_module_as_main
    return _run_code(code, main_globals, None,
ValueError: == 12 == is not a number
"""


def _junk() -> str:
    return random.Random(1234).randbytes(4096).decode("utf-8", errors="replace")


@pytest.mark.parametrize("text, message", [
    pytest.param("", r"^the log is empty: valgrind wrote nothing$", id="empty"),
    pytest.param(" \n\n\t \n", r"^the log is empty", id="whitespace-only"),
    pytest.param(PYTHON_TRACEBACK, r"^not a valgrind log: no line starts with '==PID=='$",
                 id="python-traceback"),
    pytest.param((ROOT / "Makefile").read_text(), r"^not a valgrind log", id="makefile"),
    pytest.param(_junk(), r"^not a valgrind log", id="binary-junk"),
    pytest.param((INPUTS / "leaks.xml").read_text(), r"XML output: read it with harness\.vgxml",
                 id="xml"),
    pytest.param((INPUTS / "leaks.xml").read_text().split("\n", 1)[1],
                 r"XML output: read it with harness\.vgxml", id="xml-without-declaration"),
])
def test_not_a_valgrind_log(text, message) -> None:
    with pytest.raises(LogParseError, match=message):
        parse_text(text)
    with pytest.raises(LogParseError, match=message):
        parse_lines(text.splitlines(keepends=True))


def test_log_parse_error_is_a_value_error() -> None:
    assert issubclass(LogParseError, ValueError)


@pytest.mark.parametrize("text", [
    pytest.param("==1== ERROR SUMMARY: , errors from , contexts (suppressed: , from ,)\n",
                 id="commas-for-numbers"),
    pytest.param("==1== Parent PID: \u00b2\n", id="superscript-parent-pid"),
    pytest.param("==1== 1 bytes in , blocks are definitely lost in loss record , of ,\n",
                 id="loss-record-without-numbers"),
    pytest.param("==1== HEAP SUMMARY:\n==1==     in use at exit: , bytes in , blocks\n",
                 id="heap-summary-without-numbers"),
])
def test_malformed_lines_do_not_raise(text) -> None:
    log = parse_text(text)
    assert [p.pid for p in log.processes] == [1]
    assert not log.complete
    assert log.main.parent_pid is None and log.main.heap.in_use is None


def test_mutated_logs_raise_nothing_but_log_parse_error() -> None:
    """Real logs with random characters replaced, dropped and inserted."""
    rnd = random.Random(20240601)
    alphabet = "=0123456789 ,()+-:xabSUMRYEHAPLKT\n\t\ufffd"
    names = sorted(p.name for p in INPUTS.glob("*.log"))
    for _ in range(1500):
        chars = list(text_of(rnd.choice(names)))
        for _ in range(rnd.randint(1, 25)):
            pos = rnd.randrange(len(chars))
            op = rnd.random()
            if op < 0.4:
                chars[pos] = rnd.choice(alphabet)
            elif op < 0.7:
                del chars[pos]
            else:
                chars.insert(pos, rnd.choice(alphabet))
        try:
            log = parse_text("".join(chars))
        except LogParseError:
            continue
        assert log.processes


# -- lines, files, limits ------------------------------------------------------------
def test_parse_lines_reads_a_file_object_like_parse_text() -> None:
    with (INPUTS / "leaks.log").open() as f:
        from_file = parse_lines(f)
    from_text = load("leaks.log")
    assert from_file.findings() == from_text.findings()
    assert from_file.main.heap == from_text.main.heap


def test_crlf_line_endings() -> None:
    text = text_of("invalid-free.log").replace("\n", "\r\n")
    a, b = parse_lines(text.splitlines(keepends=True)), load("invalid-free.log")
    assert a.findings() == b.findings()
    assert a.main.heap == b.main.heap and a.main.errors == b.main.errors
    assert a.main.command == "../../build/progs/kinds invalid-free"


def test_valgrind_notes_inside_a_record_do_not_split_it() -> None:
    """'--PID--' lines (valgrind's own notes, -v) are notes, wherever they are."""
    text = text_of("leaks.log").replace(
        "==2926==    by 0x109239: leak_every_kind (kinds.c:25)\n==2926==    by 0x1094EC",
        "==2926==    by 0x109239: leak_every_kind (kinds.c:25)\n"
        "--2926-- memcheck GC: 1000 nodes, 100 survivors (10.0%)\n==2926==    by 0x1094EC", 1)
    log = parse_text(text)
    assert log.main.notes == ["memcheck GC: 1000 nodes, 100 survivors (10.0%)"]
    assert log.findings() == load("leaks.log").findings()


def test_max_findings_counts_what_it_does_not_keep() -> None:
    proc = parse_text(text_of("leaks.log"), max_findings=2).main
    assert [f.kind for f in proc.findings] == ["Leak_PossiblyLost", "Leak_IndirectlyLost"]
    assert proc.dropped_findings == 2
    assert proc.heap.definitely_lost == Amount(32, 1)   # summaries are unaffected
    assert proc.complete


# -- the helpers -------------------------------------------------------------------
@pytest.mark.parametrize("headline, kind", [
    ("Invalid read of size 8", "InvalidRead"),
    ("Invalid write of size 4", "InvalidWrite"),
    ("Invalid free() / delete / delete[] / realloc()", "InvalidFree"),
    ("Mismatched free() / delete / delete []", "MismatchedFree"),
    ("Mismatched new/delete size value: 4", "MismatchedAllocateDeallocateSize"),
    ("Jump to the invalid address stated on the next line", "InvalidJump"),
    ("Syscall param epoll_ctl(event) points to uninitialised byte(s)", "SyscallParam"),
    ("Conditional jump or move depends on uninitialised value(s)", "UninitCondition"),
    ("Use of uninitialised value of size 8", "UninitValue"),
    ("Source and destination overlap in memcpy(0x1, 0x2, 3)", "Overlap"),
    ("Argument 'size' of function malloc has a fishy (possibly negative) value: -1",
     "FishyValue"),
    ("Argument 'alignment' of function memalign has a fishy value: 3", "InvalidAlignment"),
    ("Illegal memory pool address", "InvalidMemPool"),
    ("Unaddressable byte(s) found during client check request", "ClientCheck"),
    ("Uninitialised byte(s) found during client check request", "ClientCheck"),
    ("realloc() with size 0", "ReallocSizeZero"),
    ("Possible data race during write of size 4 at 0x10C014 by thread #3", "Race"),
    ("Conflicting store by thread 3 at 0x0010c014 size 4", "Race"),
    ("Thread #1 unlocked a not-locked lock at 0x10C040", "UnlockUnlocked"),
    ("Thread #2 unlocked lock at 0x10C040 currently held by thread #1", "UnlockForeign"),
    ('Thread #1: lock order "0x10C040 before 0x10C080" violated', "LockOrder"),
    ("Thread #1's call to pthread_mutex_lock failed", "PthAPIerror"),
    ("Thread #2: Exiting thread still holds 1 lock", "Misc"),
    ("Mutex not locked: mutex 0x10c040, recursion count 0, owner 0.", "MutexErr"),
    ("Reader-writer lock not locked by calling thread: rwlock 0x10c040.", "MutexErr"),
    ("Condition variable has been destroyed while being waited upon", "MutexErr"),
    ("Semaphore reinitialization: semaphore 0x10c040", "MutexErr"),
    ("Barrier reinitialization: barrier 0x10c040", "MutexErr"),
    ("HEAP SUMMARY:", None),
    ("Thread 2:", None),
    ("64 bytes in 1 blocks are possibly lost in loss record 1 of 4", None),
    ("", None),
], ids=lambda v: re.sub(r"\W+", "-", v[:28]).strip("-") or "empty" if isinstance(v, str)
   else str(v))
def test_kind_of_headline(headline, kind) -> None:
    assert kind_of_headline(headline) == kind


@pytest.mark.parametrize("text, frame", [
    ("at 0x10929E: invalid_read (kinds.c:38)", ("invalid_read", "kinds.c", 38, None)),
    ("by 0x48417B4: malloc (in " + PRELOAD + ")", lib("malloc")),
    ("at 0x0: ???", ("???", None, None, None)),
    ("by 0x10E4AE: ??? (in /usr/bin/sleep)", ("???", None, None, "/usr/bin/sleep")),
    ("by 0x4884249: (below main) (libc_start_call_main.h:58)",
     ("(below main)", "libc_start_call_main.h", 58, None)),
    ("at 0x484320F: operator new[](unsigned long) (in " + PRELOAD + ")",
     lib("operator new[](unsigned long)")),
    ("at 0x492C503: clock_nanosleep@@GLIBC_2.17 (clock_nanosleep.c:71)",
     ("clock_nanosleep@@GLIBC_2.17", "clock_nanosleep.c", 71, None)),
    ("by 0x4965B4F: clone (clone.S:100)", ("clone", "clone.S", 100, None)),
    ("by 0x1: f (/work/main/servers/echo/echo.c:12)", ("f", "/work/main/servers/echo/echo.c",
                                                        12, None)),
    ("by 0x1: g (gen.c)", ("g", "gen.c", None, None)),
    ("by 0x1: std::vector<int, std::allocator<int> >::push_back(int const&) (stl_vector.h:1189)",
     ("std::vector<int, std::allocator<int> >::push_back(int const&)", "stl_vector.h", 1189,
      None)),
], ids=["file-line", "in-object", "unknown", "unknown-in-object", "below-main",
        "cxx-operator-new", "versioned-symbol", "assembler", "absolute-path", "file-no-line",
        "cxx-template"])
def test_parse_frame(text, frame) -> None:
    f = parse_frame(text)
    assert (f.fn, f.file, f.line, f.obj) == frame


@pytest.mark.parametrize("text", [
    "Address 0x0 is not stack'd, malloc'd or (recently) free'd",
    "Block was alloc'd at",
    "at main (t.c:3)",
    "at 0xZZ: main (t.c:3)",
    "",
], ids=["aux-address", "aux-block", "no-address", "bad-address", "empty"])
def test_not_a_frame(text) -> None:
    assert parse_frame(text) is None
