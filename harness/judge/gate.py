"""Cases and the gate's judgement of each case.

A case is one server variant under one scenario with what it is expected to
show: the fixed variants and other people's servers are expected clean, a
buggy variant its manifest's finding.  The gate turns each case's verdict
into an Outcome (model.Outcome), using a baseline of accepted findings (by
signature) for servers adopted with known issues.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..drive.launch import Target
from ..model import Outcome, Verdict
from ..runner import RunOptions, RunResult
from .frames import best_stack, shown_frames, signature
from .patterns import Expectation, Pattern


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
    except UnicodeDecodeError:
        raise BaselineError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise BaselineError(f"{path}: nested too deeply to be a baseline") from None
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


SUPPRESSION_NAME = "<insert_a_suppression_name_here>"


def suppressions_text(results: Iterable["CaseResult"]) -> tuple[str, int]:
    """A valgrind suppressions file for every finding that counts today
    (the expected findings of the project's buggy variants aside): valgrind's
    own entries (--gen-suppressions=all), each named after the finding's
    signature, one entry per signature."""
    lines = ["# Findings accepted by the gate, in valgrind's own suppression format: pass",
             "# this file with --suppressions FILE.  Each entry is named after the finding's",
             "# signature (written by leak-harness gate --write-suppressions).", ""]
    seen: set[str] = set()
    for r in results:
        if r.outcome is Outcome.XFAIL:
            continue
        for finding in r.run.counted():
            sig = signature(finding, r.run.program)
            if sig in seen or not finding.suppression:
                continue
            seen.add(sig)
            lines.append(f"# case {r.case.id}: {finding.what}")
            lines.append(finding.suppression.replace(SUPPRESSION_NAME, sig, 1).rstrip("\n"))
            lines.append("")
    return "\n".join(lines), len(seen)


# -- evaluation ---------------------------------------------------------------
def evaluate(case: Case, run: RunResult, baseline: dict[str, str]) -> CaseResult:
    sigs = sorted(run.signatures())
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
    broken = run.judgement.undecided
    if broken:
        # The run did not do what the scenario says: what it found is real,
        # but a baseline cannot vouch for what it did not get to see.
        outcome = Outcome.FAIL if new else Outcome.UNRESOLVED
        return CaseResult(case, run, outcome, sigs, new,
                          f"{run.verdict.label}, but the run is not complete: {'; '.join(broken[:2])}"
                          + (f"; new: {', '.join(new[:3])}" if new else
                             "; its findings are in the baseline, the rest is unknown"))
    if sigs and not new:
        return CaseResult(case, run, Outcome.KNOWN, sigs, [],
                          f"{run.verdict.label}, all {len(sigs)} finding(s) accepted in the baseline")
    outcome = Outcome.TIMEOUT if run.verdict is Verdict.HANG else Outcome.FAIL
    return CaseResult(case, run, outcome, sigs, new,
                      f"{run.verdict.label}: {'; '.join(run.judgement.reasons[:3])}; "
                      f"new: {', '.join(new[:3])}")


def first_own_frames(result: CaseResult, limit: int = 3) -> list[str]:
    """Each counted finding of a failing case, new ones first: its kind and
    where it is (the program's own frames, or the whole stack when none is)."""
    program = result.run.program
    new = set(result.new_signatures)
    counted = sorted(result.run.counted(), key=lambda f: signature(f, program) not in new)
    out = []
    for finding in counted:
        frames = shown_frames(best_stack(finding), program, limit)
        if frames:
            amount = f" ({finding.bytes:,} bytes)" if finding.bytes else ""
            out.append(f"{finding.kind}{amount}: " + " < ".join(f.where() for f in frames[:8]))
    return out
