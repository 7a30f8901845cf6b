"""`make demo`: each bug next to its fix, as a short story in the terminal,
then the whole matrix into reports/index.html."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..drive.launch import Target
from ..judge.frames import best_stack, own_frames
from ..judge.gate import CaseResult
from ..judge.patterns import all_patterns, find_pattern
from ..matrix import project_cases, run_cases
from ..model import DETECTORS, Verdict
from ..options import RunOptions
from ..paths import SCENARIO_DIR
from ..report.markdown import detector_markdown
from ..report.write import write_all
from ..report.terminal import heap_lines

WIDTH = 78


def _say(text: str = "") -> None:
    print(text, flush=True)


def wrap(prefix: str, text: str) -> list[str]:
    """`prefix` then `text`, wrapped at WIDTH with a hanging indent."""
    out, line = [], prefix
    for word in text.split():
        candidate = f"{line}{word}" if line.endswith(" ") or line == "" else f"{line} {word}"
        if len(candidate) > WIDTH and line.strip() != prefix.strip():
            out.append(line)
            line = " " * len(prefix) + word
        else:
            line = candidate
    out.append(line)
    return out


def what_valgrind_said(r: CaseResult) -> list[str]:
    run = r.run
    lines = []
    index = r.run.program
    sig = run.judgement.fatal_signal
    if sig and run.verdict is Verdict.CRASH:
        lines.append(f"Process terminating with default action of signal {sig.number} ({sig.name})")
    if run.verdict is Verdict.LEAK:
        lines += leak_sites(r, index)
    shown = set()
    for finding in run.judgement.findings:
        if finding.is_leak or finding.kind in shown:
            continue
        if run.verdict is Verdict.MEMORY_ERROR and finding.kind != (r.case.expect.kind or finding.kind):
            continue
        shown.add(finding.kind)
        frames = own_frames(best_stack(finding), index, 3)
        where = " < ".join(f.where() for f in frames)
        lines.append(f"{finding.kind}: {finding.what}" if not finding.is_leak else finding.what)
        if where:
            lines.append(f"  at {where}")
        for aux in finding.aux[:1]:
            aux_frames = own_frames(aux.stack, index, 2)
            if aux_frames and "free'd" in aux.what:
                lines.append(f"  block freed at {' < '.join(f.where() for f in aux_frames)}")
    if run.log:
        lines += heap_lines(run.log.main.heap, run.log.main.errors)
    return lines


def leak_sites(r: CaseResult, index) -> list[str]:
    """Leaked bytes per allocation site (the program's own frames), direct
    and indirect losses together: how many blocks each site left behind."""
    sites: dict[str, list[int]] = {}
    for finding in r.run.judgement.findings:
        if not finding.is_leak:
            continue
        frames = own_frames(best_stack(finding), index, 3)
        key = " < ".join(f.where() for f in frames) or "?"
        own = finding.direct_bytes if finding.direct_bytes is not None else finding.bytes or 0
        site = sites.setdefault(key, [0, 0])
        site[0] += own
        site[1] += finding.blocks or 0
    return [f"{b:,} bytes in {n} block{'s' if n != 1 else ''} allocated at {key}"
            for key, (b, n) in sorted(sites.items(), key=lambda kv: -kv[1][0])]


def detector_line(row: dict) -> str:
    parts = []
    for detector in DETECTORS:
        entry = row.get(detector)
        if entry:
            parts.append(f"{detector} {'caught' if entry['caught'] else 'missed'}"
                         + ("" if entry["expected"] else "*"))
    return "detectors: " + " · ".join(parts)


def story(buggy: CaseResult, fixed: CaseResult) -> list[str]:
    pattern = buggy.case.pattern
    assert pattern is not None
    out = ["", "=" * WIDTH, f"{pattern.name}: {pattern.title}", "=" * WIDTH]
    out += wrap("seed:   ", f"{pattern.seed}: {pattern.seed_story}")
    out += wrap("client: ", f"{pattern.client} (scenario {pattern.trigger})")
    tool = "" if buggy.detector == "memcheck" else f" under {buggy.detector}"
    out.append(f"buggy:  {buggy.run.verdict.label.upper()}{tool}  ({buggy.outcome.label}: {buggy.message})")
    out += [f"        | {line}" for line in what_valgrind_said(buggy)]
    out.append(f"fixed:  {fixed.run.verdict.label.upper()}  ({fixed.outcome.label})")
    out += [f"        | {line}" for line in what_valgrind_said(fixed)]
    out += wrap("fix:    ", pattern.fix)
    return out


DEMO_ROUNDS = 5     # make bench measures the same at length


def fix_costs(pairs: list[str]) -> dict[str, str]:
    """Seed 001 kept its I/O optimisations while fixing the leak: each pair's
    fixed variant against its buggy one, natively, under bench/load.c on a
    workload that does not trigger the bug (harness/tools/throughput.py),
    a few alternating rounds.  pattern -> the line the demo prints."""
    from . import throughput
    if not throughput.LOAD.exists():
        return {}
    workload = throughput.Workload()
    out = {}
    for name in pairs:
        fixed = throughput.SERVERS / name / "fixed"
        against_echo = name in throughput.NO_BUGGY_RUN
        try:
            ratio = throughput.compare(throughput.reference(name), fixed, workload,
                                       DEMO_ROUNDS)["ratio"]
        except (OSError, throughput.ServerError) as exc:
            out[name] = f"cost of the fix: not measured ({exc})"
            continue
        if ratio is None:
            out[name] = "cost of the fix: not measured (no run completed)"
            continue
        verdict = "the fix costs nothing" if ratio >= 0.95 else "the fix costs throughput"
        if against_echo:
            out[name] = (f"{verdict}: {ratio:.2f}x the throughput of servers/echo (natively the "
                         "buggy variant dies at its first line)")
        else:
            out[name] = f"{verdict}: {ratio:.2f}x throughput (native, bench/load.c)"
    return out


SHRUNK = "captured_context"   # the pair whose bug the named fuzz scenario finds, and whose
                              # minimal form does not depend on timing (double_delete's
                              # "open, one byte, reset" races the byte against the reset)


def shrink_story(out_dir: Path, jobs: int) -> int:
    """The last act: the named fuzz scenario on a pair's buggy variant,
    expanded into the operations it played and shrunk to its minimum."""
    from .shrink import EXIT_NOT_REPRODUCED, Shrink
    pattern = find_pattern(SHRUNK)
    target = Target(argv=[str(pattern.binary("buggy")), "--port", "0"],
                    name=f"{SHRUNK}-buggy", pattern=SHRUNK, variant="buggy")
    options = RunOptions(require_exit_zero=True, source_dirs=pattern.source_dirs)
    work = out_dir / "shrink" / f"{SHRUNK}-buggy-fuzz"
    _say("")
    _say("=" * WIDTH)
    _say(f"shrink: the named fuzz scenario on {SHRUNK}'s buggy variant, to its minimum")
    _say("=" * WIDTH)
    job = Shrink(target=target, options=options, scenario_path=SCENARIO_DIR / "fuzz.toml",
                 out=work, output=work / "minimal.toml", jobs=jobs, max_runs=300, seconds=900,
                 expect=pattern.expectation("buggy", "memcheck"),
                 say=lambda text: _say("  " + text))
    status, report = job.run()
    if report is None:
        return status
    text = (work / "minimal.toml").read_text(encoding="utf-8")
    _say(f"minimal form ({work / 'minimal.toml'}):")
    for line in text[text.index("\n\n") + 2:].rstrip().splitlines():
        _say("  | " + line)
    for line in report.header(jobs)[2:-1]:
        _say("  " + line)
    return 1 if status == EXIT_NOT_REPRODUCED else 0


def run_demo(out_dir: Path, jobs: int = 2) -> int:
    started = time.monotonic()
    cases = project_cases(detectors=DETECTORS, every_scenario=("memcheck",))
    missing = sorted({c.target.argv[0] for c in cases if not Path(c.target.argv[0]).exists()})
    if missing:
        _say(f"not built: {', '.join(missing)}: run 'make demo' (it builds both trees)")
        return 2
    # First, while nothing else runs: the throughput rounds are short, and
    # measured right after the matrix (its workers and servers winding down,
    # its reports being written) they scattered from 0.77x to 2.25x.
    pairs = [p for p in all_patterns() if p.is_pair]
    _say("Measuring what each fix costs (natively, bench/load.c, a workload without the bug)...")
    costs = fix_costs([p.name for p in pairs])
    _say(f"Running {len(cases)} cases, {jobs} at a time: every pair's buggy and fixed variant "
         f"on its trigger under {', '.join(DETECTORS)}, and every fixed variant on every "
         "scenario under memcheck...")

    tty = sys.stdout.isatty()

    def progress(result: CaseResult, done: int, total: int) -> None:
        line = f"  [{done:>2}/{total}] {result.run.verdict.label:13} {result.case.id}"
        if tty:
            sys.stdout.write("\r" + line.ljust(WIDTH)[:WIDTH])
            sys.stdout.flush()
        elif done % 10 == 0 or done == total:
            _say(line)

    results = run_cases(cases, out_dir, jobs, {}, progress)
    if tty:
        _say("\r" + " " * WIDTH)
    by_id = {r.case.id: r for r in results}
    data, paths = write_all(results, out_dir, gate={"command": "demo", "key": "demo"})
    for pattern in all_patterns():
        if not pattern.is_pair:
            continue
        detector = pattern.detectors[0]
        suffix = "" if detector == "memcheck" else f"@{detector}"
        buggy = by_id[f"{pattern.name}-buggy-{pattern.trigger}{suffix}"]
        fixed = by_id[f"{pattern.name}-fixed-{pattern.trigger}{suffix}"]
        for line in story(buggy, fixed):
            _say(line)
        _say("        " + detector_line(data["detectors"].get(pattern.name, {})))
        if pattern.name in costs:
            _say("        " + costs[pattern.name])
    _say("")
    _say("Which detector sees which bug (* = not named in the manifest, never gating):")
    for line in detector_markdown(data["detectors"])[:-2]:
        _say("  " + line)
    failing = [r for r in results if r.outcome.fails]
    shrunk = shrink_story(out_dir, jobs)
    _say("")
    _say(f"{len(results)} cases in {time.monotonic() - started:.0f}s: "
         + ", ".join(f"{n} {k}" for k, n in data["counts"].items())
         + ("" if not failing else f"; FAILING: {', '.join(r.case.id for r in failing)}"))
    _say(f"HTML report: {paths['html']}")
    return 1 if failing or shrunk else 0
