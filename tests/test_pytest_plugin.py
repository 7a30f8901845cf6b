"""The pytest plugin, tested with pytester: a user's test drives its own
server over the network; the plugin fails the test with valgrind's finding."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.valgrind

USER_TEST = '''
import socket

def test_exchange(valgrind_server):
    server = valgrind_server("{toy} {mode} {{port}}", source_dirs=["{src}"])
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"hello\\n")
        assert s.recv(100) == b"hello\\n"
'''


def run_user_test(pytester: pytest.Pytester, monkeypatch, toy: Path, mode: str):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_user=USER_TEST.format(toy=toy, mode=mode, src=ROOT / "tests" / "progs"))
    return pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider")


def test_clean_server_passes(pytester, monkeypatch, toy_server: Path) -> None:
    result = run_user_test(pytester, monkeypatch, toy_server, "echo")
    result.assert_outcomes(passed=1)


def test_leaking_server_fails_the_test_with_the_finding(pytester, monkeypatch, toy_server: Path) -> None:
    result = run_user_test(pytester, monkeypatch, toy_server, "leak")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*under valgrind: leak*",
                                 "*Leak_DefinitelyLost (15 bytes in 1 blocks)*",
                                 "*at remember_line (toy_server.c:*"])


def test_crashing_server_fails_the_test(pytester, monkeypatch, toy_server: Path) -> None:
    """The crash also breaks the exchange: the test fails on its own and the
    valgrind verdict is attached to the report."""
    result = run_user_test(pytester, monkeypatch, toy_server, "nullcall")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*under valgrind: crash*", "*killed by SIGSEGV*", "*InvalidJump*"])
