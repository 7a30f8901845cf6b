"""Parsers for the second detectors, on recorded reports: ASan/LSan (the
project's own buggy servers built with -fsanitize=address), helgrind and DRD
(tests/progs/race.c), and vgdb's thread listing of a hung server."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.judge.verdict import LeakPolicy, judge
from harness.logs.asanlog import parse_asan_lines, read_asan_logs
from harness.logs.hangs import parse_scheduler
from harness.logs.vglog import parse_text
from harness.model import ExitInfo, Verdict

INPUTS = Path(__file__).parent / "inputs"


def lines(name: str) -> list[str]:
    return (INPUTS / name).read_text().splitlines()


def test_asan_double_free() -> None:
    log = parse_asan_lines(lines("asan-double-free.log"))
    [finding] = log.main.findings
    assert finding.kind == "InvalidFree" and finding.tool_kind == "double-free"
    assert finding.detector == "asan"
    assert [f.fn for f in finding.stack[:3]] == ["__interceptor_free", "session_delete", "after_write"]
    assert finding.stack[1].file == "buggy.c" and finding.stack[1].line == 45
    freed = [a for a in finding.aux if a.what.startswith("freed by thread")][0]
    assert [f.fn for f in freed.stack[1:3]] == ["session_delete", "on_read"]
    alloc = [a for a in finding.aux if a.what.startswith("previously allocated")][0]
    assert alloc.stack[2].fn == "on_connection"
    assert any("280-byte region" in a.what for a in finding.aux)
    assert judge(log, ExitInfo(1, 15), LeakPolicy()).verdict is Verdict.MEMORY_ERROR


def test_asan_segv_is_a_fatal_signal() -> None:
    log = parse_asan_lines(lines("asan-segv.log"))
    sig = log.main.fatal_signal
    assert sig is not None and sig.name == "SIGSEGV" and sig.number == 11
    assert sig.address == "0x0"
    assert any(f.fn == "after_write" and f.file == "buggy.c" for f in sig.stack)
    j = judge(log, ExitInfo(1, 15), LeakPolicy())
    assert j.verdict is Verdict.CRASH and "after_write" in j.reasons[0]


def test_lsan_direct_and_indirect_leaks() -> None:
    log = parse_asan_lines(lines("lsan-leaks.log"))
    kinds = sorted(f.kind for f in log.main.findings)
    assert kinds == ["Leak_DefinitelyLost", "Leak_DefinitelyLost", "Leak_IndirectlyLost"]
    heap = log.main.heap
    assert heap.definitely_lost.bytes == 416 and heap.definitely_lost.blocks == 2
    assert heap.indirectly_lost.bytes == 736 and heap.indirectly_lost.blocks == 2
    sites = {f.stack[3].fn for f in log.main.findings}
    assert sites == {"on_connection", "start_accept_task"}
    assert judge(log, ExitInfo(23, 15), LeakPolicy()).verdict is Verdict.LEAK


def test_ubsan_runtime_error() -> None:
    log = parse_asan_lines(["src/x.c:12:7: runtime error: signed integer overflow: "
                            "2147483647 + 1 cannot be represented in type 'int'"])
    [finding] = log.main.findings
    assert finding.kind == "UndefinedBehavior" and finding.stack[0].file == "x.c"
    assert finding.stack[0].line == 12


def test_no_report_is_a_clean_process(tmp_path: Path) -> None:
    log = read_asan_logs([], stderr_text="listening\nstopped cleanly\n")
    assert log.main.findings == [] and log.complete
    assert judge(log, ExitInfo(0, 15), LeakPolicy()).verdict is Verdict.CLEAN


@pytest.mark.parametrize("name,tool,tool_kind", [("helgrind-race.log", "helgrind", None),
                                                ("drd-race.log", "drd", "ConflictingAccess")])
def test_thread_tools_report_races(name: str, tool: str, tool_kind) -> None:
    log = parse_text((INPUTS / name).read_text())
    proc = log.main
    assert proc.tool == tool and proc.complete and proc.errors.count == 2
    assert [f.kind for f in proc.findings] == ["Race", "Race"]
    for finding in proc.findings:
        assert finding.tool_kind == tool_kind
        assert [f.fn for f in finding.stack[:2]] == ["register_node", "worker"]
        assert finding.stack[0].file == "race.c"
    if tool == "helgrind":
        conflict = proc.findings[0].aux[0]
        assert conflict.what.startswith("This conflicts with a previous write of size 8 by thread #2")
        assert conflict.stack[0].fn == "register_node"
        assert any('data symbol "head"' in a.what for a in proc.findings[0].aux)
    assert judge(log, ExitInfo(0, 15), LeakPolicy()).verdict is Verdict.MEMORY_ERROR


def test_vgdb_thread_listing_of_a_hang() -> None:
    threads = parse_scheduler((INPUTS / "vgdb-hang.txt").read_text())
    assert len(threads) == 1
    [t] = threads
    assert t.tid == 1 and t.status == "VgTs_WaitSys"
    assert [f.fn for f in t.stack] == ["poll", "main"]
    assert t.stack[1].file == "toy_server.c"


def test_valgrind_failing_internally_is_unresolved_not_a_finding() -> None:
    log = parse_text((INPUTS / "drd-tool-assertion.log").read_text())
    proc = log.main
    assert proc.tool == "drd"
    assert proc.tool_failure == "drd: drd_main.c:378 (drd_stop_using_mem): Assertion 'a1 <= a2' failed."
    assert proc.findings == []        # the host stacktrace and sched dump are valgrind's, not the program's
    j = judge(log, ExitInfo(1, 15), LeakPolicy())
    assert j.verdict is Verdict.UNRESOLVED
    assert j.reasons[0].startswith("valgrind itself failed")
