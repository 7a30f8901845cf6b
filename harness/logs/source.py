"""Reading a log file safely, whatever the path names: a regular file, a
FIFO nobody writes to, /dev/zero, a file of binary junk or a line of a
gigabyte.  Lines come out in texts of whole lines, a chunk at a time (the
parsers stream them), each line at most MAX_LINE long, and every wait has a
deadline; anything that cannot be a text log is refused with LogParseError.
"""
from __future__ import annotations

import os
import select
import stat
from pathlib import Path
from typing import Iterator

from .vglog import LogParseError

MAX_LINE = 1 << 20          # a longer line (in bytes) is not valgrind's
CHUNK = 1 << 16             # small enough for malloc to reuse, not map fresh pages
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


def log_texts(path: Path, quiet: float = QUIET_SECONDS, total: float = TOTAL_SECONDS
              ) -> Iterator[str]:
    """A text log (decoded as UTF-8, bad bytes replaced) as texts of whole
    lines, each text about CHUNK long and ending with a newline (the last
    one may have none): what vglog.parse_texts reads."""
    if _kind(path) == "file":
        return _file_chunks(path)
    return _stream_chunks(path, quiet, total)


def _file_chunks(path: Path) -> Iterator[str]:
    with open(path, "rb", buffering=0) as f:
        yield from _chunks(f.readinto)


def _stream_chunks(path: Path, quiet: float, total: float) -> Iterator[str]:
    from ..timeouts import Deadline, scaled
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        overall = Deadline(scaled(total))

        def readinto(view: memoryview) -> int:
            while True:
                wait = min(scaled(quiet), overall.left())
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    if overall.expired():
                        raise LogParseError(f"still reading after {scaled(total):.0f}s: "
                                            "a log must come to an end")
                    raise LogParseError(f"no data for {wait:.0f}s")
                try:
                    return os.readv(fd, [view])
                except BlockingIOError:
                    continue

        yield from _chunks(readinto)
    finally:
        os.close(fd)


def _chunks(readinto) -> Iterator[str]:
    """What `readinto` reads, decoded, in texts of whole lines (the parser
    takes a text in bulk, not a Python step per line).  One buffer is read
    into and decoded from, over and over: a fresh process pays for every
    page of memory it fills, and a log of any size fills no more than this
    buffer and the text of one chunk."""
    buf = bytearray(CHUNK)
    have = 0            # bytes at the start of buf: a line not ended yet
    offset = 0          # where in the log buf starts
    first = True
    while True:
        if have == len(buf):
            buf.extend(bytes(CHUNK))        # a line longer than the buffer (up to MAX_LINE)
        with memoryview(buf) as view, view[have:] as free:
            n = readinto(free)
        if not n:
            break
        if first and buf.find(b"\0", 0, min(n, 65536)) >= 0:
            raise LogParseError("binary data (NUL bytes): not a text log")
        first = False
        have += n
        cut = buf.rfind(b"\n", 0, have) + 1
        if cut:
            start = 0
            while cut > MAX_LINE and start < cut:   # (only a long line makes a long chunk)
                end = buf.find(b"\n", start, cut)
                if end - start > MAX_LINE:
                    raise LogParseError(f"a line of {end - start:,} bytes at byte "
                                        f"{offset + start:,}: not a valgrind log")
                start = end + 1
            with memoryview(buf) as view, view[:cut] as lines:
                text = str(lines, "utf-8", "replace")
            buf[:have - cut] = buf[cut:have]
            have -= cut
            offset += cut
            yield text
        if have > MAX_LINE:
            raise LogParseError(f"the line at byte {offset:,} is longer than "
                                f"{MAX_LINE >> 20} MiB: not a valgrind log")
    if have:
        yield str(buf[:have], "utf-8", "replace")
