"""Cases, the matrix, and the gate's judgement of each case.

A case is one server variant under one scenario with what it is expected to
show: the fixed variants and other people's servers are expected clean, a
buggy variant its manifest's finding.  The gate turns each case's verdict
into an Outcome (model.Outcome), using a baseline of accepted findings (by
signature) for servers adopted with known issues.
"""
from __future__ import annotations

import concurrent.futures
import json
import re
import multiprocessing
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .frames import SourceIndex, best_stack, own_frames, signature
from .launch import Target
from .model import Outcome, Verdict
from .patterns import Expectation, Pattern, all_patterns
from .runner import RunOptions, RunResult, run_case
from .scenario import load_scenario, named_scenarios


@dataclass
class Case:
    """expect None: informational (a detector the manifest does not name
    runs a buggy variant, for the detector table; never fails the gate)."""

    id: str
    target: Target
    scenario: str
    expect: Expectation | None
    variant: str = "main"
    pattern: Pattern | None = None
    source_roots: list[Path] = field(default_factory=list)
    options: RunOptions = field(default_factory=RunOptions)


@dataclass
class CaseResult:
    case: Case
    run: RunResult
    outcome: Outcome
    signatures: list[str]
    new_signatures: list[str]
    message: str

    @property
    def detector(self) -> str:
        return self.case.options.detector

    def to_json(self) -> dict:
        data = self.run.to_json()
        expect = self.case.expect
        data.update({"case": self.case.id, "pattern": self.case.pattern.name if self.case.pattern else None,
                     "variant": self.case.variant, "outcome": self.outcome.label,
                     "expected": expect.verdict.label if expect else None,
                     "expected_kind": expect.kind if expect else None, "signatures": self.signatures,
                     "new_signatures": self.new_signatures, "message": self.message})
        return data


# -- signatures ---------------------------------------------------------------
def run_signatures(run: RunResult, index: SourceIndex) -> list[str]:
    """Address- and PID-free keys for everything a run found."""
    sigs = {signature(f, index) for f in run.judgement.findings
            if not f.is_leak or _leak_counts(run, f.kind)}
    fatal = run.judgement.fatal_signal
    if fatal and run.verdict is Verdict.CRASH:
        frames = own_frames(fatal.stack, index, 1) or [f for f in fatal.stack if f.fn != "???"][:1]
        sigs.add(f"crash {fatal.name} " + " ".join(f"{f.fn}@{Path(f.file).name}" if f.file else f.fn
                                                   for f in frames))
    elif run.verdict is Verdict.CRASH and run.exit and run.exit.returncode:
        sigs.add(f"crash signal {-run.exit.returncode}")
    if run.verdict is Verdict.HANG:
        sigs.add("hang")
    if run.verdict is Verdict.STARTUP_FAILURE:
        sigs.add("startup-failure")
    return sorted(sigs)


_KIND_WORD = {"Leak_DefinitelyLost": "definite", "Leak_IndirectlyLost": "indirect",
              "Leak_PossiblyLost": "possible", "Leak_StillReachable": "reachable"}


def _leak_counts(run: RunResult, kind: str) -> bool:
    words = run.leak_policy.split(",")
    return run.leak_policy in ("strict", "all") or _KIND_WORD.get(kind) in words


def points_at(run: RunResult, expect: Expectation) -> bool:
    """A finding of the expected kind with a frame in the expected function
    and file (the access, or where the block was freed or allocated)."""
    if expect.kind is None and expect.function is None and expect.file is None:
        return True     # the verdict is the whole expectation (a hang)

    def matches(stacks) -> bool:
        return any((expect.function is None or f.fn == expect.function) and
                   (expect.file is None or f.file == expect.file) for s in stacks for f in s)

    for finding in run.judgement.findings:
        if expect.kind and expect.kind not in (finding.kind, finding.tool_kind):
            continue
        if matches([finding.stack] + [a.stack for a in finding.aux]):
            return True
    fatal = run.judgement.fatal_signal
    return expect.kind is None and fatal is not None and matches([fatal.stack])


# -- baseline -----------------------------------------------------------------
class BaselineError(ValueError):
    pass


def load_baseline(path: Path) -> dict[str, str]:
    """signature -> reason, from a TOML file of [[accepted]] tables."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BaselineError(f"{path}: TOML syntax: {exc}") from None
    unknown = set(data) - {"accepted"}
    if unknown:
        raise BaselineError(f"{path}: unknown key {sorted(unknown)[0]!r} (expected [[accepted]] tables)")
    out = {}
    for i, entry in enumerate(data.get("accepted", []), start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("signature"), str):
            raise BaselineError(f"{path}: accepted #{i}: key 'signature' missing or not a string")
        extra = set(entry) - {"signature", "reason", "case"}
        if extra:
            raise BaselineError(f"{path}: accepted #{i}: unknown key {sorted(extra)[0]!r}")
        out[entry["signature"]] = str(entry.get("reason", ""))
    return out


def _toml_string(text: str) -> str:
    return json.dumps(text)   # a JSON string is a valid TOML basic string


def baseline_text(results: Iterable["CaseResult"]) -> str:
    lines = ["# Findings accepted by the gate: reported, but they do not fail it.",
             "# A finding whose signature is not listed here fails the gate.", ""]
    seen = set()
    for r in results:
        for sig in r.signatures:
            if sig in seen or r.outcome is Outcome.XFAIL:
                continue
            seen.add(sig)
            lines += ["[[accepted]]", f"signature = {_toml_string(sig)}",
                      f"case = {_toml_string(r.case.id)}", 'reason = "accepted when the gate was adopted"', ""]
    return "\n".join(lines)


# -- evaluation ---------------------------------------------------------------
def evaluate(case: Case, run: RunResult, baseline: dict[str, str]) -> CaseResult:
    index = SourceIndex.scan(case.source_roots)
    sigs = run_signatures(run, index)
    expect = case.expect
    if expect is None:
        caught = run.verdict not in (Verdict.CLEAN, Verdict.UNRESOLVED)
        return CaseResult(case, run, Outcome.INFO, sigs, [],
                          f"{case.options.detector} {'sees' if caught else 'misses'} it: {run.verdict.label}")
    if expect.verdict is not Verdict.CLEAN:
        if run.verdict is expect.verdict and points_at(run, expect):
            return CaseResult(case, run, Outcome.XFAIL, sigs, [], f"reproduced: {expect.verdict.label}"
                              + (f" with {expect.kind} in {expect.function} ({expect.file})" if expect.kind else ""))
        if run.verdict is Verdict.CLEAN:
            return CaseResult(case, run, Outcome.XPASS, sigs, [],
                              f"expected {expect.verdict.label} with {expect.kind}, got clean: "
                              "the bug no longer reproduces")
        return CaseResult(case, run, Outcome.FAIL, sigs, sigs,
                          f"expected {expect.verdict.label} with {expect.kind} in {expect.function}, "
                          f"got {run.verdict.label}: {'; '.join(run.judgement.reasons[:2])}")
    if run.verdict is Verdict.CLEAN:
        return CaseResult(case, run, Outcome.PASS, sigs, [], "clean")
    if run.verdict is Verdict.UNRESOLVED:
        return CaseResult(case, run, Outcome.UNRESOLVED, sigs, [], "; ".join(run.judgement.reasons))
    new = [s for s in sigs if s not in baseline]
    if sigs and not new:
        return CaseResult(case, run, Outcome.KNOWN, sigs, [],
                          f"{run.verdict.label}, all {len(sigs)} finding(s) accepted in the baseline")
    outcome = Outcome.TIMEOUT if run.verdict is Verdict.HANG else Outcome.FAIL
    return CaseResult(case, run, outcome, sigs, new,
                      f"{run.verdict.label}: {'; '.join(run.judgement.reasons[:3])}; "
                      f"new: {', '.join(new[:3])}")


# -- the project's matrix -----------------------------------------------------
def project_cases(patterns: list[Pattern] | None = None, options: RunOptions | None = None,
                  detectors: tuple[str, ...] = ("memcheck",), informational: bool = True,
                  every_scenario: tuple[str, ...] | None = None,
                  variants: tuple[str, ...] | None = None) -> list[Case]:
    """Per detector: every pair's buggy variant against its trigger (expected
    to show its manifest's finding, or informational for a detector the
    manifest does not name), every fixed variant and every single-variant
    server against every scenario it lists (only its trigger under a
    detector left out of `every_scenario`, when given).  Case ids carry
    '@DETECTOR' for every detector but memcheck."""
    cases = []
    base = options or RunOptions(require_exit_zero=True)
    for detector in detectors:
        options = replace(base, detector=detector)
        suffix = "" if detector == "memcheck" else f"@{detector}"
        for pattern in patterns if patterns is not None else all_patterns():
            if detector in pattern.unsupported:
                continue    # the tool cannot run this program (see the manifest)
            roots = [pattern.directory, pattern.directory.parent / "common"]
            for variant in pattern.variants:
                if variants is not None and variant not in variants:
                    continue
                expect = pattern.expectation(variant, detector)
                if expect is None and not informational:
                    continue
                binary = pattern.binary(variant, detector=detector)
                target = Target(argv=[str(binary), "--port", "0"], name=f"{pattern.name}-{variant}")
                scenarios = [pattern.trigger] if variant == "buggy" or (
                    every_scenario is not None and detector not in every_scenario) \
                    else (pattern.scenarios or named_scenarios())
                for scenario in scenarios:
                    cases.append(Case(id=f"{pattern.name}-{variant}-{scenario}{suffix}", target=target,
                                      scenario=scenario, expect=expect, variant=variant,
                                      pattern=pattern, source_roots=roots, options=options))
    return cases


def shard(cases: list[Case], spec: str | None) -> list[Case]:
    """'I/N': the I-th of N deterministic slices (by case id), 1-based."""
    if not spec:
        return cases
    m = re.fullmatch(r"(\d+)/(\d+)", spec)
    if not m or not (1 <= int(m[1]) <= int(m[2])):
        raise ValueError(f"--shard {spec!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
    i, n = int(m[1]), int(m[2])
    ordered = sorted(cases, key=lambda c: c.id)
    return [c for k, c in enumerate(ordered) if k % n == i - 1]


def run_cases(cases: list[Case], out_dir: Path, jobs: int = 1, baseline: dict[str, str] | None = None,
              progress: Callable[[CaseResult, int, int], None] | None = None) -> list[CaseResult]:
    """Run every case (`jobs` at a time: each case has its own run folder and
    its server picks its own port, so workers share nothing) in case order."""
    baseline = baseline or {}
    results: list[CaseResult | None] = [None] * len(cases)

    def record(i: int, result: CaseResult) -> None:
        results[i] = result
        if progress:
            progress(result, sum(r is not None for r in results), len(cases))

    if jobs <= 1:
        for i, case in enumerate(cases):
            record(i, run_one(case, out_dir, baseline))
        return results     # type: ignore[return-value]
    # Worker processes, not threads: the clients are Python and would share
    # one interpreter lock.  Each worker runs its own servers and reaps them.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_one, case, out_dir, baseline): i for i, case in enumerate(cases)}
        for future in concurrent.futures.as_completed(futures):
            record(futures[future], future.result())
    return results     # type: ignore[return-value]


def run_one(case: Case, out_dir: Path, baseline: dict[str, str]) -> CaseResult:
    run = run_case(case.target, load_scenario(case.scenario), out_dir / "runs" / case.id, case.options)
    return evaluate(case, run, baseline)


def first_own_frames(result: CaseResult, limit: int = 3) -> list[str]:
    index = SourceIndex.scan(result.case.source_roots)
    out = []
    for finding in result.run.judgement.findings:
        frames = own_frames(best_stack(finding), index, limit)
        if frames:
            out.append(f"{finding.kind}: " + " < ".join(f.where() for f in frames))
    return out
