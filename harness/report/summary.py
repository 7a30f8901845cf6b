"""summary.json: everything a report shows, as data.

The other reports (Markdown, HTML, SARIF, JUnit) are rendered from this
document alone, never from the live results, so `report merge` renders the
reports of a sharded gate from its shards' summary.json files exactly as
the unsharded gate would have.

Schema "leak-harness/summary/1", extended compatibly: the keys of the first
version (passed, counts, cases with each case's full result, signatures,
detectors) keep their meaning.  Added: `outcome` (pass, fail, unresolved),
`gate` (which gate this is, its shard and its size), `srcroot`,
`patterns`, `baseline`, and per case `index`, `target`, `executable`,
`files` (paths relative to the report folder), `heap_by_process`,
`startup_output`, `issues` (what SARIF and JUnit report, one per
signature, each with the frames a person is shown) and `repro` (the `run`
command that reproduces the case with its run folder's scenario.toml).
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ..judge.frames import best_stack, quote_line, shown_frames, signature
from ..judge.gate import CaseResult
from ..judge.verdict import LeakPolicy
from ..model import DETECTORS, Frame, Outcome, Verdict
from ..runner import debug_info_note, resolve_program
from .terminal import heap_lines

SCHEMA = "leak-harness/summary/1"
FAILING = {o.label for o in Outcome if o.fails}
OWN_FRAMES = 4          # own frames shown per stack (all frames when none is own)
AUX_FRAMES = 2


# -- one case -------------------------------------------------------------------
def frame_view(frame: Frame, program) -> dict:
    path = program.resolve(frame)
    return dict(frame.to_json(), own=program.is_own(frame), path=str(path) if path else None,
                quote=quote_line(frame, program))


def stack_view(stack: list[Frame], program, limit: int = OWN_FRAMES) -> list[dict]:
    """The frames a person is shown: the program's own, or the whole stack
    when none is (a binary without debug information)."""
    return [frame_view(f, program) for f in shown_frames(stack, program, limit)]


def issues(r: CaseResult, baseline: dict[str, str]) -> list[dict]:
    """What the run found, one entry per signature, most severe first: a
    crash, a hang, a startup failure, then each finding.  `status`: new
    (counted, not in the baseline), known (in the baseline), expected (the
    case expects a finding: a buggy variant), or not-counted (a leak kind
    the run's --leak-kinds does not count)."""
    run, program = r.run, r.run.program
    expected = r.case.expect is None or r.case.expect.verdict is not Verdict.CLEAN

    def status(sig: str, counted: bool = True) -> str:
        if expected:
            return "expected"
        if not counted:
            return "not-counted"
        return "known" if sig in baseline else "new"

    out: list[dict] = []
    sigs = run.signatures()
    fatal = run.judgement.fatal_signal
    if run.verdict is Verdict.CRASH:
        sig = next((s for s in sigs if s.startswith("crash")), "crash")
        out.append({"rule": "crash", "signature": sig, "status": status(sig),
                    "message": run.judgement.reasons[0] if run.judgement.reasons else "crash",
                    "frames": stack_view(fatal.stack, program) if fatal else [], "aux": [],
                    "bytes": None, "blocks": None, "records": 1})
    if run.verdict is Verdict.HANG:
        stack = next((t.stack for t in run.hang_threads if t.stack), [])
        out.append({"rule": "hang", "signature": "hang", "status": status("hang"),
                    "message": "; ".join(run.judgement.reasons[:2]) or "hang",
                    "frames": stack_view(stack, program), "aux": [],
                    "bytes": None, "blocks": None, "records": 1})
    if run.verdict is Verdict.STARTUP_FAILURE:
        last = [line for line in run.startup_output.splitlines() if line.strip()][-1:]
        out.append({"rule": "startup-failure", "signature": "startup-failure",
                    "status": status("startup-failure"),
                    "message": "; ".join(run.judgement.reasons[:1] + last) or "startup-failure",
                    "frames": [], "aux": [], "bytes": None, "blocks": None, "records": 1})
    policy = LeakPolicy.parse(run.leak_policy)
    by_sig: dict[str, dict] = {}
    for finding in sorted(run.judgement.findings, key=lambda f: f.is_leak):
        sig = signature(finding, program)
        entry = by_sig.get(sig)
        if entry is not None:
            entry["records"] += 1
            for key, value in (("bytes", finding.bytes), ("blocks", finding.blocks)):
                if value is not None:
                    entry[key] = (entry[key] or 0) + value
            continue
        by_sig[sig] = entry = {
            "rule": finding.kind, "tool_kind": finding.tool_kind, "signature": sig,
            "status": status(sig, policy.counts(finding.kind)), "message": finding.what,
            "frames": stack_view(best_stack(finding), program),
            "aux": [{"what": a.what, "frames": stack_view(a.stack, program, AUX_FRAMES)}
                    for a in finding.aux[:2]],
            "bytes": finding.bytes, "blocks": finding.blocks, "pid": finding.pid, "records": 1}
        out.append(entry)
    return out


def _rel(path: Path | str | None, out_dir: Path) -> str | None:
    if not path:
        return None
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:
        return str(path)


def case_record(r: CaseResult, out_dir: Path, baseline: dict[str, str], index: int) -> dict:
    run = r.run
    data = r.to_json()
    exe = resolve_program(run.argv[0], r.case.target.cwd) if run.argv else None
    data.update({
        "index": index,
        "target": r.case.target.name or run.name,
        "executable": exe,
        "files": {"run_dir": _rel(run.run_dir, out_dir),
                  "log": _rel(run.log_path, out_dir) if run.log_path.exists()
                  and run.log_path != run.stderr_path else None,
                  "logs": [_rel(p, out_dir) for p in run.log_paths[1:] if p.exists()],
                  "stdout": _rel(run.stdout_path, out_dir), "stderr": _rel(run.stderr_path, out_dir)},
        "heap_by_process": [{"pid": p.pid, "command": p.command, "complete": p.complete,
                             "heap": p.heap.to_json(),
                             "errors": p.errors.to_json() if p.errors else None,
                             "lines": heap_lines(p.heap, p.errors)}
                            for p in (run.log.processes if run.log else [])],
        "startup_output": run.startup_output,
        "issues": issues(r, baseline),
    })
    return data


# -- the whole gate -------------------------------------------------------------
def pattern_info(results: list[CaseResult]) -> dict[str, dict]:
    out = {}
    for r in results:
        p = r.case.pattern
        if p is None or p.name in out:
            continue
        out[p.name] = {"title": p.title, "seed": p.seed, "seed_story": p.seed_story,
                       "mechanism": p.mechanism, "client": p.client, "fix": p.fix,
                       "trigger": p.trigger, "is_pair": p.is_pair, "detectors": list(p.detectors),
                       "unsupported": dict(p.unsupported)}
    return out


def detector_table(cases: list[dict], patterns: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """pattern -> detector -> {"expected", "caught", "outcome", "verdict",
    "kinds"} from the buggy variants' runs: which tool sees which bug (and,
    for a detector the manifest says cannot run the program, why not)."""
    table: dict[str, dict[str, dict]] = {}
    detectors_run = {c["detector"] for c in cases}
    for c in cases:
        info = patterns.get(c.get("pattern") or "")
        if info and info["is_pair"]:
            for detector, why in info["unsupported"].items():
                if detector in detectors_run:
                    table.setdefault(c["pattern"], {})[detector] = {
                        "expected": False, "caught": False, "outcome": "n/a", "verdict": None,
                        "kinds": [], "unsupported": why}
    for c in cases:
        if c["variant"] != "buggy" or not c.get("pattern"):
            continue
        caught = c["outcome"] == "xfail" or (
            c["outcome"] == "info" and c["verdict"] not in ("clean", "unresolved"))
        kinds = sorted({f.get("tool_kind") or f["kind"] for f in c["findings"]
                        if not f["kind"].startswith("Leak_")}
                       | ({c["fatal_signal"]} if c["fatal_signal"] else set())
                       | ({"leak"} if c["verdict"] == "leak" else set())
                       | ({"hang"} if c["verdict"] == "hang" else set()))
        table.setdefault(c["pattern"], {})[c["detector"]] = {
            "expected": c["expected"] is not None, "caught": caught,
            "outcome": c["outcome"], "verdict": c["verdict"], "kinds": kinds}
    return table


def gate_outcome(cases: list[dict]) -> str:
    """pass, fail, or unresolved (the only failing cases are unresolved)."""
    failing = [c for c in cases if c["outcome"] in FAILING]
    if not failing:
        return "pass"
    return "unresolved" if all(c["outcome"] == "unresolved" for c in failing) else "fail"


def assemble(cases: list[dict], patterns: dict[str, dict], baseline: dict[str, str],
             gate: dict, srcroot: str) -> dict:
    """The summary document from case records (a gate's, or a merge's)."""
    counts: dict[str, int] = defaultdict(int)
    groups: dict[str, list[str]] = defaultdict(list)
    for c in cases:
        counts[c["outcome"]] += 1
        for sig in c["signatures"]:
            groups[sig].append(c["case"])
    outcome = gate_outcome(cases)
    missing = sorted({o for c in cases for o in c.get("missing_debug_info") or []})
    return {
        "schema": SCHEMA,
        "passed": outcome == "pass",
        "outcome": outcome,
        "counts": dict(sorted(counts.items())),
        # Said once for the whole gate, not once per case.
        "notices": [debug_info_note(missing)] if missing else [],
        "gate": gate,
        "srcroot": srcroot,
        "cases": cases,
        "signatures": {sig: sorted(ids) for sig, ids in sorted(groups.items())},
        "detectors": detector_table(cases, patterns),
        "patterns": patterns,
        "baseline": dict(sorted(baseline.items())),
    }


def summary(results: list[CaseResult], out_dir: Path, baseline: dict[str, str] | None = None,
            gate: dict | None = None, srcroot: Path | None = None) -> dict:
    """`gate`: what a merge checks shards against: {"command", "key" (the
    same for every shard of one gate), "shard" ("I/N" or None), "total" (the
    unsharded gate's number of cases)}; `srcroot`: what SARIF's paths are
    relative to (default: the working directory)."""
    baseline = baseline or {}
    gate = dict(gate or {})
    gate.setdefault("command", "gate")
    gate.setdefault("key", "")
    gate.setdefault("shard", None)
    gate.setdefault("total", len(results))
    order = gate.pop("order", None) or {}
    cases = [case_record(r, out_dir, baseline, order.get(r.case.id, i)) for i, r in enumerate(results)]
    data = assemble(cases, pattern_info(results), baseline, gate,
                    str((srcroot or Path.cwd()).resolve()))
    data["report_dir"] = str(out_dir.resolve())    # what `report merge` rebases paths from
    return data


def detectors_in(table: dict) -> list[str]:
    present = {d for row in table.values() for d in row}
    return [d for d in DETECTORS if d in present]


def detector_cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry.get("unsupported"):
        return f"n/a ({entry['unsupported']})"
    mark = "caught" if entry["caught"] else "missed"
    if entry["expected"] and not entry["caught"]:
        mark = "MISSED (expected!)"
    what = ", ".join(entry["kinds"][:3])
    return f"{mark}{' (' + what + ')' if entry['caught'] and what else ''}" + ("" if entry["expected"] else " *")


def failing_first(cases: list[dict]) -> list[dict]:
    """Failing cases, then known ones, then the rest; each in gate order."""
    def rank(c: dict) -> tuple[int, int]:
        return (0 if c["outcome"] in FAILING else 1 if c["outcome"] == "known" else 2, c["index"])
    return sorted(cases, key=rank)


def repro_command(case: dict) -> str | None:
    """The command that reproduces a case locally (the run's `repro`)."""
    repro = case.get("repro") or {}
    return repro.get("command")


def headline(issue: dict) -> str:
    """'InvalidFree: Invalid free() / delete / delete[] / realloc()'; a
    signature seen in several records says their total."""
    text = f"{issue.get('tool_kind') or issue['rule']}: {issue['message']}"
    if issue.get("records", 1) > 1:
        total = f", {issue['bytes']:,} bytes in {issue['blocks'] or 0:,} blocks" \
            if issue.get("bytes") is not None else ""
        text += f" ({issue['records']} records{total})"
    return text


def suppressed(case: dict) -> str:
    """What valgrind's suppressions hid in a case: '' when nothing."""
    parts = []
    for p in case.get("heap_by_process") or []:
        heap, errors = p["heap"].get("suppressed"), p.get("errors")
        if heap and heap["bytes"]:
            parts.append(f"{heap['bytes']:,} bytes in {heap['blocks']:,} blocks")
        if errors and errors.get("suppressed"):
            parts.append(f"{errors['suppressed']} errors from {errors['suppressed_contexts']} contexts")
    return ", ".join(parts)
