"""`harness shrink`: the smallest scenario that still shows a finding.

The property kept is the one the gate signs findings by: the same verdict,
and a finding with the same signature (RunResult.signatures()).  Steps:

  1. run the case as given (the original must reproduce: exit status 1
     otherwise), under the detector that saw the finding;
  2. expand its random steps: a `fuzz` or `storm` step with its seed
     becomes the concrete operations that run played (played.json, see
     drive/replay.py); the expanded scenario must reproduce too, else the
     random step is kept as it is and only its size is reduced;
  3. delta debugging (tools/reduce.py) over connections, steps and
     payloads, each candidate a run of its own (`-j N` at once, in worker
     processes, each in its own run folder under --out), within a run
     budget and a deadline;
  4. the result is run `confirm` times (10 by default): reproduced every
     time, or said to be flaky, with how often it reproduced.

The minimal scenario is written with a header comment: the original, the
finding's signature, the sizes and the number of runs spent.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..drive.launch import Target
from ..drive.replay import expand_scenario, renumber
from ..drive.scenario import ScenarioError, load_scenario, parse_scenario, toml_text
from ..options import RunOptions
from ..repro import command, run_args, shown_path
from .reduce import Data, OutOfBudget, Reducer, tidy

EXIT_MINIMAL, EXIT_NOT_REPRODUCED, EXIT_USAGE, EXIT_UNDECIDED = 0, 1, 2, 3
CONFIRM = 10


def probe(target: Target, scenario_path: str, run_dir: str, options: RunOptions) -> dict:
    """One candidate, start to verdict (in a worker process): what the
    property needs, and where its files are."""
    from ..runner import run_case
    result = run_case(target, load_scenario(scenario_path), Path(run_dir), options)
    return {"verdict": result.verdict.label, "signatures": result.signatures(),
            "seconds": round(result.seconds, 3), "run_dir": str(result.run_dir),
            "failures": list(result.play.failures), "harness_error": result.harness_error}


@dataclass
class Goal:
    verdict: str
    signature: str

    def met(self, outcome: dict) -> bool:
        return outcome["verdict"] == self.verdict and self.signature in outcome["signatures"]


class Runner:
    """Runs scenario texts as cases, `jobs` at a time, each in a folder of
    its own (out/runs/NNNN, its scenario out/candidates/NNNN.toml); counts
    the runs and the time against the budget."""

    def __init__(self, target: Target, options: RunOptions, out: Path, jobs: int,
                 max_runs: int, seconds: float) -> None:
        self.target = target
        self.options = options
        self.out = out
        self.jobs = jobs
        self.max_runs = max_runs
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.runs = 0
        self.workers = None

    def __enter__(self) -> "Runner":
        if self.jobs > 1:
            from ..matrix import Workers
            self.workers = Workers(self.jobs, probe).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.workers is not None:
            self.workers.__exit__(*exc)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> int:
        """Runs the budget still allows (0 past the deadline)."""
        if time.monotonic() >= self.deadline:
            return 0
        return max(self.max_runs - self.runs, 0)

    def run(self, texts: list[str]) -> list[dict]:
        """Each text as a case, in parallel; outcomes in the same order."""
        tasks = []
        for text in texts:
            self.runs += 1
            name = f"{self.runs:04d}"
            path = self.out / "candidates" / f"{name}.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            tasks.append((self.target, str(path), str(self.out / "runs" / name), self.options))
        if self.workers is None:
            return [probe(*t) for t in tasks]
        outcomes: list[dict | None] = [None] * len(tasks)
        pending = list(range(len(tasks)))
        busy = 0
        while pending or busy:
            for worker in self.workers.idle():
                if not pending:
                    break
                i = pending.pop(0)
                worker.give(i, tasks[i])
                busy += 1
            i, outcome = self.workers.next_result()
            outcomes[i] = outcome
            busy -= 1
        return outcomes     # type: ignore[return-value]


class Oracle:
    """reduce.Oracle over real runs: the first candidate (in order) that
    meets the goal, first runs `jobs` at a time; each scenario text is
    judged once (a cache).  With `need` above 1 (the strict phase after a
    flaky result), a candidate is accepted only when it meets the goal
    `need` runs in a row: the runs after the first stop at the first miss."""

    def __init__(self, runner: Runner, goal: Goal, need: int = 1) -> None:
        self.runner = runner
        self.goal = goal
        self.need = need
        self.cache: dict[str, bool] = {}

    def first(self, candidates: list[Data]) -> int | None:
        texts = [toml_text(c) for c in candidates]
        i = 0
        while i < len(texts):
            if texts[i] in self.cache:
                if self.cache[texts[i]]:
                    return i
                i += 1
                continue
            batch: list[int] = []     # texts[i] is not known: the batch starts with it
            for j in range(i, len(texts)):
                if len(batch) == self.runner.jobs or self.cache.get(texts[j]):
                    break
                if texts[j] not in self.cache and all(texts[j] != texts[b] for b in batch):
                    batch.append(j)
            passed = {k for k, ok in zip(batch, self._runs([texts[b] for b in batch])) if ok}
            for k in batch:
                if k not in passed:
                    self.cache[texts[k]] = False
            for k in range(i, batch[-1] + 1):
                known = self.cache.get(texts[k])
                if known:
                    return k
                if known is None and k in passed:
                    self.cache[texts[k]] = self.again(texts[k], self.need - 1)
                    if self.cache[texts[k]]:
                        return k
            i = batch[-1] + 1
        return None

    def again(self, text: str, times: int) -> bool:
        """`times` more runs all meet the goal (`jobs` at a time, stopping at
        the first batch with a miss)."""
        left = times
        while left > 0:
            chunk = min(left, self.runner.jobs)
            if not all(self._runs([text] * chunk)):
                return False
            left -= chunk
        return True

    def _runs(self, texts: list[str]) -> list[bool]:
        room = self.runner.left()
        if room < len(texts):
            raise OutOfBudget()
        return [self.goal.met(o) for o in self.runner.run(texts)]


@dataclass
class Report:
    """What a shrink did, for the terminal, the header and --json."""

    original: str
    goal: Goal
    steps_original: int = 0
    steps_expanded: int = 0
    steps_after: int = 0
    runs: int = 0
    seconds: float = 0.0
    expanded: list[str] = field(default_factory=list)
    minimal: bool = False
    budget_spent: bool = False
    reproduced: int = 0
    confirm: int = CONFIRM
    output: str = ""
    replay: str = ""

    def header(self, jobs: int) -> list[str]:
        sizes = f"{self.steps_original} steps"
        if self.steps_expanded != self.steps_original:
            sizes += f" ({self.steps_expanded} once its random steps were expanded)"
        verdict = ("1-minimal: removing any single step loses the finding" if self.minimal else
                   "not proven minimal: the run budget or the deadline ran out first")
        lines = [
            "Minimal scenario written by `harness shrink`.",
            f"Original: {self.original}",
            f"Finding:  {self.goal.verdict}, {self.goal.signature}",
            f"Shrunk:   {sizes} -> {self.steps_after} steps in {self.runs} runs, "
            f"{self.seconds:.1f} s (-j {jobs}); {verdict}",
            f"Reproduced {self.reproduced} of {self.confirm} times"
            + ("." if self.reproduced == self.confirm else ": FLAKY"),
        ]
        if self.replay:
            lines.append(f"Replay:   {self.replay}")
        return lines

    def to_json(self) -> dict:
        return {"original": self.original, "verdict": self.goal.verdict,
                "signature": self.goal.signature, "steps_original": self.steps_original,
                "steps_expanded": self.steps_expanded, "steps_after": self.steps_after,
                "runs": self.runs, "seconds": round(self.seconds, 2), "minimal": self.minimal,
                "budget_spent": self.budget_spent, "reproduced": self.reproduced,
                "confirm": self.confirm, "flaky": self.reproduced < self.confirm,
                "output": self.output, "replay": self.replay, "expanded": self.expanded}


def valid(data: Data) -> bool:
    try:
        parse_scenario(data, "candidate", "candidate")
    except ScenarioError:
        return False
    return True


def pick_signature(signatures: list[str], wanted: str | None, expect) -> str | None:
    """The finding to keep: the one asked for, else the one the pair's
    manifest expects (its kind in its function), else the first."""
    if wanted:
        return wanted if wanted in signatures else None
    if expect is not None and expect.kind and expect.function:
        for sig in signatures:
            if sig.startswith(expect.kind + " ") and f"{expect.function}@" in sig:
                return sig
    return signatures[0] if signatures else None


@dataclass
class Shrink:
    """One shrink: the case (target, options), the scenario's data as
    played, where to work and what to keep."""

    target: Target
    options: RunOptions
    scenario_path: Path             # the original scenario file
    out: Path                       # candidate runs go under here
    output: Path                    # the minimal scenario's file
    jobs: int = 1
    max_runs: int = 500
    seconds: float = 3600.0
    confirm: int = CONFIRM
    signature: str | None = None    # --signature
    verdict: str | None = None      # a run folder's verdict, to check the first run against
    expect: object = None           # the pair's Expectation, to pick the signature
    say: Callable[[str], None] = print

    def run(self) -> tuple[int, Report | None]:
        with Runner(self.target, self.options, self.out, self.jobs, self.max_runs,
                    self.seconds) as runner:
            return self._run(runner)

    def _run(self, runner: Runner) -> tuple[int, Report | None]:
        original = self.scenario_path.read_text(encoding="utf-8")
        self.say(f"shrink: running the original ({self.scenario_path})")
        first = runner.run([original])[0]
        signature = pick_signature(first["signatures"], self.signature, self.expect)
        if signature is None or first["verdict"] in ("clean", "unresolved") or \
                (self.verdict and first["verdict"] != self.verdict):
            seen = "; ".join(first["signatures"]) or "no finding"
            self.say(f"shrink: the original does not reproduce: {first['verdict']} ({seen})"
                     + (f"; wanted {self.signature}" if self.signature else ""))
            return EXIT_NOT_REPRODUCED, None
        goal = Goal(first["verdict"], signature)
        self.say(f"shrink: target {goal.verdict}, {goal.signature}")
        played_dir = Path(first["run_dir"])
        data = json.loads(json.dumps(load_scenario(str(played_dir / "scenario.toml")).data()))
        report = Report(original=str(self.scenario_path), goal=goal,
                        steps_original=len(data["steps"]), confirm=self.confirm)
        start = self._expand(runner, goal, data, played_dir, report)
        report.steps_expanded = len(start["steps"])
        self.say(f"shrink: {report.steps_expanded} steps to reduce, at most {self.max_runs} runs "
                 f"and {self.seconds:.0f} s, {self.jobs} at a time")
        oracle = Oracle(runner, goal)
        oracle.cache[toml_text(start)] = True
        history: list[Data] = [start]
        last = [len(start["steps"])]

        def progress(phase: str, data: Data) -> None:
            history.append(data)
            if len(data["steps"]) != last[0] or phase not in ("steps", "connections"):
                self.say(f"  [{runner.runs:4} runs {runner.elapsed:6.1f} s] "
                         f"{len(data['steps']):4} steps  ({phase})")
                last[0] = len(data["steps"])

        reducer = Reducer(start, oracle, valid, progress)
        self._steady: Reducer | None = None
        try:
            reducer.run()
        except OutOfBudget:
            report.budget_spent = True
        reproduced = self._confirm(runner, goal, reducer.data)
        if reproduced < self.confirm and not report.budget_spent and self.confirm > 1:
            self.say(f"shrink: the result reproduced {reproduced} of {self.confirm} times: "
                     "looking for the last step down that reproduces every time")
            try:
                reducer = self._stabilize(runner, oracle, reducer, history, progress)
            except OutOfBudget:
                reducer = self._steady or reducer
                report.budget_spent = True
            if self._steady is not None:
                reproduced = self._confirm(runner, goal, reducer.data)
        if report.budget_spent:
            self.say(f"shrink: budget spent ({runner.runs} runs, {runner.elapsed:.0f} s): "
                     "keeping the smallest scenario found so far")
        report.minimal = reducer.minimal and not report.budget_spent
        best = tidy(renumber(reducer.data))
        report.steps_after = len(best["steps"])
        report.reproduced = reproduced
        report.runs = runner.runs
        report.seconds = runner.elapsed
        self._write(best, report)
        if report.reproduced < self.confirm:
            self.say(f"shrink: FLAKY: the minimal scenario reproduced {report.reproduced} of "
                     f"{self.confirm} times")
        status = EXIT_MINIMAL if report.minimal and report.reproduced == self.confirm \
            else EXIT_UNDECIDED
        return status, report

    def _confirm(self, runner: Runner, goal: Goal, data: Data) -> int:
        """How many of `confirm` runs (outside the budget) meet the goal."""
        outcomes = runner.run([toml_text(tidy(renumber(data)))] * self.confirm)
        return sum(1 for o in outcomes if goal.met(o))

    def _stabilize(self, runner: Runner, oracle: Oracle, reducer: Reducer,
                   history: list[Data], progress) -> Reducer:
        """The result was accepted on a lucky run: find the last scenario on
        the way down that reproduces `confirm` times out of `confirm` (a
        binary search, the original first), and reduce again from it,
        accepting only what reproduces that many times in a row."""
        oracle.cache[toml_text(reducer.data)] = False
        steady = [toml_text(h) for h in history]
        if not oracle.again(steady[0], self.confirm):
            self.say("shrink: the original is flaky itself: keeping the smallest result")
            return reducer
        low, high = 0, len(history) - 1     # history[low] steady, history[high] flaky
        while high - low > 1:
            mid = (low + high) // 2
            if oracle.again(steady[mid], self.confirm):
                low = mid
            else:
                oracle.cache[steady[mid]] = False
                high = mid
        self.say(f"  [{runner.runs:4} runs {runner.elapsed:6.1f} s] "
                 f"{len(history[low]['steps']):4} steps reproduce every time: reducing from "
                 f"there, each step down checked {self.confirm} times")
        strict = Oracle(runner, oracle.goal, need=self.confirm)
        strict.cache = {t: ok for t, ok in oracle.cache.items() if ok is False}
        strict.cache.update({t: True for t in steady[:low + 1]})
        self._steady = again = Reducer(history[low], strict, valid, progress)
        again.run()     # a spent budget leaves `again` with its best steady scenario
        return again

    def _expand(self, runner: Runner, goal: Goal, data: Data, played_dir: Path,
                report: Report) -> Data:
        """The scenario with its random steps replaced by what they played,
        if that still reproduces; else as it is."""
        played_file = played_dir / "played.json"
        if not played_file.exists():
            return data
        try:
            played = json.loads(played_file.read_text())
        except (OSError, ValueError) as exc:
            self.say(f"shrink: {played_file}: unreadable ({exc}): random steps kept as they are")
            return data
        steps = parse_scenario(data, str(played_dir / "scenario.toml"), "played").steps
        expanded, said = expand_scenario(data, steps, played)
        report.expanded = said
        for line in said:
            self.say(f"  {line}")
        if expanded["steps"] == data["steps"] or not expanded["steps"] or not valid(expanded):
            return data
        outcome = runner.run([toml_text(expanded)])[0]
        if goal.met(outcome):
            return expanded
        self.say(f"shrink: the expanded scenario does not reproduce ({outcome['verdict']}): "
                 "the random steps are kept as they are, and only made smaller")
        report.expanded.append("expanded form did not reproduce: not used")
        return data

    def _write(self, best: Data, report: Report) -> None:
        description = best.get("description", "")
        best = dict(best, description=f"minimal form: {description}" if description else
                    "minimal form (harness shrink)")
        report.output = str(self.output)
        report.replay = command(run_args(self.target, self.options, shown_path(self.output)))
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text(toml_text(best, report.header(self.jobs)), encoding="utf-8")
