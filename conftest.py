"""Shared pytest set-up: the built programs the tests need, and a scratch
directory per test for run output."""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
BUILD = ROOT / "build"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_build: needs `make servers progs` first")


@pytest.fixture(autouse=True)
def test_token(monkeypatch) -> str:
    """A token only this test's processes carry: every process a test starts
    inherits it (a nested pytest and the servers its fixtures start, a
    daemon that left its session included), so the process-table checks of
    tests/procs.py tell them from another test's running on the other xdist
    worker."""
    token = uuid.uuid4().hex
    monkeypatch.setenv("LEAK_HARNESS_TEST_TOKEN", token)
    return token


@pytest.fixture(scope="session")
def build_dir() -> Path:
    """The build tree; tests are run by `make test`, which builds it first."""
    if not (BUILD / "servers" / "echo" / "echo").exists():
        pytest.fail("build/ is missing: run the tests through `make test` (it builds first)")
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed: `make deps` installs it")
    return BUILD


@pytest.fixture
def toy_server(build_dir: Path) -> Path:
    return build_dir / "progs" / "toy_server"


@pytest.fixture
def echo_server(build_dir: Path) -> Path:
    return build_dir / "servers" / "echo" / "echo"


@pytest.fixture
def run_pattern(build_dir: Path, tmp_path: Path):
    """Run one of the project's servers through the harness, as the CLI does."""
    from harness.drive.launch import Target
    from harness.drive.scenario import load_scenario
    from harness.judge.patterns import find_pattern
    from harness.options import RunOptions
    from harness.runner import run_case

    def run(name: str, variant: str, scenario: str, native: bool = False, tag: str = ""):
        pattern = find_pattern(name)
        target = Target(argv=[str(pattern.binary(variant)), "--port", "0"],
                        name=f"{name}-{variant}")
        options = RunOptions(native=native, require_exit_zero=True)
        out = tmp_path / f"{name}-{variant}-{scenario}{tag}"
        return run_case(target, load_scenario(scenario), out, options)

    return run


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory, build_dir) -> tuple[Path, str]:
    """`make demo`'s run (every pair under every detector on its trigger,
    every server on every scenario under memcheck) and its report folder,
    once per session: the modules that use it share the xdist group
    "reports", so one worker runs them all."""
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "harness", "demo", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return out, proc.stdout
