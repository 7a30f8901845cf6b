"""Every failing case comes with the one command that reproduces it, and the
run folder keeps the scenario as played: the command is run here and must
give the same signature, after the user's own scenario file is gone."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.cli import build_parser
from harness.drive.launch import Target
from harness.options import make_options, options_from_args
from harness.repro import run_args

ROOT = Path(__file__).resolve().parent.parent

READ_SCENARIO = """description = "a line the toy server answers with a read of a freed block"
[[steps]]
do = "open"
conn = "c"
[[steps]]
do = "send"
conn = "c"
text = "READ\\n"
[[steps]]
do = "expect"
conn = "c"
echo = true
"""


def harness(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def shell(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a person runs it: no PYTHONPATH of the test's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(["/bin/bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_option_args_give_the_same_options_back(tmp_path: Path) -> None:
    supp = tmp_path / "my.supp"
    supp.write_text("{\n x\n Memcheck:Leak\n ...\n}\n")
    conf = tmp_path / "srv.conf"
    conf.write_text("port {port}\n")
    options = make_options(detector="helgrind", leak_kinds="definite,possible",
                           stop_signal="SIGINT", track_origins=True, suppressions=[str(supp)],
                           valgrind_args=["--num-callers=40"], cwd=str(tmp_path),
                           env=["MODE=a b", "X="], config_template=[f"{conf}:x.conf"],
                           follow_children=True)
    options.source_dirs = [str(tmp_path)]
    target = Target(argv=["./srv", "--conf", "{config}", "{port}"], port_mode="substitute")
    args = run_args(target, options, tmp_path / "s.toml")
    assert args[:3] == ["run", "--cmd", "./srv --conf {config} {port}"]
    ns = build_parser().parse_args(args)
    back = options_from_args(ns, default_leak_kinds="strict")
    back.source_dirs = list(ns.source_dir)
    assert back == options
    assert ns.scenario == str(tmp_path / "s.toml")


def test_a_pair_is_named_by_pattern_and_variant(tmp_path: Path) -> None:
    target = Target(argv=["build/servers/x/buggy", "--port", "0"], pattern="x", variant="buggy")
    options = make_options(detector="asan")
    options.source_dirs = ["servers/x"]     # run PATTERN finds them itself
    assert run_args(target, options, "/r/scenario.toml") == [
        "run", "x", "--variant", "buggy", "--scenario", "/r/scenario.toml", "--detector", "asan"]


def test_the_run_folder_keeps_the_scenario_as_played_with_the_seed_it_drew(
        toy_server: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "unseeded.toml"
    scenario.write_text('[[steps]]\ndo = "fuzz"\nops = 40\nmax_conns = 3\n')
    proc = harness("run", "--cmd", f"{toy_server} echo {{port}}", "--native", "--scenario",
                   str(scenario), "--out", str(tmp_path / "out"), "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    seed = int(re.search(r"seed (\d+)", " ".join(data["notes"])).group(1))
    run_dir = Path(data["log"] or data["stdout"]).parent
    kept = (run_dir / "scenario.toml").read_text()
    assert kept.startswith("# The scenario unseeded")
    assert tomllib.loads(kept)["steps"] == [{"do": "fuzz", "ops": 40, "max_conns": 3,
                                            "seed": seed}]
    assert data["repro"]["command"] in kept
    assert "--native" in data["repro"]["args"]
    played = json.loads((run_dir / "played.json").read_text())
    assert played["1"]["seed"] == seed and played["1"]["complete"]
    ops = played["1"]["ops"]
    assert ops and ops[0] == {"op": "open", "conn": 1}
    assert {o["op"] for o in ops} <= {"open", "send", "drain", "half_close", "close", "reset",
                                      "stall"}


@pytest.mark.valgrind
def test_gate_prints_a_command_that_reproduces_the_failure(toy_server: Path,
                                                           tmp_path: Path) -> None:
    scenario = tmp_path / "read.toml"
    scenario.write_text(READ_SCENARIO)
    out = tmp_path / "report"
    # Run from a folder of the user's: the command says where the harness is.
    proc = harness("gate", "--cmd", f"{toy_server} invalid-read {{port}}", "--scenario",
                   "read.toml", "--out", str(out), "--junit", str(out / "junit.xml"),
                   cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    printed = re.findall(r"^    reproduce: (.+)$", proc.stdout, re.M)
    assert len(printed) == 1, proc.stdout
    assert printed[0].startswith(f"PYTHONPATH={ROOT} python3 -m harness run --cmd ")
    summary = json.loads((out / "summary.json").read_text())
    case = summary["cases"][0]
    assert case["repro"]["command"] == printed[0]
    # The report folder is below where the gate ran: the path is relative to
    # it, as it is for a CI's report downloaded into a checkout.
    assert printed[0].endswith(f"--scenario report/{case['files']['run_dir']}/scenario.toml")
    assert "reproduce: <code>" in (out / "summary.md").read_text()
    assert "reproduce locally:" in (out / "index.html").read_text()
    assert f"reproduce: {printed[0]}" in (out / "junit.xml").read_text().replace("&apos;", "'")
    scenario.unlink()       # the command uses the run folder's copy
    moved = tmp_path / "elsewhere"          # the report, downloaded into another checkout
    moved.mkdir()
    (tmp_path / "report").rename(moved / "report")
    again = shell(printed[0] + f" --out {shlex.quote(str(tmp_path / 'again'))} --json -",
                  moved)
    assert again.returncode == 1, again.stderr
    data = json.loads(again.stdout)
    assert data["verdict"] == case["verdict"] == "memory-error"
    assert data["signatures"] == case["signatures"]
    assert data["signatures"][0].startswith("InvalidRead serve_chunk@toy_server.c")


@pytest.mark.valgrind
def test_matrix_names_a_pair_and_its_command_reproduces_it(build_dir: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "matrix"
    proc = harness("matrix", "--pattern", "double_delete", "--variant", "buggy",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    case = json.loads((out / "summary.json").read_text())["cases"][0]
    assert case["outcome"] == "xfail"
    args = case["repro"]["args"]
    assert args[:4] == ["run", "double_delete", "--variant", "buggy"]
    command = case["repro"]["command"]
    again = shell(command + f" --out {shlex.quote(str(tmp_path / 'again'))} --json -", ROOT)
    assert again.returncode == 1, again.stderr
    data = json.loads(again.stdout)
    assert data["verdict"] == "memory-error"
    assert set(case["signatures"]) & set(data["signatures"])
    assert any(s.startswith("InvalidFree session_delete@buggy.c") for s in data["signatures"])
