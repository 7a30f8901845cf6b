"""python3 -m harness: the command line (a public contract, see README.md).

Exit status: 0 clean, 1 a finding, 2 bad usage or bad input, 3 the harness
could not decide.
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections import Counter
from pathlib import Path

from . import launch
from .frames import SourceIndex
from .judge import LeakPolicy, judge
from .launch import Target, TargetError, ValgrindOptions
from .model import ExitInfo, Verdict
from .patterns import ROOT, ManifestError, Pattern, find_pattern
from .runner import RunOptions, RunResult, run_case
from .scenario import DEFAULT, ScenarioError, load_scenario, named_scenarios, parse_signal
from .terminal import fatal_lines, finding_lines, process_lines
from .timeouts import multiplier
from .vglog import LogParseError, parse_lines
from .vgxml import parse_xml

EXIT_CLEAN, EXIT_FINDING, EXIT_USAGE, EXIT_UNDECIDED = 0, 1, 2, 3
REPORTS = ROOT / "reports"


class UsageError(Exception):
    pass


def exit_status(verdict: Verdict) -> int:
    if verdict is Verdict.CLEAN:
        return EXIT_CLEAN
    if verdict is Verdict.UNRESOLVED:
        return EXIT_UNDECIDED
    return EXIT_FINDING


def _write_json(data: dict, dest: str | None) -> None:
    if not dest:
        return
    text = json.dumps(data, indent=2) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text)


def _leak_policy(spec: str | None, default: LeakPolicy) -> LeakPolicy:
    if spec is None:
        return default
    try:
        return LeakPolicy.parse(spec)
    except ValueError as exc:
        raise UsageError(f"--leak-kinds: {exc}") from None


# -- parse ---------------------------------------------------------------------
def cmd_parse(args: argparse.Namespace) -> int:
    path = Path(args.log)
    try:
        head = path.open("rb").read(64)
        if head.lstrip().startswith(b"<?xml"):
            with path.open("rb") as f:
                log = parse_xml(f)
        else:
            with path.open(encoding="utf-8", errors="replace") as f:
                log = parse_lines(f)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    except LogParseError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        stop = parse_signal(args.stop_signal)
    except ValueError as exc:
        raise UsageError(f"--stop-signal: {exc}") from None
    policy = _leak_policy(args.leak_kinds, LeakPolicy())
    fatal = log.main.fatal_signal
    exit_info = ExitInfo(returncode=-fatal.number if fatal else None, stop_signal=stop)
    judgement = judge(log, exit_info, policy)
    index = SourceIndex.scan([Path(d) for d in args.source_dir] or [path.parent, Path.cwd()])
    data = {
        "log": str(path), "verdict": judgement.verdict.label, "reasons": judgement.reasons,
        "fatal_signal": fatal.name if fatal else None,
        "fatal": fatal.to_json() if fatal else None,
        "errors": log.main.errors.to_json() if log.main.errors else None,
        "heap": log.main.heap.to_json(), "complete": log.complete,
        "processes": [{"pid": p.pid, "complete": p.complete, "command": p.command}
                      for p in log.processes],
        "findings": [f.to_json() for f in judgement.findings], "leak_kinds": policy.describe(),
    }
    if args.json == "-":
        _write_json(data, "-")
    else:
        print(f"{path}: {judgement.verdict.label}")
        for reason in judgement.reasons:
            print(f"  {reason}")
        for line in fatal_lines(log, index) + finding_lines(log, index) + process_lines(log.main):
            print(f"  {line}")
        _write_json(data, args.json)
    return exit_status(judgement.verdict)


# -- run -----------------------------------------------------------------------
def _resolve_target(args: argparse.Namespace) -> tuple[Target, Pattern | None, str]:
    if args.cmd and args.pattern:
        raise UsageError("give either PATTERN or --cmd, not both")
    if args.cmd:
        try:
            argv = shlex.split(args.cmd)
        except ValueError as exc:
            raise UsageError(f"--cmd: {exc}") from None
        if not argv:
            raise UsageError("--cmd: empty command")
        has_placeholder = any("{port}" in a for a in argv)
        if args.port is not None and has_placeholder:
            raise UsageError("--cmd has '{port}' and --port was given: use one of them")
        if args.port is None and not has_placeholder:
            raise UsageError("--cmd needs '{port}' in its arguments, or --port N for a "
                             "server with a fixed port")
        mode = "fixed" if args.port is not None else "substitute"
        return Target(argv=argv, port_mode=mode, port=args.port, host=args.host,
                      name=Path(argv[0]).name), None, "cmd"
    if not args.pattern:
        raise UsageError("name a PATTERN (one of the project's servers) or give --cmd")
    try:
        pattern = find_pattern(args.pattern)
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    variant = args.variant or ("buggy" if pattern.is_pair else "main")
    try:
        binary = pattern.binary(variant)
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    if not binary.exists():
        raise UsageError(f"{binary} is not built: run 'make servers' first")
    return Target(argv=[str(binary), "--port", "0"], port_mode="announce", host=args.host,
                  name=f"{pattern.name}-{variant}"), pattern, variant


def _options(args: argparse.Namespace, pattern: Pattern | None) -> RunOptions:
    default_policy = LeakPolicy() if pattern else LeakPolicy.parse("definite,indirect,possible")
    return RunOptions(
        valgrind=ValgrindOptions(track_origins=args.track_origins, enabled=not args.native),
        leak_policy=_leak_policy(args.leak_kinds, default_policy),
        require_exit_zero=pattern is not None)


def print_result(result: RunResult, index: SourceIndex, verbose: bool = True) -> None:
    print(f"{result.name} · scenario {result.scenario} · {result.seconds:.1f}s")
    print(f"verdict: {result.verdict.label}")
    for reason in result.judgement.reasons:
        print(f"  {reason}")
    if result.log is not None and verbose:
        for line in fatal_lines(result.log, index) + finding_lines(result.log, index):
            print(f"  {line}")
        for line in process_lines(result.log.main):
            print(f"  {line}")
    for note in result.play.notes:
        print(f"  note: {note}")
    if result.startup_output:
        print("  server output:")
        for line in result.startup_output.splitlines()[-20:]:
            print(f"    {line}")
    if result.log is not None or result.judgement.verdict is Verdict.UNRESOLVED:
        print(f"  log:    {_rel(result.log_path)}")
    print(f"  output: {_rel(result.stdout_path)}, {_rel(result.stderr_path)}")


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise UsageError("--repeat: expected a count of at least 1")
    target, pattern, variant = _resolve_target(args)
    scenario_ref = args.scenario or (pattern.trigger if pattern and variant == "buggy" else None)
    try:
        scenario = load_scenario(scenario_ref) if scenario_ref else DEFAULT
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.stop_signal:
        try:
            scenario.settings.stop_signal = parse_signal(args.stop_signal)
        except ValueError as exc:
            raise UsageError(f"--stop-signal: {exc}") from None
    options = _options(args, pattern)
    roots = [pattern.directory, pattern.directory.parent / "common"] if pattern else \
        [Path(target.argv[0]).resolve().parent, Path.cwd()]
    index = SourceIndex.scan([Path(d) for d in args.source_dir] or roots)
    out_base = Path(args.out) if args.out else REPORTS / "runs"
    expect = pattern.expectation(variant) if pattern else None
    results = []
    for i in range(args.repeat):
        run_dir = out_base / (f"{target.name}-{scenario.name}" + (f"-{i + 1}" if args.repeat > 1 else ""))
        result = run_case(target, scenario, run_dir, options)
        results.append(result)
        if args.repeat == 1:
            print_result(result, index)
        else:
            print(f"[{i + 1}/{args.repeat}] {result.verdict.label} ({result.seconds:.1f}s)"
                  f" {'; '.join(result.judgement.reasons[:1])}", flush=True)
    if args.repeat > 1:
        _print_rate(results, expect)
    worst = max((r.verdict for r in results), key=lambda v: v.rank)
    data = results[0].to_json() if args.repeat == 1 else {
        "runs": [r.to_json() for r in results],
        "verdicts": dict(Counter(r.verdict.label for r in results)),
        "verdict": worst.label}
    _write_json(data, args.json)
    return exit_status(worst)


def _print_rate(results: list[RunResult], expect) -> None:
    counts = Counter(r.verdict.label for r in results)
    print("verdicts: " + ", ".join(f"{n}x {v}" for v, n in counts.most_common()))
    if expect is not None:
        hits = sum(1 for r in results if r.verdict is expect.verdict and (
            expect.kind is None or any(f.kind == expect.kind for f in r.judgement.findings)))
        what = expect.verdict.label + (f" with {expect.kind}" if expect.kind else "")
        print(f"reproduction rate: {hits}/{len(results)} runs were {what}")


# -- scenarios -----------------------------------------------------------------
def cmd_scenarios(args: argparse.Namespace) -> int:
    for name in named_scenarios():
        try:
            print(f"{name:22} {load_scenario(name).description}")
        except ScenarioError as exc:
            print(f"{name:22} INVALID: {exc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m harness",
                                description="Run TCP servers under valgrind, play scripted "
                                            "clients, judge leaks and crashes.")
    sub = p.add_subparsers(dest="command", required=True)

    pp = sub.add_parser("parse", help="judge an existing valgrind log (text or XML)")
    pp.add_argument("log")
    pp.add_argument("--stop-signal", default="SIGTERM",
                    help="the signal that stopped the program: death by it is not a crash")
    pp.add_argument("--leak-kinds", help="strict (default), all, or e.g. definite,possible")
    pp.add_argument("--json", metavar="PATH|-", help="write the result as JSON ('-': stdout)")
    pp.add_argument("--source-dir", action="append", default=[],
                    help="where the program's sources are (for its own frames)")
    pp.set_defaults(func=cmd_parse)

    pr = sub.add_parser("run", help="run a server under valgrind and judge it")
    pr.add_argument("pattern", nargs="?", help="one of the project's servers (servers/NAME)")
    pr.add_argument("--variant", choices=("buggy", "fixed", "main"))
    pr.add_argument("--cmd", help="any server: 'PROGRAM ARGS {port}' ({port}: a free port)")
    pr.add_argument("--port", type=int, help="the fixed port of a --cmd server without {port}")
    pr.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    pr.add_argument("--scenario", help="a named scenario (scenarios/NAME.toml) or a file")
    pr.add_argument("--stop-signal", help="override the scenario's stop signal")
    pr.add_argument("--leak-kinds", help="strict (project servers' default), all, or kinds: "
                                         "definite,indirect,possible (--cmd default)")
    pr.add_argument("--track-origins", action="store_true", help="valgrind --track-origins=yes")
    pr.add_argument("--native", action="store_true", help="run without valgrind")
    pr.add_argument("--repeat", type=int, default=1, help="run N times, report the rate")
    pr.add_argument("--json", metavar="PATH|-", help="write the result as JSON ('-': stdout)")
    pr.add_argument("--out", help="directory for the run's files (default reports/runs)")
    pr.add_argument("--source-dir", action="append", default=[],
                    help="where the server's sources are (for its own frames)")
    pr.set_defaults(func=cmd_run)

    ps = sub.add_parser("scenarios", help="list the named scenarios")
    ps.set_defaults(func=cmd_scenarios)
    return p


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        multiplier()
        return args.func(args)
    except (UsageError, TargetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say.
        sys.stderr.close()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        launch.kill_all()
        print("interrupted: every server this run started was killed", file=sys.stderr)
        return 130
    finally:
        launch.kill_all()
