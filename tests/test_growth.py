"""--load N1,N2: the leak per connection and the constant part."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.drive.scenario import load_scenario
from harness.tools.growth import slope, with_load

ROOT = Path(__file__).resolve().parent.parent


def test_slope_arithmetic() -> None:
    fit = slope([(2, 784, 3), (10, 3728, 11)])
    assert fit.bytes_per_conn == 368 and fit.blocks_per_conn == 1
    assert fit.const_bytes == 48 and fit.const_blocks == 1
    assert slope([(2, 16, 1), (10, 16, 1)]).bytes_per_conn == 0
    with pytest.raises(ValueError):
        slope([(3, 1, 1), (3, 2, 2)])


def test_with_load_scales_only_explicit_counts() -> None:
    scenario = load_scenario("sessions-at-stop")
    scaled = with_load(scenario, 7)
    counts = [s.args.get("count") for s in scaled.steps if s.do == "open"]
    assert counts == [None, 7]
    assert [s.args.get("count") for s in scenario.steps if s.do == "open"] == [None, 3]
    with pytest.raises(ValueError, match="no connection count"):
        with_load(load_scenario("echo"), 5)


def load(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *args, "--json", "-"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return json.loads(proc.stdout)


@pytest.mark.valgrind
def test_fire_and_forget_leaks_per_session(build_dir, tmp_path) -> None:
    data = load("fire_and_forget", "--variant", "buggy", "--load", "2,8", "--out", str(tmp_path))
    s = data["slope"]
    assert s["blocks_per_connection"] == 1.0
    assert s["bytes_per_connection"] > 100          # one session's state per session
    assert s["constant_blocks"] == 1.0              # the accept loop's
    assert [p["connections"] for p in s["points"]] == [2, 8]


@pytest.mark.valgrind
def test_one_time_leak_has_slope_zero(toy_server, tmp_path) -> None:
    scenario = tmp_path / "conns.toml"
    scenario.write_text('[[steps]]\ndo = "open"\nconn = "c"\ncount = 2\n\n'
                        '[[steps]]\ndo = "close"\nconn = "c"\n')
    data = load("--cmd", f"{toy_server} leak-once {{port}}", "--scenario", str(scenario),
                "--load", "2,10", "--out", str(tmp_path))
    s = data["slope"]
    assert s["bytes_per_connection"] == 0 and s["blocks_per_connection"] == 0
    assert s["constant_bytes"] > 0 and s["constant_blocks"] == 1
