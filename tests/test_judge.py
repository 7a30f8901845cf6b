"""harness.judge.verdict: one verdict from a parsed log and how the process ended, and
the `python3 -m harness parse` command that judges a log file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.judge.verdict import LeakPolicy, judge, signal_name
from harness.logs.vglog import parse_text
from harness.model import ExitInfo, Verdict

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "tests" / "inputs"
STRICT = LeakPolicy()
DEFINITE = LeakPolicy.parse("definite,indirect,possible")


def load(name: str):
    return parse_text((INPUTS / name).read_text())


def stopped(returncode: int | None = 0, stop: int = 15, **kw) -> ExitInfo:
    """How a server ended after the harness sent it `stop`."""
    return ExitInfo(returncode=returncode, stop_signal=stop, **kw)


HUNG = dict(returncode=-9, hung=True, stop_seconds=5.0)
SCENARIO = ["client 1: reply mismatch"]

CRASH_NULL_READ = ("killed by SIGSEGV (Access not within mapped region at address 0x0) "
                   "at uninit_value (kinds.c:76)")
HANG_REASON = "still running 5.0s after SIGTERM; killed with SIGKILL"
NOT_LISTENING = "did not start listening before the deadline"
EXITED_EARLY = "exited before it was listening"
CUT_SHORT = ("the log is cut short (no ERROR SUMMARY): the process did not finish under "
             "valgrind")


# -- precedence: crash > hang > startup-failure > memory-error > leak > unresolved > clean
@pytest.mark.parametrize("name, exit, ready, failures, verdict, reasons", [
    pytest.param("uninit-value.log", stopped(**HUNG), False, SCENARIO, Verdict.CRASH,
                 [CRASH_NULL_READ, HANG_REASON, NOT_LISTENING,
                  "2 error record(s): InvalidRead, UninitValue",
                  "8 bytes in 1 blocks still reachable", "scenario: client 1: reply mismatch"],
                 id="crash-over-everything"),
    pytest.param("thread-errors.log", stopped(**HUNG), False, SCENARIO, Verdict.HANG,
                 [HANG_REASON, NOT_LISTENING, "2 error record(s): InvalidRead, InvalidWrite",
                  "48 bytes in 1 blocks definitely lost", "scenario: client 1: reply mismatch"],
                 id="hang-over-startup-failure"),
    pytest.param("thread-errors.log", stopped(0, exited_early=True), False, SCENARIO,
                 Verdict.STARTUP_FAILURE,
                 [EXITED_EARLY, "2 error record(s): InvalidRead, InvalidWrite",
                  "48 bytes in 1 blocks definitely lost", "scenario: client 1: reply mismatch"],
                 id="startup-failure-over-memory-error"),
    pytest.param("thread-errors.log", stopped(0), True, SCENARIO, Verdict.MEMORY_ERROR,
                 ["2 error record(s): InvalidRead, InvalidWrite",
                  "48 bytes in 1 blocks definitely lost", "scenario: client 1: reply mismatch"],
                 id="memory-error-over-leak"),
    pytest.param("fork-leak.log", stopped(0), True, SCENARIO, Verdict.LEAK,
                 ["40 bytes in 1 blocks definitely lost (pid 2937)",
                  "scenario: client 1: reply mismatch"],
                 id="leak-over-unresolved"),
    pytest.param("clean.log", stopped(0), True, SCENARIO, Verdict.UNRESOLVED,
                 ["scenario: client 1: reply mismatch"], id="unresolved-over-clean"),
    pytest.param("clean.log", stopped(0), True, [], Verdict.CLEAN, [], id="clean"),
])
def test_precedence_and_every_reason_listed(name, exit, ready, failures, verdict,
                                             reasons) -> None:
    judgement = judge(load(name), exit, STRICT, ready=ready, scenario_failures=failures)
    assert judgement.verdict is verdict
    assert judgement.reasons == reasons


def test_verdict_ranks_are_in_precedence_order() -> None:
    order = [Verdict.CRASH, Verdict.HANG, Verdict.STARTUP_FAILURE, Verdict.MEMORY_ERROR,
             Verdict.LEAK, Verdict.UNRESOLVED, Verdict.CLEAN]
    assert sorted(Verdict, key=lambda v: -v.rank) == order
    assert [v.is_finding for v in order] == [True] * 5 + [False] * 2


def test_judgement_lists_findings_and_fatal_signal() -> None:
    log = load("uninit-value.log")
    judgement = judge(log, None, STRICT)
    assert judgement.findings == log.findings()
    assert [f.kind for f in judgement.findings] == ["UninitValue", "InvalidRead",
                                                    "Leak_StillReachable"]
    assert judgement.fatal_signal is log.main.fatal_signal
    assert judgement.fatal_signal.name == "SIGSEGV"


# -- the stop signal -----------------------------------------------------------------
def test_death_by_the_stop_signal_is_not_a_crash() -> None:
    """sigterm-stop.log: 'Process terminating with default action of signal 15
    (SIGTERM)', the signal the harness sent."""
    judgement = judge(load("sigterm-stop.log"), stopped(-15, stop=15), DEFINITE)
    assert judgement.verdict is Verdict.CLEAN
    assert judgement.reasons == ["ended by the stop signal SIGTERM (not a crash)"]
    assert judgement.fatal_signal.number == 15


def test_death_by_the_stop_signal_still_counts_its_leaks() -> None:
    judgement = judge(load("sigterm-stop.log"), stopped(-15, stop=15), STRICT)
    assert judgement.verdict is Verdict.LEAK
    assert judgement.reasons == ["11,996 bytes in 137 blocks still reachable",
                                 "ended by the stop signal SIGTERM (not a crash)"]


@pytest.mark.parametrize("stop", [2, 1, 9], ids=["SIGINT", "SIGHUP", "SIGKILL"])
def test_death_by_another_signal_than_the_stop_signal_is_a_crash(stop) -> None:
    judgement = judge(load("sigterm-stop.log"), stopped(-15, stop=stop), DEFINITE)
    assert judgement.verdict is Verdict.CRASH
    assert judgement.reasons == [
        "killed by SIGTERM at clock_nanosleep@@GLIBC_2.17 (clock_nanosleep.c:71)"]


def test_log_alone_with_a_fatal_signal_is_a_crash() -> None:
    """No exit info: no stop signal was sent, so any fatal signal is a crash."""
    judgement = judge(load("sigterm-stop.log"), None, DEFINITE)
    assert judgement.verdict is Verdict.CRASH


@pytest.mark.parametrize("name, reasons", [
    pytest.param("invalid-jump.log",
     ["killed by SIGSEGV (Bad permissions for mapped region at address 0x0) at main (kinds.c:111)",
      "1 error record(s): InvalidJump"], id="SIGSEGV-invalid-jump"),
    pytest.param("abort.log", ["killed by SIGABRT at __pthread_kill_implementation "
                               "(pthread_kill.c:44)"], id="SIGABRT"),
    pytest.param("abort-core.log", ["killed by SIGABRT at __pthread_kill_implementation "
                                    "(pthread_kill.c:44)"], id="SIGABRT-dumping-core"),
])
def test_crash_reason_names_signal_fault_and_first_known_frame(name, reasons) -> None:
    judgement = judge(load(name), stopped(None), STRICT)
    assert judgement.verdict is Verdict.CRASH
    assert judgement.reasons == reasons


@pytest.mark.parametrize("returncode, stop, hung, verdict, reasons", [
    pytest.param(-11, 15, False, Verdict.CRASH, ["killed by SIGSEGV"], id="SIGSEGV"),
    pytest.param(-6, 15, False, Verdict.CRASH, ["killed by SIGABRT"], id="SIGABRT"),
    pytest.param(-15, 15, False, Verdict.CLEAN, [], id="stop-signal"),
    pytest.param(-2, 2, False, Verdict.CLEAN, [], id="stop-signal-SIGINT"),
    pytest.param(-15, 2, False, Verdict.CRASH, ["killed by SIGTERM"], id="not-the-stop-signal"),
    pytest.param(-9, 15, True, Verdict.HANG, [HANG_REASON], id="SIGKILL-after-hang"),
    pytest.param(-9, 15, False, Verdict.CRASH, ["killed by SIGKILL"], id="SIGKILL-by-someone"),
    pytest.param(0, 15, False, Verdict.CLEAN, [], id="exit-0"),
])
def test_return_code_of_a_clean_log(returncode, stop, hung, verdict, reasons) -> None:
    exit = ExitInfo(returncode=returncode, stop_signal=stop, hung=hung,
                    stop_seconds=5.0 if hung else None)
    judgement = judge(load("clean.log"), exit, STRICT)
    assert judgement.verdict is verdict
    assert judgement.reasons == reasons


def test_signal_name() -> None:
    assert [signal_name(n) for n in (2, 9, 11, 15)] == ["SIGINT", "SIGKILL", "SIGSEGV", "SIGTERM"]
    assert signal_name(250) == "SIG250"


# -- a log cut short ---------------------------------------------------------------------
def test_sigkilled_log_with_a_sigkill_nobody_asked_for() -> None:
    judgement = judge(load("sigkill-truncated.log"), stopped(-9), STRICT)
    assert judgement.verdict is Verdict.CRASH
    assert judgement.reasons == ["killed by SIGKILL", CUT_SHORT]


def test_sigkilled_log_of_a_hung_server_is_a_hang_not_unresolved() -> None:
    judgement = judge(load("sigkill-truncated.log"), stopped(**HUNG), STRICT)
    assert judgement.verdict is Verdict.HANG
    assert judgement.reasons == [HANG_REASON]


@pytest.mark.parametrize("exit", [None, stopped(0), stopped(-15)],
                         ids=["no-exit-info", "exit-0", "stop-signal"])
def test_log_cut_short_is_unresolved(exit) -> None:
    judgement = judge(load("sigkill-truncated.log"), exit, STRICT)
    assert judgement.verdict is Verdict.UNRESOLVED
    assert judgement.reasons == [CUT_SHORT]


def test_leak_in_a_log_cut_before_its_leak_summary_counts_loss_records() -> None:
    """No LEAK SUMMARY to count from: the loss records of the counted kinds."""
    text = (INPUTS / "leaks.log").read_text()
    log = parse_text(text[:text.index("==2926== LEAK SUMMARY")])
    judgement = judge(log, stopped(0), LeakPolicy.parse("definite,possible"))
    assert judgement.verdict is Verdict.LEAK
    assert judgement.reasons == ["2 loss record(s) of counted kinds", CUT_SHORT]


def test_no_log_to_read() -> None:
    judgement = judge(None, stopped(0), STRICT, parse_error="server.log: the log is empty")
    assert judgement.verdict is Verdict.UNRESOLVED
    assert judgement.reasons == ["server.log: the log is empty"]
    assert judgement.findings == [] and judgement.fatal_signal is None


def test_native_run_has_no_log() -> None:
    assert judge(None, stopped(0), STRICT).verdict is Verdict.CLEAN
    crashed = judge(None, stopped(-6), STRICT)
    assert (crashed.verdict, crashed.reasons) == (Verdict.CRASH, ["killed by SIGABRT"])


# -- startup -------------------------------------------------------------------------------
@pytest.mark.parametrize("exit, reason", [
    (stopped(3, exited_early=True), EXITED_EARLY),
    (stopped(-15), NOT_LISTENING),
], ids=["exited-early", "never-listened"])
def test_startup_failure(exit, reason) -> None:
    judgement = judge(load("clean.log"), exit, STRICT, ready=False)
    assert judgement.verdict is Verdict.STARTUP_FAILURE
    assert judgement.reasons == [reason]


# -- leak policy ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, spec, verdict, reasons", [
    pytest.param("leaks.log", "strict", Verdict.LEAK,
                 ["32 bytes in 1 blocks definitely lost", "64 bytes in 2 blocks indirectly lost",
                  "64 bytes in 1 blocks possibly lost", "100 bytes in 1 blocks still reachable"],
                 id="leaks-strict"),
    pytest.param("leaks.log", "definite,possible", Verdict.LEAK,
                 ["32 bytes in 1 blocks definitely lost", "64 bytes in 1 blocks possibly lost"],
                 id="leaks-definite-possible"),
    pytest.param("leaks.log", "reachable", Verdict.LEAK,
                 ["100 bytes in 1 blocks still reachable"], id="leaks-reachable"),
    pytest.param("leaks.log", "indirect", Verdict.LEAK,
                 ["64 bytes in 2 blocks indirectly lost"], id="leaks-indirect"),
    pytest.param("uninit-value.log", "definite,possible", Verdict.CRASH, [],
                 id="still-reachable-not-counted"),
    pytest.param("leaks-no-leak-check.log", "strict", Verdict.LEAK,
                 ["in use at exit: 260 bytes in 5 blocks"], id="strict-counts-in-use-at-exit"),
    pytest.param("leaks-no-leak-check.log", "all", Verdict.CLEAN, [],
                 id="all-ignores-in-use-at-exit"),
    pytest.param("incremental-leak-check.log", "strict", Verdict.LEAK,
                 ["96 bytes in 4 blocks definitely lost", "64 bytes in 2 blocks indirectly lost",
                  "100 bytes in 1 blocks still reachable"], id="final-summary-of-incremental"),
    pytest.param("incremental-leak-check.log", "possible", Verdict.CLEAN, [],
                 id="nothing-possibly-lost"),
    pytest.param("fork-leak.log", "definite", Verdict.LEAK,
                 ["40 bytes in 1 blocks definitely lost (pid 2937)"], id="child-leak-with-pid"),
    pytest.param("clean.log", "strict", Verdict.CLEAN, [], id="clean-strict"),
])
def test_leak_policy(name, spec, verdict, reasons) -> None:
    judgement = judge(load(name), None, LeakPolicy.parse(spec))
    assert judgement.verdict is verdict
    assert [r for r in judgement.reasons if "lost" in r or "reachable" in r
            or "in use" in r] == reasons


@pytest.mark.parametrize("spec, kinds, strict, described", [
    ("strict", {"definite", "indirect", "possible", "reachable"}, True, "strict"),
    ("all", {"definite", "indirect", "possible", "reachable"}, False,
     "definite,indirect,possible,reachable"),
    ("definite,possible", {"definite", "possible"}, False, "definite,possible"),
    (" possible , definite ", {"definite", "possible"}, False, "definite,possible"),
    (["reachable", "definite"], {"definite", "reachable"}, False, "definite,reachable"),
], ids=["strict", "all", "definite,possible", "spaces", "list"])
def test_leak_policy_parse(spec, kinds, strict, described) -> None:
    policy = LeakPolicy.parse(spec)
    assert (set(policy.kinds), policy.strict, policy.describe()) == (kinds, strict, described)


def test_default_leak_policy_is_strict() -> None:
    assert LeakPolicy() == LeakPolicy.parse("strict")
    assert LeakPolicy().describe() == "strict"


@pytest.mark.parametrize("spec, named", [
    ("bogus", "bogus"),
    ("definite,bogus,x", "bogus, x"),
    ("", "(none)"),
    (" , ", "(none)"),
    ("strict,definite", "strict"),
    ("Definite", "Definite"),
], ids=["bogus", "two-unknown", "empty", "commas", "strict-mixed", "capitalised"])
def test_leak_policy_parse_rejects(spec, named) -> None:
    with pytest.raises(ValueError) as info:
        LeakPolicy.parse(spec)
    assert str(info.value) == (f"unknown leak kind {named}: expected 'strict', 'all' or some of "
                               "definite, indirect, possible, reachable")


# -- exit status, scenario failures --------------------------------------------------------
@pytest.mark.parametrize("name, exit, verdict, reasons", [
    pytest.param("clean.log", stopped(3), Verdict.UNRESOLVED,
                 ["exited with status 3 after the stop signal"], id="status-3"),
    pytest.param("clean.log", stopped(0), Verdict.CLEAN, [], id="status-0"),
    pytest.param("leaks.log", stopped(1), Verdict.LEAK,
                 ["32 bytes in 1 blocks definitely lost", "64 bytes in 2 blocks indirectly lost",
                  "64 bytes in 1 blocks possibly lost", "100 bytes in 1 blocks still reachable",
                  "exited with status 1 after the stop signal"], id="leak-and-status-1"),
    pytest.param("invalid-jump.log", stopped(1), Verdict.CRASH,
                 ["killed by SIGSEGV (Bad permissions for mapped region at address 0x0) at main "
                  "(kinds.c:111)", "1 error record(s): InvalidJump"], id="crash-says-enough"),
])
def test_require_exit_zero(name, exit, verdict, reasons) -> None:
    judgement = judge(load(name), exit, STRICT, require_exit_zero=True)
    assert judgement.verdict is verdict
    assert judgement.reasons == reasons


def test_exit_status_ignored_unless_required() -> None:
    assert judge(load("clean.log"), stopped(3), STRICT).verdict is Verdict.CLEAN


def test_scenario_failures_make_a_clean_run_unresolved() -> None:
    judgement = judge(load("clean.log"), stopped(0), STRICT,
                      scenario_failures=["client 1: reply mismatch", "client 2: timeout"])
    assert judgement.verdict is Verdict.UNRESOLVED
    assert judgement.reasons == ["scenario: client 1: reply mismatch",
                                 "scenario: client 2: timeout"]


def test_scenario_failures_do_not_mask_a_leak() -> None:
    judgement = judge(load("leaks.log"), stopped(0), DEFINITE,
                      scenario_failures=["client 1: reply mismatch"])
    assert judgement.verdict is Verdict.LEAK
    assert judgement.reasons == ["32 bytes in 1 blocks definitely lost",
                                 "64 bytes in 2 blocks indirectly lost",
                                 "64 bytes in 1 blocks possibly lost",
                                 "scenario: client 1: reply mismatch"]


# -- python3 -m harness parse LOG --json - ---------------------------------------------------
def parse_cli(path: Path | str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "parse", str(path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def parse_json(path: Path | str, *args: str) -> tuple[int, dict]:
    proc = parse_cli(path, "--json", "-", *args)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


HEAP_KEYS = {"in_use", "definitely_lost", "indirectly_lost", "possibly_lost", "still_reachable",
             "suppressed"}


@pytest.mark.parametrize("name, status, verdict", [
    ("clean.log", 0, "clean"),
    ("leaks.log", 1, "leak"),
    ("invalid-free.log", 1, "memory-error"),
    ("invalid-jump.log", 1, "crash"),
    ("sigkill-truncated.log", 3, "unresolved"),
    ("leaks.xml", 1, "leak"),
], ids=["clean", "leaks", "invalid-free", "invalid-jump", "sigkill-truncated", "leaks-xml"])
def test_cli_exit_status_and_verdict(name, status, verdict) -> None:
    code, data = parse_json(INPUTS / name)
    assert (code, data["verdict"]) == (status, verdict)


@pytest.mark.parametrize("name", ["invalid-free.log", "leaks.log", "invalid-jump.log"])
def test_cli_json_shape(name) -> None:
    _, data = parse_json(INPUTS / name)
    assert {"verdict", "fatal_signal", "errors", "heap", "findings"} <= set(data)
    assert {"count", "contexts"} <= set(data["errors"])
    for key in HEAP_KEYS:
        amount = data["heap"][key]
        assert amount is None or set(amount) == {"bytes", "blocks"}, key
    assert data["findings"]
    for finding in data["findings"]:
        assert {"kind", "what", "bytes", "blocks", "stack", "aux"} <= set(finding)
        stacks = [finding["stack"]] + [a["stack"] for a in finding["aux"]]
        for frame in (fr for stack in stacks for fr in stack):
            assert set(frame) == {"fn", "file", "line", "obj"}


def test_cli_json_of_leaks_log() -> None:
    code, data = parse_json(INPUTS / "leaks.log")
    assert code == 1
    assert data["fatal_signal"] is None
    assert (data["errors"]["count"], data["errors"]["contexts"]) == (2, 2)
    assert HEAP_KEYS <= set(data["heap"])
    assert {k: data["heap"][k] for k in HEAP_KEYS} == {
        "in_use": {"bytes": 260, "blocks": 5},
        "definitely_lost": {"bytes": 32, "blocks": 1},
        "indirectly_lost": {"bytes": 64, "blocks": 2},
        "possibly_lost": {"bytes": 64, "blocks": 1},
        "still_reachable": {"bytes": 100, "blocks": 1},
        "suppressed": {"bytes": 0, "blocks": 0},
    }
    findings = data["findings"]
    assert [(f["kind"], f["bytes"], f["blocks"]) for f in findings] == [
        ("Leak_PossiblyLost", 64, 1), ("Leak_IndirectlyLost", 64, 2),
        ("Leak_DefinitelyLost", 96, 1), ("Leak_StillReachable", 100, 1)]
    definite = findings[2]
    assert definite["what"] == ("96 (32 direct, 64 indirect) bytes in 1 blocks are definitely "
                                "lost in loss record 3 of 4")
    assert definite["stack"][1] == {"fn": "make_list", "file": "kinds.c", "line": 17, "obj": None}
    assert definite["stack"][0] == {
        "fn": "malloc", "file": None, "line": None,
        "obj": "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"}
    assert definite["aux"] == []


def test_cli_json_of_clean_log() -> None:
    code, data = parse_json(INPUTS / "clean.log")
    assert code == 0
    assert (data["verdict"], data["fatal_signal"], data["findings"]) == ("clean", None, [])
    assert data["errors"]["count"] == 0 and data["errors"]["contexts"] == 0
    assert data["heap"]["in_use"] == {"bytes": 0, "blocks": 0}
    assert [data["heap"][k] for k in sorted(HEAP_KEYS - {"in_use"})] == [None] * 5


def test_cli_json_of_invalid_free_log() -> None:
    code, data = parse_json(INPUTS / "invalid-free.log")
    assert (code, data["verdict"], data["fatal_signal"]) == (1, "memory-error", None)
    [finding] = data["findings"]
    assert (finding["kind"], finding["what"]) == (
        "InvalidFree", "Invalid free() / delete / delete[] / realloc()")
    assert (finding["bytes"], finding["blocks"]) == (None, None)
    assert [(f["fn"], f["line"]) for f in finding["stack"]] == [
        ("free", None), ("invalid_free", 50), ("main", 110)]
    assert [a["what"] for a in finding["aux"]] == [
        "Address 0x4a42040 is 0 bytes inside a block of size 16 free'd", "Block was alloc'd at"]
    assert [(f["fn"], f["file"], f["line"]) for f in finding["aux"][1]["stack"]] == [
        ("malloc", None, None), ("invalid_free", "kinds.c", 48), ("main", "kinds.c", 110)]


def test_cli_json_of_invalid_jump_log() -> None:
    code, data = parse_json(INPUTS / "invalid-jump.log")
    assert (code, data["verdict"], data["fatal_signal"]) == (1, "crash", "SIGSEGV")
    assert data["findings"][0]["kind"] == "InvalidJump"
    assert data["findings"][0]["stack"][0] == {"fn": "???", "file": None, "line": None,
                                               "obj": None}


@pytest.mark.parametrize("args, status, verdict", [
    ((), 1, "leak"),                                   # strict: 11,996 bytes still reachable
    (("--leak-kinds", "definite,possible"), 0, "clean"),
    (("--stop-signal", "SIGINT", "--leak-kinds", "definite"), 1, "crash"),
], ids=["strict", "definite-possible", "stop-signal-SIGINT"])
def test_cli_stop_signal_and_leak_kinds(args, status, verdict) -> None:
    code, data = parse_json(INPUTS / "sigterm-stop.log", *args)
    assert (code, data["verdict"], data["fatal_signal"]) == (status, verdict, "SIGTERM")


def _check_bad_input(path: Path, message: str) -> None:
    proc = parse_cli(path, "--json", "-")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == f"{path}: {message}"


def test_cli_parses_a_log_from_a_fifo_as_from_its_file(tmp_path: Path) -> None:
    """A log written into a FIFO in 1,000-byte pieces (lines and a
    two-byte character cut anywhere, 64 KB reads crossed) gives the same
    JSON as the file itself."""
    text = ((INPUTS / "leaks.log").read_text().replace("main", "ma\u00efn") * 160).encode()
    path = tmp_path / "leaks.log"
    path.write_bytes(text)
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:
            for i in range(0, len(text), 1000):
                f.write(text[i:i + 1000])
                f.flush()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    status, from_fifo = parse_json(fifo)
    writer.join(timeout=60)
    assert len(text) > 3 * 65536 and not writer.is_alive()
    from_file = parse_json(path)
    assert (status, from_fifo.pop("log")) == (from_file[0], str(fifo))
    assert from_fifo == {k: v for k, v in from_file[1].items() if k != "log"}
    assert len(from_fifo["findings"]) == 160 * len(parse_text((INPUTS / "leaks.log").read_text())
                                                    .findings())


def test_cli_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_text("")
    _check_bad_input(path, "the log is empty: valgrind wrote nothing")


@pytest.mark.parametrize("content", [
    pytest.param((ROOT / "Makefile").read_text(), id="makefile"),
    pytest.param("Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 1\n",
                 id="python-traceback"),
])
def test_cli_not_a_valgrind_log(tmp_path: Path, content: str) -> None:
    path = tmp_path / "server.log"
    path.write_text(content)
    _check_bad_input(path, "not a valgrind log: no line starts with '==PID=='")


def test_cli_binary_junk(tmp_path: Path) -> None:
    path = tmp_path / "junk.log"
    path.write_bytes(bytes(range(256)) * 8)
    _check_bad_input(path, "binary data (NUL bytes): not a text log")


def test_cli_text_that_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "notes.log"
    path.write_text("shopping list\nmilk\n")
    _check_bad_input(path, "not a valgrind log: no line starts with '==PID=='")


def test_cli_not_valgrind_xml(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.write_text("<?xml version='1.0'?>\n<html><body/></html>\n")
    _check_bad_input(path, "not valgrind XML: no <valgrindoutput> element")


def test_forked_child_cut_short_does_not_make_the_run_unresolved() -> None:
    """The main process finished; a child the harness killed with the process
    group did not: noted, judged on what the log says."""
    text = (INPUTS / "fork-leak.log").read_text()
    child_summary = next(l for l in text.splitlines() if l.startswith("==2937== ERROR SUMMARY"))
    log = parse_text(text.replace(child_summary + "\n", ""))
    assert log.main.complete and not log.complete
    judgement = judge(log, stopped(0), STRICT)
    assert judgement.verdict is Verdict.LEAK        # the child's loss record still counts
    assert any("2937 did not finish" in r for r in judgement.reasons)
