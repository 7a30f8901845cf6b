"""Ask a hung server's gdbserver (vgdb) what it is doing, before the harness
kills it: every thread's status and stack, and under memcheck a leak check
(helgrind and DRD have none), into hang.txt (parsed by logs.hangs)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _vgdb(pid: int, prefix: Path, command: str, seconds: float) -> str:
    try:
        proc = subprocess.run(["vgdb", f"--pid={pid}", f"--vgdb-prefix={prefix}", *command.split()],
                              capture_output=True,
                              text=True, timeout=seconds, stdin=subprocess.DEVNULL)
        return proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        return f"(vgdb {command}: no answer within {seconds:g}s)\n"
    except OSError as exc:
        return f"(vgdb {command}: {exc.strerror})\n"


def collect(pid: int, run_dir: Path, tool: str, seconds: float = 10.0) -> Path | None:
    """Ask the hung process's gdbserver for its threads, and for a leak check
    when its tool has that monitor command (memcheck only)."""
    if shutil.which("vgdb") is None:
        return None
    prefix = run_dir / "vgdb-pipe"     # where the server's valgrind put its FIFOs
    text = "== v.info scheduler ==\n" + _vgdb(pid, prefix, "v.info scheduler", seconds)
    if tool == "memcheck":
        text += ("\n== leak_check full reachable any ==\n"
                 + _vgdb(pid, prefix, "leak_check full reachable any", seconds))
    path = run_dir / "hang.txt"
    try:
        path.write_text(text)
    except OSError:
        return None
    return path
