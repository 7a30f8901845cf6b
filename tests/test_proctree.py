"""A server's process tree read down from its root (the kernel's children
lists) is the tree read from every process's parent: children of any
thread, grandchildren, zombies left out."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from harness.drive import proctree

# A process whose second thread starts a child and stays (the child is
# listed under that thread, not the main one), a child of the main thread
# that has a child of its own, and a child that exited unreaped (a zombie).
TREE = """
import subprocess, sys, threading, time
quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
sleep = ["sleep", sys.argv[1]]
threading.Thread(target=lambda: (subprocess.Popen(sleep, **quiet), time.sleep(600)),
                 daemon=True).start()
subprocess.Popen(["sh", "-c", "sleep " + sys.argv[1] + " & wait"], **quiet)
zombie = subprocess.Popen(["true"], **quiet)
print(zombie.pid, flush=True)
sys.stdin.readline()
"""


def _pids(stats: list[proctree.ProcStat]) -> set[int]:
    return {st.pid for st in stats}


@pytest.mark.skipif(not proctree._children_files(), reason="no /proc/PID/task/TID/children here")
def test_the_tree_read_down_is_the_tree_read_from_the_parents() -> None:
    marker = f"{300 + uuid.uuid4().int % 10**5 / 10**5:.5f}"
    root = subprocess.Popen([sys.executable, "-c", TREE, marker], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        zombie = int(root.stdout.readline())
        deadline = time.monotonic() + 30
        while True:     # until both sleeps run and 'true' has exited (no event tells)
            down = proctree.descendants(root.pid)
            sleeps = [st for st in down if _cmdline(st.pid) == f"sleep {marker}"]
            exited = getattr(proctree.read_stat(zombie), "state", None) == "Z"
            if (len(sleeps) == 2 and exited) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(sleeps) == 2 and exited, down
        scanned = proctree.descendants(root.pid, proctree.all_stats())
        assert _pids(down) == _pids(scanned)
        assert len(down) == 3           # two sleeps and the shell between
        assert zombie not in _pids(down)
    finally:
        for st in proctree.descendants(root.pid, proctree.all_stats()):
            subprocess.run(["kill", "-9", str(st.pid)], check=False)
        root.kill()
        root.communicate()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
