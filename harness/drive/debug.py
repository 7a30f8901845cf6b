"""`run --debug`: stop in the debugger at the first error.

valgrind runs with its gdbserver armed to stop the process at the first
error it reports (`--vgdb=yes --vgdb-error=1`, the FIFOs in the run folder:
`--vgdb-prefix`).  A DebugWatch thread reads the log as it grows (inotify on
the run folder, so the growth is an event) and, when valgrind says it has
stopped the process at an error ("(action on error) vgdb me ..."):

  - holds every deadline of the run (timeouts.hold: the step under way, the
    stop, do not time out while a person debugs; no deadline on the person);
  - prints the error and the exact command that attaches gdb, through vgdb
    and the run folder's FIFOs (no TCP port);
  - waits for Enter on the terminal, or for gdb to detach (the vgdb relay
    gdb started for that process has come and gone);
  - tells the gdbserver not to stop again (`v.set vgdb-error 999999999`,
    which also lets a process still stopped run on), and ends the hold.

The run then finishes and is judged as usual.  An interrupt (Ctrl-C) ends
the run and kills the server as always: the watch is a daemon thread.
"""
from __future__ import annotations

import ctypes
import os
import re
import select
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable

from ..timeouts import hold

STOPPED = "(action on error) vgdb me"
NEVER_AGAIN = "999999999"
LOOK = 0.25                 # seconds between looks when no event comes (terminal, gdb)
RECORD_LINES = 24           # lines of the error shown
VGDB_SECONDS = 30.0         # for the gdbserver to take the command that lets it run on
_LINE = re.compile(r"^==(\d+)== ?(.*)$")
_FRAME = re.compile(r"^\s*(at|by) 0x[0-9A-Fa-f]+: ")
_SOURCE = re.compile(r"\([^()]*:\d+\)$")
_IN_MODIFY, _IN_CREATE, _IN_NONBLOCK, _IN_CLOEXEC = 0x2, 0x100, 0o4000, 0o2000000


def attach_command(program: str, prefix: Path, pid: int) -> str:
    """The shell command that attaches gdb to a stopped process."""
    remote = f"target remote | vgdb --vgdb-prefix={shlex.quote(str(prefix))} --pid={pid}"
    return f"gdb {shlex.quote(program)} -ex {shlex.quote(remote)}"


def shown_record(lines: list[str]) -> list[str]:
    """An error record as a person reads it: each stack's first frame (where
    it happened) and the frames with a source line; library frames between
    them folded into '...'."""
    out: list[str] = []
    first = True
    for line in lines:
        if not line.strip():
            continue
        if not _FRAME.match(line):
            out.append(line)
            first = True
            continue
        if first or _SOURCE.search(line):
            out.append(line)
        elif out[-1].strip() != "...":
            out.append(" " * (len(line) - len(line.lstrip())) + "...")
        first = False
    return out


def relay_attached(pid: int) -> bool:
    """A vgdb relay for this process is running: gdb is attached to it."""
    want = f"--pid={pid}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        words = [a for a in argv[1:] if a]
        # gdb's relay has options only; a monitor command (v.set ...) has words
        if argv and os.path.basename(argv[0]) == b"vgdb" and want in words and \
                all(a.startswith(b"-") for a in words):
            return True
    return False


class _Inotify:
    """Events when a file in a folder is created or written (the log's
    growth), through libc's inotify; without it, look every LOOK seconds."""

    def __init__(self, folder: Path) -> None:
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, str(folder).encode(),
                                                  _IN_MODIFY | _IN_CREATE) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            self.fd = -1

    def wait(self, seconds: float) -> None:
        if self.fd < 0:
            select.select([], [], [], seconds)
            return
        if select.select([self.fd], [], [], seconds)[0]:
            try:
                os.read(self.fd, 65536)     # the events themselves say nothing more
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Log:
    """One valgrind log, read as it grows: its complete lines, by pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[tuple[int, str]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        out = []
        for raw in lines:
            m = _LINE.match(raw.decode(errors="replace"))
            if m:
                out.append((int(m.group(1)), m.group(2)))
        return out


class DebugWatch(threading.Thread):
    """Watches a run folder's valgrind logs for a process stopped at an
    error, and holds the run for the person at the terminal."""

    def __init__(self, run_dir: Path, say: Callable[[str], None], stdin_fd: int = 0,
                 cwd: str | None = None) -> None:
        super().__init__(name="debug-watch", daemon=True)
        self.run_dir = run_dir
        self.prefix = run_dir.resolve() / "vgdb-pipe"
        self.say = say
        self.stdin_fd = stdin_fd
        self.cwd = cwd
        self.done = threading.Event()
        self.logs: dict[Path, _Log] = {}
        self.records: dict[int, list[str]] = {}     # pid -> lines of its last error
        self.in_record: dict[int, bool] = {}
        self.programs: dict[int, str] = {}
        self.released: set[int] = set()
        self.stops = 0

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)

    def run(self) -> None:
        events = _Inotify(self.run_dir)
        try:
            while not self.done.is_set():
                for pid, text in self._read():
                    if self._note(pid, text):
                        self._attend(pid)
                events.wait(LOOK)
        finally:
            events.close()

    def _read(self) -> list[tuple[int, str]]:
        for path in sorted(self.run_dir.glob("valgrind*.log")):
            self.logs.setdefault(path, _Log(path))
        return [line for log in self.logs.values() for line in log.new_lines()]

    def _note(self, pid: int, text: str) -> bool:
        """Keep what the lines say; True when the process just stopped."""
        if text.startswith("Command: ") and pid not in self.programs:
            self.programs[pid] = text[len("Command: "):].split(" ")[0]
        if text == "begin":
            self.in_record[pid] = True
            self.records[pid] = []
        elif text == "end":
            self.in_record[pid] = False
        elif self.in_record.get(pid):
            self.records[pid].append(text)
        return text.startswith(STOPPED) and pid not in self.released

    def _program(self, pid: int) -> str:
        name = self.programs.get(pid, "PROGRAM")
        if "/" not in name:
            return shutil.which(name) or name
        path = Path(self.cwd or ".") / name
        return str(path.resolve()) if path.exists() else name

    def _attend(self, pid: int) -> None:
        self.stops += 1
        with hold():
            record = shown_record(self.records.get(pid, []))
            self.say(f"debug: valgrind stopped the server (pid {pid}) at its first error:")
            for line in record[:RECORD_LINES]:
                self.say(f"    {line}")
            if len(record) > RECORD_LINES:
                self.say(f"    ... ({len(record) - RECORD_LINES} more lines in the log)")
            self.say("debug: attach gdb with:")
            self.say(f"    {attach_command(self._program(pid), self.prefix, pid)}")
            self.say("debug: the scenario is paused and the server waits; detach gdb or press "
                     "Enter to let it run on (Ctrl-C ends the run)")
            how = self._wait_for_person(pid)
            if how is None:
                return      # the run is over (interrupted, or the server is gone)
            self.released.add(pid)
            answer = self._vgdb(pid, "v.set", "vgdb-error", NEVER_AGAIN)
            self.say(f"debug: {how}: the server runs on, the run finishes as usual"
                     + (f" ({answer})" if answer else ""))

    def _wait_for_person(self, pid: int) -> str | None:
        """'gdb detached' or 'Enter pressed'; None when the run ended first."""
        attached = False
        while not self.done.is_set():
            if not os.path.exists(f"/proc/{pid}"):
                return None
            now = relay_attached(pid)
            if attached and not now:
                return "gdb detached"
            if now and not attached:
                self.say(f"debug: gdb attached to pid {pid}")
            attached = now
            if self._enter_pressed(LOOK):
                if not attached:
                    return "Enter pressed"
                self.say("debug: gdb is still attached: detach it (gdb: detach, or quit) and "
                         "the server runs on")
        return None

    def _enter_pressed(self, seconds: float) -> bool:
        try:
            ready = select.select([self.stdin_fd], [], [], seconds)[0]
            return bool(ready) and os.read(self.stdin_fd, 4096) is not None
        except OSError:
            self.done.wait(seconds)     # no terminal after all: only a detach ends the wait
            return False

    def _vgdb(self, pid: int, *command: str) -> str:
        """A monitor command through the FIFOs; '' when it went through."""
        try:
            proc = subprocess.run(["vgdb", f"--vgdb-prefix={self.prefix}", f"--pid={pid}",
                                   *command], stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=VGDB_SECONDS)
        except subprocess.TimeoutExpired:
            return f"vgdb gave no answer within {VGDB_SECONDS:g}s"
        except OSError as exc:
            return f"vgdb: {exc.strerror}"
        return "" if proc.returncode == 0 else (proc.stderr.strip() or proc.stdout.strip())[:200]


class Debugger:
    """The terminal side of `run --debug`: where the watch speaks and
    listens.  The runner starts one DebugWatch per server."""

    def __init__(self, say: Callable[[str], None], stdin_fd: int = 0) -> None:
        self.say = say
        self.stdin_fd = stdin_fd
        self.watches: list[DebugWatch] = []

    def watch(self, run_dir: Path, cwd: str | None) -> DebugWatch:
        watch = DebugWatch(run_dir, self.say, self.stdin_fd, cwd)
        watch.start()
        self.watches.append(watch)
        return watch

    @property
    def stops(self) -> int:
        return sum(w.stops for w in self.watches)
