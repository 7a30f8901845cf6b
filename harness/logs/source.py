"""Reading a log file safely, whatever the path names: a regular file, a
FIFO nobody writes to, /dev/zero, a file of binary junk or a line of a
gigabyte.  Lines come out one at a time (the parsers stream them), each at
most MAX_LINE long, and every wait has a deadline; anything that cannot be a
text log is refused with LogParseError.
"""
from __future__ import annotations

import os
import select
import stat
from pathlib import Path
from typing import Iterator

from .vglog import LogParseError

MAX_LINE = 1 << 20          # a longer line is not valgrind's
CHUNK = 1 << 20
QUIET_SECONDS = 30.0        # a pipe or device that says nothing this long is done
TOTAL_SECONDS = 600.0       # and no stream is read for longer than this


def _kind(path: Path) -> str:
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise LogParseError("is a directory, not a log file")
    return "file" if stat.S_ISREG(mode) else "stream"


def read_head(path: Path, size: int = 64) -> bytes:
    """The first bytes of a regular file (b"" for a pipe or a device)."""
    if _kind(path) != "file":
        return b""
    with open(path, "rb") as f:
        return f.read(size)


def log_lines(path: Path, quiet: float = QUIET_SECONDS, total: float = TOTAL_SECONDS
              ) -> Iterator[str]:
    """The lines of a text log (decoded as UTF-8, bad bytes replaced)."""
    if _kind(path) == "file":
        with open(path, "rb") as f:
            yield from _lines(lambda: f.read(CHUNK))
        return
    from ..timeouts import Deadline, scaled
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        overall = Deadline(scaled(total))

        def read() -> bytes:
            wait = min(scaled(quiet), overall.left())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                if overall.expired():
                    raise LogParseError(f"still reading after {scaled(total):.0f}s: "
                                        "a log must come to an end")
                raise LogParseError(f"no data for {wait:.0f}s")
            try:
                return os.read(fd, CHUNK)
            except BlockingIOError:
                return read()

        yield from _lines(read)
    finally:
        os.close(fd)


def _lines(read) -> Iterator[str]:
    pending = b""
    number = 0
    first = True
    while chunk := read():
        if first and b"\0" in chunk[:65536]:
            raise LogParseError("binary data (NUL bytes): not a text log")
        first = False
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut:
            lines = pending[:cut].decode("utf-8", errors="replace").split("\n")
            pending = pending[cut:]
            lines.pop()     # the empty string after the last newline
            longest = max(map(len, lines))
            if longest > MAX_LINE:
                raise LogParseError(f"a line of {longest:,} characters near line {number + 1}: "
                                    "not a valgrind log")
            number += len(lines)
            for line in lines:
                yield line + "\n"
        if len(pending) > MAX_LINE:
            raise LogParseError(f"line {number + 1} is longer than {MAX_LINE >> 20} MiB: "
                                "not a valgrind log")
    if pending:
        yield pending.decode("utf-8", errors="replace")
