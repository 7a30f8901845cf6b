# Frozen copy of harness/logs/vgxml.py at commit fc5af49, before issue 13's speed work:
# the oracle that tests/test_parser_equivalence.py and make bench compare the
# fast parser with.  Do not edit: it is the reference for 'same results'.
"""Read memcheck's XML output (--xml=yes) into the same findings as the text
log.  Pure: bytes in (any binary file-like object), dataclasses out.

For users who already have XML from CI.  valgrind 3.19's XML carries no HEAP,
LEAK or ERROR SUMMARY (those entered the XML in 3.26), so the summaries are
rebuilt from what is there: leak totals from the loss records, the error count
from <errorcounts>.  The text log stays the source of truth for a run.
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import BinaryIO

from harness.model import Amount, Aux, ErrorSummary, FatalSignal, Finding, Frame
from .vglog_v1 import LogParseError, ProcessLog, ValgrindLog

_DIRECT = re.compile(r"\(([\d,]+) direct, ([\d,]+) indirect\)")
_LEAK_FIELD = {
    "Leak_DefinitelyLost": "definitely_lost",
    "Leak_IndirectlyLost": "indirectly_lost",
    "Leak_PossiblyLost": "possibly_lost",
    "Leak_StillReachable": "still_reachable",
}


def _text(elem: ET.Element | None, tag: str) -> str | None:
    if elem is None:
        return None
    child = elem.find(tag)
    return child.text.strip() if child is not None and child.text else None


def _stack(elem: ET.Element | None) -> list[Frame]:
    frames = []
    if elem is None:
        return frames
    for fr in elem.findall("frame"):
        line = _text(fr, "line")
        frames.append(Frame(fn=_text(fr, "fn") or "???", file=_text(fr, "file"),
                            line=int(line) if line and line.isdigit() else None,
                            obj=None if _text(fr, "file") else _text(fr, "obj")))
    return frames


def _finding(err: ET.Element) -> Finding:
    kind = _text(err, "kind") or "Unclassified"
    xwhat = err.find("xwhat")
    what = _text(err, "what") or _text(xwhat, "text") or kind
    finding = Finding(kind=kind, what=what)
    if xwhat is not None and _text(xwhat, "leakedbytes"):
        finding.bytes = int(_text(xwhat, "leakedbytes") or 0)
        finding.blocks = int(_text(xwhat, "leakedblocks") or 0)
        split = _DIRECT.search(what)
        if split:
            finding.direct_bytes = int(split[1].replace(",", ""))
            finding.indirect_bytes = int(split[2].replace(",", ""))
    part: Aux | None = None
    for child in err:
        if child.tag == "stack":
            if part is None and not finding.stack:
                finding.stack = _stack(child)
            elif part is not None:
                part.stack = _stack(child)
        elif child.tag in ("auxwhat", "xauxwhat", "origin"):
            text = child.text if child.tag == "auxwhat" else _text(child, "text") or _text(child, "what")
            part = Aux(what=(text or "").strip())
            finding.aux.append(part)
            if child.tag == "origin":
                part.stack = _stack(child.find("stack"))
    return finding


def _fatal(elem: ET.Element) -> FatalSignal:
    number = int(_text(elem, "signo") or 0)
    event, address = _text(elem, "event"), _text(elem, "siaddr")
    # The text log's fault line: ' Bad permissions for mapped region at address 0x0'.
    fault = f"{event} at address {address}" if event and address else event
    return FatalSignal(number=number, name=_text(elem, "signame") or f"SIG{number}",
                       fault=fault, address=address, stack=_stack(elem.find("stack")))


def parse_xml(stream: BinaryIO | bytes) -> ValgrindLog:
    """Parse memcheck's XML; a document cut short is read as far as it goes
    and left incomplete (no error count), never judged clean."""
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    proc = ProcessLog(pid=0)
    finished = False
    counts: list[int] = []
    seen_root = False
    try:
        for event, elem in ET.iterparse(stream, events=("start", "end")):
            if event == "start":
                seen_root = seen_root or elem.tag == "valgrindoutput"
                continue
            if elem.tag == "pid" and elem.text:
                proc.pid = int(elem.text)
            elif elem.tag == "ppid" and elem.text:
                proc.parent_pid = int(elem.text)
            elif elem.tag == "tool" and elem.text:
                proc.tool = elem.text.strip()
            elif elem.tag == "line" and elem.text and elem.text.startswith("Command: "):
                proc.command = elem.text[len("Command: "):]
            elif elem.tag == "error":
                proc.findings.append(_finding(elem))
                elem.clear()
            elif elem.tag == "fatal_signal":
                proc.fatal_signal = _fatal(elem)
            elif elem.tag == "state" and (elem.text or "").strip() == "FINISHED":
                finished = True
            elif elem.tag == "pair":
                counts.append(int(_text(elem, "count") or 0))
    except ET.ParseError as exc:
        if not seen_root:
            raise LogParseError(f"not valgrind XML: {exc}") from None
        proc.notes.append(f"XML cut short: {exc}")
        finished = False
    except ValueError as exc:   # a number that is none: <pid>abc</pid>
        raise LogParseError(f"malformed valgrind XML: {exc}") from None
    if not seen_root:
        raise LogParseError("not valgrind XML: no <valgrindoutput> element")
    for finding in proc.findings:
        finding.pid = proc.pid
        attr = _LEAK_FIELD.get(finding.kind)
        if attr and finding.bytes is not None:
            old = getattr(proc.heap, attr) or Amount(0, 0)
            own = finding.direct_bytes if finding.direct_bytes is not None else finding.bytes
            setattr(proc.heap, attr, Amount(old.bytes + own,
                                            old.blocks + (finding.blocks or 0)))
    if finished:
        proc.errors = ErrorSummary(count=sum(counts), contexts=len(counts))
    return ValgrindLog(processes=[proc])
