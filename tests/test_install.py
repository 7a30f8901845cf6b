"""`pip install .` into a fresh venv, offline, as the README says: the
`leak-harness` command, a gate run from outside the repository (the named
scenarios come with the package), and the pytest plugin active through its
entry point, without -p."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.valgrind, pytest.mark.xdist_group("install")]


@pytest.fixture(scope="module")
def venv(tmp_path_factory, build_dir):
    """The package built from a copy of the sources (pip writes build/ and
    *.egg-info next to them) and installed into a new venv that sees
    Debian's packages (pytest, setuptools)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("harness", "scenarios"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
    env.update(TMPDIR=str(tmp / "tmp"), PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")],
                   check=True, env=env, timeout=300)
    pip = subprocess.run([str(tmp / "venv" / "bin" / "pip"), "install", "--no-build-isolation",
                          "--no-index", str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    outside = tmp / "elsewhere"
    outside.mkdir()
    return tmp / "venv", outside, env


def run(venv, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    bin_dir, outside, env = venv[0] / "bin", venv[1], venv[2]
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_command_is_installed(venv) -> None:
    proc = run(venv, "leak-harness", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: leak-harness ")
    for command in ("run", "gate", "matrix", "parse", "report", "bisect", "shrink", "scenarios"):
        assert command in proc.stdout
    where = run(venv, "python", "-c", "import harness; print(harness.__file__)")
    assert str(venv[0]) in where.stdout and str(ROOT) not in where.stdout
    listed = run(venv, "leak-harness", "scenarios").stdout.split("\n")
    names = sorted(line.split()[0] for line in listed if line.strip())
    shipped = [p.stem for p in (ROOT / "scenarios").glob("*.toml")] + \
        [f"protocols/{p.stem}" for p in (ROOT / "scenarios" / "protocols").glob("*.toml")]
    assert names == sorted(shipped)
    assert not any("INVALID" in line for line in listed)
    # The native keeper's source comes along, and is built from there.
    cache = venv[1] / "cache"
    built = subprocess.run([str(venv[0] / "bin" / "python"), "-c",
                            "from harness.drive import keeper; print(keeper.native())"],
                           cwd=venv[1], env=dict(venv[2], XDG_CACHE_HOME=str(cache)),
                           capture_output=True, text=True, timeout=300)
    assert built.stdout.strip().startswith(str(cache / "leak-harness" / "keeper-")), built
    assert built.stdout.strip().endswith("/leak-keeper"), built


def test_a_gate_from_outside_the_repository(venv, echo_server: Path, toy_server: Path) -> None:
    clean = run(venv, "leak-harness", "gate", "--cmd", f"{echo_server} --port {{port}}",
                "--scenario", "echo", "--scenario", "reset", "-j", "2")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "PASSED: 2 cases (2 pass)" in clean.stdout
    assert (venv[1] / "reports" / "index.html").is_file(), "the report goes to ./reports"
    leak = run(venv, "leak-harness", "gate", "--cmd", f"{toy_server} leak {{port}}", "--out", "leaky",
               "--junit", "leaky/junit.xml")
    assert leak.returncode == 1, leak.stdout + leak.stderr
    assert "FAIL toy_server-echo: fail: leak" in leak.stdout
    assert (venv[1] / "leaky" / "junit.xml").is_file()
    project = run(venv, "leak-harness", "run", "double_delete")
    assert project.returncode == 2 and "checkout" in project.stderr and "Traceback" not in project.stderr


def test_the_pytest_plugin_loads_by_its_entry_point(venv, echo_server: Path, toy_server: Path) -> None:
    tests = venv[1] / "user_tests"
    tests.mkdir()
    (tests / "test_user_server.py").write_text(f'''
import socket


def exchange(server):
    with socket.create_connection((server.host, server.port)) as s:
        s.sendall(b"hello\\n")
        s.recv(100)


def test_echo_is_clean(valgrind_server):
    exchange(valgrind_server("{echo_server} --port {{port}}"))


def test_toy_leaks(valgrind_server):
    exchange(valgrind_server("{toy_server} leak {{port}}"))
''')
    proc = run(venv, "python", "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
               f"--basetemp={venv[1] / 'basetemp'}", str(tests))
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "test_toy_leaks" in proc.stdout and "Leak_DefinitelyLost" in proc.stdout
    assert "remember_line" in proc.stdout
