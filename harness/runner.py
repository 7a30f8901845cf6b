"""One case, start to verdict: launch the server, play the scenario, stop it,
parse the log, judge.  Writes result.json next to the log and the output."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .drive import vgdb
from .drive.clients import PlayResult, play
from .drive.launch import OUTPUT_LIMIT, Server, Target, TargetError, ValgrindOptions
from .drive.locks import NameLock, dir_lock
from .drive.scenario import Scenario, toml_text
from .judge.frames import Program, annotate_log, frame_key, own_frames, signature
from .judge.verdict import Judgement, LeakPolicy, judge
from .logs import hangs
from .logs.asanlog import read_asan_logs
from .logs.source import log_texts
from .logs.vglog import LogParseError, ValgrindLog, parse_texts
from .model import DETECTORS, ExitInfo, Verdict
from .options import RunOptions
from .repro import repro, shown_path
from .timeouts import Deadlines

# Starts of one case when the port chosen for '{port}' was taken before the
# server bound it (see Server.port_taken_meanwhile).
PORT_ATTEMPTS = 3


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
    harness_error: str | None = None    # the run's own files could not be kept (exit status 2)
    started_at: float = 0.0             # wall clock (seconds since the epoch)
    log_paths: list[Path] = field(default_factory=list)     # every log, log_path first
    program: Program = field(default_factory=Program)      # what is the server's own code
    missing_debug_info: list[str] = field(default_factory=list)  # own objects seen without -g
    repro: dict | None = None           # the command that reproduces this run (repro.py)

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict

    def counted(self) -> list:
        """The findings that count under the run's leak kinds."""
        policy = LeakPolicy.parse(self.leak_policy)
        return [f for f in self.judgement.findings if policy.counts(f.kind)]

    def signatures(self) -> list[str]:
        """Address- and PID-free keys for everything the run found, most
        severe first: the verdict's own (crash, hang, startup-failure), then
        memory errors, then the leaks its leak kinds count."""
        out: list[str] = []
        fatal = self.judgement.fatal_signal
        if fatal and self.verdict is Verdict.CRASH:
            frames = own_frames(fatal.stack, self.program, 1) or \
                [f for f in fatal.stack if f.fn != "???"][:1]
            out.append(f"crash {fatal.name} " + " ".join(frame_key(f) for f in frames))
        elif self.verdict is Verdict.CRASH and self.exit and self.exit.returncode:
            out.append(f"crash signal {-self.exit.returncode}")
        if self.verdict in (Verdict.HANG, Verdict.STARTUP_FAILURE):
            out.append(self.verdict.label)
        for finding in sorted(self.counted(), key=lambda f: f.is_leak):
            sig = signature(finding, self.program)
            if sig not in out:
                out.append(sig)
        return out

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
            "findings": [dict(f.to_json(), signature=signature(f, self.program))
                         for f in self.judgement.findings],
            "signatures": self.signatures(),
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
            "started_at": round(self.started_at, 3),
            "log": str(self.log_path) if self.log_path.exists() else None,
            "logs": [str(p) for p in self.log_paths if p.exists()],
            "stdout": str(self.stdout_path),
            "stderr": str(self.stderr_path),
            "processes": len(self.log.processes) if self.log else 0,
            "detector": self.detector,
            "hang": [t.to_json() for t in self.hang_threads] or None,
            "missing_debug_info": self.missing_debug_info,
            "repro": self.repro,
        }


def read_log(path: Path) -> tuple[ValgrindLog | None, str | None]:
    """The parsed log, or None and why not."""
    return read_logs([path])


def read_logs(paths: list[Path]) -> tuple[ValgrindLog | None, str | None]:
    """One or several logs (one per PID) as one log, or None and why not."""
    processes = []
    for path in paths:
        try:
            processes += parse_texts(log_texts(path)).processes
        except FileNotFoundError:
            return None, f"valgrind wrote no log at {path}"
        except (LogParseError, ValueError, RecursionError) as exc:
            return None, f"{path}: {exc}"
        except OSError as exc:
            return None, f"{path}: cannot read: {exc.strerror}"
    if not processes:
        return None, f"valgrind wrote no log in {paths[0].parent if paths else '?'}"
    return ValgrindLog(processes=processes), None


def program_of(target: Target, log: ValgrindLog | None, options: RunOptions) -> Program:
    """The server's own code: its executable, every process's (a child it
    ran), and the source folders (default: the program's folder and the
    working directory)."""
    exes = [resolve_program(target.argv[0], target.cwd)]
    for proc in log.processes if log else []:
        if proc.command:
            exes.append(resolve_program(proc.command.split()[0], target.cwd))
    exes = [e for e in exes if e]
    roots = [Path(d) for d in options.source_dirs] if options.source_dirs is not None else \
        [Path(exes[0]).parent if exes else Path.cwd(), Path.cwd()]
    return Program.of(exes, roots)


def resolve_program(name: str, cwd: str | None) -> str | None:
    if "/" not in name:
        return shutil.which(name)
    path = Path(cwd or ".") / name
    return str(path.resolve()) if path.exists() else None


def debug_info_note(objects: list[str]) -> str:
    """What a person reads, once per run or gate, about the objects of the
    program that have no debug information."""
    names = ", ".join(objects)
    return (f"{names}: no debug information, so frames show no file and line (and findings "
            "are signed by object and offset): build with -g, or install the -dbgsym package "
            "of a Debian program")


def _write_quietly(path: Path, text: str) -> None:
    try:
        path.write_text(text + "\n")
    except OSError:
        pass    # the run folder is gone: the result says so


def claim_run_dir(path: Path) -> tuple[Path, NameLock]:
    """A run folder no other run can be using: `path`, or `path-2`, `-3`...
    when another run (of this process or any other) holds it.  The lock
    lasts until the run releases it (or exits)."""
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        lock = dir_lock(candidate)
        if lock.try_acquire():
            return candidate, lock
    raise TargetError(f"{path}: 999 runs are using folders of this name")


def detector_setup(options: RunOptions, run_dir: Path) -> tuple[ValgrindOptions, dict[str, str]]:
    """How to launch the server under the detector: valgrind's options, and
    the environment (the user's --env, then the sanitizers' settings)."""
    if options.detector not in DETECTORS:
        raise ValueError(f"unknown detector {options.detector!r} (known: {', '.join(DETECTORS)})")
    env = dict(options.env)
    if options.detector == "asan":
        # A native run; the sanitizers write their reports next to the log.
        env.update({
            "ASAN_OPTIONS": f"log_path={run_dir / 'asan'}:detect_leaks=1:halt_on_error=1:"
                            "detect_stack_use_after_return=1:abort_on_error=0:handle_segv=1",
            "LSAN_OPTIONS": "report_objects=0",
            "UBSAN_OPTIONS": f"log_path={run_dir / 'ubsan'}:print_stacktrace=1:halt_on_error=1",
        })
        return replace(options.valgrind(), enabled=False), env
    return options.valgrind(), env


def detector_log_paths(options: RunOptions, server: Server) -> list[Path]:
    """Where the detector's own reports are: valgrind's log (one per PID when
    following children, the first process's first), or the sanitizers'
    reports (the server's stderr when there is none)."""
    if options.detector == "asan":
        reports = sorted(server.run_dir.glob("asan.*")) + sorted(server.run_dir.glob("ubsan.*"))
        return reports or [server.stderr_path]
    if options.follow_children:
        first = server.run_dir / f"valgrind.{server.pid}.log"
        return [first] + [p for p in sorted(server.run_dir.glob("valgrind.*.log")) if p != first]
    return [server.log_path]


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
    if valgrind.log_per_pid:
        return read_logs(sorted(server.run_dir.glob("valgrind.*.log")))
    return read_log(server.log_path)


def as_played(scenario: Scenario, played: PlayResult) -> dict:
    """The scenario's data with each random step's seed made explicit (a
    fuzz without one drew it as it ran)."""
    data = scenario.data()
    for index, recording in played.played.items():
        data["steps"][index - 1]["seed"] = recording.seed
    return data


def keep_scenario(target: Target, scenario: Scenario, played: PlayResult, run_dir: Path,
                  options: RunOptions) -> dict:
    """scenario.toml (the scenario as played) and played.json (what each
    random step did) in the run folder; the command that reproduces the
    run with that copy."""
    path = run_dir.resolve() / "scenario.toml"
    found = repro(target, options, shown_path(path))
    header = [f"The scenario {scenario.name} ({scenario.source}) as this run played it"
              + (", seeds made explicit" if played.played else "") + ".",
              "Reproduce: " + found["command"]]
    _write_quietly(path, toml_text(as_played(scenario, played), header).rstrip("\n"))
    if played.played:
        _write_quietly(run_dir / "played.json", json.dumps(played.played_json()))
    return found


def run_case(target: Target, scenario: Scenario, run_dir: Path,
             options: RunOptions | None = None, debugger=None) -> RunResult:
    """One case, start to verdict.  `run_dir` is where its files go, or, when
    another run is using that folder, `run_dir-2`, ... (RunResult.run_dir).
    `debugger` (drive.debug.Debugger, `run --debug`): valgrind's gdbserver
    stops the server at its first error and the run waits for a person."""
    options = options or RunOptions()
    settings = scenario.settings
    base = options.deadlines
    d = Deadlines(settings.ready_timeout or base.ready, settings.step_timeout or base.step,
                  settings.stop_timeout or base.stop).scaled()
    ready_s, step_s, stop_s = d.ready, d.step, d.stop
    policy = options.leak_policy if options.leak_kinds_given else (
        settings.leak_policy or options.leak_policy)
    target = replace(target, host=settings.host if settings.host != "127.0.0.1" else target.host,
                     cwd=options.cwd or target.cwd)

    started = time.monotonic()
    started_at = time.time()
    run_dir, dir_claim = claim_run_dir(run_dir)
    try:
        result = _run_claimed(target, scenario, run_dir, options, policy, ready_s, step_s,
                              stop_s, started, started_at, debugger)
        return result
    finally:
        dir_claim.release()


def _run_claimed(target: Target, scenario: Scenario, run_dir: Path, options: RunOptions,
                 policy: LeakPolicy, ready_s: float, step_s: float, stop_s: float,
                 started: float, started_at: float, debugger=None) -> RunResult:
    stop_signal = options.stop_signal or scenario.settings.stop_signal
    valgrind, env = detector_setup(options, run_dir)
    if debugger is not None:
        valgrind = replace(valgrind, debug=True)

    def new_server() -> Server:
        server = Server(target, run_dir, valgrind, env, options.config_templates)
        if valgrind.enabled and valgrind.tool in ("memcheck", "helgrind", "drd"):
            server.on_hang = lambda s: vgdb.collect(s.hung_pid(), run_dir, valgrind.tool)
        return server

    server = new_server()
    played = PlayResult()
    player = None
    ready = False
    watch = None
    restarts: list[str] = []
    try:
        for attempt in range(PORT_ATTEMPTS):
            if attempt:
                server = new_server()
            server.start()
            if debugger is not None and watch is None:
                watch = debugger.watch(run_dir, target.cwd)
            ready = server.wait_ready(ready_s)
            if ready or attempt + 1 == PORT_ATTEMPTS or not server.port_taken_meanwhile():
                break
            # Another process took the port between the harness's check and
            # the server's bind(): start again on another one.
            restarts.append(f"port {server.port} was taken by another process before the "
                            "server could bind it; the server was started again on another port")
            server.kill()
        if ready:
            played, player = play(scenario, target.host, server.port,
                                  lambda: server.stop(stop_signal, stop_s), step_s, server)
        exited_during = ready and not played.stopped and server.exited and not server.tree()
        exit_info = server.stop(stop_signal, stop_s)
    finally:
        if watch is not None:
            watch.stop()
        if player is not None:
            player.close_all()
        server.kill()
    played.notes[:0] = restarts
    log, parse_error = read_detector_log(options, valgrind, server)
    annotate_log(log, server.maps)
    program = program_of(target, log, options)
    judgement = judge(log, exit_info, policy, ready=ready, parse_error=parse_error,
                      scenario_failures=played.failures,
                      require_exit_zero=options.require_exit_zero, not_ready=server.not_ready,
                      daemonized=server.daemonized and not options.follow_children,
                      exited_during_scenario=exited_during)
    hang_file = run_dir / "hang.txt"
    threads = hangs.parse_scheduler(hang_file.read_text()) if exit_info.hung and hang_file.exists() else []
    for thread in threads:
        frames = " < ".join(f.where() for f in thread.stack[:4] if f.fn != "???")
        judgement.reasons.append(f"thread {thread.tid} {thread.status} {thread.detail}: {frames}")
    result = RunResult(
        name=target.name or Path(target.argv[0]).name, scenario=scenario.name,
        argv=list(target.argv), run_dir=run_dir, judgement=judgement, log=log,
        exit=exit_info, ready=ready, port=server.port, play=played,
        seconds=time.monotonic() - started, log_path=detector_log_paths(options, server)[0],
        log_paths=detector_log_paths(options, server),
        stdout_path=server.stdout_path, stderr_path=server.stderr_path,
        leak_policy=policy.describe(), detector=options.detector, hang_threads=threads,
        startup_output="" if ready else server.output_tail(), started_at=started_at,
        program=program)
    result.missing_debug_info = program.missing_debug_info(judgement.findings)
    if server.maps:
        _write_quietly(run_dir / "maps.json", json.dumps(server.maps, indent=1))
    result.repro = keep_scenario(target, scenario, played, run_dir, options)
    if server.output_bytes > OUTPUT_LIMIT:
        played.notes.append(f"the server wrote {server.output_bytes:,} bytes to stdout; the first "
                            f"{OUTPUT_LIMIT >> 20} MiB are kept in {server.stdout_path.name}")
    if not run_dir.is_dir():
        result.harness_error = f"{run_dir}: the run folder was deleted during the run"
        return result
    try:
        (run_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    except OSError as exc:
        result.harness_error = f"{run_dir / 'result.json'}: cannot write: {exc.strerror}"
    return result
