"""The parser fuzzed with hypothesis on truncated, shuffled and corrupted real
logs: it never raises anything but LogParseError, and a log without its
summaries is never judged clean."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.judge.verdict import LeakPolicy, judge
from harness.logs.vglog import LogParseError, parse_lines, parse_text
from harness.model import ExitInfo, Verdict

INPUTS = Path(__file__).parent / "inputs"
LOGS = {p.name: p.read_text() for p in sorted(INPUTS.glob("*.log"))}
NAMES = sorted(LOGS)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def judged(text: str):
    """The verdict, or None when the parser refused the text (cleanly)."""
    try:
        log = parse_text(text)
    except LogParseError:
        return None
    return judge(log, ExitInfo(returncode=0, stop_signal=15), LeakPolicy()).verdict


FULL_SUMMARY = re.compile(r"ERROR SUMMARY: [\d,]+ errors from [\d,]+ contexts "
                          r"\(suppressed: [\d,]+ from [\d,]+\)")


def has_summaries(text: str) -> bool:
    return bool(FULL_SUMMARY.search(text))


@FUZZ
@given(name=st.sampled_from(NAMES), cut=st.floats(0, 1))
def test_truncated_logs(name: str, cut: float) -> None:
    text = LOGS[name]
    cut_text = text[:int(len(text) * cut)]
    verdict = judged(cut_text)
    if not FULL_SUMMARY.search(cut_text):
        assert verdict is not Verdict.CLEAN


@FUZZ
@given(name=st.sampled_from(NAMES), seed=st.randoms(use_true_random=False))
def test_shuffled_lines(name: str, seed) -> None:
    lines = LOGS[name].splitlines()
    seed.shuffle(lines)
    judged("\n".join(lines))


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.data())
def test_corrupted_bytes(name: str, data) -> None:
    text = bytearray(LOGS[name].encode())
    for _ in range(data.draw(st.integers(1, 30))):
        i = data.draw(st.integers(0, len(text) - 1))
        text[i] = data.draw(st.integers(0, 255))
    decoded = text.decode(errors="replace")
    verdict = judged(decoded)
    if not has_summaries(decoded):
        assert verdict is not Verdict.CLEAN


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.data())
def test_dropped_lines_without_summaries_never_clean(name: str, data) -> None:
    lines = LOGS[name].splitlines()
    keep = [l for l in lines if data.draw(st.booleans())]
    text = "\n".join(keep)
    verdict = judged(text)
    if not any("ERROR SUMMARY:" in l for l in keep):
        assert verdict is not Verdict.CLEAN


@FUZZ
@given(st.text(max_size=2000))
def test_arbitrary_text(text: str) -> None:
    judged(text)
    try:
        parse_lines(text.splitlines(keepends=True))
    except LogParseError:
        pass
