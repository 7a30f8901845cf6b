"""The composite GitHub Action (action.yml) and the CI examples of
docs/ci.md: every step's script, the inputs declared against the inputs
used, and every harness command they run against the command line itself;
the gate step is run for real."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yamlish

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
ACTION_TEXT = (ROOT / "action.yml").read_text()
ACTION = yamlish.load(ACTION_TEXT)
STEPS = ACTION["runs"]["steps"]
GATE_STEP = next(s for s in STEPS if s.get("id") == "gate")
DOC_BLOCKS = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "ci.md").read_text(), re.S)
TOY_LEAK = "Leak_DefinitelyLost remember_line@toy_server.c < serve_chunk@toy_server.c < serve@toy_server.c"


def subcommand_options(*path: str) -> set[str]:
    """Every option string of a subcommand (`gate`, `report merge`)."""
    parser: argparse.ArgumentParser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {s for action in parser._actions for s in action.option_strings}


def test_every_step_is_a_named_bash_script_or_a_pinned_action() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert ACTION["name"] and ACTION["description"]
    for step in STEPS:
        assert step.get("name"), step
        assert ("run" in step) != ("uses" in step), step["name"]
        if "run" in step:
            assert step["shell"] == "bash", step["name"]
            check = subprocess.run(["bash", "-n"], input=step["run"], text=True, capture_output=True)
            assert check.returncode == 0, (step["name"], check.stderr)
        else:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]
    names = [s["name"] for s in STEPS]
    assert any("valgrind" in s.get("run", "") and "apt-get install" in s.get("run", "") for s in STEPS), names
    uses = {s["uses"].split("@")[0]: s for s in STEPS if "uses" in s}
    assert uses["actions/upload-artifact"]["with"]["path"] == "${{ inputs.out }}"
    assert uses["actions/upload-artifact"]["if"] == "always()"
    assert uses["github/codeql-action/upload-sarif"]["with"]["sarif_file"] == "${{ inputs.out }}/report.sarif"


def test_the_inputs_declared_are_the_inputs_used() -> None:
    declared = set(ACTION["inputs"])
    used = set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", ACTION_TEXT))
    assert used == declared
    assert declared >= {"command", "scenarios", "baseline", "suppressions", "leak-kinds", "jobs", "shard"}
    for name, spec in ACTION["inputs"].items():
        assert spec["description"], name
        assert spec.get("required") is True or "default" in spec, name
    # The gate's script reads each input through its own variable, set from the input.
    env = GATE_STEP["env"]
    assert set(env.values()) == {f"${{{{ inputs.{n} }}}}" for n in declared}
    script_vars = set(re.findall(r"\$\{?(LH_[A-Z_]+)", GATE_STEP["run"]))
    assert script_vars == set(env)
    assert "${{" not in GATE_STEP["run"], "inputs reach the script through the environment only"


def test_the_gate_step_uses_only_options_the_gate_has() -> None:
    script = GATE_STEP["run"]
    # What goes into the gate's argument array: args=(...) and each args+=(...).
    words = " ".join(re.findall(r"args\+?=\(([^)]*)\)", script, re.S))
    used = set(re.findall(r"(?<![\w$/-])(--?[a-z][a-z-]*)", words))
    assert used >= {"--cmd", "--scenario", "--baseline", "--suppressions", "--leak-kinds", "-j",
                    "--shard", "--out", "--sarif", "--junit", "--source-dir"}
    assert used <= subcommand_options("gate"), used - subcommand_options("gate")
    assert "leak-harness\" \"${args[@]}\"" in script and "args=(gate " in script


def test_the_gate_step_runs_the_gate(toy_server: Path, tmp_path: Path) -> None:
    """The step's own script, with the harness of this checkout as the
    installed command: every input set."""
    runner = tmp_path / "runner"
    (runner / "leak-harness" / "bin").mkdir(parents=True)
    shim = runner / "leak-harness" / "bin" / "leak-harness"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m harness "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(f'[[accepted]]\nsignature = "{TOY_LEAK}"\n')
    supp = tmp_path / "none.supp"
    supp.write_text("{\n   nothing\n   Memcheck:Leak\n   fun:no_such_function\n}\n")
    outputs = tmp_path / "github_output"
    env = dict(os.environ, PYTHONPATH=str(ROOT), RUNNER_TEMP=str(runner), GITHUB_OUTPUT=str(outputs),
               LH_COMMAND=f"{toy_server} leak {{port}}", LH_SCENARIOS="echo\nreset",
               LH_BASELINE=str(baseline), LH_SUPPRESSIONS=str(supp), LH_LEAK_KINDS="definite,indirect",
               LH_JOBS="2", LH_SHARD="1/1", LH_SOURCE_DIR="tests/progs", LH_OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", "-e", "-c", GATE_STEP["run"]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED: 2 cases (shard 1/1 of the gate's 2) (2 known)" in proc.stdout
    assert outputs.read_text() == "artifact=leak-report-shard-1-of-1\n"
    for name in ("index.html", "summary.json", "report.sarif", "junit.xml"):
        assert (tmp_path / "out" / name).is_file(), name


def _runs(job: dict) -> list[str]:
    if "steps" in job:
        return [s["run"] for s in job["steps"] if "run" in s]
    return list(job.get("script", []))


def test_the_workflows_in_the_docs_run_real_commands() -> None:
    assert len(DOC_BLOCKS) == 3
    commands = []
    for block in DOC_BLOCKS:
        data = yamlish.load(block)
        jobs = data["jobs"] if "jobs" in data else data
        for job in jobs.values():
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("OWNER/leak-harness@"):
                    given = set(step["with"])
                    assert given <= set(ACTION["inputs"]), given - set(ACTION["inputs"])
                    required = {n for n, s in ACTION["inputs"].items() if s.get("required") is True}
                    assert required <= given
            for script in _runs(job):
                for line in script.replace("\\\n", " ").splitlines():
                    words = shlex.split(line)
                    at = [i for i, w in enumerate(words) if w.endswith("/bin/leak-harness")]
                    if at:
                        commands.append(words[at[0] + 1:])
    assert sorted(c[0] for c in commands) == ["gate", "report"]
    for args in commands:
        build_parser().parse_args(args)     # exits 2 on an unknown command or option
    sharded = yamlish.load(DOC_BLOCKS[1])
    assert sharded["jobs"]["gate"]["strategy"]["matrix"]["shard"] == ["1/3", "2/3", "3/3"]
    assert sharded["jobs"]["merge"]["needs"] == "gate"
    gitlab = yamlish.load(DOC_BLOCKS[2])["leak-gate"]
    assert gitlab["artifacts"]["reports"]["junit"] == "leak-report/junit.xml"
    gate = next(c for c in commands if c[0] == "gate" and "--junit" in c)
    assert gate[gate.index("--junit") + 1] == "leak-report/junit.xml"


def test_the_reader_agrees_with_pyyaml() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the reader alone is checked")

    def normal(data):
        if isinstance(data, dict) and True in data:     # YAML 1.1 reads the key `on` as true
            data["on"] = data.pop(True)
        return data

    for text in [ACTION_TEXT] + DOC_BLOCKS:
        assert yamlish.load(text) == normal(yaml.safe_load(text))


def test_the_reader_refuses_what_it_does_not_know() -> None:
    for text in ("a: [1, 2]\n", "a:\n\tb: 1\n", "a: 1\na: 2\n", "a: &x 1\n"):
        with pytest.raises(yamlish.YamlError):
            yamlish.load(text)
