"""The matrix: the project's cases, deterministic shards, and running cases
`jobs` at a time (each case in its own run folder, its server on its own
port), each judged by the gate (judge.gate) as it finishes."""
from __future__ import annotations

import multiprocessing
import os
import queue
import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .drive.launch import Target, TargetError
from .drive.scenario import load_scenario, named_scenarios
from .judge.gate import Case, CaseResult, evaluate
from .judge.patterns import Pattern, all_patterns
from .options import RunOptions
from .runner import run_case


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
            for variant in pattern.variants:
                if variants is not None and variant not in variants:
                    continue
                expect = pattern.expectation(variant, detector)
                if expect is None and not informational:
                    continue
                binary = pattern.binary(variant, detector=detector)
                target = Target(argv=[str(binary), "--port", "0"], name=f"{pattern.name}-{variant}",
                                pattern=pattern.name, variant=variant)
                scenarios = [pattern.trigger] if variant == "buggy" or (
                    every_scenario is not None and detector not in every_scenario) \
                    else (pattern.scenarios or named_scenarios())
                for scenario in scenarios:
                    cases.append(Case(id=f"{pattern.name}-{variant}-{scenario}{suffix}", target=target,
                                      scenario=scenario, expect=expect, variant=variant,
                                      pattern=pattern,
                                      options=replace(options, source_dirs=pattern.source_dirs)))
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


def unique_ids(ids: list[str]) -> list[str]:
    """Case ids as given, the second and later of a repeated one suffixed
    '-2', '-3'... (two scenarios `a/smoke.toml` and `b/smoke.toml` are two
    cases, with two run folders)."""
    taken: set[str] = set()
    out = []
    for case_id in ids:
        candidate, n = case_id, 1
        while candidate in taken:
            n += 1
            candidate = f"{case_id}-{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def _fixed_port(case: Case) -> int | None:
    return case.target.port if case.target.port_mode == "fixed" else None


def run_cases(cases: list[Case], out_dir: Path, jobs: int = 1, baseline: dict[str, str] | None = None,
              progress: Callable[[CaseResult, int, int], None] | None = None) -> list[CaseResult]:
    """Run every case, `jobs` at a time, and return the results in case
    order.  Each case has its own run folder and its own port; cases that
    share a fixed port (`--port N`) never run at once."""
    baseline = baseline or {}
    results: list[CaseResult | None] = [None] * len(cases)

    def record(i: int, result: CaseResult) -> None:
        results[i] = result
        if progress:
            progress(result, sum(r is not None for r in results), len(cases))

    if jobs <= 1 or len(cases) <= 1:
        for i, case in enumerate(cases):
            record(i, run_one(case, out_dir, baseline))
        return results     # type: ignore[return-value]
    with Workers(min(jobs, len(cases)), run_one) as workers:
        pending = list(range(len(cases)))
        ports_in_use: set[int] = set()
        while pending or workers.busy:
            for worker in workers.idle():
                i = next((i for i in pending if _fixed_port(cases[i]) not in ports_in_use), None)
                if i is None:
                    break
                pending.remove(i)
                if _fixed_port(cases[i]) is not None:
                    ports_in_use.add(_fixed_port(cases[i]))
                worker.give(i, (cases[i], out_dir, baseline))
            i, result = workers.next_result()
            ports_in_use.discard(_fixed_port(cases[i]))
            record(i, result)
    return results     # type: ignore[return-value]


def run_one(case: Case, out_dir: Path, baseline: dict[str, str]) -> CaseResult:
    run = run_case(case.target, load_scenario(case.scenario), out_dir / "runs" / case.id, case.options)
    return evaluate(case, run, baseline)


# -- worker processes ---------------------------------------------------------------
# Processes, not threads: the clients are Python and would share one
# interpreter lock.  Each worker runs its own servers (each under its own
# keeper).  A worker dies with its parent (PR_SET_PDEATHSIG), and its keepers
# with it; on an interrupt the parent kills its workers at once instead of
# letting the queue run on.

def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _worker_main(parent: int, fn: Callable, tasks, results) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the parent decides what an interrupt does
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        item = tasks.get()
        if item is None:
            return
        index, args = item
        try:
            results.put((index, fn(*args), None))
        except Exception as exc:     # noqa: BLE001 - handed to the parent, which re-raises it
            results.put((index, None, (type(exc).__name__, str(exc))))


class _Worker:
    def __init__(self, ctx, fn: Callable, results) -> None:
        self.tasks = ctx.SimpleQueue()
        self.process = ctx.Process(target=_worker_main,
                                   args=(os.getpid(), fn, self.tasks, results), daemon=True)
        self.process.start()
        self.index: int | None = None

    def give(self, index: int, payload) -> None:
        self.index = index
        self.tasks.put((index, payload))


class Workers:
    """`count` worker processes, each calling `fn(*args)` for the tasks it
    is given (`fn` a module-level function: it is sent by name); results
    come back with the task's index, as they finish."""

    def __init__(self, count: int, fn: Callable) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.workers = [_Worker(ctx, fn, self.results) for _ in range(count)]

    @property
    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.index is not None]

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.index is None]

    def next_result(self) -> tuple[int, object]:
        while True:
            try:
                index, result, error = self.results.get(timeout=0.5)
            except queue.Empty:
                dead = [w for w in self.busy if not w.process.is_alive()]
                if dead:
                    raise RuntimeError(f"a worker process died (exit status "
                                       f"{dead[0].process.exitcode}) while running a case")
                continue
            for worker in self.workers:
                if worker.index == index:
                    worker.index = None
            if error is not None:
                name, message = error
                if name in ("TargetError", "OptionError", "ScenarioError", "ValueError"):
                    raise TargetError(message)
                raise RuntimeError(f"{name}: {message}")
            return index, result

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        for worker in self.workers:
            if exc[0] is None and worker.process.is_alive():
                worker.tasks.put(None)
            else:
                worker.process.kill()
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self.results.close()
        self.results.join_thread()
