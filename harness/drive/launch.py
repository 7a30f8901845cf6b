"""Start a TCP server under valgrind, wait until it listens, stop it, and end
every process it started.

Each server runs under a keeper (drive/keeper.c, or drive/keeper.py where
no C compiler is found), a small process of its own session that is a child
subreaper: whatever the server forks, a daemon that calls setsid() included,
stays below it.  The keeper's control pipe is held by this process only;
when the harness exits or dies (SIGKILL included) the pipe reads
end-of-file and the keeper kills the whole tree.  The server gets a clean
environment (no VALGRIND_OPTS), default signal dispositions, valgrind's text
log in its run folder (with the gdbserver's FIFOs: --vgdb-prefix), stderr to
a file and stdout through a pipe that a thread drains into a file (so it
never blocks on output nobody reads, and the readiness line is an event).

Readiness never touches the server: a readiness line, or a socket in LISTEN
state on the expected port held by the server's process tree.
"""
from __future__ import annotations

import atexit
import ipaddress
import os
import random
import re
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..model import ConfigTemplate, ExitInfo
from ..timeouts import Deadline
from . import keeper, proctree
from .locks import NameLock, port_lock

READY_LINE = re.compile(rb"listening on (?:127\.0\.0\.1|localhost):(\d+)")
VALGRIND_ENV_DROP = ("VALGRIND_OPTS", "VALGRIND_LIB", "VALGRIND_LAUNCHER")
POLL = 0.01                 # readiness: look at the listening sockets this often
TREE_POLL = 0.2             # ... and at what the whole tree listens on
WRONG_PORT_GRACE = 0.5      # listening elsewhere this long: it ignores the port argument
OUTPUT_LIMIT = 64 << 20     # bytes of stdout kept in the run folder; the rest is counted
PORT_FLOOR = 20000          # ports for '{port}' are drawn from here up, below the ephemeral range
KEEPER_SECONDS = 15.0       # for the keeper to start the server, or to kill its tree
# What a run leaves in its folder, removed before the next run uses it.
RUN_FILES = ("valgrind.log", "valgrind.*.log", "stdout.txt", "stderr.txt", "hang.txt",
             "asan.*", "ubsan.*", "vgdb-pipe*", "result.json", "scenario.toml", "played.json")

_live: set["Server"] = set()
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


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (and to bind(0))."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(family: int, host: str, port: int) -> bool:
    # Without SO_REUSEADDR: a port some socket still holds (TIME_WAIT
    # included) is not free for a server that does not set it either.
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", rng: random.Random = random.SystemRandom()) -> int:
    """A port free now (for servers that take `{port}`), outside the kernel's
    ephemeral range when there is room: a port from that range can be given
    to any client's outgoing connection between this check and the server's
    bind(), and the server then exits with EADDRINUSE before it listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = ephemeral_range()
    spans = [(a, b) for a, b in ((PORT_FLOOR, low - 1), (high + 1, 65535)) if b - a >= 100]
    for _ in range(50 if spans else 0):
        a, b = rng.choice(spans)
        port = rng.randint(a, b)
        if _bindable(family, host, port):
            return port
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def kill_all() -> None:
    """End every server this process started and has not reaped: closing a
    keeper's control pipe makes it kill its whole tree; wait for that.  Then
    let the fork server go."""
    with _live_lock:
        servers = list(_live)
        _live.clear()
    for server in servers:
        server._close_control()
    for server in servers:
        server._wait_keeper(KEEPER_SECONDS)
    _fork_server.drop()


atexit.register(kill_all)


class _ForkServer:
    """The process that forks every keeper of this process's servers
    (keeper.fork_server): forked at the first server, replaced if it dies,
    let go at exit (it reads end-of-file and exits)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: tuple[int, socket.socket, int | None] | None = None     # (pid, socket, pidfd)

    def hand(self, fds: list[int], argv: list[str], env: dict[str, str], cwd: str | None) -> int:
        """A keeper with this job (keeper.hand); returns its PID."""
        with self.lock:
            if self.proc is None:
                self.proc = self._fork()
            try:
                return keeper.hand(self.proc[1], fds, argv, env, cwd)
            except OSError:
                self._drop()    # gone (killed by someone), or not answering: the next is new
                raise

    @staticmethod
    def _fork() -> tuple[int, socket.socket, int | None]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.settimeout(KEEPER_SECONDS)
        keeper.setpriv()        # looked up here, once: every keeper inherits the answer
        pid = os.fork()
        if pid == 0:            # the fork server: it never comes back here
            keeper.fork_server(theirs.fileno())
        theirs.close()
        return pid, ours, _pidfd(pid)

    def _drop(self) -> None:
        if self.proc is not None:
            pid, sock, fd = self.proc
            self.proc = None
            sock.close()
            _reap(pid, KEEPER_SECONDS, fd)

    def drop(self) -> None:
        with self.lock:
            self._drop()

    def pid(self) -> int | None:
        with self.lock:
            return self.proc[0] if self.proc else None


def _pidfd(pid: int) -> int | None:
    """A pidfd for a child just started: from then on it names that process,
    even once some other code of this process (a waitpid(-1) in a user's
    pytest plugin) has reaped it and its PID is another process's."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None             # no pidfd here (Linux before 5.3)


def _reap(pid: int, seconds: float, fd: int | None) -> None:
    """Wait for a child (the fork server, let go, or a native keeper) to
    exit, up to `seconds`; then kill it.  `fd`: its pidfd (`_pidfd`), which
    this function closes."""
    try:
        if fd is not None:
            ready, _, _ = select.select([fd], [], [], seconds)
            if not ready:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        else:
            _sigkill(pid)
        os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
    finally:
        if fd is not None:
            os.close(fd)


_fork_server = _ForkServer()


_KEEPER_NAMES = (keeper.NAME.decode(), keeper.FORK_SERVER_NAME.decode())


def serve_as_subreaper() -> None:
    """Make this process a child subreaper: a keeper whose parent (a matrix
    worker) died is adopted here, so `reap_orphans()` can wait for it to
    finish killing its tree instead of leaving that to chance."""
    try:
        keeper.prctl(keeper.PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        pass


def reap_orphans(seconds: float) -> None:
    """Wait (up to `seconds`) for the keepers this process adopted as a
    subreaper (their parent, a matrix worker, died) to finish killing their
    trees; then kill what is left of them."""
    deadline = Deadline(seconds)
    me = os.getpid()
    ours = _fork_server.pid()       # this process's own, still serving
    for _ in range(100000):     # bounded: each round waits at most 5 ms
        keepers = [st.pid for st in proctree.all_stats().values()
                   if st.ppid == me and st.pid != ours and proctree.name(st.pid) in _KEEPER_NAMES]
        if not keepers:
            return
        for pid in keepers:
            if deadline.expired():
                for st in proctree.descendants(pid):
                    _sigkill(st.pid)
                _sigkill(pid)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.005)   # no event announces the end of an adopted process


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def fill(text: str, port: int | None, run_dir: Path, config: Path | None) -> str:
    """The placeholders of a command, an environment value or a template.
    Only these exact words are replaced: a config file's own braces stay."""
    if port is not None:
        text = text.replace("{port}", str(port))
    text = text.replace("{run_dir}", str(run_dir))
    if config is not None:
        text = text.replace("{config}", str(config))
    return text


def uses_port(texts: list[str]) -> bool:
    return any("{port}" in t for t in texts)


@dataclass
class ValgrindOptions:
    tool: str = "memcheck"
    track_origins: bool = False
    num_callers: int = 30
    extra: list[str] = field(default_factory=list)
    enabled: bool = True            # False: run the program natively
    suppressions: list[str] = field(default_factory=list)
    log_per_pid: bool = False       # --log-file=valgrind.%p.log (following children)
    trace_children: bool = False
    debug: bool = False             # run --debug: the gdbserver stops at the first error

    def argv(self, run_dir: Path) -> list[str]:
        if not self.enabled:
            return []
        log = run_dir / ("valgrind.%p.log" if self.log_per_pid else "valgrind.log")
        args = ["valgrind", f"--tool={self.tool}", f"--log-file={log}",
                f"--num-callers={self.num_callers}", "--error-markers=begin,end",
                "--child-silent-after-fork=no", f"--vgdb-prefix={run_dir / 'vgdb-pipe'}"]
        if self.tool == "memcheck":
            args += ["--leak-check=full", "--show-leak-kinds=all"]
            if self.track_origins:
                args.append("--track-origins=yes")
        if self.trace_children:
            args.append("--trace-children=yes")
        if self.debug:
            args += ["--vgdb=yes", "--vgdb-error=1"]
        args += [f"--suppressions={s}" for s in self.suppressions]
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
    # One of the project's own servers (`run PATTERN --variant VARIANT`),
    # so that a reproduction command can name it as such.
    pattern: str = ""
    variant: str = ""

    def __post_init__(self) -> None:
        self.host = check_loopback(self.host)
        if not self.argv:
            raise TargetError("empty server command")
        if self.port_mode not in ("announce", "substitute", "fixed"):
            raise TargetError(f"unknown port mode {self.port_mode!r}")
        if self.port_mode == "fixed" and not (self.port and 0 < self.port < 65536):
            raise TargetError(f"--port {self.port}: expected 1..65535")


class _OutputDrain(threading.Thread):
    """Copies the server's stdout pipe into a file (the first OUTPUT_LIMIT
    bytes; the rest is counted) and watches for the readiness line."""

    def __init__(self, pipe, path: Path, wake: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.path = path
        self.wake = wake        # written to once the readiness line is seen
        self.port: int | None = None
        self.total = 0

    def run(self) -> None:
        pending = b""
        try:
            out = open(self.path, "wb")
        except OSError:
            out = None      # the run folder is gone: drain all the same
        try:
            while chunk := self.pipe.read1(65536):
                if out is not None and self.total < OUTPUT_LIMIT:
                    try:
                        out.write(chunk[:OUTPUT_LIMIT - self.total])
                        out.flush()
                    except OSError:
                        out = None
                self.total += len(chunk)
                if self.port is None:
                    pending = (pending + chunk)[-4096:]
                    m = READY_LINE.search(pending)
                    if m:
                        self.port = int(m.group(1))
                        if self.wake is not None:
                            try:
                                os.write(self.wake, b"!")
                            except OSError:
                                pass
        finally:
            if out is not None:
                out.close()
            self.pipe.close()


class Server:
    """One server, from start until every process of its tree is gone."""

    def __init__(self, target: Target, run_dir: Path, valgrind: ValgrindOptions,
                 extra_env: dict[str, str] | None = None,
                 templates: list[ConfigTemplate] | None = None) -> None:
        self.target = target
        self.extra_env = dict(extra_env or {})
        self.templates = list(templates or [])
        self.config_paths: list[Path] = []
        self.run_dir = run_dir
        self.valgrind = valgrind
        self.log_path = run_dir / "valgrind.log"
        self.stdout_path = run_dir / "stdout.txt"
        self.stderr_path = run_dir / "stderr.txt"
        self.port: int | None = None
        self.pid: int | None = None             # the server's first process
        self.exit: ExitInfo | None = None
        self.on_hang = None     # called with self before a hung server is killed
        self.not_ready: str | None = None       # why wait_ready() said no
        self.exited_unready = False             # ... because it exited before listening
        self.daemonized = False                 # the first process left, its tree serves on
        self.listener_pid: int | None = None
        self.killed_after_exit = 0              # processes still there when the first one ended
        self._keeper_pid: int | None = None
        self._keeper_child = False              # the native keeper: ours to reap
        self._keeper_fd: int | None = None      # ... through its pidfd
        self._ctl: int | None = None
        self._status: int | None = None
        self._pending = b""
        self._root_status: int | None = None    # wait status of the first process
        self._empty = False                     # no process of the tree is left
        self._keeper_gone = False
        self._drain: _OutputDrain | None = None
        self._wake: tuple[int, int] | None = None   # the drain wakes the readiness wait
        self._port_lock: NameLock | None = None
        self.maps: dict[int, str] = {}          # pid -> its file-backed mappings (/proc/PID/maps)

    # -- start -------------------------------------------------------------
    def _claim_port(self) -> None:
        """A port no other case of any harness run uses meanwhile, checked
        free before start."""
        if self.target.port_mode == "substitute":
            for _ in range(100):
                port = free_port(self.target.host)
                lock = port_lock(port)
                if lock.try_acquire():
                    self.port, self._port_lock = port, lock
                    return
            raise TargetError("no free port found for '{port}' in 100 tries")
        if self.target.port_mode == "fixed":
            port = self.target.port
            lock = port_lock(port)
            if not lock.acquire(KEEPER_SECONDS):
                raise TargetError(f"port {port}: another harness run uses it (cases that share a "
                                  "fixed port run one at a time)")
            taken = proctree.listeners(port)
            if taken:
                lock.release()
                raise TargetError(f"port {port} is already taken: something listens on "
                                  f"{taken[0].shown()} before the server started; stop it or "
                                  "use '{port}' in the command")
            self.port, self._port_lock = port, lock

    def _render_templates(self) -> None:
        port = self.port if self.target.port_mode == "substitute" else self.target.port
        for template in self.templates:
            try:
                text = template.source.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise TargetError(f"--config-template {template.source}: cannot read: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
            dest = self.run_dir / template.name
            try:
                dest.write_text(fill(text, port, self.run_dir, None), encoding="utf-8")
            except OSError as exc:
                raise TargetError(f"{dest}: cannot write: {exc.strerror}") from None
            self.config_paths.append(dest)

    def _fill(self, text: str) -> str:
        port = self.port if self.target.port_mode == "substitute" else None
        return fill(text, port, self.run_dir, self.config_paths[0] if self.config_paths else None)

    def _argv(self) -> list[str]:
        return self.valgrind.argv(self.run_dir) + [self._fill(a) for a in self.target.argv]

    def _clear_run_dir(self) -> None:
        for pattern in RUN_FILES:
            for p in self.run_dir.glob(pattern):
                try:
                    p.unlink()
                except OSError:
                    pass

    def start(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetError(f"{self.run_dir}: cannot create the run folder: "
                              f"{exc.strerror}") from None
        self._clear_run_dir()
        env = {k: v for k, v in os.environ.items() if k not in VALGRIND_ENV_DROP}
        env.setdefault("LC_ALL", "C")
        self._claim_port()
        try:
            self._render_templates()
        except TargetError:
            self._forget()
            raise
        env.update({k: self._fill(v) for k, v in self.extra_env.items()})
        argv = self._argv()
        try:
            err = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                          0o644)
        except OSError as exc:
            self._forget()
            raise TargetError(f"{self.stderr_path}: cannot write: {exc.strerror}") from None
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # Registered before the keeper has its job: an interrupt landing
        # anywhere from here on finds the control pipe, and closing it ends
        # the tree.
        with _live_lock:
            _live.add(self)
        try:
            out_r = self._hand_to_keeper(null, err, argv, env)
        finally:
            os.close(err)
            os.close(null)
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._drain = _OutputDrain(open(out_r, "rb"), self.stdout_path, self._wake[1])
        self._drain.start()
        deadline = Deadline(KEEPER_SECONDS)
        while self.pid is None and not self._keeper_gone and not deadline.expired():
            failure = self._events(deadline.left())
            if failure:
                self.kill()
                raise TargetError(f"cannot start {argv[len(argv) - len(self.target.argv)]!r}: "
                                  f"{failure}")
        if self.pid is None:
            self.kill()
            raise TargetError("the harness's keeper process did not start the server")

    def _hand_to_keeper(self, null: int, err: int, argv: list[str], env: dict[str, str]) -> int:
        """The server's job to a keeper, through the fork server; returns
        the read end of the server's stdout.  A second try gets new pipes:
        a keeper the first may have left reads end-of-file on its control
        pipe and ends, whatever it started."""
        for attempt in range(2):
            out_r, out_w = os.pipe()
            ctl_r, self._ctl = os.pipe()
            self._status, st_w = os.pipe()
            try:
                fds = [null, out_w, err, ctl_r, st_w]
                self._keeper_pid = self._spawn_native(fds, argv, env)
                if self._keeper_pid is None:
                    self._keeper_pid = _fork_server.hand(fds, argv, env, self.target.cwd)
                return out_r
            except OSError as exc:
                os.close(out_r)
                self._close_control()
                os.close(self._status)
                self._status = None
                if attempt:
                    self._forget()
                    raise TargetError("cannot start a keeper for the server: "
                                      f"{exc.strerror or exc}") from None
            finally:
                for fd in (ctl_r, st_w, out_w):
                    os.close(fd)
        raise AssertionError("unreachable")

    def _spawn_native(self, fds: list[int], argv: list[str], env: dict[str, str]) -> int | None:
        """The native keeper's PID, or None where there is none (then the
        fork server's).  One that cannot be run (its file removed, a cache
        folder on a noexec mount) is not tried again by this process."""
        exe = keeper.native()
        if exe is None:
            return None
        try:
            pid = keeper.spawn_native(exe, fds, argv, env, self.target.cwd)
        except OSError:
            keeper.native_unusable()
            return None
        self._keeper_child = True
        self._keeper_fd = _pidfd(pid)
        return pid

    # -- the keeper's reports ------------------------------------------------
    def _events(self, timeout: float) -> str | None:
        """Read what the keeper said (waiting up to `timeout` for the first
        line); returns a start failure's message, if any."""
        if self._status is None or self._keeper_gone:
            return None
        fds = [self._status] if self._wake is None else [self._status, self._wake[0]]
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return None
        if self._wake is not None and self._wake[0] in ready:
            try:
                os.read(self._wake[0], 64)
            except OSError:
                pass
        if self._status not in ready:
            return None
        chunk = os.read(self._status, 65536)
        if not chunk:
            self._keeper_gone = True
            self._empty = True
            return None
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        failure = None
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "started":
                self.pid = int(rest)
            elif word == "failed":
                code, _, message = rest.partition(" ")
                failure = message or os.strerror(int(code))
            elif word == "exit":
                pid, status = (int(x) for x in rest.split())
                if pid == self.pid:
                    self._root_status = status
            elif word == "empty":
                self._empty = True
            elif word == "killed":
                self.killed_after_exit = int(rest)
            elif word == "error":
                failure = f"keeper: {rest}"
        return failure

    @property
    def exited(self) -> bool:
        """The server's first process has ended."""
        self._events(0)
        return self._root_status is not None or self._keeper_gone

    def returncode(self) -> int | None:
        if self._root_status is None:
            return None
        return os.waitstatus_to_exitcode(self._root_status)

    def tree(self) -> list[int]:
        """The PIDs of every process of the server's tree now."""
        if self._keeper_pid is None or self._keeper_gone:
            return []
        return [st.pid for st in proctree.descendants(self._keeper_pid)]

    def cpu_ticks(self) -> int | None:
        """CPU time (clock ticks, user + system) the tree's live processes
        have used; None once the tree is gone.  A server that is still
        reacting (freeing a session, flushing a log) keeps this growing."""
        if self._keeper_pid is None or self._keeper_gone:
            return None
        tree = proctree.descendants(self._keeper_pid)
        return sum(st.cpu_ticks for st in tree) if tree else None

    def snapshot_maps(self) -> None:
        """Keep every live process's file-backed mappings (which object each
        address belongs to: the program's own frames, and a stripped
        binary's offsets, are told from them)."""
        for pid in self.tree():
            try:
                text = Path(f"/proc/{pid}/maps").read_text()
            except OSError:
                continue
            lines = [line for line in text.splitlines() if " /" in line]
            if lines:
                self.maps[pid] = "\n".join(lines) + "\n"

    # -- ready ---------------------------------------------------------------
    def wait_ready(self, seconds: float) -> bool:
        ready = self._wait_ready(seconds)
        if ready:
            self.snapshot_maps()
        return ready

    def _wait_ready(self, seconds: float) -> bool:
        """True once the server listens; False (`not_ready` says why) if it
        exited, listens elsewhere, or the deadline passed first."""
        assert self._drain is not None
        deadline = Deadline(seconds)
        elsewhere_since: float | None = None
        next_tree_look = 0.0
        while True:
            if self.target.port_mode == "announce":
                if self._drain.port is not None:
                    self.port = self._drain.port
                    if not self.exited or self._daemon_listens():
                        return True
            elif self._listening():
                return True
            now = time.monotonic()
            if now >= next_tree_look:
                next_tree_look = now + TREE_POLL
                other = self._listening_elsewhere()
                elsewhere_since = (elsewhere_since or now) if other else None
                if other and now - elsewhere_since >= WRONG_PORT_GRACE:
                    self.not_ready = (f"listening on {other[0].shown()}, not on {self.port}: "
                                      "does it ignore the port argument?")
                    return False
            if self.exited and not self.tree():
                self._drain.join(timeout=1)     # the readiness line may still be in the pipe
                if self.target.port_mode == "announce" and self._drain.port is not None:
                    self.port = self._drain.port
                self.not_ready = "exited before it was listening"
                self.exited_unready = True
                return False
            if deadline.expired():
                where = f"{self.target.host}:{self.port}" if self.port else "its announced port"
                self.not_ready = f"did not start listening on {where} within {seconds:.0f}s"
                return False
            # An announced port is an event (the drain's wake pipe), and so is
            # an exit (the keeper's report): only the look at the whole tree
            # is due by the clock.  A listening socket is no event: poll.
            if self.target.port_mode == "announce":
                if self._drain.port is not None:
                    continue    # it came meanwhile: its wake byte may be read already
                wait = max(0.0, next_tree_look - time.monotonic())
            else:
                wait = POLL
            self._events(min(wait, deadline.left()))

    def port_taken_meanwhile(self) -> bool:
        """The server exited before listening because the port the harness
        chose for it was taken by another process in between (its bind()
        failed with EADDRINUSE): the harness's doing, not the server's."""
        if self.target.port_mode != "substitute" or not self.exited_unready:
            return False
        return proctree.bound(self.port) or "Address already in use" in self.output_tail()

    def _owned_listeners(self, found: list[proctree.Listener]) -> dict[int, int]:
        tree = self.tree()
        return proctree.owners(found, tree) if tree else {}

    def _listening(self) -> bool:
        found = [l for l in proctree.listeners(self.port) if _serves(l, self.target.host)]
        if not found:
            return False
        owned = self._owned_listeners(found)
        if not owned:
            return False
        self.listener_pid = next(iter(owned.values()))
        self.daemonized = self.exited
        return True

    def _daemon_listens(self) -> bool:
        if self.tree():
            self.daemonized = True
            return True
        return False

    def _listening_elsewhere(self) -> list[proctree.Listener]:
        if self.port is None:
            return []
        found = [l for l in proctree.listeners() if l.port != self.port]
        owned = self._owned_listeners(found)
        return [l for l in found if l.inode in owned]

    # -- stop ----------------------------------------------------------------
    def stop(self, sig: int, seconds: float) -> ExitInfo:
        """Send `sig`, wait up to `seconds` for the server to end (its first
        process; a daemonized tree: all of it), then kill what is left."""
        if self.exit is not None:
            return self.exit
        if self.exited and not self.daemonized and self.tree():
            self.daemonized = True      # the first process left, a descendant stayed
        early = self.exited and not self.daemonized
        sent: int | None = None
        hung = False
        started = time.monotonic()
        self.snapshot_maps()
        if not early:
            self._command(f"signal {sig}")
            sent = sig
            deadline = Deadline(seconds)
            while not self._stopped() and not deadline.expired():
                self._events(deadline.left())
            if not self._stopped():
                hung = True
                if self.on_hang is not None:
                    self.on_hang(self)
        self._end_tree()
        code = self.returncode()
        self.exit = ExitInfo(returncode=code, stop_signal=sent, hung=hung, exited_early=early,
                             stop_seconds=round(time.monotonic() - started, 3))
        return self.exit

    def _stopped(self) -> bool:
        self._events(0)
        if self.daemonized:
            return self._empty
        return self._root_status is not None or self._keeper_gone

    def hung_pid(self) -> int | None:
        """The process to ask where it hangs: the first one, or for a
        daemonized tree the one that listens."""
        if self.daemonized:
            return self.listener_pid
        return self.pid

    def kill(self) -> None:
        """End the whole tree now (the harness is being interrupted)."""
        if self._keeper_pid is not None and self.exit is None:
            self._end_tree()

    def _end_tree(self) -> None:
        self._command("kill")
        self._close_control()
        self._wait_keeper(KEEPER_SECONDS)
        self._forget()
        if self._drain is not None and self._drain.ident is not None:
            # (not started when a signal interrupted its start)
            self._drain.join(timeout=5)
        if self._wake is not None and (self._drain is None or not self._drain.is_alive()):
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def _command(self, line: str) -> None:
        if self._ctl is None:
            return
        try:
            os.write(self._ctl, (line + "\n").encode())
        except OSError:
            pass    # the keeper is gone already

    def _close_control(self) -> None:
        if self._ctl is not None:
            try:
                os.close(self._ctl)
            except OSError:
                pass
            self._ctl = None

    def _wait_keeper(self, seconds: float) -> None:
        """Wait for the keeper's end: its status pipe reads end-of-file when
        it exits (a native keeper is reaped here, a Python one by its fork
        server); past the deadline it is killed with its group."""
        if self._keeper_pid is None:
            return
        deadline = Deadline(seconds)
        while not self._keeper_gone and not deadline.expired():
            self._events(deadline.left())
        if not self._keeper_gone:
            try:
                os.killpg(self._keeper_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._keeper_child:
            _reap(self._keeper_pid, KEEPER_SECONDS, self._keeper_fd)
            self._keeper_child, self._keeper_fd = False, None
        self._keeper_pid = None

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)
        self._close_control()
        if self._status is not None:
            os.close(self._status)
            self._status = None
            self._keeper_gone = True
        if self._port_lock is not None:
            self._port_lock.release()
            self._port_lock = None
        for p in self.run_dir.glob("vgdb-pipe*"):
            try:
                p.unlink()
            except OSError:
                pass

    # -- output ----------------------------------------------------------------
    @property
    def output_bytes(self) -> int:
        return self._drain.total if self._drain else 0

    def output_tail(self, limit: int = 2000) -> str:
        """The end of the server's stderr and stdout, for startup failures
        (read from the end: the files may be huge)."""
        parts = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - limit))
                    data = f.read(limit).decode(errors="replace").strip()
            except OSError:
                continue
            if data:
                parts.append(f"--- {path.name} ---\n{data}")
        return "\n".join(parts)


def _serves(listener: proctree.Listener, host: str) -> bool:
    """A listener on `host`, or on every address of its family."""
    if listener.address in (host, "0.0.0.0", "::"):
        return True
    return host.startswith("127.") and listener.address == "::ffff:" + host


