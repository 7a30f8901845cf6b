"""A process's memory map (/proc/PID/maps), as saved in a run folder: which
file each address range comes from.  Pure: text in, mappings out.

valgrind's text log names the object of a frame only when it has no debug
information (`??? (in /usr/bin/memcached)`); the map tells the object of any
frame from its address, so the harness can tell the program's own code from
the system's libraries without being told where the sources are, and can
name a frame of a stripped binary by its object and offset."""
from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int         # of `start` in the file
    path: str


def parse_maps(text: str) -> list["Mapping"]:
    """The file-backed mappings of a /proc/PID/maps text, by address."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        try:
            start, _, end = parts[0].partition("-")
            out.append(Mapping(int(start, 16), int(end, 16), int(parts[2], 16),
                               parts[5].removesuffix(" (deleted)")))
        except ValueError:
            continue
    return sorted(out, key=lambda m: m.start)


class AddressMap:
    """Address -> (object, offset in the object's file), for one process."""

    def __init__(self, mappings: list[Mapping]) -> None:
        self.mappings = sorted(mappings, key=lambda m: m.start)
        self.starts = [m.start for m in self.mappings]

    def locate(self, addr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0:
            return None
        m = self.mappings[i]
        if not m.start <= addr < m.end:
            return None
        return m.path, m.offset + addr - m.start
