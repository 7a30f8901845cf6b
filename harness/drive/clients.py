"""Play a scenario's steps against a listening server, over loopback.

Every wait has a deadline; every loop is bounded in count and time.  A step
that does not do what it says is a failure with a message naming the step;
the remaining steps are skipped and the server is stopped as usual.
"""
from __future__ import annotations

import errno
import fcntl
import os
import random
import re
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
SEND_PATIENCE = 6           # a whole send: this many times the step's timeout
ECHO_LIMIT = 64 << 20       # bytes kept per connection to check an echo
STANDSTILL_CHECK = 0.5      # a write taking no byte: how often TCP's standstill is looked for
QUIESCE_POLL = 0.01         # quiesce: how often the server's CPU time is read


class StepFailed(Exception):
    pass


RECORD_OPS = 200_000         # operations a random step records, at most ...
RECORD_BYTES = 32 << 20      # ... and bytes of what it sent


@dataclass
class PlayResult:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: bool = False
    stats: dict = field(default_factory=dict)
    # What each random step (fuzz, storm) played, by step index: its seed
    # and its operations as they happened (see Recording).
    played: dict[int, "Recording"] = field(default_factory=dict)

    def played_json(self) -> dict[str, dict]:
        return {str(i): r.to_json() for i, r in sorted(self.played.items())}


class Recording:
    """The concrete operations a random step played, in the order they
    happened, on connections numbered 1, 2, ... in the order they were
    opened: what the server actually saw (a send the kernel took only in
    part is recorded with the bytes it took; a close with unread replies,
    which the kernel turns into an RST, as a reset).  Each operation is a
    dict: {"op": "open"|"send"|"drain"|"expect_echo"|"half_close"|
    "wait_closed"|"close"|"reset"|"stall", "conn": N, ...} with "hex" and
    "chunk" for a send, "bytes" for a drain.  Bounded: past RECORD_OPS
    operations or RECORD_BYTES sent it stops, and says so (`complete`)."""

    def __init__(self, do: str, seed: int) -> None:
        self.do = do
        self.seed = seed
        self.ops: list[dict] = []
        self.sent = 0
        self.complete = True

    def add(self, op: str, conn: int, **extra) -> None:
        if not self.complete:
            return
        if len(self.ops) >= RECORD_OPS or self.sent > RECORD_BYTES:
            self.complete = False
            return
        self.ops.append({"op": op, "conn": conn, **extra})

    def send(self, conn: int, data: bytes, chunk: str = "all") -> None:
        if data:
            self.sent += len(data)
            self.add("send", conn, hex=data.hex(), chunk=chunk)

    def to_json(self) -> dict:
        return {"do": self.do, "seed": self.seed, "complete": self.complete, "ops": self.ops}


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


@dataclass(frozen=True)
class TcpState:
    """What the kernel says of a connection's sending side (TCP_INFO)."""

    retransmits: int        # unanswered retransmissions of lost segments (the RTO's backoff)
    probes: int             # unanswered zero-window probes
    window: int | None      # the server's receive window, as the client last heard (None:
                            # the kernel does not say, before Linux 5.4)

    @property
    def shut(self) -> bool:
        """The server's receive window is shut, as far as the client knows."""
        return self.probes > 0 if self.window is None else self.window == 0

    def shown(self) -> str:
        if self.shut:
            probes = f" ({self.probes} window probes unanswered)" if self.probes else ""
            return f"the server's receive window is shut{probes}"
        if self.retransmits:
            return f"TCP is resending lost segments ({self.retransmits} retransmissions)"
        if self.window is not None:
            return f"the server's receive window is open ({self.window:,} bytes)"
        return "no retransmission, no window probe"


_TCPI_SND_WND = 228     # offset of tcpi_snd_wnd in struct tcp_info (Linux 5.4 on)


def tcp_state(sock: socket.socket) -> TcpState:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return TcpState(0, 0, None)
    window = struct.unpack_from("I", info, _TCPI_SND_WND)[0] \
        if len(info) >= _TCPI_SND_WND + 4 else None
    # struct tcp_info: state, ca_state, retransmits, probes, ...
    return TcpState(retransmits=info[2], probes=info[3], window=window)


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
        self.standstills = 0            # TCP stood still in a send (Player._unstick) ...
        self.read_to_move = 0           # ... and the bytes read to get it moving

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
                if step.get("nodelay"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.conns[member] = Conn(member, sock)

    def _pieces(self, step: Step):
        """What a send step writes, one write at a time: generated lines are
        made a block at a time, so a send of any size streams."""
        chunk = step.get("chunk")
        given = _bytes_of(step, "text", "hex")
        blocks = None if given is None else [given]
        for _ in range(step.get("repeat")):
            for block in blocks or generated_blocks(step.get("size"), step.get("line_length")):
                if chunk == "all":
                    yield from (block[i:i + SEND_PIECE] for i in range(0, len(block), SEND_PIECE))
                elif chunk == "line":
                    yield from block.splitlines(keepends=True)
                else:
                    yield from (block[i:i + 1] for i in range(len(block)))

    def _do_send(self, step: Step) -> None:
        """Megabytes to a server slowed by valgrind (and by a loaded machine)
        take time: the step's timeout bounds how long the server may take
        no byte at all; the whole send gets SEND_PATIENCE times that."""
        limit = self._timeout(step)
        for conn in self._targets(step):
            deadline = Deadline(limit * SEND_PATIENCE)
            before = conn.standstills, conn.read_to_move
            try:
                for piece in self._pieces(step):
                    if deadline.expired():
                        raise StepFailed(f"{conn.name}: send did not finish within "
                                         f"{limit * SEND_PATIENCE:g}s ({conn.sent} bytes sent)")
                    self._send_piece(conn, piece, deadline, limit)
                    conn.remember(piece)
            finally:
                if (times := conn.standstills - before[0]):
                    self.result.notes.append(
                        f"{step.label} {conn.name}: TCP stood still "
                        f"{'once' if times == 1 else f'{times} times'}, the server's window shut "
                        f"with nothing unread in its socket; the client read "
                        f"{conn.read_to_move - before[1]:,} bytes of replies to move it")

    def _send_piece(self, conn: Conn, piece: bytes, deadline: Deadline, idle: float) -> None:
        """All of `piece`, by writes that each either take some bytes or time
        out having taken none (sendall would lose count on a timeout): the
        server stopped taking data once `idle` seconds pass without a byte
        taken.  A deadline held meanwhile (run --debug) lets the write go on
        after."""
        view = memoryview(piece)
        done = 0
        taking = Deadline(idle)
        still = 0       # checks in a row that found TCP standing still
        while done < len(piece):
            conn.sock.settimeout(max(min(deadline.left(), taking.left(), STANDSTILL_CHECK), 0.001))
            try:
                n = conn.sock.send(view[done:])
            except socket.timeout:
                if deadline.expired() or taking.expired():
                    raise StepFailed(f"{conn.name}: the server stopped taking data "
                                     f"({conn.sent} bytes sent, none taken for "
                                     f"{idle:g}s; {self._stall_state(conn)})") from None
                still = still + 1 if self._standing_still(conn) else 0
                if still >= 2:
                    self._unstick(conn)
                    still = 0
                continue
            done += n
            conn.sent += n
            taking = Deadline(idle)

    def _standing_still(self, conn: Conn) -> bool:
        """Loopback TCP can stand still with neither side at fault (seen on
        Linux 6.18).  A client that reads nothing, with a small receive
        buffer, drops a segment its buffer has no room for; the server then
        reads all it got, but every segment that would tell the client so
        lies past the client's window and is dropped unread (TcpExt
        BeyondWindow), the answers to its window probes included.  No timer
        ends it; only the client reading does.  The sign: the server's
        window shut as the client last heard, the server's socket holding
        nothing unread, and bytes waiting in the client's.  (A server that
        stops reading has bytes unread.)"""
        if not tcp_state(conn.sock).shut or not _unread(conn.sock):
            return False
        queues = self._server_queues(conn)
        return queues is not None and queues[1] == 0

    def _unstick(self, conn: Conn) -> None:
        """TCP stood still (_standing_still, twice in a row): the client
        reads what its own kernel holds, into its buffer (an expect still
        sees it); the send step says so in a note."""
        try:
            chunk = conn.sock.recv(max(_unread(conn.sock), 1))
        except (socket.timeout, OSError):
            return
        conn.received += len(chunk)
        conn.buffer += chunk
        conn.standstills += 1
        conn.read_to_move += len(chunk)

    def _server_queues(self, conn: Conn) -> tuple[int, int] | None:
        """kernel_queues of the server's socket of this connection."""
        return kernel_queues(self.port, conn.client_port, ":" in self.host)

    def _stall_state(self, conn: Conn) -> str:
        """What the kernel says of a send that stopped: the client's TCP
        state, and what the server's socket holds unread (0 with a shut
        window: the server read all it got, and TCP has not told the
        client its window opened)."""
        queues = self._server_queues(conn)
        unread = "the server's socket is gone" if queues is None else \
            f"server unread {queues[1]}"
        return f"{tcp_state(conn.sock).shown()}, {unread}"

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
            if deadline.expired():
                raise StepFailed(f"{conn.name}: timed out; {context}") from None
            return      # the deadline was held meanwhile (run --debug): the caller reads on
        if not chunk:
            raise StepFailed(f"{conn.name}: the server closed the connection; {context}")
        conn.received += len(chunk)
        conn.buffer += chunk

    def _read_until(self, conn: Conn, delim: bytes, limit: int, deadline: Deadline,
                    what: str) -> bytes:
        """Up to and including `delim`, reading at most `limit` bytes."""
        start = 0
        while True:
            at = conn.buffer.find(delim, start)
            if at >= 0 and at + len(delim) <= limit:
                end = at + len(delim)
                data = bytes(conn.buffer[:end])
                del conn.buffer[:end]
                return data
            if len(conn.buffer) >= limit:
                raise StepFailed(f"{conn.name}: no {what} within the first {limit:,} bytes "
                                 f"(max_bytes); got {bytes(conn.buffer[:32])!r}...")
            start = max(0, len(conn.buffer) - len(delim) + 1)
            self._recv_some(conn, deadline, f"waiting for {what}: got {len(conn.buffer)} bytes "
                            f"{_shown(conn.buffer)}")

    def _read_match(self, conn: Conn, pattern: re.Pattern, limit: int, deadline: Deadline) -> bytes:
        """Until `pattern` is found in what was read; consumes through the
        end of the match."""
        while True:
            m = pattern.search(conn.buffer, 0, limit)
            if m is not None:
                data = bytes(conn.buffer[:m.end()])
                del conn.buffer[:m.end()]
                return data
            if len(conn.buffer) >= limit:
                raise StepFailed(f"{conn.name}: nothing matching {pattern.pattern!r} within the "
                                 f"first {limit:,} bytes (max_bytes); got "
                                 f"{bytes(conn.buffer[:32])!r}...")
            self._recv_some(conn, deadline, f"waiting for a match of {pattern.pattern!r}: got "
                            f"{len(conn.buffer)} bytes {_shown(conn.buffer)}")

    def _read_framed(self, conn: Conn, step: Step, deadline: Deadline) -> bytes | None:
        """What a frame (size, line, until) or a check alone reads; None for
        the exact forms (echo, text, hex)."""
        limit = step.get("max_bytes")
        if step.get("line"):
            return self._read_until(conn, b"\n", limit, deadline, "end of line")
        if step.get("until") is not None:
            delim = step.get("until").encode()
            return self._read_until(conn, delim, limit, deadline, f"delimiter {delim!r}")
        if step.get("size") is not None:
            return self._read_exact(conn, step.get("size"), deadline, "expecting bytes")
        if step.get("match") is not None:
            return self._read_match(conn, re.compile(step.get("match").encode()), limit, deadline)
        prefix = _prefix(step)
        if prefix is not None:
            return self._read_exact(conn, len(prefix), deadline, "expecting the prefix")
        return None

    def _check_read(self, conn: Conn, step: Step, got: bytes) -> None:
        prefix = _prefix(step)
        if prefix is not None and not got.startswith(prefix):
            at = next((i for i, (a, b) in enumerate(zip(got, prefix)) if a != b), len(got))
            raise StepFailed(f"{conn.name}: reply does not start with {prefix[:32]!r}: differs at "
                             f"byte {at}: got {got[at:at + 16]!r}, expected {prefix[at:at + 16]!r}")
        pattern = step.get("match")
        if pattern is not None and re.compile(pattern.encode()).search(got) is None:
            raise StepFailed(f"{conn.name}: reply does not match {pattern!r}: got "
                             f"{_shown(got)}")

    def _do_expect(self, step: Step) -> None:
        for conn in self._targets(step):
            deadline = Deadline(self._timeout(step))
            got = self._read_framed(conn, step, deadline)
            if got is not None:
                self._check_read(conn, step, got)
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
        for conn in self._targets(step):
            deadline = Deadline(self._timeout(step))
            want = step.get("min_queued")
            state = "no check yet"
            last = None
            while True:
                outq = struct.unpack("i", fcntl.ioctl(conn.sock, SIOCOUTQ, b"\0" * 4))[0]
                inq = struct.unpack("i", fcntl.ioctl(conn.sock, SIOCINQ, b"\0" * 4))[0]
                queues = self._server_queues(conn)
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

    def _do_drain(self, step: Step) -> None:
        """What has already arrived (the unconsumed part of earlier reads
        first), at most max_bytes, read without waiting and dropped.  A
        server that has closed or reset the connection is noted."""
        limit = step.get("max_bytes")
        for conn in self._targets(step):
            took = min(len(conn.buffer), limit)
            del conn.buffer[:took]
            conn.sock.settimeout(0.0)
            ended = None
            try:
                while took < limit:
                    chunk = conn.sock.recv(min(1 << 16, limit - took))
                    if not chunk:
                        ended = "closed"
                        break
                    conn.received += len(chunk)
                    took += len(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if not _closed_by_peer(exc):
                    raise
                ended = "reset"
            if ended:
                self.result.notes.append(f"{step.label} {conn.name}: the server {ended} "
                                         "the connection")

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

    def _do_quiesce(self, step: Step) -> None:
        if self.server is None:
            raise StepFailed("no server process to watch (quiesce needs the harness's server)")
        quiet_for = step.get("quiet_ms") / 1000
        deadline = Deadline(self._timeout(step))
        started = time.monotonic()
        last = self.server.cpu_ticks()
        quiet_since = time.monotonic()
        for _ in range(1_000_000):      # bounded: each round waits QUIESCE_POLL
            if last is None:
                self.result.notes.append(f"{step.label}: the server has exited")
                return
            now = time.monotonic()
            if now - quiet_since >= quiet_for:
                self.result.notes.append(
                    f"{step.label}: quiet for {step.get('quiet_ms')} ms after "
                    f"{now - started:.2f}s ({last} CPU ticks in all)")
                return
            if deadline.expired():
                raise StepFailed(f"the server was still busy after {self._timeout(step):g}s "
                                 f"(it never spent {step.get('quiet_ms')} ms without using CPU)")
            # No event says "the server has nothing left to do": look again
            # shortly (the kernel counts CPU time in 10 ms ticks).
            time.sleep(min(QUIESCE_POLL, deadline.left()))
            ticks = self.server.cpu_ticks()
            if ticks is None or ticks != last or _runnable(self.server):
                quiet_since = time.monotonic()
            last = ticks

    def _do_storm(self, step: Step) -> None:
        storm = Storm(self, step)
        self.result.played[step.index] = storm.recording
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
        fuzz = Fuzz(self, seed, step.get("ops"), step.get("max_conns"), self._timeout(step),
                    payload=_payload(step), junk=step.get("junk"))
        self.result.played[step.index] = fuzz.recording
        fuzz.run()
        if fuzz.server_closed:
            # Seen when an operation happened to touch such a connection:
            # a count for the reader, not a check (the server may close).
            self.result.notes.append(f"{step.label}: the server closed at least "
                                     f"{fuzz.server_closed} connection(s) the client had not ended")


def _bytes_of(step: Step, text_key: str, hex_key: str) -> bytes | None:
    """The bytes a step gives as text or as hex, if any."""
    if step.get(text_key) is not None:
        return step.get(text_key).encode()
    if step.get(hex_key) is not None:
        return bytes.fromhex(step.get(hex_key))
    return None


def _payload(step: Step) -> bytes | None:
    """storm and fuzz: the bytes given with `text` or `hex`, if any."""
    return _bytes_of(step, "text", "hex")


def _closed_by_peer(exc: OSError) -> bool:
    """The server ended the connection: EOF where a reply was due, RST, or
    a write into a connection it had closed."""
    return exc.errno in (errno.ECONNABORTED, errno.ECONNRESET, errno.EPIPE)


def _unread(sock: socket.socket) -> int:
    """Bytes that arrived and were not read (0 when it cannot be told)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock, SIOCINQ, b"\0" * 4))[0]
    except OSError:
        return 0


def _prefix(step: Step) -> bytes | None:
    """expect: the reply's expected start, as `prefix` or `hex_prefix`."""
    return _bytes_of(step, "prefix", "hex_prefix")


def _shown(data: bytes | bytearray, limit: int = 48) -> str:
    head = bytes(data[:limit])
    return repr(head) + ("..." if len(data) > limit else "")


def _runnable(server) -> bool:
    """A thread of the server's tree is running or waiting for a CPU (state
    R): it is not quiet, even if a starved one has not been charged a tick."""
    for pid in server.tree():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if raw[raw.rfind(b")") + 2:raw.rfind(b")") + 3] == b"R":
                return True
    return False


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
        self.stall_sent = 0
        self.send_recorded = False

    @property
    def number(self) -> int:
        return self.index + 1


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
        self.payload = _payload(step)
        # A payload of one's own is a protocol's request: its reply is not
        # an echo unless the scenario says so.
        self.echo = step.args.get("echo", self.payload is None)
        self.may_close = step.get("server_may_close")
        self.max_idle = step.get("max_idle")
        self.stall_bytes = step.get("stall_bytes")
        self.timeout = player._timeout(step) * max(1, self.count // 100)
        self.started = 0
        self.idle_planned = 0
        self.active = 0
        self.done: dict[str, int] = {}
        self.failed = 0
        self.examples: list[str] = []
        self.recording = Recording("storm", step.get("seed"))

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
                    if self.may_close and _closed_by_peer(exc) and key.data.state != "connect":
                        self._finish(key.data, "server_closed")
                    else:
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
        payload = self.payload if self.payload is not None else \
            b"".join(b"storm %d line %d\n" % (self.started, i) for i in range(self.lines))
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
        self.recording.add("open", conn.number)
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
            self._record_sent(conn)
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
            self.recording.add("expect_echo", conn.number)
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
                    sent = sock.send(b"x" * min(conn.stall_left, 65536))
                    conn.stall_left -= sent
                    conn.stall_sent += sent
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
            self.recording.add("half_close", conn.number)
            conn.state = "drain"
            self.sel.modify(sock, selectors.EVENT_READ, conn)
        elif conn.ending == "stall_reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            self.recording.add("stall", conn.number)
            conn.stall_left = self.stall_bytes
            conn.state = "stall"
            self.sel.modify(sock, selectors.EVENT_WRITE, conn)
        else:   # idle until the server stops
            self.sel.unregister(sock)
            self.player.idle.append(sock)
            self.active -= 1
            self.done["idle"] = self.done.get("idle", 0) + 1

    def _record_sent(self, conn: _StormConn) -> None:
        if not conn.send_recorded and conn.sent:
            conn.send_recorded = True
            self.recording.send(conn.number, conn.payload[:conn.sent])

    def _record_end(self, conn: _StormConn, how: str | None) -> None:
        """The ending as the server saw it."""
        n = conn.number
        if how is not None or conn.ending == "close":
            if conn.state == "send":
                self._record_sent(conn)     # what went out before the server closed
            self.recording.add("close", n)
        elif conn.ending == "reset":
            self.recording.add("reset", n)
        elif conn.ending == "half_close":
            self.recording.add("wait_closed", n)
            self.recording.add("close", n)
        elif conn.ending == "stall_reset":
            self.recording.send(n, b"x" * conn.stall_sent)
            self.recording.add("reset", n)

    def _finish(self, conn: _StormConn, how: str | None = None) -> None:
        assert conn.sock is not None
        self._record_end(conn, how)
        self.sel.unregister(conn.sock)
        if conn.ending == "close" and how is None:
            _discard_received(conn.sock)    # a FIN, not an RST (see Conn.close)
        conn.sock.close()
        self.active -= 1
        how = how or conn.ending
        self.done[how] = self.done.get(how, 0) + 1

    def _fail(self, conn: _StormConn, why: str, registered: bool = True) -> None:
        assert conn.sock is not None
        if registered:
            self._record_end(conn, "failed")
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

    JUNK_OPS = ("line", "junk", "bytewise")
    OPS = ("open",) + JUNK_OPS + ("read", "half_close", "close", "reset", "stall")
    PAYLOAD_OPS = ("payload", "payload_bytewise")

    def __init__(self, player: Player, seed: int, ops: int, max_conns: int, timeout: float,
                 payload: bytes | None = None, junk: bool = True) -> None:
        self.player = player
        self.rng = random.Random(seed)
        self.ops = ops
        self.max_conns = max_conns
        self.timeout = timeout
        self.payload = payload
        # The draw of operations depends on the parameters only: without a
        # payload and with junk, the same seed plays what it always played.
        self.choices = tuple(op for op in self.OPS if junk or op not in self.JUNK_OPS) + \
            (self.PAYLOAD_OPS if payload is not None else ())
        self.pool: list[socket.socket] = []
        self.half_closed: set[socket.socket] = set()
        self.server_closed = 0
        self.numbers: dict[socket.socket, int] = {}     # in the order they were opened
        self.recording = Recording("fuzz", seed)

    def run(self) -> None:
        deadline = Deadline(self.timeout * max(1, self.ops // 100))
        try:
            for _ in range(self.ops):
                if deadline.expired():
                    self.player.result.notes.append("fuzz: stopped at its deadline")
                    break
                op = self.rng.choice(self.choices)
                if op == "open" or not self.pool:
                    if len(self.pool) < self.max_conns:
                        self._try(self._open)
                    continue
                sock = self.rng.choice(self.pool)
                self._try(getattr(self, f"_{op}"), sock)
        finally:
            for sock in self.pool:
                self._ended_by_server(sock)
                self.recording.add("close", self.numbers[sock])
                sock.close()

    def _ended_by_server(self, sock: socket.socket) -> None:
        """At the end: count a connection the server has already closed
        (what it sent meanwhile is read and dropped; nothing waits)."""
        try:
            for _ in range(1024):       # bounded: at most 64 MiB
                if not sock.recv(65536):
                    self._closed_by_server(sock)
                    return
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if _closed_by_peer(exc):
                self._closed_by_server(sock)

    def _try(self, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except OSError as exc:
            if args:
                if _closed_by_peer(exc):
                    self._closed_by_server(args[0])
                self._drop(args[0], "close")

    def _closed_by_server(self, sock: socket.socket) -> None:
        if sock not in self.half_closed:
            self.server_closed += 1

    def _drop(self, sock: socket.socket, how: str | None = None) -> None:
        """Close; `how` is what the server sees, recorded (by default: a
        close with replies left unread is an RST, as the kernel sends it)."""
        if sock in self.pool:
            self.pool.remove(sock)
            self.recording.add(how or ("reset" if _unread(sock) else "close"), self.numbers[sock])
        self.half_closed.discard(sock)
        sock.close()

    def _open(self) -> None:
        sock = self.player._connect(None, 2.0)
        # Every send leaves at once: with Nagle, bytes held back by timing
        # would be dropped or not by a later reset, and a seed would not
        # replay the same bytes on the wire.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.pool.append(sock)
        self.numbers[sock] = len(self.numbers) + 1
        self.recording.add("open", self.numbers[sock])

    def _send(self, sock: socket.socket, data: bytes) -> int:
        """One non-blocking write: the bytes the kernel took."""
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0    # the server is not reading: that is fine here

    def _send_whole(self, sock: socket.socket, data: bytes) -> None:
        self.recording.send(self.numbers[sock], data[:self._send(sock, data)])

    def _send_bytewise(self, sock: socket.socket, data: bytes) -> None:
        taken = bytearray()
        try:
            for b in data:
                if self._send(sock, bytes([b])):
                    taken.append(b)
        finally:    # what went out before an error is on the wire all the same
            self.recording.send(self.numbers[sock], bytes(taken), chunk="byte")

    def _line(self, sock: socket.socket) -> None:
        n = self.rng.randint(0, 200)
        self._send_whole(sock, bytes(self.rng.randint(32, 126) for _ in range(n)) + b"\n")

    def _junk(self, sock: socket.socket) -> None:
        self._send_whole(sock, self.rng.randbytes(self.rng.randint(1, 4096)))

    def _bytewise(self, sock: socket.socket) -> None:
        self._send_bytewise(sock, b"bytewise %d\n" % self.rng.randint(0, 999))

    def _payload(self, sock: socket.socket) -> None:
        self._send_whole(sock, self.payload)

    def _payload_bytewise(self, sock: socket.socket) -> None:
        self._send_bytewise(sock, self.payload)

    def _read(self, sock: socket.socket) -> None:
        try:
            got = sock.recv(65536)
        except BlockingIOError:
            return      # nothing had arrived: nothing happened
        if got:
            self.recording.add("drain", self.numbers[sock], bytes=len(got))
            return
        self.recording.add("drain", self.numbers[sock], bytes=65536)
        self._closed_by_server(sock)
        self._drop(sock, "close")

    def _half_close(self, sock: socket.socket) -> None:
        sock.shutdown(socket.SHUT_WR)
        self.half_closed.add(sock)
        self.recording.add("half_close", self.numbers[sock])

    def _close(self, sock: socket.socket) -> None:
        self._drop(sock)

    def _reset(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self._drop(sock, "reset")

    def _stall(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        self.recording.add("stall", self.numbers[sock])


def play(scenario: Scenario, host: str, port: int, stop_server: Callable[[], None],
         step_timeout: float, server=None) -> tuple[PlayResult, Player]:
    player = Player(scenario, host, port, stop_server, step_timeout, server)
    return player.play(), player
