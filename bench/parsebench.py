"""The parser benchmarks of make bench: each measurement in a fresh process,
so its peak RSS is its own.

As a program (the child):  parsebench.py MODE PATH
  MODE is KIND-WHAT: KIND text or xml; WHAT one of
    floor   the floor: a loop doing one precompiled regex match per line
            (text), an iterparse loop that clears every element (xml);
    new     the harness's parser, parsing only;
    old     the parser before issue 13 (frozen in tests/oracle/);
    new-digest, old-digest
            the same parse, then a digest of everything it found (every
            field of every process), to check both give the same results:
            the old one's findings cut to the budget for XML, as the new
            parser keeps 5,000 and counts the rest;
    new-once
            one parse and nothing else (what the parse command does first);
  and prints one JSON line: {"seconds": CPU seconds of the parse alone,
  "warm": the same for a second parse in the same process (floor and new
  only; a first parse also pays for the fresh memory it fills), "findings":
  kept, "dropped": counted, "digest": ... or null}.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 5000


def _floor_text(path: str) -> None:
    import re
    prefix = re.compile(r"==(\d+)== ")
    n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if prefix.match(line):
                n += 1


def _floor_xml(path: str) -> None:
    import xml.etree.ElementTree as ET
    for _, elem in ET.iterparse(path):
        elem.clear()


def _parser(kind: str, which: str):
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    if kind == "text":
        if which == "old":
            from oracle.vglog_v1 import parse_lines

            def parse(path: str):
                with open(path, encoding="utf-8", errors="replace") as f:
                    return parse_lines(f)
            return parse
        # As the harness reads a log: decoded in texts of whole lines.
        from harness.logs.source import log_texts
        from harness.logs.vglog import parse_texts

        def parse(path: str):
            return parse_texts(log_texts(Path(path)))
        return parse
    if which == "old":
        from oracle.vgxml_v1 import parse_xml
    else:
        from harness.logs.vgxml import parse_xml

    def parse(path: str):
        with open(path, "rb") as f:
            return parse_xml(f)
    return parse


def _digest(log, kind: str, which: str) -> str:
    from oracle import without_addresses     # what the frozen parser kept, only
    procs = [without_addresses(dataclasses.asdict(p)) | {"complete": p.complete}
             for p in log.processes]
    if kind == "xml" and which == "old":
        for proc in procs:          # the budget the new XML parser applies
            proc["dropped_findings"] = max(0, len(proc["findings"]) - BUDGET)
            proc["findings"] = proc["findings"][:BUDGET]
    text = json.dumps({"main": log.main.pid, "processes": procs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def child(mode: str, path: str) -> dict:
    kind, _, what = mode.partition("-")
    which, _, extra = what.partition("-")
    digest, once = extra == "digest", extra == "once"
    parse = (_floor_text if kind == "text" else _floor_xml) if which == "floor" \
        else _parser(kind, which)
    t0 = time.process_time()
    log = parse(path)
    seconds = time.process_time() - t0
    warm = None
    if which in ("floor", "new") and not (digest or once):
        del log
        t0 = time.process_time()
        log = parse(path)
        warm = time.process_time() - t0
    if which == "floor":
        return {"seconds": seconds, "warm": warm, "findings": None, "dropped": None,
                "digest": None}
    return {"seconds": seconds, "warm": warm,
            "findings": sum(len(p.findings) for p in log.processes),
            "dropped": sum(p.dropped_findings for p in log.processes),
            "digest": _digest(log, kind, which) if digest else None}


# -- the driver ---------------------------------------------------------------------
@dataclasses.dataclass
class Proc:
    """What a finished child process cost: CPU seconds (user + system),
    wall seconds, peak RSS (MB); what it printed, its exit status."""

    cpu: float
    wall: float
    peak_mb: float
    out: str
    status: int


# A child's ru_maxrss counts its parent's RSS at the fork (Linux keeps the
# high-water mark across exec), so every child is started by this small
# spawner, whose own RSS is the interpreter's alone.  It prints, after the
# child's output, one last line: the child's exit status, CPU and peak RSS.
# Every child runs on the same CPU (CPU): the cores of a virtual machine need
# not be alike (on the bench's machine one runs the same loop 1.5x slower
# than the other), and a floor timed on one and a parser on the other would
# make their ratio a draw of the scheduler.
CPU = min(os.sched_getaffinity(0))
_SPAWNER = """import os, sys
os.sched_setaffinity(0, {int(os.environ["PARSEBENCH_CPU"])})
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
      flush=True)
"""


def spawn(argv: list[str], cwd: Path | None = None, env: dict | None = None,
          timeout: float = 600, check: bool = True) -> Proc:
    """Runs argv to its end, with its own CPU time and peak RSS; killed (with
    its spawner) past `timeout` seconds; a failure raises unless check is
    false."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _SPAWNER, *map(str, argv)], cwd=cwd,
                                env=(os.environ if env is None else env) | {"PARSEBENCH_CPU": str(CPU)},
                                stdout=subprocess.PIPE, stderr=null,
                                start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    wall = time.perf_counter() - t0
    text = out.decode()
    body, _, last = text.rstrip("\n").rpartition("\n")
    status, cpu, peak_kb = last.split()
    if proc.returncode != 0 or (check and int(status) != 0):
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit status {status}")
    return Proc(cpu=float(cpu), wall=wall, peak_mb=int(peak_kb) / 1024, out=body,
                status=int(status))


def measure(mode: str, path: Path) -> dict:
    """One child run of MODE on PATH: its report, plus its peak RSS."""
    p = spawn([sys.executable, str(Path(__file__)), mode, str(path)])
    return json.loads(p.out) | {"peak_mb": p.peak_mb, "process_cpu": p.cpu}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2])))
