"""Start a TCP server under valgrind, wait until it listens, stop it.

The server runs in its own process group with a clean environment (no
VALGRIND_OPTS), valgrind's text log in a file of its own, stderr to a file and
stdout through a pipe that a thread drains into a file (so the server never
blocks on output nobody reads, and the readiness line is an event, not a
guess).  Every process group started here is registered until it is reaped;
`kill_all()` runs at interpreter exit and from the CLI's signal handlers, so no
server outlives the harness.
"""
from __future__ import annotations

import atexit
import ipaddress
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..model import ExitInfo
from ..timeouts import Deadline

READY_LINE = re.compile(rb"listening on (?:127\.0\.0\.1|localhost):(\d+)")
VALGRIND_ENV_DROP = ("VALGRIND_OPTS", "VALGRIND_LIB", "VALGRIND_LAUNCHER")

_live_groups: set[int] = set()
_live_lock = threading.Lock()


class TargetError(ValueError):
    """The target cannot be run as described (bad address, bad command)."""


def check_loopback(host: str) -> str:
    """Only loopback targets are allowed; returns the address to connect to."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise TargetError(f"target host {host!r} refused: the harness only talks to "
                          "loopback (127.0.0.0/8 or ::1), give an address such as 127.0.0.1") from None
    if not addr.is_loopback:
        raise TargetError(f"target host {host} refused: not a loopback address; "
                          "the harness sends traffic to 127.0.0.0/8 or ::1 only")
    return str(addr)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that take `{port}`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def kill_all() -> None:
    """SIGKILL every process group this module started and has not reaped."""
    with _live_lock:
        groups = list(_live_groups)
        _live_groups.clear()
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


atexit.register(kill_all)


@dataclass
class ValgrindOptions:
    tool: str = "memcheck"
    track_origins: bool = False
    num_callers: int = 30
    extra: list[str] = field(default_factory=list)
    enabled: bool = True            # False: run the program natively

    def argv(self, log_path: Path) -> list[str]:
        if not self.enabled:
            return []
        args = ["valgrind", f"--tool={self.tool}", f"--log-file={log_path}",
                f"--num-callers={self.num_callers}", "--error-markers=begin,end",
                "--child-silent-after-fork=no"]
        if self.tool == "memcheck":
            args += ["--leak-check=full", "--show-leak-kinds=all"]
            if self.track_origins:
                args.append("--track-origins=yes")
        return args + list(self.extra)


@dataclass
class Target:
    """How to start a server and learn its port.

    port_mode: 'announce' (the server prints 'listening on 127.0.0.1:PORT'),
    'substitute' ('{port}' in argv is replaced by a free port), 'fixed' (the
    server always listens on `port`)."""

    argv: list[str]
    port_mode: str = "announce"
    port: int | None = None
    host: str = "127.0.0.1"
    cwd: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.host = check_loopback(self.host)
        if not self.argv:
            raise TargetError("empty server command")
        if self.port_mode not in ("announce", "substitute", "fixed"):
            raise TargetError(f"unknown port mode {self.port_mode!r}")
        if self.port_mode == "fixed" and not (self.port and 0 < self.port < 65536):
            raise TargetError(f"--port {self.port}: expected 1..65535")


def _wait_exit(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait for the process to exit, up to `seconds`; True if it did.  A
    pidfd becomes readable the moment the process exits (no polling)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], seconds)
    finally:
        os.close(pidfd)
    if not ready:
        return False
    proc.wait()
    return True


class _OutputDrain(threading.Thread):
    """Copies the server's stdout pipe into a file and watches for the
    readiness line."""

    def __init__(self, pipe, path: Path) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.path = path
        self.ready = threading.Event()
        self.port: int | None = None
        self.closed = threading.Event()

    def run(self) -> None:
        pending = b""
        with open(self.path, "wb") as out:
            while chunk := self.pipe.read1(65536):
                out.write(chunk)
                out.flush()
                if self.port is None:
                    pending = (pending + chunk)[-4096:]
                    m = READY_LINE.search(pending)
                    if m:
                        self.port = int(m.group(1))
                        self.ready.set()
        self.pipe.close()
        self.closed.set()
        self.ready.set()


class Server:
    """One server process under valgrind, from start to reaped."""

    def __init__(self, target: Target, run_dir: Path, valgrind: ValgrindOptions,
                 extra_env: dict[str, str] | None = None) -> None:
        self.target = target
        self.extra_env = dict(extra_env or {})
        self.run_dir = run_dir
        self.valgrind = valgrind
        self.log_path = run_dir / "valgrind.log"
        self.stdout_path = run_dir / "stdout.txt"
        self.stderr_path = run_dir / "stderr.txt"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._drain: _OutputDrain | None = None
        self.exit: ExitInfo | None = None
        self.on_hang = None   # called with self before a hung server is killed

    # -- start -------------------------------------------------------------
    def _argv(self) -> list[str]:
        argv = list(self.target.argv)
        if self.target.port_mode == "substitute":
            self.port = free_port(self.target.host)
            argv = [a.replace("{port}", str(self.port)) for a in argv]
        elif self.target.port_mode == "fixed":
            self.port = self.target.port
        return self.valgrind.argv(self.log_path) + argv

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stale = [self.log_path, self.stdout_path, self.stderr_path, self.run_dir / "hang.txt"]
        stale += list(self.run_dir.glob("asan.*")) + list(self.run_dir.glob("ubsan.*"))
        for p in stale:
            p.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in VALGRIND_ENV_DROP}
        env.setdefault("LC_ALL", "C")
        env.update(self.extra_env)
        argv = self._argv()
        with open(self.stderr_path, "wb") as err:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                    cwd=self.target.cwd, env=env, start_new_session=True)
            except OSError as exc:
                raise TargetError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        with _live_lock:
            _live_groups.add(self.proc.pid)
        self._drain = _OutputDrain(self.proc.stdout, self.stdout_path)
        self._drain.start()

    def wait_ready(self, seconds: float) -> bool:
        """True once the server listens; False if it exited or the deadline
        passed first."""
        assert self.proc is not None and self._drain is not None
        deadline = Deadline(seconds)
        if self.target.port_mode == "announce":
            while not self._drain.ready.wait(min(0.1, deadline.left())):
                if self.proc.poll() is not None or deadline.expired():
                    return False
            self.port = self._drain.port
            return self.port is not None and self.proc.poll() is None
        return self._wait_connectable(deadline)

    def _wait_connectable(self, deadline: Deadline) -> bool:
        assert self.proc is not None and self.port is not None
        pause = 0.02
        while not deadline.expired():
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.target.host, self.port),
                                              timeout=max(0.05, min(1.0, deadline.left()))):
                    return True
            except OSError:
                # Nothing listens yet: back off a little, bounded by the deadline.
                time.sleep(min(pause, deadline.left()))
                pause = min(pause * 2, 0.25)
        return False

    # -- stop --------------------------------------------------------------
    def stop(self, sig: int, seconds: float) -> ExitInfo:
        """Send `sig`, wait up to `seconds`, then SIGKILL the whole group."""
        assert self.proc is not None
        if self.exit is not None:
            return self.exit
        early = self.proc.poll() is not None
        sent: int | None = None
        hung = False
        started = time.monotonic()
        if not early:
            try:
                self.proc.send_signal(sig)
                sent = sig
            except ProcessLookupError:
                pass
            if not _wait_exit(self.proc, seconds):
                hung = True
                if self.on_hang is not None:
                    self.on_hang(self)
        self._reap()
        self.exit = ExitInfo(returncode=self.proc.returncode, stop_signal=sent,
                             hung=hung, exited_early=early,
                             stop_seconds=round(time.monotonic() - started, 3))
        return self.exit

    def kill(self) -> None:
        """SIGKILL the group now (the harness is being interrupted)."""
        if self.proc is not None and self.exit is None:
            self._reap()

    def _reap(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        with _live_lock:
            _live_groups.discard(self.proc.pid)
        if self._drain is not None:
            self._drain.join(timeout=5)

    def output_tail(self, limit: int = 2000) -> str:
        """The end of the server's stderr and stdout, for startup failures."""
        parts = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                data = path.read_bytes()[-limit:].decode(errors="replace").strip()
            except OSError:
                continue
            if data:
                parts.append(f"--- {path.name} ---\n{data}")
        return "\n".join(parts)
