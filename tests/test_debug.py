"""`run --debug`, driven through a pseudo-terminal as a person would: the
harness prints the gdb command when valgrind stops the server at its first
error, gdb attaches (in batch mode) and reads the backtrace, the person
presses Enter, and the run finishes with its usual verdict; nothing is left
running.  Every wait reads the terminal with a deadline."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from procs import processes_running

from harness.judge.patterns import find_pattern

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.valgrind
ATTACH = re.compile(rb"\n    (gdb \S+ -ex '[^'\n]*--pid=(\d+)')\r?\n")


def _controlling_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is the
    pty (its stdin), so that Ctrl-C typed there is SIGINT to it."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The harness on a pseudo-terminal: its stdin, stdout and stderr."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT,
                                     stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self.seen = b""

    def read_until(self, pattern: re.Pattern, seconds: float) -> re.Match:
        end = time.monotonic() + seconds
        while (m := pattern.search(self.seen)) is None:
            left = end - time.monotonic()
            assert left > 0, f"not seen within {seconds}s: {pattern.pattern!r}\n" + self.text
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:     # EIO: the harness has exited and closed its side
                    chunk = b""
                assert chunk, f"the harness ended first:\n{self.text}"
                self.seen += chunk
        return m

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        while self.proc.poll() is None and time.monotonic() < end:
            if select.select([self.master], [], [], 0.5)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.proc.wait(timeout=max(end - time.monotonic(), 1))

    @property
    def text(self) -> str:
        return self.seen.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


def gdb_batch(attach: str, *commands: str) -> str:
    """The printed attach command, in batch mode, with more commands."""
    argv = shlex.split(attach)
    extra = [w for c in commands for w in ("-ex", c)]
    proc = subprocess.run([argv[0], "-batch", "-nx", *argv[1:], *extra], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["double_delete", "captured_context"])
def test_debug_stops_at_the_first_error_gdb_attaches_and_the_run_finishes(
        name: str, build_dir: Path, tmp_path: Path) -> None:
    expect = find_pattern(name).expectation("buggy", "memcheck")
    term = Terminal("run", name, "--variant", "buggy", "--debug", "--out", str(tmp_path))
    try:
        m = term.read_until(ATTACH, 120)
        attach, pid = m.group(1).decode(), int(m.group(2))
        assert f"stopped the server (pid {pid}) at its first error" in term.text
        assert f"--vgdb-prefix={tmp_path}" in attach     # the run folder's FIFOs, no TCP port
        session = gdb_batch(attach, "bt", "monitor v.info last_error")
        bt = [line for line in session.splitlines() if re.match(r"#\d+ ", line)]
        assert bt, session
        assert any(f"servers/{name}/buggy.c" in line for line in bt), session
        # The manifest's function: in the live stack (captured_context reads
        # its freed captures in reply_resume), or, for double_delete, where
        # the block the first bad access touches was freed (the read path's
        # session_delete; libuv reads it after on_read returned).
        assert f"{expect.function} (buggy.c:" in session or \
            re.search(rf"in {expect.function} \(.*buggy\.c", bt[0]), session
        if name == "captured_context":
            assert " in reply_resume " in bt[0] and "buggy.c" in bt[0]
        term.type("\n")
        status = term.finish(120)
    finally:
        term.close()
    assert status == 1, term.text
    assert "the server runs on, the run finishes as usual" in term.text
    assert re.search(r"verdict: memory-error", term.text)
    assert processes_running(tmp_path) == []
    assert processes_running(f"--pid={pid}") == []


def test_debug_is_refused_without_a_terminal(build_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "double_delete", "--debug",
                           "--out", str(tmp_path)], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--debug: stdin is not a terminal" in proc.stderr
    assert not list(tmp_path.iterdir())        # nothing ran


@pytest.mark.parametrize("extra", [["--native"], ["--detector", "asan"], ["--repeat", "2"],
                                   ["--valgrind-arg=--vgdb-error=0"]])
def test_debug_and_the_gdbserver_options_are_the_harness_s(extra, build_dir: Path,
                                                           tmp_path: Path) -> None:
    args = ["run", "double_delete", "--out", str(tmp_path)] + extra
    if not extra[0].startswith("--valgrind-arg"):
        args.append("--debug")
    proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error: " in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_while_the_server_waits_for_gdb_kills_it(build_dir: Path, tmp_path: Path) -> None:
    term = Terminal("run", "double_delete", "--variant", "buggy", "--debug", "--out", str(tmp_path))
    try:
        m = term.read_until(ATTACH, 120)
        pid = int(m.group(2))
        assert os.path.exists(f"/proc/{pid}")
        term.type("\x03")                   # Ctrl-C on the terminal: SIGINT to the harness
        status = term.finish(60)
    finally:
        term.close()
    assert status == 130, term.text
    assert "every server this run started was killed" in term.text
    assert processes_running(tmp_path) == []
