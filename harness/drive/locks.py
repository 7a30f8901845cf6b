"""Locks across processes that leave nothing on disk: a bound abstract unix
socket (Linux) is a name only one process can hold, and the kernel frees it
when its holder exits, however it exits (SIGKILL included).

Two harness runs must never share a run folder, and two cases must never
use one fixed port at once: both are claimed with a NameLock."""
from __future__ import annotations

import os
import socket
import time

from ..timeouts import Deadline

PREFIX = "\0leak-harness/"


class NameLock:
    def __init__(self, name: str) -> None:
        if len(os.fsencode(PREFIX + name)) > 100:     # a socket name holds 107 bytes
            import hashlib      # only here: OpenSSL's import costs every command 7 ms
            name = hashlib.sha1(os.fsencode(name)).hexdigest()
        self.name = name
        self._sock: socket.socket | None = None

    def try_acquire(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(PREFIX + self.name)
        except OSError:
            sock.close()
            return False
        self._sock = sock
        return True

    def acquire(self, seconds: float) -> bool:
        """Wait up to `seconds` for the name; a held name has no event to
        wait on, so look again every 20 ms."""
        deadline = Deadline(seconds)
        while not self.try_acquire():
            if deadline.expired():
                return False
            time.sleep(min(0.02, deadline.left()))
        return True

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def held(self) -> bool:
        return self._sock is not None


def dir_lock(path) -> NameLock:
    """The folder's whole path is the name (a long one is hashed)."""
    from pathlib import Path
    return NameLock("dir/" + str(Path(path).resolve()))


def port_lock(port: int) -> NameLock:
    return NameLock(f"port/{port}")
