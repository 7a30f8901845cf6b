"""The process table, read from /proc: a server's process tree, the sockets
it listens on, the CPU time it has used.

Readiness is decided here without touching the server: a socket in LISTEN
state on the expected port (/proc/net/tcp and tcp6) whose inode is one of the
tree's open files (/proc/PID/fd).  A connection would be a client the server
sees, and on a real server a probe racing the first client changed what
valgrind found.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

LISTEN = "0A"           # the st column of /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    address: str        # '127.0.0.1', '0.0.0.0', '::', '::1'
    port: int
    inode: int

    def shown(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    state: str
    cpu_ticks: int      # utime + stime


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return ProcStat(pid, int(fields[1]), fields[0].decode(), int(fields[11]) + int(fields[12]))
    except (IndexError, ValueError):
        return None


def all_stats() -> dict[int, ProcStat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                out[stat.pid] = stat
    return out


@functools.cache
def _children_files() -> bool:
    """Whether the kernel lists each thread's children
    (/proc/PID/task/TID/children: CONFIG_PROC_CHILDREN, on in Debian's)."""
    me = os.getpid()
    return os.path.exists(f"/proc/{me}/task/{me}/children")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += map(int, f.read().split())
        except OSError:
            continue
    return out


def descendants(root: int, stats: dict[int, ProcStat] | None = None) -> list[ProcStat]:
    """Every live (not zombie) process below `root`: read down from `root`
    where the kernel lists children (a few files for a server's tree, not
    every process of the machine), else from every process's parent."""
    if stats is None and _children_files():
        out, todo = [], [root]
        while todo:
            for pid in _children(todo.pop()):
                st = read_stat(pid)
                if st is not None and st.state != "Z":
                    out.append(st)
                    todo.append(pid)
        return out
    stats = all_stats() if stats is None else stats
    children: dict[int, list[ProcStat]] = {}
    for st in stats.values():
        if st.state != "Z":
            children.setdefault(st.ppid, []).append(st)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child.pid)
    return out


def _hex_address(text: str) -> str:
    """The local address column of /proc/net/tcp(6), as text."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    import ipaddress
    return str(ipaddress.IPv6Address(b"".join(words)))


def _sockets(port: int | None = None):
    """The rows of /proc/net/tcp and tcp6, split (on local port `port` only,
    when given): local address, remote, state, ..., inode (column 9)."""
    want = None if port is None else f":{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) >= 10 and (want is None or parts[1].endswith(want)):
                        yield parts
        except OSError:
            continue


def listeners(port: int | None = None) -> list[Listener]:
    """Every TCP socket in LISTEN state (on `port` only, when given)."""
    out = []
    for parts in _sockets(port):
        if parts[3] == LISTEN:
            addr, _, hexport = parts[1].partition(":")
            out.append(Listener(_hex_address(addr), int(hexport, 16), int(parts[9])))
    return out


def bound(port: int) -> bool:
    """Some TCP socket, in any state, has `port` as its local port."""
    return any(True for _ in _sockets(port))


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` has open."""
    out = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def owners(found: list[Listener], pids: list[int]) -> dict[int, int]:
    """inode -> pid, for the listeners some process of `pids` holds."""
    wanted = {l.inode for l in found}
    out: dict[int, int] = {}
    if not wanted:
        return out
    for pid in pids:
        for inode in socket_inodes(pid) & wanted:
            out.setdefault(inode, pid)
    return out


def name(pid: int) -> str:
    """The process's name (/proc/PID/comm)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def command_line(pid: int, limit: int = 120) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    return text if len(text) <= limit else text[:limit - 3] + "..."
