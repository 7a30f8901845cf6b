"""One case, start to verdict: launch the server, play the scenario, stop it,
parse the log, judge.  Writes result.json next to the log and the output."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .drive import vgdb
from .drive.clients import PlayResult, play
from .drive.launch import Server, Target, ValgrindOptions
from .drive.scenario import Scenario
from .judge.verdict import Judgement, LeakPolicy, judge
from .logs import hangs
from .logs.asanlog import read_asan_logs
from .logs.vglog import LogParseError, ValgrindLog, parse_lines
from .model import DETECTORS, ExitInfo, Verdict
from .timeouts import Deadlines


@dataclass
class RunOptions:
    """detector: memcheck (default), helgrind or drd run the program under
    that valgrind tool; asan runs it natively (it must be built with
    -fsanitize=address) and reads the sanitizers' reports."""

    valgrind: ValgrindOptions = field(default_factory=ValgrindOptions)
    detector: str = "memcheck"
    leak_policy: LeakPolicy = field(default_factory=LeakPolicy)
    deadlines: Deadlines = field(default_factory=Deadlines)
    require_exit_zero: bool = False


@dataclass
class RunResult:
    name: str
    scenario: str
    argv: list[str]
    run_dir: Path
    judgement: Judgement
    log: ValgrindLog | None
    exit: ExitInfo | None
    ready: bool
    port: int | None
    play: PlayResult
    seconds: float
    log_path: Path
    stdout_path: Path
    stderr_path: Path
    leak_policy: str = "strict"
    startup_output: str = ""
    detector: str = "memcheck"
    hang_threads: list[hangs.ThreadStack] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict

    def to_json(self) -> dict:
        proc = self.log.main if self.log else None
        heap = proc.heap.to_json() if proc else None
        return {
            "name": self.name,
            "scenario": self.scenario,
            "verdict": self.verdict.label,
            "reasons": self.judgement.reasons,
            "fatal_signal": self.judgement.fatal_signal.name if self.judgement.fatal_signal else None,
            "fatal": self.judgement.fatal_signal.to_json() if self.judgement.fatal_signal else None,
            "errors": proc.errors.to_json() if proc and proc.errors else None,
            "heap": heap,
            "findings": [f.to_json() for f in self.judgement.findings],
            "exit": None if self.exit is None else {
                "returncode": self.exit.returncode, "hung": self.exit.hung,
                "exited_early": self.exit.exited_early, "stop_seconds": self.exit.stop_seconds},
            "ready": self.ready,
            "port": self.port,
            "leak_kinds": self.leak_policy,
            "scenario_failures": self.play.failures,
            "notes": self.play.notes,
            "command": self.argv,
            "seconds": round(self.seconds, 3),
            "log": str(self.log_path) if self.log_path.exists() else None,
            "stdout": str(self.stdout_path),
            "stderr": str(self.stderr_path),
            "processes": len(self.log.processes) if self.log else 0,
            "detector": self.detector,
            "hang": [t.to_json() for t in self.hang_threads] or None,
        }


def read_log(path: Path) -> tuple[ValgrindLog | None, str | None]:
    """The parsed log, or None and why not."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_lines(f), None
    except FileNotFoundError:
        return None, f"valgrind wrote no log at {path}"
    except LogParseError as exc:
        return None, str(exc)


def detector_setup(options: RunOptions, run_dir: Path) -> tuple[ValgrindOptions, dict[str, str]]:
    if options.detector not in DETECTORS:
        raise ValueError(f"unknown detector {options.detector!r} (known: {', '.join(DETECTORS)})")
    if options.detector == "asan":
        # A native run; the sanitizers write their reports next to the log.
        return replace(options.valgrind, enabled=False), {
            "ASAN_OPTIONS": f"log_path={run_dir / 'asan'}:detect_leaks=1:halt_on_error=1:"
                            "detect_stack_use_after_return=1:abort_on_error=0:handle_segv=1",
            "LSAN_OPTIONS": "report_objects=0",
            "UBSAN_OPTIONS": f"log_path={run_dir / 'ubsan'}:print_stacktrace=1:halt_on_error=1",
        }
    if options.valgrind.enabled:
        return replace(options.valgrind, tool=options.detector), {}
    return options.valgrind, {}


def detector_log_path(options: RunOptions, server: Server) -> Path:
    """Where the detector's own report is: valgrind's log, or the first
    sanitizer report (the server's stderr when there is none)."""
    if options.detector == "asan":
        reports = sorted(server.run_dir.glob("asan.*")) + sorted(server.run_dir.glob("ubsan.*"))
        return reports[0] if reports else server.stderr_path
    return server.log_path


def read_detector_log(options: RunOptions, valgrind: ValgrindOptions,
                      server: Server) -> tuple[ValgrindLog | None, str | None]:
    """The run's findings.  A native run without a detector has no log:
    only how the process ended counts."""
    if options.detector == "asan":
        files = sorted(server.run_dir.glob("asan.*")) + sorted(server.run_dir.glob("ubsan.*"))
        stderr = server.stderr_path.read_text(errors="replace") if server.stderr_path.exists() else ""
        return read_asan_logs(files, stderr), None
    if not valgrind.enabled:
        return None, None
    return read_log(server.log_path)


def run_case(target: Target, scenario: Scenario, run_dir: Path,
             options: RunOptions | None = None) -> RunResult:
    options = options or RunOptions()
    settings = scenario.settings
    base = options.deadlines
    d = Deadlines(settings.ready_timeout or base.ready, settings.step_timeout or base.step,
                  settings.stop_timeout or base.stop).scaled()
    ready_s, step_s, stop_s = d.ready, d.step, d.stop
    policy = settings.leak_policy or options.leak_policy
    target.host = settings.host if settings.host != "127.0.0.1" else target.host

    started = time.monotonic()
    valgrind, env = detector_setup(options, run_dir)
    server = Server(target, run_dir, valgrind, env)
    if valgrind.enabled and valgrind.tool in ("memcheck", "helgrind", "drd"):
        server.on_hang = lambda s: vgdb.collect(s.proc.pid, run_dir)
    server.start()
    played = PlayResult()
    player = None
    try:
        ready = server.wait_ready(ready_s)
        if ready:
            played, player = play(scenario, target.host, server.port,
                                  lambda: server.stop(settings.stop_signal, stop_s), step_s)
        exit_info = server.stop(settings.stop_signal, stop_s)
    finally:
        if player is not None:
            player.close_all()
        server.kill()
    log, parse_error = read_detector_log(options, valgrind, server)
    judgement = judge(log, exit_info, policy, ready=ready, parse_error=parse_error,
                      scenario_failures=played.failures,
                      require_exit_zero=options.require_exit_zero)
    hang_file = run_dir / "hang.txt"
    threads = hangs.parse_scheduler(hang_file.read_text()) if exit_info.hung and hang_file.exists() else []
    for thread in threads:
        frames = " < ".join(f.where() for f in thread.stack[:4] if f.fn != "???")
        judgement.reasons.append(f"thread {thread.tid} {thread.status} {thread.detail}: {frames}")
    result = RunResult(
        name=target.name or Path(target.argv[0]).name, scenario=scenario.name,
        argv=list(target.argv), run_dir=run_dir, judgement=judgement, log=log,
        exit=exit_info, ready=ready, port=server.port, play=played,
        seconds=time.monotonic() - started, log_path=detector_log_path(options, server),
        stdout_path=server.stdout_path, stderr_path=server.stderr_path,
        leak_policy=policy.describe(), detector=options.detector, hang_threads=threads,
        startup_output="" if ready else server.output_tail())
    (run_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
