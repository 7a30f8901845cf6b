"""Big logs made from real ones, for the parser's equivalence tests and for
make bench: the records of a recorded log repeated in place (a log of N times
as many records, with its own header and summaries), or several logs
interleaved line by line under their own PIDs (as valgrind writes with
--trace-children into one file)."""
from __future__ import annotations

import re

# The headline of a record worth repeating: a loss record or an error record.
_RECORD_HEAD = re.compile(
    r"\d[\d,]* (?:\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are "
    r"|Invalid |Conditional jump|Use of uninitialised|Syscall param|Mismatched |Source and "
    r"|Possible data race|Conflicting |Thread ")
_PREFIX = re.compile(r"==\d+== ?")


def _body(line: str) -> str:
    return _PREFIX.sub("", line, count=1).strip()


def _blocks(lines: list[str]) -> list[list[str]]:
    """The log cut after each blank '==PID== ' line, or after the 'end'
    marker of a record written with --error-markers."""
    blocks, cur, marked = [], [], False
    for line in lines:
        cur.append(line)
        body = _body(line)
        if body == "begin":
            marked = True
        elif body == "end" or (body == "" and not marked):
            marked = False
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def _is_record(block: list[str]) -> bool:
    heads = [b for b in map(_body, block) if b not in ("", "begin")]
    return bool(heads) and bool(_RECORD_HEAD.match(heads[0]))


def repeat_records(text: str, times: int) -> str:
    """Each run of consecutive records written `times` times in place: one
    process with `times` as many error and loss records, and the same
    header and summaries."""
    out: list[str] = []
    run: list[str] = []
    for block in _blocks(text.splitlines(keepends=True)):
        if _is_record(block):
            run.extend(block)
            continue
        out.extend(run * times)
        run = []
        out.extend(block)
    out.extend(run * times)
    return "".join(out)


def with_pid(text: str, pid: int) -> str:
    """The log as if written by process `pid` (its parent unchanged)."""
    old = text.split("==", 2)[1]
    return text.replace(f"=={old}==", f"=={pid}==")


def copies(text: str, times: int) -> str:
    """`times` copies of a log one after the other, each under its own PID."""
    first = int(text.split("==", 2)[1])
    return "".join(with_pid(text, first + k) for k in range(times))


def interleave(texts: list[str]) -> str:
    """Lines of several logs taken in turn, as processes writing to one file."""
    parts = [t.splitlines(keepends=True) for t in texts]
    out = []
    for i in range(max(len(p) for p in parts)):
        out.extend(p[i] for p in parts if i < len(p))
    return "".join(out)


_XML_ERROR = re.compile(rb"(?:[ \t]*<error>.*?</error>[ \t]*\n)+", re.S)


def repeat_xml_errors(xml: bytes, times: int) -> bytes:
    """memcheck's XML with each run of <error> elements written `times` times."""
    return _XML_ERROR.sub(lambda m: m.group(0) * times, xml)
