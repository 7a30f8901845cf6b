"""JUnit XML, as GitLab, Jenkins and most CI systems read it, from
summary.json's data: one testcase per case; a failing case has a
<failure> (fail, xpass, timeout) or an <error> (unresolved: the harness
could not decide) whose message is the finding: kind, bytes, top frames;
the detector's log is attached as system-out, cut to a bounded size."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .summary import FAILING, headline, repro_command

LOG_HEAD = 16 * 1024        # of a long log: its start (the first records)...
LOG_TAIL = 48 * 1024        # ... and its end (the summaries)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    """Text XML 1.0 can carry: other control characters shown as escapes."""
    return _NOT_XML.sub(lambda m: repr(m.group())[1:-1], text)


def bounded_log(path: Path) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size <= LOG_HEAD + LOG_TAIL:
                return f.read().decode(errors="replace")
            head = f.read(LOG_HEAD).decode(errors="replace")
            f.seek(size - LOG_TAIL)
            tail = f.read().decode(errors="replace")
    except OSError as exc:
        return f"({path}: cannot read: {exc.strerror})"
    return f"{head}\n[... {size - LOG_HEAD - LOG_TAIL:,} bytes left out ...]\n{tail}"


def _frames(issue: dict) -> str:
    return " < ".join(f"{f['fn']} ({f['file']}:{f['line']})" if f.get("file") else f["fn"]
                      for f in issue["frames"][:3])


def finding_message(case: dict) -> str:
    """The first thing that fails the case: its kind, bytes and top frames."""
    for issue in case["issues"]:
        if issue["status"] != "new":
            continue
        where = _frames(issue)
        return headline(issue) + (f" at {where}" if where else "")
    return case["message"]


def details(case: dict) -> str:
    lines = [f"{case['outcome']}: {case['message']}"] + [f"  {r}" for r in case["reasons"]]
    for issue in case["issues"]:
        if issue["status"] in ("new", "known"):
            lines.append(f"{issue['status']}: {issue['signature']}")
            lines += [f"    at {f['fn']}" + (f" ({f['file']}:{f['line']})" if f.get("file") else
                                              f" (in {f['obj']})" if f.get("obj") else "")
                      for f in issue["frames"]]
    lines += [f"note: {n}" for n in case.get("notes") or []]
    if case.get("startup_output"):
        lines += ["server output (end):"] + case["startup_output"].splitlines()[-20:]
    if repro_command(case):
        lines.append(f"reproduce: {repro_command(case)}")
    return "\n".join(lines)


def junit_xml(data: dict, out_dir: Path) -> bytes:
    cases = sorted(data["cases"], key=lambda c: c["index"])
    failures = sum(1 for c in cases if c["outcome"] in FAILING and c["outcome"] != "unresolved")
    errors = sum(1 for c in cases if c["outcome"] == "unresolved")
    seconds = sum(c["seconds"] for c in cases)
    suites = ET.Element("testsuites", name="leak-harness", tests=str(len(cases)),
                        failures=str(failures), errors=str(errors), time=f"{seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="leak-harness", tests=str(len(cases)),
                          failures=str(failures), errors=str(errors), skipped="0",
                          time=f"{seconds:.3f}")
    for case in cases:
        group = case.get("pattern") or case["target"]
        tc = ET.SubElement(suite, "testcase", classname=f"leak-harness.{group}", name=case["case"],
                           time=f"{case['seconds']:.3f}")
        if case["outcome"] in FAILING:
            tag = "error" if case["outcome"] == "unresolved" else "failure"
            element = ET.SubElement(tc, tag, message=clean(finding_message(case))[:1000],
                                    type=f"{case['outcome']}: {case['verdict']}")
            element.text = clean(details(case))
        log = case["files"].get("log") or case["files"].get("stderr")
        out = [f"{case['case']}: {case['verdict']} ({case['outcome']})"]
        if log:
            out += [f"--- {log}", bounded_log(out_dir / log)]
        ET.SubElement(tc, "system-out").text = clean("\n".join(out))
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"
