"""The bug pairs: each buggy variant reproduces its seed's finding, each fixed
variant is clean under every scenario the project ships.

Buggy cases are expected failures in the strict sense (lit's XFAIL): the test
asserts "clean", the expected finding makes it XFAIL, and a buggy variant that
stops reproducing is an XPASS, which fails the suite: the harness lost its
sensitivity.  A different finding than the manifest's is a plain failure.
"""
from __future__ import annotations

import difflib
import re
import signal

import pytest

from harness.drive.scenario import load_scenario, named_scenarios
from harness.judge.gate import Case, evaluate
from harness.judge.patterns import Pattern, all_patterns
from harness.matrix import project_cases
from harness.model import DETECTORS, Outcome, Verdict
from harness.report.terminal import finding_lines
from harness.runner import RunResult, run_case

PATTERNS = all_patterns()
PAIRS = [p for p in PATTERNS if p.is_pair]


class ExpectedFinding(AssertionError):
    """The buggy variant showed exactly what its manifest says."""


def _story(result: RunResult, pattern: Pattern | None) -> str:
    index = result.program
    lines = [f"{result.name} under {result.scenario}: {result.verdict.label}"]
    lines += result.judgement.reasons
    if result.log:
        lines += finding_lines(result.log, index)
    lines.append(f"log: {result.log_path}")
    return "\n".join(lines)


CASES = project_cases(detectors=DETECTORS, informational=False)


def matrix_params():
    for case in CASES:
        marks = ()
        if case.variant == "buggy":
            marks = pytest.mark.xfail(strict=True, raises=ExpectedFinding, reason="the seed's bug")
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.valgrind
@pytest.mark.parametrize("case", list(matrix_params()))
def test_matrix(case: Case, tmp_path, build_dir) -> None:
    """Every pair's buggy variant under every detector its manifest names,
    every fixed variant under every detector and every scenario."""
    run = run_case(case.target, load_scenario(case.scenario), tmp_path / "run", case.options)
    result = evaluate(case, run, {})
    story = _story(run, case.pattern) + f"\noutcome: {result.outcome.label}: {result.message}"
    if case.variant == "buggy":
        if result.outcome is Outcome.XFAIL:
            raise ExpectedFinding(story)
        assert run.verdict is Verdict.CLEAN, "a different finding than the manifest's:\n" + story
        return      # clean: XPASS(strict) fails the suite
    assert result.outcome is Outcome.PASS, story
    if case.options.detector == "memcheck":
        assert run.log is not None and run.log.main.heap.all_freed, story
    assert run.log is not None and run.log.main.errors is not None
    assert run.log.main.errors.count == 0, story
    assert run.exit is not None and run.exit.returncode == 0, story


@pytest.mark.parametrize("pattern", PAIRS, ids=lambda p: p.name)
def test_manifest_is_consistent(pattern: Pattern) -> None:
    expect = pattern.expectation("buggy", pattern.detectors[0])
    assert re.fullmatch(r"\d{3}_[0-9a-f]{16}\.txt", pattern.seed), pattern.seed
    assert pattern.seed_story
    assert pattern.trigger in named_scenarios()
    load_scenario(pattern.trigger)
    for detector in pattern.detectors:
        expect = pattern.expectation("buggy", detector)
        assert expect is not None and expect.verdict is not Verdict.CLEAN
        if expect.verdict is Verdict.HANG:
            continue    # a hang has no record to point at
        assert expect.function and expect.file, f"{detector}: where must the finding point?"
        source = (pattern.directory / expect.file).read_text()
        assert re.search(rf"\b{expect.function}\(", source), f"{expect.function} not in {expect.file}"
    assert pattern.fix and pattern.mechanism and pattern.client and pattern.title


@pytest.mark.parametrize("pattern", PAIRS, ids=lambda p: p.name)
def test_top_comment_says_mechanism_trigger_and_signature(pattern: Pattern) -> None:
    for variant in ("buggy", "fixed"):
        text = pattern.source(variant).read_text()
        top = text[:text.index("*/")]
        assert top.startswith(f"/* {pattern.name}, {variant}:")
        for word in ("Mechanism", "Trigger", "valgrind"):
            assert word in top, f"{variant}.c top comment lacks {word!r}"


@pytest.mark.parametrize("pattern", PAIRS, ids=lambda p: p.name)
def test_diff_is_only_the_bug(pattern: Pattern) -> None:
    """buggy.c and fixed.c share everything but the bug and its fix: below
    the top comment, at most a third of the lines differ."""
    def body(variant: str) -> list[str]:
        text = pattern.source(variant).read_text()
        return text[text.index("*/") + 2:].splitlines()

    buggy, fixed = body("buggy"), body("fixed")
    diff = list(difflib.unified_diff(buggy, fixed, "buggy.c", "fixed.c", lineterm="", n=0))
    changed = [l for l in diff if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert changed, "buggy.c and fixed.c are identical"
    assert len(changed) <= (len(buggy) + len(fixed)) / 3, "\n".join(diff)


NATIVE = [p for p in PAIRS if p.native_failure]


@pytest.mark.parametrize("pattern", NATIVE, ids=lambda p: p.name)
def test_buggy_fails_visibly_without_valgrind(run_pattern, pattern: Pattern) -> None:
    """Natively the seed's failure shows too: glibc's double-free abort, the
    segfault."""
    result = run_pattern(pattern.name, "buggy", pattern.trigger, native=True)
    assert result.verdict is Verdict.CRASH, result.judgement.reasons
    assert result.exit is not None and result.exit.returncode is not None
    assert signal.Signals(-result.exit.returncode).name == pattern.native_failure
    if pattern.native_failure == "SIGABRT":
        assert "double free" in result.stderr_path.read_text()


@pytest.mark.parametrize("pattern", NATIVE, ids=lambda p: p.name)
def test_fixed_is_clean_without_valgrind(run_pattern, pattern: Pattern) -> None:
    result = run_pattern(pattern.name, "fixed", pattern.trigger, native=True)
    assert result.verdict is Verdict.CLEAN, result.judgement.reasons
    assert result.exit is not None and result.exit.returncode == 0
