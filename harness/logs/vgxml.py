"""Read memcheck's XML output (--xml=yes) into the same findings as the text
log.  Pure: bytes in (any binary file-like object), dataclasses out.

For users who already have XML from CI.  valgrind 3.19's XML carries no HEAP,
LEAK or ERROR SUMMARY (those entered the XML in 3.26), so the summaries are
rebuilt from what is there: leak totals from the loss records, the error count
from <errorcounts>.  The text log stays the source of truth for a run.

Streaming: each element is read at its end, by a handler picked by its tag,
and an <error> is emptied once read: what stays of it is an empty element
under the root (about 80 bytes, 2-3 % of the record's size in the XML).  Findings past ``max_findings`` are counted, not kept (their
leak totals still count), as in the text parser; frames are built once per
distinct frame.
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from operator import attrgetter
from typing import BinaryIO

from ..model import Amount, Aux, ErrorSummary, FatalSignal, Finding, Frame
from .vglog import LogParseError, ProcessLog, ValgrindLog

_DIRECT = re.compile(r"\(([\d,]+) direct, ([\d,]+) indirect\)")
_LEAK_FIELD = {
    "Leak_DefinitelyLost": "definitely_lost",
    "Leak_IndirectlyLost": "indirectly_lost",
    "Leak_PossiblyLost": "possibly_lost",
    "Leak_StillReachable": "still_reachable",
}
_TAG_TEXT = attrgetter("tag", "text")
# Fed in small chunks: fewer elements wait in the parser's queue, and what is
# read stays in the CPU's caches (64 KB chunks made the parse twice as slow).
_CHUNK = 4096


def _text(elem: ET.Element | None, tag: str) -> str | None:
    if elem is None:
        return None
    child = elem.find(tag)
    return child.text.strip() if child is not None and child.text else None


def _frame(fr: ET.Element) -> Frame:
    line, ip = _text(fr, "line"), _text(fr, "ip")
    try:
        addr = int(ip, 16) if ip else None
    except ValueError:
        addr = None
    return Frame(fn=_text(fr, "fn") or "???", file=_text(fr, "file"),
                 line=int(line) if line and line.isdigit() else None,
                 obj=None if _text(fr, "file") else _text(fr, "obj"), addr=addr)


class _Frames(dict):
    """A <frame>'s Frame by its children's tags and texts, all it depends
    on: each distinct frame built once.  Bounded: emptied when full."""

    LIMIT = 50_000

    def stack(self, elem: ET.Element | None) -> list[Frame]:
        frames = []
        if elem is None:
            return frames
        for fr in elem.findall("frame"):
            key = tuple(map(_TAG_TEXT, fr))
            frame = self.get(key)
            if frame is None:
                if len(self) >= self.LIMIT:
                    self.clear()
                frame = self[key] = _frame(fr)
            frames.append(frame)
        return frames


def _leak_amounts(err: ET.Element, kind: str) -> tuple[str, int | None, int | None,
                                                       int | None, int | None]:
    """A record's headline and its leak figures: bytes, blocks, direct and
    indirect bytes (None where the record has none)."""
    xwhat = err.find("xwhat")
    what = _text(err, "what") or _text(xwhat, "text") or kind
    if xwhat is None or not _text(xwhat, "leakedbytes"):
        return what, None, None, None, None
    nbytes = int(_text(xwhat, "leakedbytes") or 0)
    blocks = int(_text(xwhat, "leakedblocks") or 0)
    split = _DIRECT.search(what)
    if split:
        return what, nbytes, blocks, int(split[1].replace(",", "")), int(split[2].replace(",", ""))
    return what, nbytes, blocks, None, None


class _Reader:
    """The handlers of the elements that matter, and what they found."""

    def __init__(self, max_findings: int) -> None:
        self.proc = ProcessLog(pid=0)
        self.left = max_findings
        self.frames = _Frames()
        self.finished = False
        self.counts: list[int] = []
        self.leaks: dict[str, list[int]] = {}     # heap field -> [bytes, blocks]
        self.handlers = {"pid": self.pid, "ppid": self.ppid, "tool": self.tool,
                         "line": self.line, "error": self.error,
                         "fatal_signal": self.fatal_signal, "state": self.state,
                         "pair": self.pair}

    def pid(self, elem: ET.Element) -> None:
        if elem.text:
            self.proc.pid = int(elem.text)

    def ppid(self, elem: ET.Element) -> None:
        if elem.text:
            self.proc.parent_pid = int(elem.text)

    def tool(self, elem: ET.Element) -> None:
        if elem.text:
            self.proc.tool = elem.text.strip()

    def line(self, elem: ET.Element) -> None:
        if elem.text and elem.text.startswith("Command: "):
            self.proc.command = elem.text[len("Command: "):]

    def state(self, elem: ET.Element) -> None:
        if (elem.text or "").strip() == "FINISHED":
            self.finished = True

    def pair(self, elem: ET.Element) -> None:
        self.counts.append(int(_text(elem, "count") or 0))

    def fatal_signal(self, elem: ET.Element) -> None:
        number = int(_text(elem, "signo") or 0)
        event, address = _text(elem, "event"), _text(elem, "siaddr")
        # The text log's fault line: ' Bad permissions for mapped region at address 0x0'.
        fault = f"{event} at address {address}" if event and address else event
        self.proc.fatal_signal = FatalSignal(
            number=number, name=_text(elem, "signame") or f"SIG{number}", fault=fault,
            address=address, stack=self.frames.stack(elem.find("stack")))

    def error(self, err: ET.Element) -> None:
        kind = _text(err, "kind") or "Unclassified"
        what, nbytes, blocks, direct, indirect = _leak_amounts(err, kind)
        attr = _LEAK_FIELD.get(kind)
        if attr and nbytes is not None:
            total = self.leaks.setdefault(attr, [0, 0])
            total[0] += direct if direct is not None else nbytes
            total[1] += blocks or 0
        if self.left <= 0:
            self.proc.dropped_findings += 1     # counted, not built
        else:
            self.left -= 1
            self.proc.findings.append(self._finding(err, kind, what, nbytes, blocks,
                                                    direct, indirect))
        err.clear()

    def _finding(self, err: ET.Element, kind: str, what: str, nbytes: int | None,
                 blocks: int | None, direct: int | None, indirect: int | None) -> Finding:
        finding = Finding(kind=kind, what=what, bytes=nbytes, blocks=blocks,
                          direct_bytes=direct, indirect_bytes=indirect)
        part: Aux | None = None
        for child in err:
            tag = child.tag
            if tag == "stack":
                if part is None and not finding.stack:
                    finding.stack = self.frames.stack(child)
                elif part is not None:
                    part.stack = self.frames.stack(child)
            elif tag in ("auxwhat", "xauxwhat", "origin"):
                text = child.text if tag == "auxwhat" else _text(child, "text") or _text(child, "what")
                part = Aux(what=(text or "").strip())
                finding.aux.append(part)
                if tag == "origin":
                    part.stack = self.frames.stack(child.find("stack"))
        return finding

    def result(self) -> ValgrindLog:
        proc = self.proc
        for finding in proc.findings:
            finding.pid = proc.pid
        for attr, (nbytes, blocks) in self.leaks.items():
            setattr(proc.heap, attr, Amount(nbytes, blocks))
        if self.finished:
            proc.errors = ErrorSummary(count=sum(self.counts), contexts=len(self.counts))
        return ValgrindLog(processes=[proc])


class _RootWatch:
    """Whether a <valgrindoutput> start tag has been read so far, which tells
    a document cut short from one that is no valgrind XML.  The parser reads
    end events only, so a second one reads the same bytes for start events,
    until it has seen that tag (in valgrind's XML: its first)."""

    def __init__(self) -> None:
        self.parser: ET.XMLPullParser | None = ET.XMLPullParser(events=("start", "end"))
        self.seen = False

    def feed(self, data: bytes) -> None:
        if self.parser is not None:
            self.parser.feed(data)
            self._read()

    def close(self) -> None:
        if self.parser is not None:
            try:
                self.parser.close()
            except ET.ParseError:
                pass
            self._read()

    def _read(self) -> None:
        try:
            for event, elem in self.parser.read_events():
                if event == "end":
                    elem.clear()
                elif elem.tag == "valgrindoutput":
                    self.seen, self.parser = True, None
                    return
        except ET.ParseError:
            self.parser = None


def parse_xml(stream: BinaryIO | bytes, max_findings: int = 5000) -> ValgrindLog:
    """Parse memcheck's XML; a document cut short is read as far as it goes
    and left incomplete (no error count), never judged clean."""
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    reader = _Reader(max_findings)
    handlers = reader.handlers
    parser = ET.XMLPullParser(events=("end",))
    root = _RootWatch()

    def read_events() -> None:
        for _, elem in parser.read_events():
            handler = handlers.get(elem.tag)
            if handler is not None:
                handler(elem)

    try:
        read_events()
        while data := stream.read(_CHUNK):
            root.feed(data)
            parser.feed(data)
            read_events()
        root.close()
        parser.close()
        read_events()
    except ET.ParseError as exc:
        if not root.seen:
            raise LogParseError(f"not valgrind XML: {exc}") from None
        reader.proc.notes.append(f"XML cut short: {exc}")
        reader.finished = False
    except ValueError as exc:   # a number that is none: <pid>abc</pid>
        raise LogParseError(f"malformed valgrind XML: {exc}") from None
    if not root.seen:
        raise LogParseError("not valgrind XML: no <valgrindoutput> element")
    return reader.result()
