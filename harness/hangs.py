"""What a hung server was doing, asked of valgrind's gdbserver before the
harness kills it.

`collect()` runs `vgdb --pid=PID v.info scheduler` (every thread's status and
stack) and `vgdb --pid=PID leak_check full reachable any` (what is in use at
that moment), each with a deadline, and writes both to hang.txt.
`parse_scheduler()` is pure: text in, thread stacks out.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .model import Frame
from .vglog import parse_frame

_THREAD = re.compile(r"^Thread (?P<tid>\d+): status = (?P<status>\S+)(?: (?P<detail>.*))?$")
_PREFIX = re.compile(r"^==\d+==\s+")


@dataclass
class ThreadStack:
    tid: int
    status: str
    detail: str = ""
    stack: list[Frame] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"tid": self.tid, "status": self.status, "detail": self.detail,
                "stack": [f.to_json() for f in self.stack]}


def parse_scheduler(text: str) -> list[ThreadStack]:
    threads: list[ThreadStack] = []
    current: ThreadStack | None = None
    for raw in text.splitlines():
        m = _THREAD.match(raw.strip())
        if m:
            current = ThreadStack(int(m["tid"]), m["status"], m["detail"] or "")
            threads.append(current)
            continue
        if current is None:
            continue
        line = _PREFIX.sub("", raw).strip()
        frame = parse_frame(line)
        if frame:
            current.stack.append(frame)
        elif line.startswith(("client stack range", "valgrind stack range")) or not line:
            current = None if not line and current.stack else current
    return threads


def _vgdb(pid: int, command: str, seconds: float) -> str:
    try:
        proc = subprocess.run(["vgdb", f"--pid={pid}", *command.split()], capture_output=True,
                              text=True, timeout=seconds, stdin=subprocess.DEVNULL)
        return proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        return f"(vgdb {command}: no answer within {seconds:g}s)\n"
    except OSError as exc:
        return f"(vgdb {command}: {exc.strerror})\n"


def collect(pid: int, run_dir: Path, seconds: float = 10.0) -> Path | None:
    """Ask the hung process's gdbserver for its threads and a leak check."""
    if shutil.which("vgdb") is None:
        return None
    text = ("== v.info scheduler ==\n" + _vgdb(pid, "v.info scheduler", seconds)
            + "\n== leak_check full reachable any ==\n"
            + _vgdb(pid, "leak_check full reachable any", seconds))
    path = run_dir / "hang.txt"
    path.write_text(text)
    return path
