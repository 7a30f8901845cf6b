"""The process-table checks the other tests rely on can fail: a leftover of
this test is found, whether it kept the test's token or cleared its
environment; only a process carrying another test's token is left out."""
from __future__ import annotations

import os
import subprocess
import time
import uuid

from procs import processes_running


def test_leftovers_are_found_and_other_tests_processes_are_not(test_token: str) -> None:
    marker = f"{uuid.uuid4().int % 10**6}.25"     # a sleep no other process has
    ours = subprocess.Popen(["sleep", marker])
    cleared = subprocess.Popen(["sleep", marker], env={})
    theirs = subprocess.Popen(["sleep", marker],
                              env=dict(os.environ, LEAK_HARNESS_TEST_TOKEN="another-test"))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                marker in _cmdline(p.pid) for p in (ours, cleared, theirs)):
            time.sleep(0.01)    # until all three have exec'd sleep
        pids = {int(item.split()[0]) for item in processes_running(f"sleep {marker}")}
        assert pids == {ours.pid, cleared.pid}
        assert os.environ["LEAK_HARNESS_TEST_TOKEN"] == test_token
    finally:
        for proc in (ours, cleared, theirs):
            proc.kill()
            proc.wait()
    assert processes_running(f"sleep {marker}") == []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
