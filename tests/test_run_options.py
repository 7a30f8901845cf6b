"""The run options every valgrind user expects, on a server the project did
not write: suppressions read and written, valgrind's own options passed
through (and the harness's refused), the server's working directory,
environment and config file, and its own frames found without being told
where its sources are, also in a binary without debug information."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.logs.vglog import parse_text
from harness.options import OWNED_VALGRIND_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
INPUTS = Path(__file__).parent / "inputs"
TOY = ROOT / "build" / "progs" / "toy_server"
PYTHON = sys.executable
ECHO = ROOT / "scenarios" / "echo.toml"


def harness(*args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([PYTHON, "-m", "harness", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def gate_json(*args: str, cwd: Path = ROOT) -> tuple[int, dict, str]:
    proc = harness("gate", *args, "--json", "-", cwd=cwd)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


# -- valgrind's own suppression entries ----------------------------------------------
@pytest.mark.parametrize("log, kind, first_fun", [
    ("gen-suppressions-leaks.log", "Memcheck:Leak", "fun:malloc"),
    ("gen-suppressions-free.log", "Memcheck:Free", "fun:free"),
])
def test_the_parser_keeps_each_findings_suppression_entry(log, kind, first_fun) -> None:
    parsed = parse_text((INPUTS / log).read_text())
    findings = parsed.main.findings
    assert findings and all(f.suppression for f in findings)
    for f in findings:
        lines = f.suppression.splitlines()
        assert lines[0] == "{" and lines[-1] == "}"
        assert lines[1].strip() == "<insert_a_suppression_name_here>"
        assert lines[2].strip() == kind
        # The entry's functions are the finding's own stack, top first.
        funs = [line.strip()[4:] for line in lines if line.strip().startswith("fun:")]
        assert funs == [fr.fn for fr in f.stack][:len(funs)]
    assert parsed.main.errors is not None      # the blocks did not end the log early


@pytest.mark.valgrind
def test_write_suppressions_then_use_them(build_dir, tmp_path) -> None:
    supp = tmp_path / "toy.supp"
    code, data, err = gate_json("--cmd", f"{TOY} leak {{port}}", "--scenario", str(ECHO),
                                "--write-suppressions", str(supp), "--out", str(tmp_path / "a"))
    assert code == 1, err
    text = supp.read_text()
    sig = data["cases"][0]["signatures"][0]
    assert sig.startswith("Leak_DefinitelyLost remember_line@toy_server.c")
    assert "{\n   " + sig + "\n   Memcheck:Leak\n" in text
    code, data, err = gate_json("--cmd", f"{TOY} leak {{port}}", "--scenario", str(ECHO),
                                "--suppressions", str(supp), "--out", str(tmp_path / "b"))
    case = data["cases"][0]
    assert (code, case["outcome"], case["verdict"]) == (0, "pass", "clean"), err
    assert case["errors"]["suppressed"] == 1
    assert case["heap"]["suppressed"]["blocks"] >= 1
    md = (tmp_path / "b" / "summary.md").read_text()
    assert "## Suppressed" in md and f"{case['heap']['suppressed']['bytes']:,} bytes" in md


def test_a_suppressions_file_that_is_not_there(tmp_path) -> None:
    proc = harness("gate", "--cmd", f"{TOY} echo {{port}}", "--suppressions",
                   str(tmp_path / "nope.supp"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "--suppressions" in proc.stderr and "nope.supp" in proc.stderr


# -- valgrind's options, passed through or refused -------------------------------------
@pytest.mark.parametrize("arg", ["--log-file=/tmp/x.log", "--xml=yes", "--xml-file=/tmp/x.xml",
                                 "--tool=massif", "--vgdb-prefix=/tmp/p", "--log-fd=9"])
def test_the_harness_own_valgrind_options_are_refused(tmp_path, arg) -> None:
    proc = harness("run", "--cmd", f"{TOY} echo {{port}}", f"--valgrind-arg={arg}",
                   "--out", str(tmp_path))
    name = arg.split("=")[0]
    owned = next(o for o in OWNED_VALGRIND_OPTIONS if name == o or name.startswith(o))
    assert proc.returncode == 2, proc.stderr
    assert f"the harness owns {owned}" in proc.stderr
    assert OWNED_VALGRIND_OPTIONS[owned] in proc.stderr


@pytest.mark.valgrind
def test_valgrind_options_are_passed_through(build_dir, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{TOY} leak {{port}}", "--valgrind-arg=--track-fds=yes",
                   "--valgrind-arg=--num-callers=2", "--scenario", str(ECHO),
                   "--out", str(tmp_path), "--json", "-")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert "Open file descriptor" in Path(data["log"]).read_text()
    leak = next(f for f in data["findings"] if f["kind"] == "Leak_DefinitelyLost")
    assert [fr["fn"] for fr in leak["stack"]] == ["malloc", "remember_line"]


# -- the server's working directory, environment and config file ------------------------
CONFIG_SERVER = r'''
import os, signal, socket, sys, threading
config = dict(line.split("=", 1) for line in open(sys.argv[1]).read().split())
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(os.path.join(config["run_dir"], "started-by-config"), "w") as f:
    f.write(os.environ["GREETING"] + " " + os.getcwd())
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(config["port"])))
s.listen()
def echo(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
'''


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cwd_env_and_config_template(tmp_path, jobs) -> None:
    """No wrapper script: the program relative to --cwd, a variable, and a
    config file with {port} and {run_dir} filled in per case."""
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "server.py").write_text(CONFIG_SERVER)
    template = tmp_path / "server.conf"
    template.write_text("port={port}\nrun_dir={run_dir}\n")
    code, data, err = gate_json(
        "--cmd", f"{PYTHON} server.py {{config}}", "--cwd", str(srv), "--env", "GREETING=hi {port}",
        "--config-template", f"{template}:my.conf", "--native", "--scenario", str(ECHO),
        "--scenario", "connect-close", "-j", jobs, "--out", str(tmp_path / "out"))
    assert code == 0, err
    ports = set()
    for case in data["cases"]:
        run_dir = Path(case["stdout"]).parent
        rendered = (run_dir / "my.conf").read_text()
        assert f"port={case['port']}" in rendered and f"run_dir={run_dir}" in rendered
        assert (run_dir / "started-by-config").read_text() == f"hi {case['port']} {srv}"
        ports.add(case["port"])
    assert len(ports) == 2      # every case its own port


def test_config_placeholder_needs_a_template(tmp_path) -> None:
    proc = harness("run", "--cmd", f"{TOY} echo {{config}} {{port}}", "--out", str(tmp_path))
    assert proc.returncode == 2 and "{config}" in proc.stderr and "--config-template" in proc.stderr


@pytest.mark.valgrind
def test_gate_takes_the_stop_signal(build_dir, tmp_path) -> None:
    code, data, err = gate_json("--cmd", f"{TOY} echo {{port}}", "--stop-signal", "SIGINT",
                                "--scenario", str(ECHO), "--out", str(tmp_path))
    assert code == 0, err
    assert data["cases"][0]["exit"]["returncode"] == 0


# -- the program's own frames, without --source-dir ----------------------------------------
@pytest.mark.valgrind
def test_run_and_gate_sign_alike_without_source_dirs(build_dir, tmp_path) -> None:
    """From a folder with no sources in it, run and gate name the leak by
    the program's own functions (its executable's frames), not libc's."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = harness("run", "--cmd", f"{TOY} leak {{port}}", "--scenario", str(ECHO), "--out",
                  str(tmp_path / "r"), "--json", "-", cwd=elsewhere)
    code, gate, err = gate_json("--cmd", f"{TOY} leak {{port}}", "--scenario", str(ECHO),
                                "--out", str(tmp_path / "g"), cwd=elsewhere)
    want = ("Leak_DefinitelyLost remember_line@toy_server.c < serve_chunk@toy_server.c < "
            "serve@toy_server.c")
    assert json.loads(run.stdout)["signatures"] == [want]
    assert gate["cases"][0]["signatures"] == [want]
    assert "remember_line (toy_server.c:" in run.stderr


@pytest.mark.valgrind
def test_a_binary_without_debug_information(build_dir, tmp_path) -> None:
    """Stripped: every frame of the program is '???'.  The note says so
    once, with the fix; the two leak sites keep two signatures (object and
    offset), and the reports show the whole stack."""
    stripped = tmp_path / "toy-stripped"
    shutil.copy2(TOY, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    code, data, err = gate_json("--cmd", f"{stripped} leak-twice {{port}}", "--scenario",
                                "connect-close", "--leak-kinds", "definite", "--out",
                                str(tmp_path / "g"))
    case = data["cases"][0]
    sigs = case["signatures"]
    assert code == 1 and len(sigs) == 2, (sigs, err)
    for sig in sigs:
        assert sig.startswith("Leak_DefinitelyLost toy-stripped+0x"), sig
    assert case["missing_debug_info"] == [str(stripped)]
    notice = data["notices"][0]
    assert "no debug information" in notice and "build with -g" in notice and "-dbgsym" in notice
    assert err.count("no debug information") == 1      # said once for the gate
    leak = next(f for f in case["findings"] if f["kind"] == "Leak_DefinitelyLost")
    assert all(fr["obj"] for fr in leak["stack"])
