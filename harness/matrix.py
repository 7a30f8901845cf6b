"""The matrix: the project's cases, deterministic shards, and running cases
`jobs` at a time (each case in its own run folder, its server on its own
port), each judged by the gate (judge.gate) as it finishes."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .drive.launch import Target
from .drive.scenario import load_scenario, named_scenarios
from .judge.gate import Case, CaseResult, evaluate
from .judge.patterns import Pattern, all_patterns
from .runner import RunOptions, run_case


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
