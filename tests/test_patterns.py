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

from harness.frames import SourceIndex
from harness.model import Verdict
from harness.patterns import ROOT, Pattern, all_patterns
from harness.runner import RunResult
from harness.scenario import load_scenario, named_scenarios
from harness.terminal import finding_lines

PATTERNS = all_patterns()
PAIRS = [p for p in PATTERNS if p.is_pair]


class ExpectedFinding(AssertionError):
    """The buggy variant showed exactly what its manifest says."""


def _story(result: RunResult, pattern: Pattern) -> str:
    index = SourceIndex.scan([pattern.directory, ROOT / "servers" / "common"])
    lines = [f"{result.name} under {result.scenario}: {result.verdict.label}"]
    lines += result.judgement.reasons
    if result.log:
        lines += finding_lines(result.log, index)
    lines.append(f"log: {result.log_path}")
    return "\n".join(lines)


def points_at(result: RunResult, kind: str | None, function: str | None, file: str | None) -> bool:
    """A finding of `kind` with a frame in `function` of `file` (any stack:
    the access, or where the block was freed or allocated)."""
    for finding in result.judgement.findings:
        if kind and finding.kind != kind:
            continue
        stacks = [finding.stack] + [a.stack for a in finding.aux]
        for frame in (f for s in stacks for f in s):
            if (function is None or frame.fn == function) and (file is None or frame.file == file):
                return True
    return False


def matrix_cases():
    for pattern in PATTERNS:
        scenarios = pattern.scenarios or named_scenarios()
        for variant in pattern.variants:
            if variant == "buggy":
                yield pytest.param(pattern, variant, pattern.trigger,
                                   id=f"{pattern.name}-buggy-{pattern.trigger}",
                                   marks=pytest.mark.xfail(strict=True, raises=ExpectedFinding,
                                                           reason="the seed's bug"))
            else:
                for scenario in scenarios:
                    yield pytest.param(pattern, variant, scenario,
                                       id=f"{pattern.name}-{variant}-{scenario}")


@pytest.mark.valgrind
@pytest.mark.parametrize("pattern,variant,scenario", list(matrix_cases()))
def test_matrix(run_pattern, pattern: Pattern, variant: str, scenario: str) -> None:
    result = run_pattern(pattern.name, variant, scenario)
    story = _story(result, pattern)
    if variant == "buggy":
        expect = pattern.expectation("buggy")
        if result.verdict is expect.verdict and points_at(result, expect.kind, expect.function,
                                                          expect.file):
            raise ExpectedFinding(story)
        assert result.verdict is Verdict.CLEAN, "a different finding than the manifest's:\n" + story
        return      # clean: XPASS(strict) fails the suite
    assert result.verdict is Verdict.CLEAN, story
    assert result.log is not None and result.log.main.heap.all_freed, story
    assert result.log.main.errors is not None and result.log.main.errors.count == 0, story
    assert result.exit is not None and result.exit.returncode == 0, story


@pytest.mark.parametrize("pattern", PAIRS, ids=lambda p: p.name)
def test_manifest_is_consistent(pattern: Pattern) -> None:
    expect = pattern.expectation("buggy")
    assert re.fullmatch(r"\d{3}_[0-9a-f]{16}\.txt", pattern.seed), pattern.seed
    assert pattern.seed_story
    assert pattern.trigger in named_scenarios()
    load_scenario(pattern.trigger)
    assert expect.verdict is not Verdict.CLEAN
    assert expect.kind and expect.function and expect.file == "buggy.c"
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


NATIVE = [p for p in PAIRS if p.expectation("buggy").native]


@pytest.mark.parametrize("pattern", NATIVE, ids=lambda p: p.name)
def test_buggy_fails_visibly_without_valgrind(run_pattern, pattern: Pattern) -> None:
    """Natively the seed's failure shows too: glibc's double-free abort, the
    segfault."""
    expect = pattern.expectation("buggy")
    result = run_pattern(pattern.name, "buggy", pattern.trigger, native=True)
    assert result.verdict is Verdict.CRASH, result.judgement.reasons
    assert result.exit is not None and result.exit.returncode is not None
    assert signal.Signals(-result.exit.returncode).name == expect.native
    if expect.native == "SIGABRT":
        assert "double free" in result.stderr_path.read_text()


@pytest.mark.parametrize("pattern", NATIVE, ids=lambda p: p.name)
def test_fixed_is_clean_without_valgrind(run_pattern, pattern: Pattern) -> None:
    result = run_pattern(pattern.name, "fixed", pattern.trigger, native=True)
    assert result.verdict is Verdict.CLEAN, result.judgement.reasons
    assert result.exit is not None and result.exit.returncode == 0
