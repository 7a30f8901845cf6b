"""A result as JSON, streamed: the same document as json.dumps(data, indent=2)
(json.loads gives the same value back), at the speed of the C encoder and
without the whole text in memory.

json.dumps with indent falls back to the pure-Python encoder (seconds for
thousands of findings); without indent, one line of megabytes is no file to
read.  So the top-level keys are written one per line, a list one item per
line, and each item compact with the C encoder.  A list may also be given as
any iterator (a generator of findings' to_json()), read once while writing:
the findings then never exist as JSON-ready dicts all at once.  Items that
are Raw are JSON already (findings_json encodes each distinct frame once).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from ..model import Finding, Frame

_encode = json.JSONEncoder().encode
_string = json.encoder.encode_basestring_ascii     # what _encode does with a str


def _value(v) -> str:
    """One field of a finding, as _encode writes it.  Ten such calls per
    finding take about half the time of encoding a ten-key dict."""
    if v is None:
        return "null"
    if v.__class__ is str:
        return _string(v)
    if v.__class__ is int:
        return int.__repr__(v)
    return _encode(v)


class Raw(str):
    """Text that is JSON already: written as it is."""


def write_json(data: dict, dest: str | None) -> None:
    """`data` to the file `dest`, '-' for stdout; nothing when dest is None."""
    if not dest:
        return
    if dest == "-":
        dump(data, sys.stdout)
        return
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8") as out:
        dump(data, out)


def dump(data: dict, out: TextIO) -> None:
    out.write("{")
    for i, (key, value) in enumerate(data.items()):
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}: {key!r}")
        out.write(("\n  " if i == 0 else ",\n  ") + _encode(key) + ": ")
        if isinstance(value, (list, tuple, Iterator)):
            _items(value, out)
        else:
            out.write(_encode(value))
    out.write("\n}\n" if data else "}\n")


def _items(items, out: TextIO) -> None:
    empty = True
    for item in items:
        out.write(("[\n    " if empty else ",\n    ")
                  + (item if item.__class__ is Raw else _encode(item)))
        empty = False
    out.write("[]" if empty else "\n  ]")


def findings_json(findings: Iterable[Finding]) -> Iterator[Raw]:
    """Each finding's to_json() as JSON text, its frames encoded once each
    (findings share their Frame objects: the parsers build each distinct
    frame once)."""
    encoded: dict[int, str] = {}       # id(frame) -> its JSON
    alive: list[Frame] = []             # the frames encoded: their ids stay theirs

    def stack(frames: list[Frame]) -> str:
        ids = list(map(id, frames))
        try:
            return "[" + ", ".join(map(encoded.__getitem__, ids)) + "]"
        except KeyError:
            for frame in frames:
                if id(frame) not in encoded:
                    encoded[id(frame)] = _encode(frame.to_json())
                    alive.append(frame)
            return "[" + ", ".join(map(encoded.__getitem__, ids)) + "]"

    for f in findings:
        aux = ", ".join(f'{{"what": {_value(a.what)}, "stack": {stack(a.stack)}}}' for a in f.aux)
        yield Raw(f'{{"kind": {_value(f.kind)}, "what": {_value(f.what)}, '
                  f'"bytes": {_value(f.bytes)}, "blocks": {_value(f.blocks)}, '
                  f'"direct_bytes": {_value(f.direct_bytes)}, '
                  f'"indirect_bytes": {_value(f.indirect_bytes)}, "pid": {_value(f.pid)}, '
                  f'"detector": {_value(f.detector)}, "tool_kind": {_value(f.tool_kind)}, '
                  f'"suppression": {_value(f.suppression)}, "stack": {stack(f.stack)}, '
                  f'"aux": [{aux}]}}')
