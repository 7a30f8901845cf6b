"""The harness runs servers that are not ours in shape: a Python script
(natively, --native) and the plain-sockets C toy_server (under valgrind),
through the command line, as a user would."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from harness.drive.launch import free_port
from procs import processes_running

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
TOY = ROOT / "build" / "progs" / "toy_server"

ECHO_SCRIPT = r'''
import signal, socket, sys, threading

def serve(conn):
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass

def main():
    port = int(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

main()
'''

FAILING_SCRIPT = r'''
import sys
print("pyecho: cannot read /etc/pyecho.conf: no such file", file=sys.stderr)
sys.exit(3)
'''


def harness(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def result_json(stdout: str) -> dict:
    """`--json -`: the JSON document is all of stdout (the summary is on stderr)."""
    return json.loads(stdout)


def script(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- a Python server, natively ---------------------------------------------------------
def test_python_echo_server_is_clean(tmp_path: Path):
    srv = script(tmp_path, ECHO_SCRIPT, "pyecho.py")
    proc = harness("run", "--cmd", f"{PYTHON} {srv} {{port}}", "--native", "--scenario", "echo",
                   "--json", "-", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = result_json(proc.stdout)
    assert data["verdict"] == "clean", data
    assert data["scenario_failures"] == []
    assert data["exit"]["returncode"] == 0


def test_python_echo_server_on_a_fixed_port(tmp_path: Path):
    srv = script(tmp_path, ECHO_SCRIPT, "pyecho.py")
    port = free_port()
    proc = harness("run", "--cmd", f"{PYTHON} {srv} {port}", "--port", str(port), "--native",
                   "--scenario", "echo", "--json", "-", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = result_json(proc.stdout)
    assert data["verdict"] == "clean" and data["port"] == port, data


def test_python_server_that_fails_at_start(tmp_path: Path):
    srv = script(tmp_path, FAILING_SCRIPT, "pyfail.py")
    proc = harness("run", "--cmd", f"{PYTHON} {srv} {{port}}", "--native", "--scenario", "echo",
                   "--json", "-", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = result_json(proc.stdout)
    assert data["verdict"] == "startup-failure", data
    assert data["ready"] is False and data["exit"]["returncode"] == 3
    assert "pyecho: cannot read /etc/pyecho.conf: no such file" in proc.stderr


# -- toy_server under valgrind ----------------------------------------------------------
@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A private copy of toy_server: a unique path to look for in /proc."""
    if not TOY.exists():
        pytest.fail("build/progs/toy_server is missing: run `make servers progs`")
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed: `make deps` installs it")
    path = tmp_path / f"toy_server_{uuid.uuid4().hex[:8]}"
    shutil.copy2(TOY, path)
    return path


@pytest.mark.valgrind
@pytest.mark.parametrize("name", ["echo", "reset", "half-close-partial", "idle-at-stop"])
def test_toy_server_echo_under_valgrind_is_clean(toy: Path, tmp_path: Path, name: str):
    proc = harness("run", "--cmd", f"{toy} echo {{port}}", "--scenario", name, "--json", "-",
                   "--out", str(tmp_path / "out"))
    data = result_json(proc.stdout)
    assert (proc.returncode, data["verdict"]) == (0, "clean"), data["reasons"]
    assert data["processes"] == 1
    assert data["exit"]["returncode"] == 0 and not data["exit"]["hung"]
    assert processes_running(toy) == []


@pytest.mark.valgrind
def test_toy_server_hang_and_never_listen_leave_nothing_behind(toy: Path, tmp_path: Path):
    """ignore-term: only SIGKILL ends it (hang); never-listen: startup
    failure.  Both wait out a (scaled) deadline, so they run side by side."""
    env = dict(os.environ, HARNESS_TIMEOUT_MULTIPLIER="0.2")
    runs = {}
    for mode in ("ignore-term", "never-listen"):
        runs[mode] = subprocess.Popen(
            [PYTHON, "-m", "harness", "run", "--cmd", f"{toy} {mode} {{port}}", "--json", "-",
             "--out", str(tmp_path / mode)], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    for mode, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[mode] = (proc.returncode, result_json(stdout), stderr)
    assert processes_running(toy) == []

    code, data, stderr = out["ignore-term"]
    assert (code, data["verdict"]) == (1, "hang"), (data["reasons"], stderr)
    assert data["exit"]["hung"] and data["exit"]["returncode"] == -9
    assert "killed with SIGKILL" in data["reasons"][0]

    code, data, stderr = out["never-listen"]
    assert (code, data["verdict"]) == (1, "startup-failure"), (data["reasons"], stderr)
    assert data["ready"] is False
    assert any(r.startswith("did not start listening on 127.0.0.1:") for r in data["reasons"])


@pytest.mark.valgrind
def test_toy_server_dies_at_start(toy: Path, tmp_path: Path):
    proc = harness("run", "--cmd", f"{toy} die-at-start {{port}}", "--json", "-",
                   "--out", str(tmp_path / "out"))
    data = result_json(proc.stdout)
    assert (proc.returncode, data["verdict"]) == (1, "startup-failure"), data["reasons"]
    assert "exited before it was listening" in data["reasons"]
    assert "toy_server: cannot start (on purpose)" in proc.stderr
    assert processes_running(toy) == []
