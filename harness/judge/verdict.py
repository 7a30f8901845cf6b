"""From a parsed log and how the process ended, to one verdict.

Precedence when several apply: crash > hang > startup-failure > memory-error >
leak > unresolved > clean; every finding is listed whatever wins.  Death by the
stop signal the harness itself sent is not a crash.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field

from ..logs.vglog import ValgrindLog
from ..model import LEAK_KINDS, ExitInfo, FatalSignal, Finding, HeapSummary, Verdict

_HEAP_FIELD = {
    "definite": "definitely_lost",
    "indirect": "indirectly_lost",
    "possible": "possibly_lost",
    "reachable": "still_reachable",
}


@dataclass(frozen=True)
class LeakPolicy:
    """Which leak kinds make a run `leak`.  strict: also any byte still in use
    at exit, as in the seeds ('in use at exit: 488 bytes in 4 blocks')."""

    kinds: frozenset[str] = frozenset(LEAK_KINDS)
    strict: bool = True

    @classmethod
    def parse(cls, spec: str | list[str]) -> "LeakPolicy":
        """'strict', 'all', or kinds such as 'definite,possible'."""
        words = spec.split(",") if isinstance(spec, str) else list(spec)
        words = [w.strip() for w in words if w.strip()]
        if words in (["strict"], ["all"]):
            return cls(frozenset(LEAK_KINDS), strict=words == ["strict"])
        unknown = [w for w in words if w not in LEAK_KINDS]
        if unknown or not words:
            raise ValueError(f"unknown leak kind {', '.join(unknown) or '(none)'}: expected "
                             f"'strict', 'all' or some of {', '.join(LEAK_KINDS)}")
        return cls(frozenset(words), strict=False)

    def counts(self, kind: str) -> bool:
        """A finding of this kind fails the run (every error kind does)."""
        if not kind.startswith("Leak_"):
            return True
        return any(LEAK_KINDS[k] == kind for k in self.kinds)

    def describe(self) -> str:
        if self.strict:
            return "strict"
        return ",".join(k for k in LEAK_KINDS if k in self.kinds)

    def counted(self, heap: HeapSummary) -> list[str]:
        """Human lines for every counted leak in this heap summary."""
        out = []
        for kind in LEAK_KINDS:
            amount = getattr(heap, _HEAP_FIELD[kind])
            if kind in self.kinds and amount and amount.bytes > 0:
                out.append(f"{amount.bytes:,} bytes in {amount.blocks:,} blocks "
                           f"{_HEAP_FIELD[kind].replace('_', ' ')}")
        if self.strict and heap.in_use and heap.in_use.bytes > 0 and not out:
            out.append(f"in use at exit: {heap.in_use.bytes:,} bytes in "
                       f"{heap.in_use.blocks:,} blocks")
        return out


@dataclass
class Judgement:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    fatal_signal: FatalSignal | None = None
    # Why the run cannot be trusted whatever the verdict (a scenario step that
    # failed, a server that ended early, a log cut short): a baseline never
    # makes such a run `known`.
    undecided: list[str] = field(default_factory=list)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _fatal(log: ValgrindLog | None) -> FatalSignal | None:
    if log is None:
        return None
    for proc in [log.main] + [p for p in log.processes if p is not log.main]:
        if proc.fatal_signal:
            return proc.fatal_signal
    return None


def judge(log: ValgrindLog | None, exit: ExitInfo | None, policy: LeakPolicy,
          ready: bool = True, parse_error: str | None = None,
          scenario_failures: list[str] | None = None,
          require_exit_zero: bool = False, not_ready: str | None = None,
          daemonized: bool = False, exited_during_scenario: bool = False) -> Judgement:
    """One verdict for one run.  `log` is None when there is none to read
    (parse_error says why; no parse_error: a native run that has no log);
    `exit` is None when judging a log alone.  `not_ready` says why a server
    that never listened did not; `daemonized`: its first process exited and
    a descendant served (not followed); `exited_during_scenario`: the server
    ended before the scenario did, without being told to."""
    found: dict[Verdict, list[str]] = {}

    def add(verdict: Verdict, reason: str) -> None:
        found.setdefault(verdict, []).append(reason)

    fatal = _fatal(log)
    stop_sig = exit.stop_signal if exit else None
    if fatal and fatal.number != stop_sig:
        known = [f for f in fatal.stack if f.fn != "???"]
        where = known[0].where() if known else "an unknown address"
        add(Verdict.CRASH, f"killed by {fatal.name}" + (f" ({fatal.fault})" if fatal.fault else "")
            + f" at {where}")
    elif exit and exit.returncode is not None and exit.returncode < 0 \
            and -exit.returncode not in (stop_sig, signal.SIGKILL if exit.hung else 0):
        add(Verdict.CRASH, f"killed by {signal_name(-exit.returncode)}")
    elif fatal and fatal.number == stop_sig:
        found.setdefault(Verdict.CLEAN, []).append(
            f"ended by the stop signal {fatal.name} (not a crash)")
    if exit and exit.hung:
        add(Verdict.HANG, f"still running {exit.stop_seconds}s after {signal_name(stop_sig or 0)}; "
            "killed with SIGKILL")
    if not ready:
        add(Verdict.STARTUP_FAILURE, not_ready or (
            "exited before it was listening" if exit and exit.exited_early
            else "did not start listening before the deadline"))
    if daemonized:
        add(Verdict.UNRESOLVED, "the server daemonized: its first process exited while a "
            "descendant kept serving; run it in the foreground (nginx: daemon off;), or follow "
            "its children (--follow-children)")

    findings = log.findings() if log else []
    errors = [f for f in findings if not f.is_leak]
    if errors:
        kinds = sorted({f.kind for f in errors})
        add(Verdict.MEMORY_ERROR, f"{len(errors)} error record(s): {', '.join(kinds)}")
    if log:
        for proc in log.processes:
            for line in policy.counted(proc.heap):
                add(Verdict.LEAK, line + (f" (pid {proc.pid})" if len(log.processes) > 1 else ""))
        if not found.get(Verdict.LEAK):
            counted = {LEAK_KINDS[k] for k in policy.kinds}
            leaks = [f for f in findings if f.kind in counted and (f.bytes or 0) > 0]
            if leaks:
                add(Verdict.LEAK, f"{len(leaks)} loss record(s) of counted kinds")

    for proc in log.processes if log else []:
        if proc.tool_failure:
            add(Verdict.UNRESOLVED, f"valgrind itself failed (pid {proc.pid}): {proc.tool_failure}")
    if log is None:
        if parse_error:
            add(Verdict.UNRESOLVED, parse_error)
    elif not log.main.complete and not (exit and exit.hung):
        add(Verdict.UNRESOLVED, "the log is cut short (no ERROR SUMMARY): "
            "the process did not finish under valgrind")
    elif log.main.complete and not log.complete:
        # Children the server forked and the harness killed with its group.
        cut = [p.pid for p in log.processes if not p.complete]
        found.setdefault(Verdict.CLEAN, []).append(
            f"child process(es) {', '.join(map(str, cut))} did not finish (killed with the group)")
    for failure in scenario_failures or []:
        add(Verdict.UNRESOLVED, f"scenario: {failure}")
    if exited_during_scenario and exit and not found.get(Verdict.CRASH):
        status = "" if exit.returncode is None else f" with status {exit.returncode}"
        add(Verdict.UNRESOLVED, f"the server exited{status} before the scenario ended")
    if require_exit_zero and exit and exit.returncode is not None and exit.returncode > 0 \
            and not found.get(Verdict.CRASH):
        add(Verdict.UNRESOLVED, f"exited with status {exit.returncode} after the stop signal")

    verdict = max(found, key=lambda v: v.rank) if found else Verdict.CLEAN
    reasons = [r for v in sorted(found, key=lambda v: -v.rank) for r in found[v]]
    return Judgement(verdict=verdict, reasons=reasons, findings=findings, fatal_signal=fatal,
                     undecided=list(found.get(Verdict.UNRESOLVED, [])))
