"""The keeper: one small process between the harness and each server.

Two implementations say the same lines on the same pipes (below).  The
native one, keeper.c, is compiled once per machine (`native()`) and started
by the harness with posix_spawn(); this module's is the fallback where no C
compiler is found, and the reference the C one follows.

This module's keeper is forked by the fork server (`fork_server()`): a
process the harness forks once, at its first server, that waits on a socket
for jobs, one message each (SCM_RIGHTS: the server's stdin, stdout and
stderr, CTL and STATUS; then argv, environment and folder as JSON), forks a
keeper for each and answers with its PID.  The harness itself then never
forks again: a fork of the harness costs it about 8 ms before the child runs
a line, and every page it writes afterwards is copied once more (850 page
faults per case), all while valgrind boots on the other core.  No new
interpreter is started either (tens of milliseconds here).  A keeper touches
nothing of the harness but the file descriptors it was given.

A keeper makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER) in a
session of its own, so whatever the server forks stays its descendant, even
a daemon that calls setsid() and whose parent exits.  It starts the server
with every signal at its default disposition and an empty signal mask (a job
started with `&` from a script ignores SIGINT, and exec would pass that on)
and with PR_SET_PDEATHSIG (SIGKILL when the keeper dies).  Where
util-linux's `setpriv --pdeathsig` exists (Debian: always) the server is
started with posix_spawn() through it: no copy of the keeper's memory;
elsewhere the keeper forks and sets it itself.

It reports on the STATUS pipe and obeys the CTL pipe, one line each:
  keeper -> harness  'started PID' | 'failed ERRNO MESSAGE' | 'exit PID STATUS'
                     (the wait status of the server's first process) |
                     'empty' (no process of the tree is left; it then
                     exits) | 'killed N' | 'error TEXT'
  harness -> keeper  'signal N' (to the server's first process; once that
                     one is gone, to every process of the tree) | 'kill'
When the harness says 'kill', or when CTL reads end-of-file (the harness
exited or was killed, even by SIGKILL: the kernel closes its end, the only
writer: no other process holds it), the keeper SIGKILLs every process of
the tree, reaps them and exits.
"""
from __future__ import annotations

import binascii
import ctypes
import errno
import fcntl
import functools
import gc
import json
import os
import select
import signal
import socket
import stat
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
NAME = b"leak-keeper"       # its name in the process table (/proc/PID/comm)
KILL_SECONDS = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


@functools.cache
def setpriv() -> str | None:
    """util-linux's setpriv, if it can set the parent-death signal (2.33+).
    The harness asks before it forks the fork server, so every keeper
    inherits the answer."""
    if os.environ.get("LEAK_HARNESS_KEEPER_FORK") == "1":
        return None     # the fork path, as where setpriv is missing
    found = next((p for p in ("/usr/bin/setpriv", "/bin/setpriv", "/usr/local/bin/setpriv")
                  if os.access(p, os.X_OK)), None)
    if found is None:
        return None
    return found if sets_pdeathsig(found) else None


SOURCE = Path(__file__).with_name("keeper.c")
COMPILERS = ("cc", "gcc", "clang")


def native() -> str | None:
    """The native keeper's program, or None (see _native)."""
    return None if _native_unusable else _native()


def native_unusable() -> None:
    """The native keeper could not be spawned: use the Python one from now on."""
    global _native_unusable
    _native_unusable = True


_native_unusable = False


@functools.cache
def _native() -> str | None:
    """The native keeper (keeper.c), compiled once per machine into the
    user's cache folder, in a folder named after its source; None where it
    cannot be (no C compiler, no cache folder, or LEAK_HARNESS_KEEPER=python):
    then every keeper is this module's, forked by the fork server."""
    if os.environ.get("LEAK_HARNESS_KEEPER", "native") == "python" \
            or os.environ.get("LEAK_HARNESS_KEEPER_FORK") == "1":
        return None
    try:
        source = SOURCE.read_bytes()
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        # A folder per source, the program named as the process table names
        # it from its exec on (/proc/PID/comm).
        folder = os.path.join(home, "leak-harness",
                              f"keeper-{os.uname().machine}-{binascii.crc32(source):08x}")
        exe = os.path.join(folder, NAME.decode())
        if os.access(exe, os.X_OK):
            return exe
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return _compile(exe)


def _compile(exe: str) -> str | None:
    """Build keeper.c into `exe` (through a file of this process's own, so
    that concurrent harnesses never run a half-written one)."""
    import subprocess       # only on a machine's first run
    part = f"{exe}.{os.getpid()}.part"
    for cc in COMPILERS:
        try:
            built = subprocess.run([cc, "-O2", "-Wall", "-o", part, str(SOURCE)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=120).returncode == 0
            if built:
                os.replace(part, exe)
                return exe
        except (OSError, subprocess.SubprocessError):
            pass
        try:
            os.unlink(part)
        except OSError:
            pass
    return None


def sets_pdeathsig(program: str) -> bool:
    """Whether this setpriv has --pdeathsig.  Its usage text names every
    option: reading the program (80 KB, 0.4 ms) spares every command the
    spawn of `setpriv --help` (4 ms), which is asked only where the program
    cannot be read (execute-only)."""
    try:
        with open(program, "rb") as f:
            return b"--pdeathsig" in f.read(8 << 20)
    except OSError:
        pass
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.posix_spawn(program, [program, "--help"], {"LC_ALL": "C"},
                             file_actions=[(os.POSIX_SPAWN_DUP2, w, 1),
                                           (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
        os.close(w)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.close(r)
        os.waitpid(pid, 0)
    except OSError:
        return False
    return b"--pdeathsig" in out


def exec_problem(name: str, env: dict[str, str]) -> OSError | None:
    """Why execvp(name) would fail, found before spawning (the spawned
    setpriv could only say so on stderr): the same PATH search."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name)
                      for d in env.get("PATH", "/bin:/usr/bin").split(":")]
    first: OSError | None = None
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError as exc:
            first = first or (exc if exc.errno not in (errno.ENOENT, errno.ENOTDIR) else None)
            continue
        if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK):
            return None
        first = first or OSError(errno.EACCES, os.strerror(errno.EACCES))
    return first or OSError(errno.ENOENT, os.strerror(errno.ENOENT))


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def descendants(root: int) -> list[int]:
    """Every live process below `root`, read from /proc (parent PIDs)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass    # the directory's own descriptor, closed already


class Keeper:
    def __init__(self, ctl: int, status: int, argv: list[str], env: dict[str, str],
                 cwd: str | None) -> None:
        self.ctl = ctl
        self.status = status
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.root: int | None = None        # the server's first process, until reaped
        self.pending = b""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def say(self, line: str) -> None:
        try:
            os.write(self.status, (line + "\n").encode())
        except OSError:
            pass        # the harness is gone: CTL will read end-of-file

    # -- the server ---------------------------------------------------------
    def start(self) -> bool:
        helper = setpriv()
        return self.spawn(helper) if helper else self.fork()

    def spawn(self, helper: str) -> bool:
        """posix_spawn() through `setpriv --pdeathsig KILL`: every signal at
        its default, an empty mask, the keeper's session."""
        try:
            if self.cwd:
                os.chdir(self.cwd)      # the keeper's own folder matters to nobody
            problem = exec_problem(self.argv[0], self.env)
            if problem is not None:
                raise problem
            defaults = [s for s in signal.valid_signals()
                        if s not in (signal.SIGKILL, signal.SIGSTOP)]
            pid = os.posix_spawn(helper, [helper, "--pdeathsig", "KILL", "--", *self.argv],
                                 self.env, setsigdef=defaults, setsigmask=[])
        except OSError as exc:
            self.say(f"failed {exc.errno or 0} {exc.strerror or exc}")
            return False
        self.root = pid
        self.say(f"started {pid}")
        return True

    def fork(self) -> bool:
        me = os.getpid()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(err_r)
                signal.set_wakeup_fd(-1)
                for sig in signal.valid_signals():
                    if sig not in (signal.SIGKILL, signal.SIGSTOP):
                        try:
                            signal.signal(sig, signal.SIG_DFL)
                        except (OSError, ValueError):
                            pass
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != me:
                    os._exit(127)       # the keeper died in between
                if self.cwd:
                    os.chdir(self.cwd)
                os.execvpe(self.argv[0], self.argv, self.env)
            except OSError as exc:
                os.write(err_w, f"{exc.errno} {exc.strerror}".encode())
            except BaseException as exc:    # noqa: BLE001 - report, never run on
                os.write(err_w, f"0 {exc!r}".encode())
            os._exit(127)
        os.close(err_w)
        failure = b""
        while chunk := os.read(err_r, 4096):
            failure += chunk
        os.close(err_r)
        if failure:
            os.waitpid(pid, 0)
            self.say("failed " + failure.decode(errors="replace"))
            return False
        self.root = pid
        self.say(f"started {pid}")
        return True

    def reap(self) -> bool:
        """Reap what has exited; False once no child is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.root:
                self.root = None
                self.say(f"exit {pid} {status}")

    def signal(self, number: int) -> None:
        """The server's first process, or, once it is gone (a daemon), every
        process of the tree: a daemon's intermediate process may still be
        exiting, and the daemon not yet adopted here."""
        targets = [self.root] if self.root is not None else descendants(os.getpid())
        for pid in targets:
            try:
                os.kill(pid, number)
            except OSError:
                pass

    def kill_tree(self) -> int:
        """SIGKILL every descendant until none is left (a process may fork
        while the others die: look again), within a deadline."""
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        killed = 0
        end = time.monotonic() + KILL_SECONDS
        while time.monotonic() < end:
            tree = descendants(os.getpid())
            if not tree:
                break
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            if self.reap():
                signal.sigtimedwait([signal.SIGCHLD], 0.02)
        while self.reap() and time.monotonic() < end:
            signal.sigtimedwait([signal.SIGCHLD], 0.02)
        return killed

    # -- the loop -------------------------------------------------------------
    def commands(self) -> list[list[str]] | None:
        """Complete lines from the harness; None at end-of-file."""
        try:
            chunk = os.read(self.ctl, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            return None
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        return [line.decode().split() for line in lines if line.strip()]

    def run(self) -> int:
        if not self.start():
            return 1
        while True:
            try:
                ready, _, _ = select.select([self.ctl, self.wake], [], [])
            except InterruptedError:
                continue
            if self.wake in ready:
                _drain(self.wake)
                if not self.reap():
                    self.say("empty")
                    return 0
            if self.ctl in ready:
                commands = self.commands()
                if commands is None:
                    self.kill_tree()
                    return 0
                for words in commands:
                    if words[0] == "signal":
                        self.signal(int(words[1]))
                    elif words[0] == "kill":
                        self.say(f"killed {self.kill_tree()}")
                        return 0


# A job's header: the JSON's length; the five descriptors ride with it.
_HEADER = 8
_JOB_FDS = 5
FORK_SERVER_NAME = b"leak-forkserver"


def hand(sock: socket.socket, fds: list[int], argv: list[str], env: dict[str, str],
         cwd: str | None) -> int:
    """The harness's side: a keeper for this server, from the fork server
    at the other end of `sock` (fds: stdin, stdout, stderr, CTL's read end,
    STATUS's write end).  Returns the keeper's PID; raises OSError if the
    fork server is gone or does not answer within the socket's timeout."""
    payload = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
    socket.send_fds(sock, [len(payload).to_bytes(_HEADER, "little")], fds)
    sock.sendall(payload)
    return _pid_of(sock)


def spawn_native(exe: str, fds: list[int], argv: list[str], env: dict[str, str],
                 cwd: str | None) -> int:
    """The harness's side for the native keeper: posix_spawn() it (no copy of
    the harness's memory) with the five descriptors of `hand` at 0 to 4, in
    a session of its own from its first instruction (a Ctrl-C on the
    terminal never reaches it).  The descriptors are copied above 9 first:
    the copies to 0-4 are made in order, and one must not overwrite a
    descriptor still to be copied.  Returns its PID, a child of this
    process, which reaps it."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
    try:
        return os.posix_spawn(exe, [exe, cwd or "", *argv], env, setsid=True,
                              file_actions=[(os.POSIX_SPAWN_DUP2, fd, target)
                                            for target, fd in enumerate(high)])
    finally:
        for fd in high:
            os.close(fd)


def _pid_of(sock: socket.socket) -> int:
    reply = _recv_exact(sock, _HEADER)
    if reply is None:
        raise ConnectionResetError(errno.ECONNRESET, "the fork server exited")
    return int.from_bytes(reply, "little")


def _recv_exact(sock: socket.socket, size: int, start: bytes = b"") -> bytes | None:
    """`size` bytes (`start` first), or None at end-of-file."""
    data = bytearray(start)
    while len(data) < size:
        more = sock.recv(min(size - len(data), 1 << 20))
        if not more:
            return None
        data += more
    return bytes(data)


def _job(sock: socket.socket) -> tuple[list[int], dict] | None:
    """The fork server's side: the next job, or None at end-of-file (the
    harness exited or let it go)."""
    head, fds, _, _ = socket.recv_fds(sock, _HEADER, _JOB_FDS)
    if len(fds) != _JOB_FDS:
        for fd in fds:
            os.close(fd)
        return None
    head = _recv_exact(sock, _HEADER, head)
    body = None if head is None else _recv_exact(sock, int.from_bytes(head, "little"))
    if body is None:
        for fd in fds:
            os.close(fd)
        return None
    return fds, json.loads(body)


def _settle(name: bytes) -> None:
    """What the fork server does first, and its keepers inherit: a session
    of its own, deaf to the terminal's and the job control's signals (only
    the harness's socket and pipes rule them), no signal blocked, a name."""
    gc.disable()        # nothing of the harness's is finalized here
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def fork_server(sock: int) -> None:
    """The fork server's whole life, in a child the harness forked once:
    never returns.  For each job on `sock` it forks a keeper and answers
    with its PID; it reaps the keepers; at end-of-file it exits (the
    keepers run on: each ends with its own control pipe)."""
    code = 1
    try:
        _settle(FORK_SERVER_NAME)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _close_fds_except({0, 1, 2, sock})
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        with socket.socket(fileno=sock) as conn:
            while True:
                try:
                    ready, _, _ = select.select([conn, wake_r], [], [])
                except InterruptedError:
                    continue
                if wake_r in ready:
                    _drain(wake_r)
                    _reap_all()
                if conn not in ready:
                    continue
                job = _job(conn)
                if job is None:
                    break
                fds, what = job
                pid = os.fork()
                if pid == 0:
                    _keeper(fds, what, {conn.fileno(), wake_r, wake_w})
                for fd in fds:
                    os.close(fd)
                conn.sendall(pid.to_bytes(_HEADER, "little"))
        code = 0
    except BaseException:       # noqa: BLE001 - the harness sees the socket close
        pass
    finally:
        os._exit(code)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _keeper(fds: list[int], what: dict, fork_servers: set[int]) -> None:
    """A keeper's whole life, in a child the fork server just forked: never
    returns."""
    code = 1
    status = fds[4]
    try:
        signal.set_wakeup_fd(-1)
        for fd in fork_servers:
            os.close(fd)
        os.setsid()
        for target, fd in zip((0, 1, 2), fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        ctl = fds[3]
        os.set_inheritable(ctl, False)
        os.set_inheritable(status, False)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0)
        keeper = Keeper(ctl, status, what["argv"], what["env"], what["cwd"])
        try:
            code = keeper.run()
        except BaseException as exc:    # noqa: BLE001 - the harness must hear of it
            keeper.say(f"error {exc!r}")
            keeper.kill_tree()
    except BaseException as exc:        # noqa: BLE001 - said where the harness listens
        try:
            os.write(status, f"error {exc!r}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)
