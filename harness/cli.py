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

from .drive import launch
from .drive.launch import Target, TargetError, ValgrindOptions
from .drive.scenario import DEFAULT, ScenarioError, load_scenario, named_scenarios, parse_signal
from .judge.frames import SourceIndex
from .judge.gate import (BaselineError, Case, CaseResult, baseline_text, first_own_frames,
                         load_baseline, points_at)
from .judge.patterns import Expectation, ManifestError, Pattern, all_patterns, find_pattern
from .judge.verdict import LeakPolicy, judge
from .logs.vglog import LogParseError, parse_lines
from .logs.vgxml import parse_xml
from .matrix import project_cases, run_cases, shard
from .model import ExitInfo, Outcome, Verdict
from .paths import REPORTS
from .report.terminal import fatal_lines, finding_lines, process_lines
from .runner import DETECTORS, RunOptions, RunResult, run_case
from .timeouts import multiplier

EXIT_CLEAN, EXIT_FINDING, EXIT_USAGE, EXIT_UNDECIDED = 0, 1, 2, 3


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
    from .report.jsonout import findings_json, write_json
    data = {
        "log": str(path), "verdict": judgement.verdict.label, "reasons": judgement.reasons,
        "fatal_signal": fatal.name if fatal else None,
        "fatal": fatal.to_json() if fatal else None,
        "errors": log.main.errors.to_json() if log.main.errors else None,
        "heap": log.main.heap.to_json(), "complete": log.complete,
        "processes": [{"pid": p.pid, "complete": p.complete, "command": p.command}
                      for p in log.processes],
        # Encoded one by one as they are written: up to 5,000 findings.
        "findings": findings_json(judgement.findings), "leak_kinds": policy.describe(),
    }
    if args.json == "-":
        write_json(data, "-")
    else:
        print(f"{path}: {judgement.verdict.label}")
        for reason in judgement.reasons:
            print(f"  {reason}")
        for line in fatal_lines(log, index) + finding_lines(log, index) + process_lines(log.main):
            print(f"  {line}")
        write_json(data, args.json)
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
        binary = pattern.binary(variant, detector=getattr(args, "detector", "memcheck"))
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    if not binary.exists():
        raise UsageError(f"{binary} is not built: run 'make servers"
                         f"{' SANITIZE=address' if 'asan' in binary.parts else ''}' first")
    return Target(argv=[str(binary), "--port", "0"], port_mode="announce", host=args.host,
                  name=f"{pattern.name}-{variant}"), pattern, variant


def _options(args: argparse.Namespace, pattern: Pattern | None) -> RunOptions:
    default_policy = LeakPolicy() if pattern else LeakPolicy.parse("definite,indirect,possible")
    if args.native and args.detector != "memcheck":
        raise UsageError("--native runs without any detector: drop --detector")
    return RunOptions(
        valgrind=ValgrindOptions(track_origins=args.track_origins, enabled=not args.native),
        detector=args.detector,
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
    expect = pattern.expectation(variant, args.detector) if pattern else None
    if args.load:
        return _run_load(args, target, scenario, options, out_base)
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


def _run_load(args: argparse.Namespace, target: Target, scenario, options: RunOptions,
              out_base: Path) -> int:
    try:
        counts = [int(x) for x in args.load.split(",")]
    except ValueError:
        raise UsageError(f"--load {args.load!r}: expected two connection counts, e.g. 2,10") from None
    if len(counts) != 2 or min(counts) < 1 or counts[0] == counts[1]:
        raise UsageError(f"--load {args.load!r}: expected two different counts >= 1, e.g. 2,10")
    from .tools import growth
    points, results = [], []
    for n in counts:
        try:
            scaled = growth.with_load(scenario, n)
        except ValueError as exc:
            raise UsageError(f"--load: {exc}") from None
        result = run_case(target, scaled, out_base / f"{target.name}-{scaled.name}", options)
        results.append(result)
        nbytes, nblocks = growth.leaked(result)
        points.append((n, nbytes, nblocks))
        print(f"{n:>6} connections: {result.verdict.label:13} in use at exit: {nbytes:,} bytes "
              f"in {nblocks:,} blocks", flush=True)
    fit = growth.slope(points)
    print(fit.describe())
    worst = max((r.verdict for r in results), key=lambda v: v.rank)
    _write_json({"verdict": worst.label, "slope": fit.to_json(),
                 "runs": [r.to_json() for r in results]}, args.json)
    return exit_status(worst)


def _print_rate(results: list[RunResult], expect) -> None:
    counts = Counter(r.verdict.label for r in results)
    print("verdicts: " + ", ".join(f"{n}x {v}" for v, n in counts.most_common()))
    if expect is not None:
        hits = sum(1 for r in results if r.verdict is expect.verdict and points_at(r, expect))
        what = expect.verdict.label + (f" with {expect.kind}" if expect.kind else "")
        print(f"reproduction rate: {hits}/{len(results)} runs were {what}")


# -- matrix and gate ---------------------------------------------------------------
def _progress(result: CaseResult, done: int, total: int) -> None:
    mark = "!" if result.outcome.fails else " "
    print(f"[{done:>3}/{total}]{mark}{result.outcome.label:10} {result.case.id:48} "
          f"{result.run.verdict.label:14} {result.run.seconds:5.1f}s", flush=True)


def _baseline(args: argparse.Namespace) -> dict[str, str]:
    if not args.baseline:
        return {}
    try:
        return load_baseline(Path(args.baseline))
    except BaselineError as exc:
        raise UsageError(str(exc)) from None


def _finish_gate(results: list[CaseResult], args: argparse.Namespace, out_dir: Path) -> int:
    from .report.pages import summary, write_all
    paths = write_all(results, out_dir, Path(args.sarif) if args.sarif else None)
    data = summary(results)
    _write_json(data, args.json)
    if args.write_baseline:
        Path(args.write_baseline).write_text(baseline_text(results))
        print(f"baseline written: {args.write_baseline}")
    failing = [r for r in results if r.outcome.fails]
    for r in failing:
        print(f"FAIL {r.case.id}: {r.outcome.label}: {r.message}")
        for line in first_own_frames(r)[:3]:
            print(f"    {line}")
        print(f"    log: {_rel(r.run.log_path)}")
    counts = ", ".join(f"{n} {k}" for k, n in data["counts"].items())
    print(f"{'PASSED' if not failing else 'FAILED'}: {len(results)} cases ({counts})")
    print(f"report: {_rel(paths['html'])} (also {paths['md'].name}, {paths['json'].name})")
    if not failing:
        return EXIT_CLEAN
    if all(r.outcome is Outcome.UNRESOLVED for r in failing):
        return EXIT_UNDECIDED
    return EXIT_FINDING


def _detectors(chosen: list[str] | None) -> tuple[str, ...]:
    if not chosen:
        return ("memcheck",)
    if "all" in chosen:
        return DETECTORS
    return tuple(dict.fromkeys(chosen))


def cmd_matrix(args: argparse.Namespace) -> int:
    patterns = all_patterns()
    if args.pattern:
        known = {p.name: p for p in patterns}
        missing = [n for n in args.pattern if n not in known]
        if missing:
            raise UsageError(f"--pattern {missing[0]!r}: no such server (known: {', '.join(known)})")
        patterns = [known[n] for n in args.pattern]
    detectors = _detectors(args.detector)
    for pattern in patterns:
        for variant in pattern.variants:
            for detector in detectors:
                binary = pattern.binary(variant, detector=detector)
                if not binary.exists():
                    raise UsageError(f"{binary} is not built: run 'make servers"
                                     f"{' SANITIZE=address' if detector == 'asan' else ''}' first")
    cases = shard(project_cases(patterns, RunOptions(
        valgrind=ValgrindOptions(track_origins=args.track_origins), require_exit_zero=True),
        detectors, variants=tuple(args.variant) if args.variant else None), args.shard)
    out_dir = Path(args.out) if args.out else REPORTS
    print(f"matrix: {len(cases)} cases, {args.jobs} at a time, detectors: {', '.join(detectors)}",
          flush=True)
    results = run_cases(cases, out_dir, args.jobs, _baseline(args), _progress)
    return _finish_gate(results, args, out_dir)


def cmd_gate(args: argparse.Namespace) -> int:
    args.pattern = None
    args.variant = None
    target, _, _ = _resolve_target(args)
    scenarios = args.scenario or ["echo"]
    for ref in scenarios:
        try:
            load_scenario(ref)
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    options = RunOptions(valgrind=ValgrindOptions(track_origins=args.track_origins),
                         detector=args.detector,
                         leak_policy=_leak_policy(args.leak_kinds,
                                                  LeakPolicy.parse("definite,indirect,possible")))
    roots = [Path(d) for d in args.source_dir] or [Path(target.argv[0]).resolve().parent, Path.cwd()]
    cases = [Case(id=f"{target.name}-{Path(ref).stem}", target=target, scenario=ref,
                  expect=Expectation(Verdict.CLEAN), source_roots=roots, options=options)
             for ref in scenarios]
    out_dir = Path(args.out) if args.out else REPORTS
    results = run_cases(cases, out_dir, args.jobs, _baseline(args), _progress)
    return _finish_gate(results, args, out_dir)


def cmd_demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo
    return run_demo(Path(args.out) if args.out else REPORTS, args.jobs)


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
    pr.add_argument("--detector", choices=DETECTORS, default="memcheck",
                    help="memcheck (default), asan (the build/asan tree, natively), helgrind, drd")
    pr.add_argument("--repeat", type=int, default=1, help="run N times, report the rate")
    pr.add_argument("--load", metavar="N1,N2",
                    help="run at two connection counts, report the leak per connection")
    pr.add_argument("--json", metavar="PATH|-", help="write the result as JSON ('-': stdout)")
    pr.add_argument("--out", help="directory for the run's files (default reports/runs)")
    pr.add_argument("--source-dir", action="append", default=[],
                    help="where the server's sources are (for its own frames)")
    pr.set_defaults(func=cmd_run)

    def gate_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("-j", "--jobs", type=int, default=1, help="cases run at once")
        q.add_argument("--json", metavar="PATH|-", help="write summary.json here too ('-': stdout)")
        q.add_argument("--out", help="report directory (default reports/)")
        q.add_argument("--baseline", help="TOML file of accepted findings (by signature)")
        q.add_argument("--write-baseline", metavar="PATH",
                       help="write every current finding's signature as accepted")
        q.add_argument("--sarif", metavar="PATH", help="also write SARIF 2.1.0 for code scanning")
        q.add_argument("--track-origins", action="store_true", help="valgrind --track-origins=yes")

    pm = sub.add_parser("matrix", help="every pair's variants against their scenarios")
    pm.add_argument("--pattern", action="append", help="only this server (repeatable)")
    pm.add_argument("--shard", metavar="I/N", help="run the I-th of N deterministic slices")
    pm.add_argument("--variant", action="append", choices=("buggy", "fixed", "main"),
                    help="only these variants (repeatable)")
    pm.add_argument("--detector", action="append", choices=DETECTORS + ("all",),
                    help="memcheck (default), asan, helgrind, drd, or all (repeatable)")
    gate_options(pm)
    pm.set_defaults(func=cmd_matrix)

    pg = sub.add_parser("gate", help="CI gate for your own server: fails on a new leak or crash")
    pg.add_argument("--cmd", required=True, help="'PROGRAM ARGS {port}'")
    pg.add_argument("--port", type=int, help="the fixed port of a server without {port}")
    pg.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    pg.add_argument("--scenario", action="append", help="named scenario or file (repeatable; default echo)")
    pg.add_argument("--detector", choices=DETECTORS, default="memcheck",
                    help="memcheck (default), helgrind, drd, or asan (your -fsanitize=address build)")
    pg.add_argument("--leak-kinds", help="default definite,indirect,possible; or strict, all")
    pg.add_argument("--source-dir", action="append", default=[],
                    help="where the server's sources are (for its own frames)")
    gate_options(pg)
    pg.set_defaults(func=cmd_gate)

    pd = sub.add_parser("demo", help="each bug next to its fix, then the HTML report")
    pd.add_argument("-j", "--jobs", type=int, default=2, help="cases run at once (default 2)")
    pd.add_argument("--out", help="report directory (default reports/)")
    pd.set_defaults(func=cmd_demo)

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
