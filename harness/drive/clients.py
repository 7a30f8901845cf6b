"""Play a scenario's steps against a listening server, over loopback.

Every wait has a deadline; every loop is bounded in count and time.  A step
that does not do what it says is a failure with a message naming the step;
the remaining steps are skipped and the server is stopped as usual.
"""
from __future__ import annotations

import errno
import fcntl
import random
import selectors
import socket
import struct
import termios
import time
from dataclasses import dataclass, field
from typing import Callable

from ..timeouts import Deadline, scaled
from .scenario import Scenario, Step

SIOCOUTQ = termios.TIOCOUTQ
SIOCINQ = termios.FIONREAD
_LINGER_RST = struct.pack("ii", 1, 0)
_TCP_TIME_WAIT = "06"       # the st column of /proc/net/tcp
SEND_PIECE = 1 << 20        # a send is written in pieces of at most this
ECHO_LIMIT = 64 << 20       # bytes kept per connection to check an echo


class StepFailed(Exception):
    pass


@dataclass
class PlayResult:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: bool = False
    stats: dict = field(default_factory=dict)


def generated(size: int, line_length: int) -> bytes:
    """`size` bytes of printable lines of `line_length` (newline included)."""
    if line_length <= 1:
        return (b"x" * size) if line_length == 0 else b"\n" * size
    body = bytes(ord("a") + i % 26 for i in range(line_length - 1)) + b"\n"
    reps = size // line_length + 1
    return (body * reps)[:size]


def generated_blocks(size: int, line_length: int):
    """generated(size, line_length), in blocks of about SEND_PIECE bytes that
    start on a line boundary (the content repeats every line)."""
    step = max(SEND_PIECE // max(line_length, 1), 1) * max(line_length, 1)
    block = generated(min(step, size), line_length)
    left = size
    while left > 0:
        yield block if left >= len(block) else block[:left]
        left -= len(block)


def kernel_queues(server_port: int, client_port: int, v6: bool = False) -> tuple[int, int] | None:
    """(tx_queue, rx_queue) of the server's socket for this connection, read
    from /proc/net/tcp: bytes it has not had acknowledged, bytes it has not
    read.  None when the socket is not there (closed)."""
    path = "/proc/net/tcp6" if v6 else "/proc/net/tcp"
    want_local = f":{server_port:04X}"
    want_remote = f":{client_port:04X}"
    with open(path) as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == _TCP_TIME_WAIT:
                continue    # an earlier connection's leftover with the same ports
            if parts[1].endswith(want_local) and parts[2].endswith(want_remote):
                tx, rx = parts[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


class Conn:
    def __init__(self, name: str, sock: socket.socket) -> None:
        self.name = name
        self.sock = sock
        self.unchecked = bytearray()    # sent since the last expect (for echo)
        self.unchecked_dropped = 0      # ... past ECHO_LIMIT: not kept, echo cannot be checked
        self.sent = 0
        self.received = 0
        self.closed = False
        self.buffer = bytearray()       # read but not yet consumed by an expect

    def remember(self, piece: bytes) -> None:
        room = ECHO_LIMIT - len(self.unchecked)
        self.unchecked += piece[:max(room, 0)]
        self.unchecked_dropped += max(len(piece) - max(room, 0), 0)

    def forget(self) -> None:
        self.unchecked.clear()
        self.unchecked_dropped = 0

    @property
    def client_port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        else:
            _discard_received(self.sock)
        self.sock.close()
        self.closed = True


def _discard_received(sock: socket.socket) -> None:
    """Closing with unread bytes in the receive queue makes the kernel send
    RST instead of FIN: discard what has already arrived, so that a close is
    the orderly close it says it is."""
    try:
        sock.setblocking(False)
        for _ in range(1024):           # bounded: at most 64 MiB
            if not sock.recv(1 << 16):
                break
    except OSError:                     # nothing more queued (EAGAIN), or reset
        pass


class Player:
    """Plays a scenario.  `server`, when given, is what the player may ask of
    the server without touching it (drive.launch.Server: `cpu_ticks()`)."""

    def __init__(self, scenario: Scenario, host: str, port: int,
                 stop_server: Callable[[], None], step_timeout: float, server=None) -> None:
        self.scenario = scenario
        self.server = server
        self.host = host
        self.port = port
        self.stop_server = stop_server
        self.step_timeout = step_timeout
        self.conns: dict[str, Conn] = {}
        self.groups: dict[str, list[str]] = {}
        self.idle: list[socket.socket] = []
        self.result = PlayResult()

    # -- driving -----------------------------------------------------------
    def play(self) -> PlayResult:
        for step in self.scenario.steps:
            try:
                getattr(self, f"_do_{step.do}")(step)
            except (StepFailed, OSError) as exc:
                msg = f"{step.label}: {_describe(exc)}"
                if step.get("may_fail"):
                    self.result.notes.append(msg + " (allowed: may_fail)")
                    continue
                self.result.failures.append(msg)
                break
        return self.result

    def close_all(self) -> None:
        for conn in self.conns.values():
            try:
                conn.close()
            except OSError:
                pass
        for sock in self.idle:
            sock.close()
        self.idle.clear()

    def _timeout(self, step: Step) -> float:
        # A step's own timeout is scaled like every other deadline
        # (step_timeout arrives already scaled from the runner).
        own = step.get("timeout")
        return scaled(float(own)) if own else self.step_timeout

    def _targets(self, step: Step) -> list[Conn]:
        name = step.get("conn")
        names = self.groups.get(name, [name])
        out = []
        for n in names:
            conn = self.conns.get(n)
            if conn is None:
                raise StepFailed(f"connection {n!r} is not open")
            if conn.closed and step.do not in ("close", "reset"):
                raise StepFailed(f"connection {n!r} was closed by an earlier step")
            out.append(conn)
        return out

    def _connect(self, rcvbuf: int | None, timeout: float) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    # -- steps ---------------------------------------------------------------
    def _do_open(self, step: Step) -> None:
        given = ([step.get("conn")] if step.get("conn") else []) + list(step.get("conns") or [])
        count = step.get("count")
        for name in given:
            members = [name] if count == 1 else [f"{name}{i}" for i in range(1, count + 1)]
            self.groups[name] = members
            for member in members:
                sock = self._connect(step.get("rcvbuf"), self._timeout(step))
                self.conns[member] = Conn(member, sock)

    def _pieces(self, step: Step):
        """What a send step writes, one write at a time: generated lines are
        made a block at a time, so a send of any size streams."""
        chunk = step.get("chunk")
        if step.get("text") is not None:
            blocks = [step.get("text").encode()]
        elif step.get("hex") is not None:
            blocks = [bytes.fromhex(step.get("hex"))]
        else:
            blocks = None
        for _ in range(step.get("repeat")):
            for block in blocks or generated_blocks(step.get("size"), step.get("line_length")):
                if chunk == "all":
                    yield from (block[i:i + SEND_PIECE] for i in range(0, len(block), SEND_PIECE))
                elif chunk == "line":
                    yield from block.splitlines(keepends=True)
                else:
                    yield from (block[i:i + 1] for i in range(len(block)))

    def _do_send(self, step: Step) -> None:
        for conn in self._targets(step):
            deadline = Deadline(self._timeout(step))
            for piece in self._pieces(step):
                if deadline.expired():
                    raise StepFailed(f"{conn.name}: send did not finish within "
                                     f"{self._timeout(step):g}s ({conn.sent} bytes sent)")
                conn.sock.settimeout(max(deadline.left(), 0.001))
                try:
                    conn.sock.sendall(piece)
                except socket.timeout:
                    raise StepFailed(f"{conn.name}: the server stopped taking data "
                                     f"({conn.sent} bytes sent)") from None
                conn.sent += len(piece)
                conn.remember(piece)

    def _read_exact(self, conn: Conn, size: int, deadline: Deadline, what: str) -> bytes:
        while len(conn.buffer) < size:
            self._recv_some(conn, deadline, f"{what}: got {len(conn.buffer)} of {size} bytes")
        data = bytes(conn.buffer[:size])
        del conn.buffer[:size]
        return data

    def _recv_some(self, conn: Conn, deadline: Deadline, context: str) -> None:
        left = deadline.left()
        if left <= 0:
            raise StepFailed(f"{conn.name}: timed out; {context}")
        conn.sock.settimeout(left)
        try:
            chunk = conn.sock.recv(1 << 16)
        except socket.timeout:
            raise StepFailed(f"{conn.name}: timed out; {context}") from None
        if not chunk:
            raise StepFailed(f"{conn.name}: the server closed the connection; {context}")
        conn.received += len(chunk)
        conn.buffer += chunk

    def _do_expect(self, step: Step) -> None:
        for conn in self._targets(step):
            deadline = Deadline(self._timeout(step))
            if step.get("line"):
                while b"\n" not in conn.buffer:
                    self._recv_some(conn, deadline, "waiting for a line")
                end = conn.buffer.index(b"\n") + 1
                del conn.buffer[:end]
            elif step.get("size") is not None:
                self._read_exact(conn, step.get("size"), deadline, "expecting bytes")
            else:
                if step.get("echo"):
                    if conn.unchecked_dropped:
                        raise StepFailed(f"{conn.name}: {conn.sent:,} bytes sent since the last "
                                         f"expect, more than {ECHO_LIMIT >> 20} MiB: their echo "
                                         "is not kept to compare; expect `size` instead")
                    want = bytes(conn.unchecked)
                elif step.get("text") is not None:
                    want = step.get("text").encode()
                else:
                    want = bytes.fromhex(step.get("hex"))
                got = self._read_exact(conn, len(want), deadline, "expecting a reply")
                if got != want:
                    at = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
                    raise StepFailed(f"{conn.name}: reply differs at byte {at}: "
                                     f"got {got[at:at + 16]!r}, expected {want[at:at + 16]!r}")
            conn.forget()

    def _do_stall(self, step: Step) -> None:
        for conn in self._targets(step):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, step.get("rcvbuf"))

    def _do_wait_read(self, step: Step) -> None:
        v6 = ":" in self.host
        for conn in self._targets(step):
            deadline = Deadline(self._timeout(step))
            want = step.get("min_queued")
            state = "no check yet"
            last = None
            while True:
                outq = struct.unpack("i", fcntl.ioctl(conn.sock, SIOCOUTQ, b"\0" * 4))[0]
                inq = struct.unpack("i", fcntl.ioctl(conn.sock, SIOCINQ, b"\0" * 4))[0]
                queues = kernel_queues(self.port, conn.client_port, v6)
                if queues is None:
                    raise StepFailed(f"{conn.name}: the server's socket is gone (closed)")
                tx, rx = queues
                held = conn.sent - conn.received - inq - tx
                state = (f"client unsent {outq}, server unread {rx}, in kernel buffers "
                         f"{tx + inq}, held by the server {held}")
                # Settled: the same counts twice in a row.  A server that has
                # read everything may still be moving replies into its socket;
                # the first reading would overstate what it holds.
                settled = last == (outq, inq, tx, rx)
                last = (outq, inq, tx, rx)
                if outq == 0 and rx == 0 and held >= want and settled:
                    self.result.notes.append(f"{step.label} {conn.name}: {state}")
                    break
                if deadline.expired():
                    raise StepFailed(f"{conn.name}: the server did not read everything within "
                                     f"{self._timeout(step):g}s ({state}; wanted held >= {want})")
                # A kernel counter has no event to wait on: look again shortly.
                time.sleep(min(0.01, deadline.left()))

    def _do_half_close(self, step: Step) -> None:
        for conn in self._targets(step):
            conn.sock.shutdown(socket.SHUT_WR)

    def _do_close(self, step: Step) -> None:
        for conn in self._targets(step):
            conn.close()

    def _do_reset(self, step: Step) -> None:
        for conn in self._targets(step):
            conn.close(reset=True)

    def _do_wait_closed(self, step: Step) -> None:
        how = step.get("how")
        for conn in self._targets(step):
            deadline = Deadline(self._timeout(step))
            seen = None
            while seen is None:
                left = deadline.left()
                if left <= 0:
                    raise StepFailed(f"{conn.name}: the server did not close the connection "
                                     f"within {self._timeout(step):g}s")
                conn.sock.settimeout(left)
                try:
                    chunk = conn.sock.recv(1 << 16)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    seen = "reset"
                    break
                if chunk:
                    conn.received += len(chunk)
                else:
                    seen = "eof"
            if how != "any" and seen != how:
                raise StepFailed(f"{conn.name}: the server closed with {seen}, expected {how}")

    def _do_stop(self, step: Step) -> None:
        self.stop_server()
        self.result.stopped = True

    def _do_pause(self, step: Step) -> None:
        time.sleep(float(step.get("seconds")))

    def _do_storm(self, step: Step) -> None:
        storm = Storm(self, step)
        stats = storm.run()
        self.result.stats[step.label] = stats
        self.result.notes.append(f"{step.label}: {stats['summary']}")
        if stats["failed"]:
            raise StepFailed(f"{stats['failed']} of {stats['count']} connections failed: "
                             + "; ".join(stats["examples"]))

    def _do_fuzz(self, step: Step) -> None:
        seed = step.get("seed")
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        self.result.notes.append(f"{step.label}: seed {seed} (replay with seed = {seed})")
        Fuzz(self, seed, step.get("ops"), step.get("max_conns"), self._timeout(step)).run()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return str(exc) or type(exc).__name__


class _StormConn:
    def __init__(self, index: int, ending: str, payload: bytes) -> None:
        self.index = index
        self.ending = ending
        self.payload = payload
        self.sent = 0
        self.got = bytearray()
        self.sock: socket.socket | None = None
        self.state = "connect"
        self.stall_left = 0


class Storm:
    """Many concurrent connections on one selector; each exchanges `lines`
    lines, then ends as drawn from `endings` by a seeded random generator."""

    def __init__(self, player: Player, step: Step) -> None:
        self.player = player
        self.step = step
        self.rng = random.Random(step.get("seed"))
        self.sel = selectors.DefaultSelector()
        self.count = step.get("count")
        self.concurrency = step.get("concurrency")
        self.endings = list(step.get("endings"))
        self.lines = step.get("lines")
        self.echo = step.get("echo")
        self.max_idle = step.get("max_idle")
        self.stall_bytes = step.get("stall_bytes")
        self.timeout = player._timeout(step) * max(1, self.count // 100)
        self.started = 0
        self.idle_planned = 0
        self.active = 0
        self.done: dict[str, int] = {}
        self.failed = 0
        self.examples: list[str] = []

    def run(self) -> dict:
        deadline = Deadline(self.timeout)
        t0 = time.monotonic()
        while self.started < self.count or self.active:
            while self.started < self.count and self.active < self.concurrency:
                self._start()
            if deadline.expired():
                for key in list(self.sel.get_map().values()):
                    self._fail(key.data, "still running at the storm's deadline")
                break
            for key, mask in self.sel.select(timeout=min(0.5, deadline.left())):
                try:
                    self._advance(key.data, mask)
                except OSError as exc:
                    self._fail(key.data, _describe(exc))
        self.sel.close()
        secs = time.monotonic() - t0
        ends = ", ".join(f"{k} {v}" for k, v in sorted(self.done.items()))
        return {"count": self.count, "failed": self.failed, "seconds": round(secs, 3),
                "endings": dict(self.done), "examples": self.examples[:3],
                "summary": f"{self.count} connections in {secs:.1f}s ({ends}); "
                           f"{self.failed} failed; seed {self.step.get('seed')}"}

    def _start(self) -> None:
        ending = self.rng.choice(self.endings)
        if ending == "idle":
            if self.idle_planned >= self.max_idle:
                ending = "close"
            else:
                self.idle_planned += 1
        payload = b"".join(b"storm %d line %d\n" % (self.started, i) for i in range(self.lines))
        conn = _StormConn(self.started, ending, payload)
        self.started += 1
        self.active += 1
        family = socket.AF_INET6 if ":" in self.player.host else socket.AF_INET
        conn.sock = socket.socket(family, socket.SOCK_STREAM)
        conn.sock.setblocking(False)
        err = conn.sock.connect_ex((self.player.host, self.player.port))
        if err not in (0, errno.EINPROGRESS):
            self._fail(conn, f"connect: {errno.errorcode.get(err, err)}", registered=False)
            return
        self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _advance(self, conn: _StormConn, mask: int) -> None:
        sock = conn.sock
        assert sock is not None
        if conn.state == "connect":
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
            conn.state = "send" if conn.payload else "end"
        if conn.state == "send":
            if conn.sent < len(conn.payload):
                conn.sent += sock.send(conn.payload[conn.sent:])
            if conn.sent < len(conn.payload):
                return
            if self.echo:
                conn.state = "read"
                self.sel.modify(sock, selectors.EVENT_READ, conn)
                return
            conn.state = "end"      # nothing to wait for: end it now
        if conn.state == "read":
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(errno.ECONNABORTED, "the server closed before echoing")
            conn.got += chunk
            if len(conn.got) < len(conn.payload):
                return
            if bytes(conn.got) != conn.payload:
                raise OSError(errno.EPROTO, "the echo differs from what was sent")
            conn.state = "end"
        if conn.state == "end":
            self._end(conn)
        elif conn.state == "drain":
            chunk = sock.recv(65536)
            if not chunk:
                self._finish(conn)
        elif conn.state == "stall":
            try:
                while conn.stall_left > 0:
                    conn.stall_left -= sock.send(b"s" * min(conn.stall_left, 65536))
            except BlockingIOError:
                pass
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self._finish(conn)

    def _end(self, conn: _StormConn) -> None:
        sock = conn.sock
        assert sock is not None
        if conn.ending == "close":
            self._finish(conn)
        elif conn.ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self._finish(conn)
        elif conn.ending == "half_close":
            sock.shutdown(socket.SHUT_WR)
            conn.state = "drain"
            self.sel.modify(sock, selectors.EVENT_READ, conn)
        elif conn.ending == "stall_reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            conn.stall_left = self.stall_bytes
            conn.state = "stall"
            self.sel.modify(sock, selectors.EVENT_WRITE, conn)
        else:   # idle until the server stops
            self.sel.unregister(sock)
            self.player.idle.append(sock)
            self.active -= 1
            self.done["idle"] = self.done.get("idle", 0) + 1

    def _finish(self, conn: _StormConn) -> None:
        assert conn.sock is not None
        self.sel.unregister(conn.sock)
        if conn.ending == "close":
            _discard_received(conn.sock)    # a FIN, not an RST (see Conn.close)
        conn.sock.close()
        self.active -= 1
        self.done[conn.ending] = self.done.get(conn.ending, 0) + 1

    def _fail(self, conn: _StormConn, why: str, registered: bool = True) -> None:
        assert conn.sock is not None
        if registered:
            self.sel.unregister(conn.sock)
        conn.sock.close()
        self.active -= 1
        self.failed += 1
        if len(self.examples) < 3:
            self.examples.append(f"#{conn.index} ({conn.ending}, {conn.state}): {why}")


class Fuzz:
    """Seeded random operations on a small pool of connections.  Socket
    errors are part of the game (the server may reset); the verdict comes
    from valgrind, and the seed replays the exact sequence."""

    OPS = ("open", "line", "junk", "bytewise", "read", "half_close", "close", "reset", "stall")

    def __init__(self, player: Player, seed: int, ops: int, max_conns: int, timeout: float) -> None:
        self.player = player
        self.rng = random.Random(seed)
        self.ops = ops
        self.max_conns = max_conns
        self.timeout = timeout
        self.pool: list[socket.socket] = []

    def run(self) -> None:
        deadline = Deadline(self.timeout * max(1, self.ops // 100))
        try:
            for _ in range(self.ops):
                if deadline.expired():
                    self.player.result.notes.append("fuzz: stopped at its deadline")
                    break
                op = self.rng.choice(self.OPS)
                if op == "open" or not self.pool:
                    if len(self.pool) < self.max_conns:
                        self._try(self._open)
                    continue
                sock = self.rng.choice(self.pool)
                self._try(getattr(self, f"_{op}"), sock)
        finally:
            for sock in self.pool:
                sock.close()

    def _try(self, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except OSError:
            if args:
                self._drop(args[0])

    def _drop(self, sock: socket.socket) -> None:
        if sock in self.pool:
            self.pool.remove(sock)
        sock.close()

    def _open(self) -> None:
        sock = self.player._connect(None, 2.0)
        # Every send leaves at once: with Nagle, bytes held back by timing
        # would be dropped or not by a later reset, and a seed would not
        # replay the same bytes on the wire.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.pool.append(sock)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)
        except BlockingIOError:
            pass    # the server is not reading: that is fine here

    def _line(self, sock: socket.socket) -> None:
        n = self.rng.randint(0, 200)
        self._send(sock, bytes(self.rng.randint(32, 126) for _ in range(n)) + b"\n")

    def _junk(self, sock: socket.socket) -> None:
        self._send(sock, self.rng.randbytes(self.rng.randint(1, 4096)))

    def _bytewise(self, sock: socket.socket) -> None:
        for b in b"bytewise %d\n" % self.rng.randint(0, 999):
            self._send(sock, bytes([b]))

    def _read(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536) == b"":
                self._drop(sock)
        except BlockingIOError:
            pass

    def _half_close(self, sock: socket.socket) -> None:
        sock.shutdown(socket.SHUT_WR)

    def _close(self, sock: socket.socket) -> None:
        self._drop(sock)

    def _reset(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self._drop(sock)

    def _stall(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)


def play(scenario: Scenario, host: str, port: int, stop_server: Callable[[], None],
         step_timeout: float, server=None) -> tuple[PlayResult, Player]:
    player = Player(scenario, host, port, stop_server, step_timeout, server)
    return player.play(), player
