"""Which frames of a stack are the program's own code, and the signature of a
finding: its kind plus its top own frames, with addresses, PIDs and line
numbers left out, so two runs of the same bug give the same key (like a
crash-dedup key) and an edit elsewhere in the file does not change it.

A frame is the program's own when it lies in the program's executable, or in
a library outside the system's directories (SYSTEM_DIRS): the object of a
frame comes from valgrind (`(in /usr/sbin/memcached)`) or, for a frame with
debug information, from the process's memory map saved during the run
(`annotate`).  Only a frame whose object is unknown (a log parsed alone, a
sanitizer's report) is told by its source file: own when the file is found
under the source folders (`--source-dir`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from ..logs.maps import AddressMap, parse_maps
from ..model import Finding, Frame

SOURCE_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh")
MAX_FILES = 20000
# Where the system's own objects live (the dynamic linker's default paths,
# and valgrind's preloaded helpers): never the program's own code.
SYSTEM_DIRS = ("/lib/", "/lib32/", "/lib64/", "/usr/lib/", "/usr/lib32/", "/usr/lib64/",
               "/usr/libexec/")


class SourceIndex:
    """Source files the program is built from, by base name.  The folders are
    walked when a frame first asks (a clean run never does: a walk of a big
    working directory costs milliseconds per case)."""

    def __init__(self, files: dict[str, Path] | None = None, roots: Iterable[Path] = ()) -> None:
        self._files = files
        self._roots = list(roots)

    @classmethod
    def scan(cls, roots: Iterable[Path]) -> "SourceIndex":
        return cls(None, roots)

    @property
    def files(self) -> dict[str, Path]:
        if self._files is None:
            self._files = self._walk(self._roots)
        return self._files

    @staticmethod
    def _walk(roots: list[Path]) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for root in roots:
            if not Path(root).is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")
                               and d not in ("build", "node_modules", "__pycache__")]
                for name in filenames:
                    if name.endswith(SOURCE_SUFFIXES):
                        files.setdefault(name, Path(dirpath) / name)
                if len(files) >= MAX_FILES:
                    return files
        return files

    def resolve(self, frame: Frame) -> Path | None:
        if not frame.file:
            return None
        return self.files.get(os.path.basename(frame.file))

    def is_own(self, frame: Frame) -> bool:
        return self.resolve(frame) is not None


def is_system_object(path: str) -> bool:
    return path.startswith(SYSTEM_DIRS)


@dataclass
class Program:
    """What is the program's own code, for one run: its executables (every
    process's), and the source folders for frames whose object is unknown
    and for quoting source lines."""

    executables: frozenset[str] = frozenset()
    sources: SourceIndex = field(default_factory=lambda: SourceIndex({}))

    @classmethod
    def of(cls, executables: Iterable[str | Path], source_dirs: Iterable[Path]) -> "Program":
        real = set()
        for exe in executables:
            try:
                real.add(os.path.realpath(exe))
            except (OSError, ValueError):
                continue
        return cls(frozenset(real), SourceIndex.scan(source_dirs))

    def is_own(self, frame: Frame) -> bool:
        if frame.obj:
            obj = os.path.realpath(frame.obj) if frame.obj.startswith("/") else frame.obj
            if obj in self.executables:
                return True
            if obj.startswith("/"):
                return not is_system_object(obj)
            return any(os.path.basename(e) == obj for e in self.executables)
        return self.sources.is_own(frame)

    def resolve(self, frame: Frame) -> Path | None:
        """The source file a frame points at, when it is one of ours."""
        return self.sources.resolve(frame) if self.is_own(frame) or not frame.obj else None

    def missing_debug_info(self, findings: Iterable[Finding]) -> list[str]:
        """The program's objects that appear in the findings' stacks only
        without file and line: built without -g, or stripped."""
        seen, with_lines = set(), set()
        for finding in findings:
            for frame in _frames(finding):
                if frame.obj and self.is_own(frame):
                    seen.add(frame.obj)
                    if frame.file:
                        with_lines.add(frame.obj)
        return sorted(seen - with_lines)


def _frames(finding: Finding) -> Iterable[Frame]:
    yield from finding.stack
    for aux in finding.aux:
        yield from aux.stack


def annotate(stacks: Iterable[list[Frame]], maps_text: str | None) -> None:
    """Give each frame with an address its object, from the process's memory
    map, in place; a frame valgrind could not name (`???`) is named by its
    object and offset in the object's file (`memcached+0x1d2a3`), which is
    the same in every run of the same binary."""
    if not maps_text:
        return
    address_map = AddressMap(parse_maps(maps_text))
    for stack in stacks:
        for i, frame in enumerate(stack):
            if frame.addr is None:
                continue
            found = address_map.locate(frame.addr)
            if found is None:
                continue
            path, offset = found
            fn = frame.fn
            if fn == "???":
                fn = f"{os.path.basename(path)}+{offset:#x}"
            stack[i] = replace(frame, fn=fn, obj=frame.obj or path)


def annotate_log(log, maps: dict[int, str]) -> None:
    """annotate() every stack of a parsed log, with each process's own map."""
    if log is None or not maps:
        return
    for proc in log.processes:
        text = maps.get(proc.pid)
        stacks = []
        for finding in proc.findings:
            stacks.append(finding.stack)
            stacks += [aux.stack for aux in finding.aux]
        if proc.fatal_signal:
            stacks.append(proc.fatal_signal.stack)
        annotate(stacks, text)


def own_frames(stack: list[Frame], program, limit: int = 3) -> list[Frame]:
    return [f for f in stack if program.is_own(f)][:limit]


def best_stack(finding: Finding) -> list[Frame]:
    """The stack that says where the bug is: for a leak the allocation,
    otherwise the access; an empty top stack falls back to the first aux."""
    if finding.stack:
        return finding.stack
    for aux in finding.aux:
        if aux.stack:
            return aux.stack
    return []


def frame_key(frame: Frame) -> str:
    """A frame as a signature shows it: function@file, function@object for
    a frame without debug information, or object+offset."""
    if frame.file:
        return f"{frame.fn}@{os.path.basename(frame.file)}"
    if frame.obj:
        name = os.path.basename(frame.obj)
        return frame.fn if frame.fn.startswith(name + "+") else f"{frame.fn}@{name}"
    return frame.fn


def signature(finding: Finding, program, depth: int = 3) -> str:
    """'InvalidFree session_delete@buggy.c < on_read@buggy.c'; with no own
    frame, the top named frames ('Leak_DefinitelyLost calloc@libc.so.6 <
    memcached+0x1d2a3 < ...')."""
    frames = own_frames(best_stack(finding), program, depth)
    if not frames:
        frames = [f for f in best_stack(finding) if f.fn != "???"][:depth]
    return f"{finding.kind} {' < '.join(frame_key(f) for f in frames)}".strip()


def shown_frames(stack: list[Frame], program, limit: int = 3) -> list[Frame]:
    """The frames to show a person: the program's own (at most `limit`), or
    the whole stack when none is (a binary without debug information, a
    finding inside a library)."""
    return own_frames(stack, program, limit) or list(stack)


def quote_line(frame: Frame, program) -> str | None:
    """The source line a frame points at, stripped; None if unreadable."""
    path = program.resolve(frame)
    if path is None or not frame.line:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, start=1):
                if number == frame.line:
                    return text.strip()
    except OSError:
        return None
    return None
