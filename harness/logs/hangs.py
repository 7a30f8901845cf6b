"""What a hung server was doing: the answer of its gdbserver to `v.info
scheduler` (drive.vgdb asks it before the harness kills the server).
`parse_scheduler()` is pure: text in, thread stacks out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..model import Frame
from .vglog import parse_frame

_THREAD = re.compile(r"^Thread (?P<tid>\d+): status = (?P<status>\S+)(?: (?P<detail>.*))?$")
_PREFIX = re.compile(r"^==\d+==\s+")


@dataclass
class ThreadStack:
    tid: int
    status: str
    detail: str = ""
    stack: list[Frame] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"tid": self.tid, "status": self.status, "detail": self.detail,
                "stack": [f.to_json() for f in self.stack]}


def parse_scheduler(text: str) -> list[ThreadStack]:
    threads: list[ThreadStack] = []
    current: ThreadStack | None = None
    for raw in text.splitlines():
        m = _THREAD.match(raw.strip())
        if m:
            current = ThreadStack(int(m["tid"]), m["status"], m["detail"] or "")
            threads.append(current)
            continue
        if current is None:
            continue
        line = _PREFIX.sub("", raw).strip()
        frame = parse_frame(line)
        if frame:
            current.stack.append(frame)
        elif line.startswith(("client stack range", "valgrind stack range")) or not line:
            current = None if not line and current.stack else current
    return threads
