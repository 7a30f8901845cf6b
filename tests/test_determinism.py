"""Every bug reproduces every run, every fix is clean every run, with the
other core busy: a CPU burner runs alongside.  `make test` repeats each case
DETERMINISM_REPEATS times (5); `make soak` 20 times."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.drive.scenario import load_scenario
from harness.judge.gate import evaluate
from harness.matrix import project_cases
from harness.model import DETECTORS, Outcome
from harness.runner import run_case

REPEATS = int(os.environ.get("DETERMINISM_REPEATS", "5"))
# The buggy variant under each detector its manifest names; the fixed one
# under the same detectors, on the same trigger.
CASES = [c for c in project_cases(detectors=DETECTORS, informational=False, every_scenario=())
         if c.pattern is not None and c.pattern.is_pair
         and c.options.detector in c.pattern.detectors]
pytestmark = [pytest.mark.valgrind, pytest.mark.xdist_group("determinism")]


@pytest.fixture(scope="module")
def busy_core():
    """Load on the other core, bounded: it ends itself after ten minutes."""
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nend = time.monotonic() + 600\n"
                               "while time.monotonic() < end: pass\n"])
    yield burner
    burner.kill()
    burner.wait()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_run_gives_the_same_answer(case, busy_core, build_dir, tmp_path) -> None:
    want = Outcome.XFAIL if case.variant == "buggy" else Outcome.PASS
    outcomes = []
    for i in range(REPEATS):
        run = run_case(case.target, load_scenario(case.scenario), tmp_path / str(i), case.options)
        result = evaluate(case, run, {})
        outcomes.append(result.outcome)
        assert result.outcome is want, f"run {i + 1}/{REPEATS}: {result.outcome.label}: {result.message}"
    assert busy_core.poll() is None, "the load ran the whole time"
    assert outcomes == [want] * REPEATS
