"""python3 -m harness: the command line (a public contract, see README.md).

Exit status: 0 clean, 1 a finding, 2 bad usage or bad input (a message
naming the file or the option, never a traceback), 3 the harness could not
decide, 130 interrupted.  With `--json -` the JSON document is the only
thing on stdout; what a person reads goes to stderr.

Each subcommand imports what it needs when it runs (`parse` of a text log
does not load the client, the matrix or ElementTree).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from .model import Verdict
from .options import OptionError, add_run_options
from .paths import CHECKOUT, REPORTS
from .timeouts import multiplier

EXIT_CLEAN, EXIT_FINDING, EXIT_USAGE, EXIT_UNDECIDED = 0, 1, 2, 3
MAX_JOBS = 64
MAX_REPEAT = 1000
# Subcommands that start no server: they do not load the launcher.
QUIET_COMMANDS = ("parse", "scenarios", "report")
USER_SERVER_HINT = "'{port}' in --cmd, or --port N for a server with a fixed port"


class UsageError(Exception):
    pass


def exit_status(verdict: Verdict) -> int:
    if verdict is Verdict.CLEAN:
        return EXIT_CLEAN
    if verdict is Verdict.UNRESOLVED:
        return EXIT_UNDECIDED
    return EXIT_FINDING


def human(args: argparse.Namespace):
    """Where a person's text goes: stderr when stdout carries the JSON."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def visible(text: str, width: int = 240) -> str:
    """Server output made safe for a terminal: control characters shown as
    escapes, long lines cut."""
    out = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)
    return out if len(out) <= width else out[:width - 3] + "..."


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


# -- output paths, checked before anything runs --------------------------------------
def writable_file(option: str, dest: str | None) -> Path | None:
    if not dest or dest == "-":
        return None
    path = Path(dest)
    if path.is_dir():
        raise UsageError(f"{option} {dest}: is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise UsageError(f"{option} {dest}: cannot write: {exc.strerror}") from None
    return path


def writable_dir(option: str, dest: Path) -> Path:
    import tempfile
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{option} {dest}: is a file, not a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {dest}: cannot write there: {exc.strerror}") from None
    return dest


def write_json(data: dict, dest: str | None) -> None:
    if not dest:
        return
    from .report.jsonout import dump
    if dest == "-":
        dump(data, sys.stdout)
        sys.stdout.flush()
        return
    try:
        with open(dest, "w", encoding="utf-8", buffering=1 << 20) as f:
            dump(data, f)
    except OSError as exc:
        raise UsageError(f"--json {dest}: cannot write: {exc.strerror}") from None


def _bounded(what: str, high: int):
    """An argparse type: a whole number from 1 to `high` of `what`."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r}: expected 1 to {high} {what}") from None
        if not 1 <= n <= high:
            raise argparse.ArgumentTypeError(f"{n}: expected 1 to {high} {what}")
        return n
    return parse


_jobs = _bounded("jobs at a time", MAX_JOBS)
_repeat = _bounded("runs", MAX_REPEAT)


def _scenario_ref(ref: str) -> str:
    try:
        ref.encode("utf-8")
    except UnicodeEncodeError:
        shown = ref.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UsageError(f"--scenario {shown}: the file name is not valid UTF-8; rename the "
                         "file (its name becomes the case's name in every report)") from None
    return ref


# -- parse ---------------------------------------------------------------------------
def cmd_parse(args: argparse.Namespace) -> int:
    from .judge.frames import Program
    from .judge.verdict import LeakPolicy, judge
    from .logs.source import log_texts, read_head
    from .logs.vglog import LogParseError, parse_texts
    from .model import ExitInfo
    from .options import parse_stop_signal
    from .report.jsonout import findings_json
    from .report.terminal import fatal_lines, finding_lines, process_lines

    path = Path(args.log)
    writable_file("--json", args.json)
    stop = parse_stop_signal(args.stop_signal)
    try:
        policy = LeakPolicy.parse(args.leak_kinds or "strict")
    except ValueError as exc:
        raise UsageError(f"--leak-kinds: {exc}") from None
    try:
        if read_head(path).lstrip().startswith(b"<?xml"):
            from .logs.vgxml import parse_xml
            with path.open("rb") as f:
                log = parse_xml(f)
        else:
            log = parse_texts(log_texts(path))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    except (LogParseError, ValueError, RecursionError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)    # the file and what is wrong with it
        return EXIT_USAGE
    fatal = log.main.fatal_signal
    exit_info = ExitInfo(returncode=-fatal.number if fatal else None, stop_signal=stop)
    judgement = judge(log, exit_info, policy)
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
    out = human(args)
    exes = [p.command.split()[0] for p in log.processes if p.command]
    index = Program.of([e for e in exes if Path(e).exists()],
                       [Path(d) for d in args.source_dir] or [path.parent, Path.cwd()])
    print(f"{path}: {judgement.verdict.label}", file=out)
    for line in judgement.reasons + fatal_lines(log, index) + finding_lines(log, index) \
            + process_lines(log.main):
        print(f"  {line}", file=out)
    write_json(data, args.json)
    return exit_status(judgement.verdict)


# -- run -----------------------------------------------------------------------------
def resolve_target(args: argparse.Namespace):
    """The server to run: one of the project's (PATTERN) or --cmd."""
    from .drive.launch import Target, uses_port
    from .judge.patterns import ManifestError, find_pattern

    if args.cmd and getattr(args, "pattern", None):
        raise UsageError("give either PATTERN or --cmd, not both")
    if args.cmd:
        try:
            argv = shlex.split(args.cmd)
        except ValueError as exc:
            raise UsageError(f"--cmd: {exc}") from None
        if not argv:
            raise UsageError("--cmd: empty command")
        check_program(argv[0], args.cwd)
        templates = [Path(t.rpartition(":")[0] or t) for t in args.config_template]
        texts = argv + list(args.env)
        for path in templates:
            try:
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                pass    # named by make_options, with the reason
        has_placeholder = uses_port(texts)
        if args.port is not None and has_placeholder:
            raise UsageError("--cmd (or its --env or --config-template) has '{port}' and --port "
                             "was given: use one of them")
        if args.port is None and not has_placeholder:
            raise UsageError(f"the server's port: give {USER_SERVER_HINT}")
        if any("{config}" in a for a in argv) and not args.config_template:
            raise UsageError("--cmd has '{config}' but no --config-template was given")
        mode = "fixed" if args.port is not None else "substitute"
        return Target(argv=argv, port_mode=mode, port=args.port, host=args.host,
                      name=Path(argv[0]).name[:64] or "server"), None, "cmd"
    if not getattr(args, "pattern", None):
        raise UsageError("name a PATTERN (one of the project's servers) or give --cmd")
    require_checkout(f"PATTERN {args.pattern!r}")
    try:
        pattern = find_pattern(args.pattern)
        variant = args.variant or ("buggy" if pattern.is_pair else "main")
        binary = pattern.binary(variant, detector=args.detector)
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    if not binary.exists():
        raise UsageError(f"{binary} is not built: run 'make servers"
                         f"{' SANITIZE=address' if 'asan' in binary.parts else ''}' first")
    return Target(argv=[str(binary), "--port", "0"], port_mode="announce", host=args.host,
                  name=f"{pattern.name}-{variant}", pattern=pattern.name,
                  variant=variant), pattern, variant


def require_checkout(what: str) -> None:
    """The project's own servers live in its repository, not in the package."""
    if not CHECKOUT:
        raise UsageError(f"{what}: the project's servers are in a checkout of leak-harness, not in "
                         "the installed package; run your own server with --cmd")


def check_program(program: str, cwd: str | None) -> None:
    """The server's program exists and can be run (found on PATH when its
    name has no '/', else relative to --cwd), before anything starts."""
    shown = program if len(program) <= 80 else program[:77] + "..."
    if "/" not in program:
        if shutil.which(program) is None:
            raise UsageError(f"--cmd: cannot start {shown!r}: not found on PATH")
        return
    path = Path(cwd or ".") / program
    try:
        found = path.is_file()
        runnable = found and os.access(path, os.X_OK)
    except OSError as exc:
        raise UsageError(f"--cmd: cannot start {shown!r}: {exc.strerror}") from None
    if not found:
        raise UsageError(f"--cmd: cannot start {shown!r}: no such file")
    if not runnable:
        raise UsageError(f"--cmd: cannot start {shown!r}: not executable")


def set_source_dirs(options, pattern, args: argparse.Namespace) -> None:
    """Where the server's sources are: --source-dir, else a pair's folders."""
    if pattern:
        options.source_dirs = pattern.source_dirs
    if args.source_dir:
        options.source_dirs = list(args.source_dir)


def run_options(args: argparse.Namespace, pattern):
    from .options import USER_LEAK_KINDS, options_from_args
    options = options_from_args(args, default_leak_kinds="strict" if pattern else USER_LEAK_KINDS,
                                require_exit_zero=pattern is not None)
    if getattr(args, "write_suppressions", None):
        if options.native or options.detector not in ("memcheck", "helgrind", "drd"):
            raise UsageError("--write-suppressions needs a valgrind detector (memcheck, "
                             "helgrind, drd)")
        options.valgrind_args.append("--gen-suppressions=all")
    return options


def print_result(result, index, out) -> None:
    from .report.terminal import fatal_lines, finding_lines, process_lines
    print(f"{result.name} · scenario {result.scenario} · {result.seconds:.1f}s", file=out)
    print(f"verdict: {result.verdict.label}", file=out)
    for reason in result.judgement.reasons:
        print(f"  {visible(reason, 1000)}", file=out)
    if result.log is not None:
        for line in fatal_lines(result.log, index) + finding_lines(result.log, index):
            print(f"  {line}", file=out)
        for proc in result.log.processes:
            prefix = f"pid {proc.pid}: " if len(result.log.processes) > 1 else ""
            for line in process_lines(proc):
                print(f"  {prefix}{line}", file=out)
    for note in result.play.notes:
        print(f"  note: {visible(note, 1000)}", file=out)
    if result.missing_debug_info:
        from .runner import debug_info_note
        print(f"  note: {debug_info_note(result.missing_debug_info)}", file=out)
    if result.startup_output:
        print("  server output:", file=out)
        for line in result.startup_output.splitlines()[-20:]:
            print(f"    {visible(line)}", file=out)
    if result.log is not None or result.judgement.verdict is Verdict.UNRESOLVED:
        print(f"  log:    {_rel(result.log_path)}", file=out)
    print(f"  output: {_rel(result.stdout_path)}, {_rel(result.stderr_path)}", file=out)


def cmd_run(args: argparse.Namespace) -> int:
    from collections import Counter

    from .drive.scenario import DEFAULT, ScenarioError, load_scenario
    from .runner import run_case

    target, pattern, variant = resolve_target(args)
    options = run_options(args, pattern)
    debugger = _debugger(args, options)
    scenario_ref = args.scenario or (pattern.trigger if pattern and variant == "buggy" else None)
    try:
        scenario = load_scenario(_scenario_ref(scenario_ref)) if scenario_ref else DEFAULT
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    out_base = writable_dir("--out", Path(args.out) if args.out else REPORTS / "runs")
    writable_file("--json", args.json)
    out = human(args)
    set_source_dirs(options, pattern, args)
    if args.load:
        return _run_load(args, target, scenario, options, out_base, out)
    results = []
    for i in range(args.repeat):
        run_dir = out_base / (f"{target.name}-{scenario.name}" + (f"-{i + 1}" if args.repeat > 1 else ""))
        result = run_case(target, scenario, run_dir, options, debugger)
        results.append(result)
        if args.repeat == 1:
            print_result(result, result.program, out)
        else:
            print(f"[{i + 1}/{args.repeat}] {result.verdict.label} ({result.seconds:.1f}s)"
                  f" {'; '.join(result.judgement.reasons[:1])}", file=out, flush=True)
    if args.repeat > 1:
        _print_rate(results, pattern.expectation(variant, args.detector) if pattern else None, out)
    worst = max((r.verdict for r in results), key=lambda v: v.rank)
    data = results[0].to_json() if args.repeat == 1 else {
        "runs": [r.to_json() for r in results],
        "verdicts": dict(Counter(r.verdict.label for r in results)),
        "verdict": worst.label}
    write_json(data, args.json)
    errors = [r.harness_error for r in results if r.harness_error]
    if errors:
        raise UsageError(errors[0])
    return exit_status(worst)


def _debugger(args: argparse.Namespace, options):
    """`run --debug`: refused where it cannot work, else the terminal side."""
    if not args.debug:
        return None
    from .drive.debug import Debugger
    if options.native or options.detector == "asan":
        raise UsageError("--debug stops valgrind's gdbserver at the first error: it needs "
                         "valgrind (not --native, not --detector asan)")
    if args.repeat > 1 or args.load:
        raise UsageError("--debug runs the case once: drop --repeat and --load")
    if not os.isatty(0):
        raise UsageError("--debug: stdin is not a terminal: the run waits for you (Enter, or "
                         "gdb detaching) when the server stops at its first error")
    if shutil.which("vgdb") is None or shutil.which("gdb") is None:
        raise UsageError("--debug needs gdb and valgrind's vgdb on PATH (apt-get install gdb "
                         "valgrind)")
    out = human(args)
    return Debugger(lambda text: print(text, file=out, flush=True), 0)


def _run_load(args, target, scenario, options, out_base: Path, out) -> int:
    from .runner import run_case
    from .tools import growth
    try:
        counts = [int(x) for x in args.load.split(",")]
    except ValueError:
        raise UsageError(f"--load {args.load!r}: expected two connection counts, e.g. 2,10") from None
    if len(counts) != 2 or min(counts) < 1 or counts[0] == counts[1]:
        raise UsageError(f"--load {args.load!r}: expected two different counts >= 1, e.g. 2,10")
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
              f"in {nblocks:,} blocks", file=out, flush=True)
    fit = growth.slope(points)
    print(fit.describe(), file=out)
    worst = max((r.verdict for r in results), key=lambda v: v.rank)
    data = {"verdict": worst.label, "slope": fit.to_json(), "runs": [r.to_json() for r in results]}
    page = out_base / f"{target.name}-{scenario.name}-load.html"
    try:
        from .report.html import load_page
        page.write_text(load_page(dict(data, name=target.name, scenario=scenario.name,
                                       describe=fit.describe()), out_base), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{page}: cannot write: {exc.strerror}") from None
    print(f"plot: {_rel(page)}", file=out)
    write_json(data, args.json)
    return exit_status(worst)


def _print_rate(results, expect, out) -> None:
    from collections import Counter

    from .judge.gate import points_at
    counts = Counter(r.verdict.label for r in results)
    print("verdicts: " + ", ".join(f"{n}x {v}" for v, n in counts.most_common()), file=out)
    if expect is not None:
        hits = sum(1 for r in results if r.verdict is expect.verdict and points_at(r, expect))
        what = expect.verdict.label + (f" with {expect.kind}" if expect.kind else "")
        print(f"reproduction rate: {hits}/{len(results)} runs were {what}", file=out)


# -- matrix and gate -------------------------------------------------------------------
def _progress(out):
    def show(result, done: int, total: int) -> None:
        mark = "!" if result.outcome.fails else " "
        print(f"[{done:>3}/{total}]{mark}{result.outcome.label:10} {result.case.id:48} "
              f"{result.run.verdict.label:14} {result.run.seconds:5.1f}s", file=out, flush=True)
    return show


def _baseline(args: argparse.Namespace) -> dict[str, str]:
    from .judge.gate import BaselineError, load_baseline
    if not args.baseline:
        return {}
    try:
        return load_baseline(Path(args.baseline))
    except BaselineError as exc:
        raise UsageError(str(exc)) from None


def _check_gate_outputs(args: argparse.Namespace) -> Path:
    out_dir = writable_dir("--out", Path(args.out) if args.out else REPORTS)
    for option, dest in (("--json", args.json), ("--sarif", args.sarif), ("--junit", args.junit),
                         ("--write-baseline", args.write_baseline),
                         ("--write-suppressions", args.write_suppressions)):
        writable_file(option, dest)
    return out_dir


# Options that do not change what a gate runs or how it judges: shards of
# one gate may differ in them (report merge checks the rest is the same).
_NOT_THE_GATE = {"out", "json", "sarif", "junit", "write_baseline", "write_suppressions", "jobs",
                 "shard", "func", "command"}


def gate_identity(args: argparse.Namespace, cases) -> dict:
    """What `report merge` checks shards against: the same command with the
    same options and scenarios (a hash), and the unsharded gate's cases."""
    import hashlib
    import json
    options = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_THE_GATE}
    key = hashlib.sha256(json.dumps([args.command, options, [c.id for c in cases]],
                                    default=str).encode()).hexdigest()[:16]
    return {"command": args.command, "key": key, "shard": args.shard, "total": len(cases),
            "order": {c.id: i for i, c in enumerate(cases)}}


def _shard(cases, spec: str | None):
    from .matrix import shard
    try:
        return shard(cases, spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _gate_failure_lines(r) -> list[str]:
    """Under a failing case's FAIL line: its top frames, notes, the
    server's output when it did not start, and its log."""
    from .judge.gate import first_own_frames
    lines = first_own_frames(r)[:3]
    lines += [f"note: {visible(n, 1000)}" for n in r.run.play.notes]
    if r.run.startup_output:
        lines.append("server output (end):")
        lines += [f"  {visible(line)}" for line in r.run.startup_output.splitlines()[-10:]]
    if r.run.log_path.exists():
        lines.append(f"log: {_rel(r.run.log_path)}")
    if r.run.repro:
        lines.append(f"reproduce: {r.run.repro['command']}")
    return lines


def _finish_gate(results, args: argparse.Namespace, out_dir: Path, baseline: dict[str, str],
                 gate: dict) -> int:
    from .judge.gate import baseline_text
    from .report.write import write_all
    out = human(args)
    try:
        data, paths = write_all(results, out_dir, baseline=baseline, gate=gate,
                                sarif_path=Path(args.sarif) if args.sarif else None,
                                junit_path=Path(args.junit) if args.junit else None)
    except OSError as exc:
        raise UsageError(f"{exc.filename or out_dir}: cannot write the report: {exc.strerror}") from None
    write_json(data, args.json)
    if args.write_baseline:
        try:
            Path(args.write_baseline).write_text(baseline_text(results))
        except OSError as exc:
            raise UsageError(f"--write-baseline {args.write_baseline}: cannot write: "
                             f"{exc.strerror}") from None
        print(f"baseline written: {args.write_baseline}", file=out)
    if args.write_suppressions:
        from .judge.gate import suppressions_text
        text, count = suppressions_text(results)
        try:
            Path(args.write_suppressions).write_text(text)
        except OSError as exc:
            raise UsageError(f"--write-suppressions {args.write_suppressions}: cannot write: "
                             f"{exc.strerror}") from None
        print(f"suppressions written: {args.write_suppressions} ({count} entries)", file=out)
    failing = [r for r in results if r.outcome.fails]
    for r in failing:
        print(f"FAIL {r.case.id}: {r.outcome.label}: {visible(r.message, 1000)}", file=out)
        for line in _gate_failure_lines(r):
            print(f"    {line}", file=out)
    for notice in data.get("notices") or []:
        print(f"note: {notice}", file=out)
    counts = ", ".join(f"{n} {k}" for k, n in data["counts"].items())
    shard = f" (shard {args.shard} of the gate's {gate['total']})" if args.shard else ""
    print(f"{'PASSED' if not failing else 'FAILED'}: {len(results)} cases{shard} ({counts})", file=out)
    also = ", ".join(p.name for k, p in paths.items() if k != "html")
    print(f"report: {_rel(paths['html'])} (also {also})", file=out)
    return gate_exit(data["outcome"])


def gate_exit(outcome: str) -> int:
    return {"pass": EXIT_CLEAN, "unresolved": EXIT_UNDECIDED}.get(outcome, EXIT_FINDING)


def _detectors(chosen: list[str] | None) -> tuple[str, ...]:
    from .model import DETECTORS
    if not chosen:
        return ("memcheck",)
    if "all" in chosen:
        return DETECTORS
    return tuple(dict.fromkeys(chosen))


def cmd_matrix(args: argparse.Namespace) -> int:
    from .judge.patterns import all_patterns
    from .matrix import project_cases, run_cases

    require_checkout("matrix")
    patterns = all_patterns()
    if args.pattern:
        known = {p.name: p for p in patterns}
        missing = [n for n in args.pattern if n not in known]
        if missing:
            raise UsageError(f"--pattern {missing[0]!r}: no such server (known: {', '.join(known)})")
        patterns = [known[n] for n in args.pattern]
    detectors = _detectors(args.detectors)
    for pattern in patterns:
        for variant in pattern.variants:
            for detector in detectors:
                binary = pattern.binary(variant, detector=detector)
                if not binary.exists():
                    raise UsageError(f"{binary} is not built: run 'make servers"
                                     f"{' SANITIZE=address' if detector == 'asan' else ''}' first")
    args.detector = "memcheck"
    options = run_options(args, pattern=True)
    every = project_cases(patterns, options, detectors,
                          variants=tuple(args.variant) if args.variant else None)
    cases = _shard(every, args.shard)
    out_dir = _check_gate_outputs(args)
    baseline = _baseline(args)
    out = human(args)
    print(f"matrix: {len(cases)} cases, {args.jobs} at a time, detectors: {', '.join(detectors)}",
          file=out, flush=True)
    results = run_cases(cases, out_dir, args.jobs, baseline, _progress(out))
    return _finish_gate(results, args, out_dir, baseline, gate_identity(args, every))


def cmd_gate(args: argparse.Namespace) -> int:
    from .drive.scenario import ScenarioError, load_scenario
    from .judge.gate import Case
    from .judge.patterns import Expectation
    from .matrix import unique_ids

    args.pattern = None
    target, _, _ = resolve_target(args)
    options = run_options(args, pattern=None)
    scenarios = [_scenario_ref(ref) for ref in args.scenario or ["echo"]]
    for ref in scenarios:
        try:
            load_scenario(ref)
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None
    out_dir = _check_gate_outputs(args)
    baseline = _baseline(args)
    options.source_dirs = list(args.source_dir) or None
    ids = unique_ids([f"{target.name}-{Path(ref).stem}" for ref in scenarios])
    every = [Case(id=case_id, target=target, scenario=ref, expect=Expectation(Verdict.CLEAN),
                  options=options)
             for case_id, ref in zip(ids, scenarios)]
    cases = _shard(every, args.shard)
    from .matrix import run_cases
    results = run_cases(cases, out_dir, args.jobs, baseline, _progress(human(args)))
    return _finish_gate(results, args, out_dir, baseline, gate_identity(args, every))


# What `shrink RUN_DIR` refuses beside the folder: the case comes from the run.
_CASE_FLAGS = (("--cmd", "cmd", None), ("--scenario", "scenario", None),
               ("--variant", "variant", None), ("--port", "port", None),
               ("--detector", "detector", "memcheck"), ("--native", "native", False),
               ("--leak-kinds", "leak_kinds", None), ("--stop-signal", "stop_signal", None),
               ("--track-origins", "track_origins", False), ("--suppressions", "suppressions", []),
               ("--valgrind-arg", "valgrind_arg", []), ("--cwd", "cwd", None),
               ("--env", "env", []), ("--config-template", "config_template", []),
               ("--follow-children", "follow_children", False), ("--source-dir", "source_dir", []))


def _run_folder_case(run_dir: Path, args: argparse.Namespace):
    """The case a run folder holds: its result.json's reproduction command
    (the server, the options) and its scenario.toml (as played)."""
    import json
    given = [flag for flag, dest, default in _CASE_FLAGS if getattr(args, dest) != default]
    if given:
        raise UsageError(f"{given[0]}: {run_dir} brings its own case (the command in its "
                         "result.json); drop it, or shrink PATTERN or --cmd with --scenario")
    result_file = run_dir / "result.json"
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
        repro_args = list(result["repro"]["args"])
        if not repro_args or repro_args[0] != "run":
            raise ValueError("not a run command")
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: no result.json: not a run folder") from None
    except OSError as exc:
        raise UsageError(f"{result_file}: cannot read: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{result_file}: no reproduction command in it ({exc}); written by an "
                         "older harness? shrink PATTERN or --cmd with --scenario instead") from None
    if not (run_dir / "scenario.toml").is_file():
        raise UsageError(f"{run_dir}: no scenario.toml (the scenario as played)")
    ns = build_parser().parse_args(repro_args)
    return ns, result


def cmd_shrink(args: argparse.Namespace) -> int:
    from .drive.scenario import ScenarioError, load_scenario
    from .tools.shrink import Shrink, pick_signature

    run_dir = Path(args.source) if args.source and Path(args.source).is_dir() else None
    if args.source and run_dir is None and ("/" in args.source or Path(args.source).exists()):
        raise UsageError(f"{args.source}: no such run folder")
    verdict = signature = None
    case_args = args
    if run_dir is not None:
        case_args, result = _run_folder_case(run_dir, args)
        verdict = result.get("verdict")
        scenario_ref = str(run_dir / "scenario.toml")
    else:
        args.pattern = args.source
        scenario_ref = args.scenario
    target, pattern, variant = resolve_target(case_args)
    options = run_options(case_args, pattern)
    set_source_dirs(options, pattern, case_args)
    expect = pattern.expectation(variant, options.detector) if pattern else None
    if scenario_ref is None:
        if not (pattern and variant == "buggy"):
            raise UsageError("shrink needs --scenario NAME|FILE (or a run folder)")
        scenario_ref = pattern.trigger
    try:
        scenario = load_scenario(_scenario_ref(scenario_ref))
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    if run_dir is not None:
        signature = pick_signature(result.get("signatures") or [], args.signature, expect)
        if verdict in (None, "clean", "unresolved") or signature is None:
            what = f"--signature {args.signature!r} is not among its findings" \
                if args.signature else f"its verdict is {verdict}, with no finding to keep"
            raise UsageError(f"{run_dir}: nothing to shrink: {what}")
    else:
        signature = args.signature
    name = f"{target.name}-{scenario.name}"
    out = writable_dir("--out", Path(args.out) if args.out else
                       (run_dir / "shrink" if run_dir else REPORTS / "shrink" / name))
    output = writable_file("--output", args.output) or \
        (run_dir / "minimal.toml" if run_dir else out / "minimal.toml")
    writable_file("--output", str(output))
    writable_file("--json", args.json)
    if args.max_runs < 1 or args.time <= 0 or not 1 <= args.confirm <= 100:
        raise UsageError("--max-runs (at least 1), --time (seconds above 0) and --confirm "
                         "(1 to 100) must be positive")
    say_to = human(args)
    job = Shrink(target=target, options=options, scenario_path=Path(scenario.source), out=out,
                 output=output, jobs=args.jobs, max_runs=args.max_runs, seconds=args.time,
                 confirm=args.confirm, signature=signature, verdict=verdict, expect=expect,
                 say=lambda text: print(text, file=say_to, flush=True))
    status, report = job.run()
    if report is not None:
        shown = output.read_text(encoding="utf-8")
        body = shown[shown.index("\n\n") + 2:] if "\n\n" in shown else shown
        print("", file=say_to)
        print(body.rstrip(), file=say_to)
        print("", file=say_to)
        for line in report.header(args.jobs)[2:]:
            print(line, file=say_to)
        print(f"Written:  {_rel(output)}", file=say_to, flush=True)
        write_json(report.to_json() | {"exit": status}, args.json)
    else:
        write_json({"exit": status, "reproduced": 0}, args.json)
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo
    require_checkout("demo")
    return run_demo(writable_dir("--out", Path(args.out) if args.out else REPORTS), args.jobs)


def cmd_report_merge(args: argparse.Namespace) -> int:
    from .report.merge import MergeError, merge
    from .report.write import write_data
    out_dir = Path(args.out)
    folders = [Path(d) for d in args.dirs]
    if out_dir.resolve() in [f.resolve() for f in folders]:
        raise UsageError(f"--out {args.out}: is one of the folders to merge; name a new folder")
    writable_dir("--out", out_dir)
    for option, dest in (("--json", args.json), ("--sarif", args.sarif), ("--junit", args.junit)):
        writable_file(option, dest)
    try:
        data = merge(folders, out_dir)
    except MergeError as exc:
        raise UsageError(str(exc)) from None
    try:
        paths = write_data(data, out_dir, Path(args.sarif) if args.sarif else out_dir / "report.sarif",
                           Path(args.junit) if args.junit else out_dir / "junit.xml")
    except OSError as exc:
        raise UsageError(f"{exc.filename or out_dir}: cannot write the report: {exc.strerror}") from None
    write_json(data, args.json)
    out = human(args)
    counts = ", ".join(f"{n} {k}" for k, n in data["counts"].items())
    verdict = {"pass": "PASSED", "fail": "FAILED", "unresolved": "UNDECIDED"}[data["outcome"]]
    print(f"{verdict}: {len(data['cases'])} cases from {len(folders)} report folder(s) ({counts})",
          file=out)
    for case in data["cases"]:
        if case["outcome"] in ("fail", "xpass", "timeout", "unresolved"):
            print(f"FAIL {case['case']}: {case['outcome']}: {visible(case['message'], 1000)}", file=out)
    print(f"report: {_rel(paths['html'])} (also "
          + ", ".join(p.name for k, p in paths.items() if k != "html") + ")", file=out)
    return gate_exit(data["outcome"])


def cmd_scenarios(args: argparse.Namespace) -> int:
    from .drive.scenario import ScenarioError, load_scenario, named_scenarios, protocol_scenarios
    for name in named_scenarios() + protocol_scenarios():
        try:
            print(f"{name:22} {load_scenario(name).description}")
        except ScenarioError as exc:
            print(f"{name:22} INVALID: {exc}")
    return 0


# -- the parser ------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:     # exit 2 with the usage, as argparse does
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def program_name() -> str:
    """`leak-harness` when run as the installed command."""
    return "leak-harness" if Path(sys.argv[0]).name == "leak-harness" else "python3 -m harness"


COMMANDS = ("parse", "run", "matrix", "gate", "demo", "scenarios", "report", "shrink", "bisect")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line.  Given the arguments, only their subcommand gets its
    options (every subcommand is still listed): building all of them costs
    every command about 20 ms."""
    chosen = argv[0] if argv and argv[0] in COMMANDS else None

    def wanted(name: str) -> bool:
        return chosen is None or chosen == name

    p = _Parser(prog=program_name(),
                description="Run TCP servers under valgrind, play scripted clients, judge leaks "
                            "and crashes.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pp = sub.add_parser("parse", help="judge an existing valgrind log (text or XML)")
    if wanted("parse"):
        pp.add_argument("log")
        pp.add_argument("--stop-signal", default="SIGTERM",
                        help="the signal that stopped the program: death by it is not a crash")
        pp.add_argument("--leak-kinds", help="strict (default), all, or e.g. definite,possible")
        pp.add_argument("--json", metavar="PATH|-", help="write the result as JSON ('-': stdout)")
        pp.add_argument("--source-dir", action="append", default=[],
                        help="where the program's sources are (for its own frames)")
        pp.set_defaults(func=cmd_parse)

    def target_options(q: argparse.ArgumentParser, cmd_required: bool) -> None:
        q.add_argument("--cmd", required=cmd_required,
                       help="any server: 'PROGRAM ARGS {port}' ({port}: a free port, {config}: "
                            "the rendered --config-template)")
        q.add_argument("--port", type=int, help="the fixed port of a --cmd server without {port}")
        q.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
        q.add_argument("--source-dir", action="append", default=[],
                       help="where the server's sources are (for its own frames)")

    pr = sub.add_parser("run", help="run a server under valgrind and judge it")
    if wanted("run"):
        pr.add_argument("pattern", nargs="?", help="one of the project's servers (servers/NAME)")
        pr.add_argument("--variant", choices=("buggy", "fixed", "main"))
        target_options(pr, cmd_required=False)
        pr.add_argument("--scenario", help="a named scenario (scenarios/NAME.toml) or a file")
        pr.add_argument("--repeat", type=_repeat, default=1,
                        help=f"run N times (at most {MAX_REPEAT}), report the rate")
        pr.add_argument("--load", metavar="N1,N2",
                        help="run at two connection counts, report the leak per connection")
        pr.add_argument("--json", metavar="PATH|-", help="write the result as JSON ('-': stdout)")
        pr.add_argument("--out", help="directory for the run's files (default reports/runs)")
        pr.add_argument("--debug", action="store_true",
                        help="valgrind's gdbserver stops the server at its first error; the run "
                             "prints the gdb command to attach and waits (needs a terminal)")
        add_run_options(pr)
        pr.set_defaults(func=cmd_run)

    def gate_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("-j", "--jobs", type=_jobs, default=1,
                       help=f"cases run at once (1 to {MAX_JOBS})")
        q.add_argument("--json", metavar="PATH|-", help="write summary.json here too ('-': stdout)")
        q.add_argument("--out", help="report directory (default reports/)")
        q.add_argument("--baseline", help="TOML file of accepted findings (by signature)")
        q.add_argument("--write-baseline", metavar="PATH",
                       help="write every current finding's signature as accepted")
        q.add_argument("--write-suppressions", metavar="PATH",
                       help="write a valgrind .supp of every current finding (valgrind's own "
                            "--gen-suppressions=all entries, each named after its signature)")
        q.add_argument("--sarif", metavar="PATH", help="also write SARIF 2.1.0 for code scanning")
        q.add_argument("--junit", metavar="PATH",
                       help="also write JUnit XML (one testcase per case) for the CI's test view")
        q.add_argument("--shard", metavar="I/N",
                       help="run the I-th of N deterministic slices (merge the folders with "
                            "'report merge')")

    pm = sub.add_parser("matrix", help="every pair's variants against their scenarios")
    if wanted("matrix"):
        pm.add_argument("--pattern", action="append", help="only this server (repeatable)")
        pm.add_argument("--variant", action="append", choices=("buggy", "fixed", "main"),
                        help="only these variants (repeatable)")
        pm.add_argument("--detectors", "--detector", dest="detectors", action="append",
                        choices=("memcheck", "asan", "helgrind", "drd", "all"),
                        help="memcheck (default), asan, helgrind, drd, or all (repeatable)")
        gate_options(pm)
        add_run_options(pm, detectors=())
        pm.set_defaults(func=cmd_matrix)

    pg = sub.add_parser("gate", help="CI gate for your own server: fails on a new leak or crash")
    if wanted("gate"):
        target_options(pg, cmd_required=True)
        pg.add_argument("--scenario", action="append",
                        help="named scenario or file (repeatable; default echo)")
        gate_options(pg)
        add_run_options(pg)
        pg.set_defaults(func=cmd_gate)

    pd = sub.add_parser("demo", help="each bug next to its fix, then the HTML report")
    if wanted("demo"):
        pd.add_argument("-j", "--jobs", type=_jobs, default=2, help="cases run at once (default 2)")
        pd.add_argument("--out", help="report directory (default reports/)")
        pd.set_defaults(func=cmd_demo)

    ps = sub.add_parser("scenarios", help="list the named scenarios")
    if wanted("scenarios"):
        ps.set_defaults(func=cmd_scenarios)

    prep = sub.add_parser("report", help="work on report folders (report merge)")
    if wanted("report"):
        rsub = prep.add_subparsers(dest="report_command", required=True, parser_class=_Parser)
        prm = rsub.add_parser("merge", help="merge the report folders of a gate's shards into one report")
        prm.add_argument("dirs", nargs="+", metavar="DIR", help="a shard's report folder (--out)")
        prm.add_argument("--out", required=True, help="the merged report's folder")
        prm.add_argument("--json", metavar="PATH|-", help="write the merged summary.json here too")
        prm.add_argument("--sarif", metavar="PATH", help="SARIF path (default OUT/report.sarif)")
        prm.add_argument("--junit", metavar="PATH", help="JUnit XML path (default OUT/junit.xml)")
        prm.set_defaults(func=cmd_report_merge)

    psh = sub.add_parser("shrink", help="the smallest scenario that still shows a finding",
                         description="Reduce a failing case's scenario (its random steps "
                                     "expanded first) to a 1-minimal one that shows the same "
                                     "verdict with a finding of the same signature.")
    if wanted("shrink"):
        psh.add_argument("source", nargs="?", metavar="RUN_DIR|PATTERN",
                         help="a failing run's folder (its result.json and scenario.toml), or one "
                              "of the project's servers")
        psh.add_argument("--variant", choices=("buggy", "fixed", "main"))
        target_options(psh, cmd_required=False)
        psh.add_argument("--scenario", help="a named scenario or a file")
        psh.add_argument("--signature", help="the finding to keep (default: the pair's expected "
                                             "one, else the run's first)")
        psh.add_argument("-j", "--jobs", type=_jobs, default=1,
                         help=f"candidates run at once (1 to {MAX_JOBS})")
        psh.add_argument("--max-runs", type=int, default=500,
                         help="runs the search may spend (default 500; the final check adds --confirm)")
        psh.add_argument("--time", type=float, default=3600.0, metavar="SECONDS",
                         help="seconds the search may take (default 3600)")
        psh.add_argument("--confirm", type=int, default=10,
                         help="times the result is run at the end (default 10)")
        psh.add_argument("--output", metavar="FILE",
                         help="the minimal scenario (default RUN_DIR/minimal.toml, or OUT/minimal.toml)")
        psh.add_argument("--out", metavar="DIR", help="folder for the candidates' runs (default "
                                                      "RUN_DIR/shrink or reports/shrink/NAME)")
        psh.add_argument("--json", metavar="PATH|-", help="write the figures as JSON ('-': stdout)")
        add_run_options(psh)
        psh.set_defaults(func=cmd_shrink)

    if wanted("bisect"):
        from .tools.bisect import add_parser as add_bisect_parser
        add_bisect_parser(sub)
    else:
        sub.add_parser("bisect", help="find the commit that introduced a finding (git bisect run)")
    return p


# -- main -------------------------------------------------------------------------------
def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # A signal in the few instructions outside _main's own handler (while
        # the handlers are installed, or while the servers are being ended).
        _end_servers()
        return 130


def entry() -> None:
    """The command (`python3 -m harness`, `leak-harness`): main's status is
    the process's, whatever the interpreter's shutdown would make of it.
    Once interrupted, CPython 3.11 can still end a process whose
    KeyboardInterrupt was handled by killing itself with SIGINT (status
    -2 where 130 was returned: seen under load, SIGTERM mid-start); every
    server has been ended by then, so the streams are flushed and the
    process leaves at once."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    try:
        # Installed whatever the dispositions were at start: a job started with
        # '&' from a script inherits SIGINT ignored, and must still stop on it.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(errors="backslashreplace")
        args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
        multiplier()
        if args.command not in QUIET_COMMANDS:
            from .drive import launch
            launch.serve_as_subreaper()
        return args.func(args)
    except (UsageError, OptionError, ValueError) as exc:    # TargetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say.
        sys.stderr.close()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        _end_servers()
        print("interrupted: every server this run started was killed", file=sys.stderr)
        return 130
    except RecursionError:
        print("error: input nested too deeply", file=sys.stderr)
        return EXIT_USAGE
    finally:
        _end_servers()


def _end_servers() -> None:
    """Kill every server this process started, and wait for the keepers it
    adopted (a matrix worker's); nothing to do if no server ever started."""
    launch = sys.modules.get(f"{__package__}.drive.launch")
    if launch is not None:
        launch.kill_all()
        launch.reap_orphans(5.0)
