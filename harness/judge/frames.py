"""Which frames of a stack are the program's own code, and the signature of a
finding: its kind plus its top own frames, with addresses, PIDs and line
numbers left out, so two runs of the same bug give the same key (like a
crash-dedup key) and an edit elsewhere in the file does not change it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..model import Finding, Frame

SOURCE_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh")
MAX_FILES = 20000


@dataclass
class SourceIndex:
    """Source files the program is built from, by base name."""

    files: dict[str, Path]

    @classmethod
    def scan(cls, roots: Iterable[Path]) -> "SourceIndex":
        files: dict[str, Path] = {}
        for root in roots:
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")
                               and d not in ("build", "node_modules", "__pycache__")]
                for name in filenames:
                    if name.endswith(SOURCE_SUFFIXES):
                        files.setdefault(name, Path(dirpath) / name)
                if len(files) >= MAX_FILES:
                    return cls(files)
        return cls(files)

    def resolve(self, frame: Frame) -> Path | None:
        if not frame.file:
            return None
        return self.files.get(os.path.basename(frame.file))

    def is_own(self, frame: Frame) -> bool:
        return self.resolve(frame) is not None


def own_frames(stack: list[Frame], index: SourceIndex, limit: int = 3) -> list[Frame]:
    return [f for f in stack if index.is_own(f)][:limit]


def best_stack(finding: Finding) -> list[Frame]:
    """The stack that says where the bug is: for a leak the allocation,
    otherwise the access; an empty top stack falls back to the first aux."""
    if finding.stack:
        return finding.stack
    for aux in finding.aux:
        if aux.stack:
            return aux.stack
    return []


def signature(finding: Finding, index: SourceIndex, depth: int = 3) -> str:
    """'InvalidFree session_delete@buggy.c < on_read@buggy.c'."""
    frames = own_frames(best_stack(finding), index, depth)
    if not frames:
        frames = [f for f in best_stack(finding) if f.fn != "???"][:depth]
    where = " < ".join(f"{f.fn}@{os.path.basename(f.file)}" if f.file else f.fn for f in frames)
    return f"{finding.kind} {where}".strip()


def quote_line(frame: Frame, index: SourceIndex) -> str | None:
    """The source line a frame points at, stripped; None if unreadable."""
    path = index.resolve(frame)
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
