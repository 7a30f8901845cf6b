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
from itertools import chain
from pathlib import Path
from typing import Iterator

from .vglog import LogParseError

MAX_LINE = 1 << 20          # a longer line is not valgrind's
CHUNK = 1 << 16             # small enough for malloc to reuse, not map fresh pages
QUIET_SECONDS = 30.0        # a pipe or device that says nothing this long is done
TOTAL_SECONDS = 600.0       # and no stream is read for longer than this
# What str.splitlines() splits at besides '\n'.
_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


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
    """The lines of a text log (decoded as UTF-8, bad bytes replaced), each
    ending with its newline (the last one may have none)."""
    if _kind(path) == "file":
        return chain.from_iterable(_file_chunks(path))
    return chain.from_iterable(_stream_chunks(path, quiet, total))


def _file_chunks(path: Path) -> Iterator[list[str]]:
    with open(path, "rb") as f:
        yield from _chunks(lambda: f.read(CHUNK))


def _stream_chunks(path: Path, quiet: float, total: float) -> Iterator[list[str]]:
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

        yield from _chunks(read)
    finally:
        os.close(fd)


def _chunks(read) -> Iterator[list[str]]:
    """The lines of what `read` returns, a list per chunk read (the parser
    takes them through one C-level chain, not a Python step per line)."""
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
            text = pending[:cut].decode("utf-8", errors="replace")
            pending = pending[cut:]
            if any(c in text for c in _OTHER_BREAKS):
                # str.splitlines() would also split at these: split at '\n' only.
                lines = [line + "\n" for line in text.split("\n")[:-1]]
            else:
                lines = text.splitlines(keepends=True)
            longest = max(map(len, lines)) - 1 if len(text) > MAX_LINE else 0
            if longest > MAX_LINE:
                raise LogParseError(f"a line of {longest:,} characters near line {number + 1}: "
                                    "not a valgrind log")
            number += len(lines)
            yield lines
        if len(pending) > MAX_LINE:
            raise LogParseError(f"line {number + 1} is longer than {MAX_LINE >> 20} MiB: "
                                "not a valgrind log")
    if pending:
        yield [pending.decode("utf-8", errors="replace")]
