"""End to end through the CLI: real servers under valgrind, real verdicts,
and no process left behind."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from procs import processes_running

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.valgrind


def harness(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_echo_server_is_clean(build_dir: Path, tmp_path: Path) -> None:
    proc = harness("run", "echo", "--json", "-", "--out", str(tmp_path))
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["verdict"] == "clean"
    assert data["fatal_signal"] is None
    assert data["errors"] == {"count": 0, "contexts": 0, "suppressed": 0, "suppressed_contexts": 0}
    assert data["heap"]["in_use"] == {"bytes": 0, "blocks": 0}
    assert data["heap"]["all_freed"] is True
    assert data["findings"] == []
    assert data["exit"]["returncode"] == 0
    for key in ("log", "stdout", "stderr"):
        assert Path(data[key]).exists()
    assert "stopped cleanly" in Path(data["stderr"]).read_text()
    assert Path(data["stdout"]).read_text().startswith("listening on 127.0.0.1:")


def test_leaking_program_is_leak_naming_the_allocating_function(toy_server: Path, tmp_path: Path) -> None:
    proc = harness("run", "--cmd", f"{toy_server} leak {{port}}", "--json", str(tmp_path / "r.json"),
                   "--out", str(tmp_path))
    data = json.loads((tmp_path / "r.json").read_text())
    assert proc.returncode == 1, proc.stdout
    assert data["verdict"] == "leak"
    leaks = [f for f in data["findings"] if f["kind"] == "Leak_DefinitelyLost"]
    assert leaks and leaks[0]["bytes"] == len("hello\n") + 9 and leaks[0]["blocks"] == 1
    assert leaks[0]["stack"][1]["fn"] == "remember_line"
    assert leaks[0]["stack"][1]["file"] == "toy_server.c"
    assert data["heap"]["definitely_lost"] == {"bytes": 15, "blocks": 1}
    assert "remember_line (toy_server.c:" in proc.stdout


def test_null_function_call_is_crash_with_sigsegv_and_invalid_jump(toy_server: Path, tmp_path: Path) -> None:
    proc = harness("run", "--cmd", f"{toy_server} nullcall {{port}}", "--json", "-",
                   "--out", str(tmp_path))
    data = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert data["verdict"] == "crash"
    assert data["fatal_signal"] == "SIGSEGV"
    assert data["fatal"]["address"] == "0x0"
    assert [f["kind"] for f in data["findings"] if not f["kind"].startswith("Leak_")] == ["InvalidJump"]
    assert data["exit"]["returncode"] == -11


@pytest.mark.parametrize("detector", ["memcheck", "helgrind"])
def test_server_ignoring_sigterm_is_hang_and_nothing_is_left(
        toy_server: Path, tmp_path: Path, detector: str) -> None:
    """Killed after its stop deadline, a hang; before the kill, vgdb's answers
    go to hang.txt: every thread's stack, and memcheck's leak check.  Helgrind
    and DRD have no leak check among their monitor commands: they are not
    asked for one."""
    proc = harness("run", "--cmd", f"{toy_server} ignore-term {{port}}", "--detector", detector,
                   "--json", "-", "--out", str(tmp_path), env={"HARNESS_TIMEOUT_MULTIPLIER": "0.1"})
    data = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert data["verdict"] == "hang", data["reasons"]
    assert data["exit"]["hung"] is True and data["exit"]["returncode"] == -9
    assert "SIGKILL" in " ".join(data["reasons"])
    assert data["hang"] and data["hang"][0]["stack"], data["reasons"]
    [hang] = tmp_path.glob("*/hang.txt")
    text = hang.read_text()
    assert "== v.info scheduler ==" in text
    assert "not recognised" not in text, text
    if detector == "memcheck":
        assert "== leak_check full reachable any ==" in text
        assert re.search(r"LEAK SUMMARY|All heap blocks were freed", text), text
    else:
        assert "leak_check" not in text, text
    assert processes_running(f"{toy_server} ignore-term") == []


def test_death_by_the_stop_signal_is_not_a_crash(toy_server: Path, tmp_path: Path) -> None:
    """A server without a SIGINT handler dies of the signal we send: judged on
    its heap, not as a crash."""
    proc = harness("run", "--cmd", f"{toy_server} ignore-term {{port}}", "--stop-signal", "SIGUSR1",
                   "--json", "-", "--out", str(tmp_path))
    data = json.loads(proc.stdout)
    assert data["fatal_signal"] == "SIGUSR1"
    assert data["verdict"] == "clean", data["reasons"]
    assert proc.returncode == 0


def test_repeat_reports_the_reproduction_rate(build_dir: Path, tmp_path: Path) -> None:
    proc = harness("run", "double_delete", "--variant", "buggy", "--repeat", "3", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "reproduction rate: 3/3 runs were memory-error with InvalidFree" in proc.stdout


def test_harness_interrupted_leaves_no_server(toy_server: Path, tmp_path: Path) -> None:
    """SIGTERM to the harness mid-run (after the server is up): it kills the
    server's process group and exits 130."""
    script = tmp_path / "scenario.toml"
    script.write_text('[[steps]]\ndo = "open"\nconn = "c"\n\n[[steps]]\ndo = "pause"\nseconds = 10\n')
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--cmd",
                             f"{toy_server} ignore-term {{port}}", "--scenario", str(script),
                             "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline_ok = False
    for _ in range(300):
        # The server is up once the harness's client is connected: wait for
        # the toy server's own line in its stderr file.
        err = tmp_path / "toy_server-scenario" / "stderr.txt"
        if err.exists() and "mode on port" in err.read_text():
            deadline_ok = True
            break
        try:
            proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
    assert deadline_ok, "the server never came up"
    proc.terminate()
    out, errtext = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + errtext
    assert "interrupted" in errtext
    assert processes_running(f"{toy_server} ignore-term") == []
