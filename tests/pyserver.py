"""A small threaded TCP server for the wire tests.

It listens on 127.0.0.1, port 0, runs one handler thread per accepted
connection and records what it observes on each one (bytes, number of recv
calls, how the peer ended it, what it sent back), under one Condition so a
test waits for an observation with a deadline instead of sleeping:

    with PyServer(echo) as srv:
        ...play steps against srv.port...
        assert srv.wait_for(lambda: srv.ended() == 1, 5)

Handlers are functions handler(server, seen); the module offers the ones the
tests need.  Stopping the server wakes every handler (shutdown of its socket,
the `stopping` event) and joins the threads with a deadline.
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

TCP_ESTABLISHED = 1
# struct tcp_info (linux/tcp.h): offsets of the fields read here
_TI_UNACKED = 24            # LISTEN: connections waiting in the accept queue
_TI_DATA_SEGS_IN = 152      # segments received that carried data
_TI_SIZE = 160
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass
class Seen:
    """What the server observed on one connection."""

    index: int
    peer_port: int
    sock: socket.socket
    chunks: list[bytes] = field(default_factory=list)
    recvs: int = 0                  # recv calls that returned data
    end: str | None = None          # 'eof', 'reset', 'error: ...', 'stopped'
    sent: int = 0                   # bytes the server wrote back
    events: list[str] = field(default_factory=list)   # 'data', 'eof', 'reset', 'sent', ...
    pending: int = 0                # queued_echo: bytes read and not yet written back
    blocked: bool = False           # queued_echo: its last write found the socket full
    closed: bool = False            # the server closed its socket

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


Handler = Callable[["PyServer", Seen], None]


class PyServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.accepted: list[Seen] = []
        self.max_open = 0           # most connections ESTABLISHED at once (seen at accepts)
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, name="pyserver-accept",
                                          daemon=True)

    # -- life cycle ------------------------------------------------------------
    def __enter__(self) -> "PyServer":
        self._acceptor.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self._wake_w.send(b"x")
        self._acceptor.join(timeout=5)
        with self.cond:
            for seen in self.accepted:
                if not seen.closed:
                    try:
                        seen.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        with self.cond:
            for seen in self.accepted:
                self._close_locked(seen)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    with self.cond:
                        # accept under the lock: `settled()` sees a connection
                        # either in the accept queue or in `accepted`
                        try:
                            sock, peer = self._listener.accept()
                        except BlockingIOError:
                            continue
                        sock.setblocking(True)
                        seen = Seen(index=len(self.accepted), peer_port=peer[1], sock=sock)
                        self.accepted.append(seen)
                        self.max_open = max(self.max_open, self._established_locked())
                        self.cond.notify_all()
                    t = threading.Thread(target=self._run_handler, args=(seen,),
                                         name=f"pyserver-conn{seen.index}", daemon=True)
                    self._threads.append(t)
                    t.start()
        finally:
            sel.close()

    def _established_locked(self) -> int:
        """Connections whose server socket is ESTABLISHED: the peer has
        neither closed nor reset them (loopback delivers the FIN or RST of a
        closed client before the handshake of the client's next connection)."""
        n = 0
        for seen in self.accepted:
            if seen.closed:
                continue
            try:
                state = seen.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            except OSError:
                continue
            n += state == TCP_ESTABLISHED
        return n

    def _run_handler(self, seen: Seen) -> None:
        try:
            self.handler(self, seen)
        except OSError as exc:
            self.mark_end(seen, f"error: {exc}")
        finally:
            with self.cond:
                if seen.end is None:
                    seen.end = "stopped" if self.stopping.is_set() else "handler returned"
                self.cond.notify_all()

    # -- for handlers ------------------------------------------------------------
    def recv(self, seen: Seen, size: int = 65536) -> bytes | None:
        """One blocking recv, recorded; None once the connection has ended."""
        try:
            chunk = seen.sock.recv(size)
        except ConnectionResetError:
            self.mark_end(seen, "reset")
            return None
        if not chunk:
            self.mark_end(seen, "stopped" if self.stopping.is_set() else "eof")
            return None
        with self.cond:
            seen.chunks.append(chunk)
            seen.recvs += 1
            seen.events.append("data")
            self.cond.notify_all()
        return chunk

    def send(self, seen: Seen, data: bytes) -> None:
        seen.sock.sendall(data)
        with self.cond:
            seen.sent += len(data)
            seen.events.append("sent")
            self.cond.notify_all()

    def mark_end(self, seen: Seen, how: str) -> None:
        with self.cond:
            if seen.end is None:
                seen.end = how
                seen.events.append(how)
            self.cond.notify_all()

    def close(self, seen: Seen, reset: bool = False) -> None:
        with self.cond:
            if reset and not seen.closed:
                seen.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self._close_locked(seen)
            seen.events.append("closed" + (" (reset)" if reset else ""))
            self.cond.notify_all()

    def _close_locked(self, seen: Seen) -> None:
        # Under the lock: the acceptor reads TCP_INFO of open sockets, and a
        # freed descriptor number could otherwise be reused under it.
        if not seen.closed:
            seen.sock.close()
            seen.closed = True

    # -- for tests ----------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def ended(self) -> int:
        return sum(1 for s in self.accepted if s.end is not None)

    def waiting(self) -> int:
        """Connections the kernel completed that are not accepted yet."""
        info = self._listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TI_SIZE)
        return struct.unpack_from("I", info, _TI_UNACKED)[0]

    def settled(self) -> bool:
        """Every connection made so far was accepted and has ended (call it
        in wait_for, under the lock)."""
        return self.waiting() == 0 and self.ended() == len(self.accepted)

    def data_segments_in(self, seen: Seen) -> int:
        with self.cond:
            info = seen.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TI_SIZE)
        return struct.unpack_from("I", info, _TI_DATA_SEGS_IN)[0]

    def by_port(self, port: int) -> Seen:
        with self.cond:
            return next(s for s in self.accepted if s.peer_port == port)

    def tcp_state(self, seen: Seen) -> int:
        with self.cond:
            return seen.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


# -- handlers ---------------------------------------------------------------------
def record(server: PyServer, seen: Seen) -> None:
    """Read and record until the peer ends; keep the socket open (the server
    never closes first, so the client never sees an EOF it did not cause)."""
    while server.recv(seen) is not None:
        pass


def echo(server: PyServer, seen: Seen) -> None:
    """A line-agnostic echo (blocking writes); closes when the peer has ended."""
    try:
        while (chunk := server.recv(seen)) is not None:
            server.send(seen, chunk)
    except (BrokenPipeError, ConnectionResetError):
        server.mark_end(seen, "reset")
    server.close(seen)


def echo_after_eof(server: PyServer, seen: Seen) -> None:
    """Collect everything, and only after the peer's EOF send it all back
    and close: proves the server can still send after the client's FIN."""
    while server.recv(seen) is not None:
        pass
    if seen.end == "eof":
        server.send(seen, seen.data)
    server.close(seen)


def close_at_once(server: PyServer, seen: Seen) -> None:
    server.close(seen)


def close_on_data(server: PyServer, seen: Seen) -> None:
    """Close (FIN) once the first bytes arrive and are read."""
    server.recv(seen)
    server.close(seen)


def reset_on_data(server: PyServer, seen: Seen) -> None:
    """Reset (SO_LINGER 0, close) once the first bytes arrive.  Not at once:
    an RST that beats the client's connect() to its result makes the
    connect itself fail with ECONNRESET."""
    server.recv(seen)
    server.close(seen, reset=True)


def hold(server: PyServer, seen: Seen) -> None:
    """Accept, then neither read nor close until the server stops."""
    server.stopping.wait()


def read_then_stop(limit: int, reply: bytes = b"") -> Handler:
    """Read `limit` bytes, send `reply`, then stop reading (until the
    server stops)."""
    def handler(server: PyServer, seen: Seen) -> None:
        got = 0
        while got < limit:
            chunk = server.recv(seen, limit - got)
            if chunk is None:
                return
            got += len(chunk)
        if reply:
            server.send(seen, reply)
        server.stopping.wait()
    return handler


def queued_echo(server: PyServer, seen: Seen) -> None:
    """Non-blocking echo into an unbounded in-memory queue: read everything
    the moment it arrives, write back only what the socket takes.  A client
    that stops reading makes the queue (seen.pending) grow."""
    sock = seen.sock
    sock.setblocking(False)
    out = bytearray()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        while seen.end is None:
            for _, mask in sel.select(timeout=1.0):
                if mask & selectors.EVENT_READ:
                    while True:
                        try:
                            chunk = sock.recv(1 << 16)
                        except BlockingIOError:
                            break
                        except ConnectionResetError:
                            server.mark_end(seen, "reset")
                            return
                        if not chunk:
                            server.mark_end(seen, "stopped" if server.stopping.is_set() else "eof")
                            return
                        out += chunk
                        with server.cond:
                            seen.chunks.append(chunk)
                            seen.recvs += 1
                blocked = False
                if out:
                    try:
                        while out:
                            n = sock.send(out[:1 << 16])
                            del out[:n]
                            seen.sent += n
                    except BlockingIOError:
                        blocked = True
                    except (BrokenPipeError, ConnectionResetError):
                        server.mark_end(seen, "reset")
                        return
                with server.cond:
                    seen.pending = len(out)
                    seen.blocked = blocked
                    server.cond.notify_all()
                sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
            if server.stopping.is_set():
                return
    finally:
        sel.close()
