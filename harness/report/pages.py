"""Reports of a matrix: summary.json, summary.md, index.html (one
self-contained page, no external assets) and, cheaply from the same data,
SARIF for code-scanning tools."""
from __future__ import annotations

import html
import json
import os
from collections import defaultdict
from pathlib import Path

from ..judge.frames import best_stack, own_frames, quote_line
from ..judge.gate import CaseResult
from ..model import DETECTORS, Finding, Outcome, Verdict
from .terminal import heap_lines

SCHEMA = "leak-harness/summary/1"


def detector_table(results: list[CaseResult]) -> dict[str, dict[str, dict]]:
    """pattern -> detector -> {"expected": bool, "caught": bool, "outcome", "kinds"} from
    the buggy variants' runs: which tool sees which bug (and, for a detector
    the manifest says cannot run the program, why not)."""
    table: dict[str, dict[str, dict]] = {}
    detectors_run = {r.detector for r in results}
    for r in results:
        pattern = r.case.pattern
        if pattern is not None and pattern.is_pair:
            for detector, why in pattern.unsupported.items():
                if detector in detectors_run:
                    table.setdefault(pattern.name, {})[detector] = {
                        "expected": False, "caught": False, "outcome": "n/a", "verdict": None,
                        "kinds": [], "unsupported": why}
    for r in results:
        if r.case.variant != "buggy" or r.case.pattern is None:
            continue
        caught = r.outcome is Outcome.XFAIL or (
            r.outcome is Outcome.INFO and r.run.verdict not in (Verdict.CLEAN, Verdict.UNRESOLVED))
        kinds = sorted({f.tool_kind or f.kind for f in r.run.judgement.findings if not f.is_leak}
                       | ({r.run.judgement.fatal_signal.name} if r.run.judgement.fatal_signal else set())
                       | ({"leak"} if r.run.verdict is Verdict.LEAK else set())
                       | ({"hang"} if r.run.verdict is Verdict.HANG else set()))
        table.setdefault(r.case.pattern.name, {})[r.detector] = {
            "expected": r.case.expect is not None, "caught": caught,
            "outcome": r.outcome.label, "verdict": r.run.verdict.label, "kinds": kinds}
    return table


def summary(results: list[CaseResult]) -> dict:
    counts: dict[str, int] = defaultdict(int)
    groups: dict[str, list[str]] = defaultdict(list)
    for r in results:
        counts[r.outcome.label] += 1
        for sig in r.signatures:
            groups[sig].append(r.case.id)
    return {
        "schema": SCHEMA,
        "passed": not any(r.outcome.fails for r in results),
        "counts": dict(sorted(counts.items())),
        "cases": [r.to_json() for r in results],
        "signatures": {sig: sorted(ids) for sig, ids in sorted(groups.items())},
        "detectors": detector_table(results),
    }


def write_all(results: list[CaseResult], out_dir: Path, sarif: Path | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = summary(results)
    paths = {"json": out_dir / "summary.json", "md": out_dir / "summary.md",
             "html": out_dir / "index.html"}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    paths["md"].write_text(markdown(results, data))
    paths["html"].write_text(html_page(results, data, out_dir))
    if sarif:
        sarif.parent.mkdir(parents=True, exist_ok=True)
        sarif.write_text(json.dumps(sarif_log(results), indent=2) + "\n")
        paths["sarif"] = sarif
    return paths


# -- Markdown ------------------------------------------------------------------
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|"})


def md(text: object) -> str:
    """Text as Markdown shows it literally: HTML and Markdown's own marks
    escaped, one line (a table cell)."""
    return html.escape(" ".join(str(text).split()), quote=False).translate(_MD_SPECIAL)


def md_code(text: object) -> str:
    """Text in a code span that nothing in it can break out of."""
    return "<code>" + html.escape(" ".join(str(text).split())).replace("|", "&#124;") + "</code>"


def markdown(results: list[CaseResult], data: dict) -> str:
    lines = ["# Leak-and-crash matrix", "",
             "**" + ("PASSED" if data["passed"] else "FAILED") + "**: " +
             ", ".join(f"{n} {k}" for k, n in data["counts"].items()), "",
             "| case | outcome | verdict | in use at exit | errors | note |", "|---|---|---|---|---|---|"]
    for r in results:
        proc = r.run.log.main if r.run.log else None
        in_use = (f"{proc.heap.in_use.bytes:,} B in {proc.heap.in_use.blocks:,} blocks"
                  if proc and proc.heap.in_use else "-")
        errors = str(proc.errors.count) if proc and proc.errors else "-"
        lines.append(f"| {md(r.case.id)} | {r.outcome.label} | {r.run.verdict.label} | {in_use} | "
                     f"{errors} | {md(r.message)} |")
    lines += ["", "## Which detector sees which bug", ""] + detector_markdown(data["detectors"])
    lines += ["", "## Findings by signature", ""]
    if not data["signatures"]:
        lines.append("None.")
    for sig, ids in data["signatures"].items():
        lines.append(f"- {md_code(sig)}: {md(', '.join(ids))}")
    return "\n".join(lines) + "\n"


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry.get("unsupported"):
        return f"n/a ({entry['unsupported']})"
    mark = "caught" if entry["caught"] else "missed"
    if entry["expected"] and not entry["caught"]:
        mark = "MISSED (expected!)"
    what = ", ".join(entry["kinds"][:3])
    return f"{mark}{' (' + what + ')' if entry['caught'] and what else ''}" + ("" if entry["expected"] else " *")


def _detectors_in(table: dict) -> list[str]:
    present = {d for row in table.values() for d in row}
    return [d for d in DETECTORS if d in present]


def detector_markdown(table: dict) -> list[str]:
    if not table:
        return ["No buggy variant was run."]
    dets = _detectors_in(table)
    lines = ["| pattern | " + " | ".join(dets) + " |", "|---|" + "---|" * len(dets)]
    for name, row in sorted(table.items()):
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(d)) for d in dets) + " |")
    lines.append("")
    lines.append("\\* not named in the pattern's manifest: shown, never gating.")
    return lines


# -- HTML ----------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.variant{border:1px solid #ddd;border-radius:6px;padding:.8em;background:#fafafa;overflow-x:auto}
.verdict{font-weight:bold;padding:.1em .5em;border-radius:4px;color:#fff}
.clean{background:#2a7d2a}.leak{background:#b36b00}.memory-error,.crash{background:#b00020}
.hang,.startup-failure,.unresolved{background:#5a3d99}
pre{background:#fff;border:1px solid #eee;padding:.5em;white-space:pre-wrap;font-size:12px}
code,.frame{font-family:ui-monospace,monospace;font-size:12px}
.src{color:#555;margin-left:2em;display:block}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}
.fails{color:#b00020;font-weight:bold}.seed{color:#444;font-style:italic}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(path: Path, line: int | None, out_dir: Path) -> str:
    rel = os.path.relpath(path, out_dir)
    return f'<a href="{_e(rel)}">{_e(path.name)}:{line}</a>' if line else f'<a href="{_e(rel)}">{_e(path.name)}</a>'


def _finding_html(finding: Finding, index, out_dir: Path) -> str:
    parts = [f"<div><b>{_e(finding.kind)}</b>: {_e(finding.what)}"]
    stacks = [("", best_stack(finding))] + [(a.what, a.stack) for a in finding.aux[:2]]
    for title, stack in stacks:
        frames = own_frames(stack, index, 4)
        if title:
            parts.append(f"<div>{_e(title)}</div>")
        for frame in frames:
            path = index.resolve(frame)
            src = quote_line(frame, index)
            parts.append(f'<div class="frame">&nbsp;&nbsp;at {_e(frame.fn)} '
                         f'({_link(path, frame.line, out_dir) if path else _e(frame.file)})</div>')
            if src:
                parts.append(f'<code class="src">{_e(src)}</code>')
    parts.append("</div>")
    return "\n".join(parts)


def _variant_html(r: CaseResult, out_dir: Path) -> str:
    index = r.run.program
    run = r.run
    out = [f'<div class="variant"><h3>{_e(r.case.variant)} · {_e(r.detector)} · '
           f'<span class="verdict {run.verdict.label}">'
           f'{_e(run.verdict.label)}</span> <small>({_e(r.outcome.label)})</small></h3>',
           f"<div>scenario <code>{_e(r.case.scenario)}</code>, {run.seconds:.1f}s</div>"]
    if run.log:
        proc = run.log.main
        out.append("<pre>" + _e("\n".join(heap_lines(proc.heap, proc.errors))) + "</pre>")
        sig = run.judgement.fatal_signal
        if sig:
            out.append(f"<div><b>{_e(sig.name)}</b> {_e(sig.fault or '')}</div>")
        shown = set()
        for finding in run.judgement.findings:
            if finding.kind in shown:
                continue
            shown.add(finding.kind)
            out.append(_finding_html(finding, index, out_dir))
    for reason in run.judgement.reasons[:4]:
        out.append(f"<div>{_e(reason)}</div>")
    log_name = "ASan report" if run.detector == "asan" else f"valgrind {run.detector} log"
    links = [f'<a href="{_e(os.path.relpath(run.log_path, out_dir))}">{_e(log_name)}</a>'] \
        if run.log_path.exists() and run.log_path != run.stderr_path else []
    links.append(f'<a href="{_e(os.path.relpath(run.stderr_path, out_dir))}">server stderr</a>')
    out.append("<div>" + " · ".join(links) + "</div></div>")
    return "\n".join(out)


def html_page(results: list[CaseResult], data: dict, out_dir: Path) -> str:
    by_pattern: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_pattern[r.case.pattern.name if r.case.pattern else r.case.target.name].append(r)
    body = [f"<h1>Leak-and-crash matrix: {'passed' if data['passed'] else 'FAILED'}</h1>",
            "<p>" + _e(", ".join(f"{n} {k}" for k, n in data["counts"].items())) + "</p>"]
    table = data["detectors"]
    if table:
        dets = _detectors_in(table)
        body.append('<h2 id="detectors">Which detector sees which bug</h2><table id="detector-table">'
                    "<tr><th>pattern</th>" + "".join(f"<th>{_e(d)}</th>" for d in dets) + "</tr>")
        for name, row in sorted(table.items()):
            cells = []
            for d in dets:
                entry = row.get(d)
                cls = "" if entry is None else (' class="fails"' if entry["expected"] and not entry["caught"]
                                                else "")
                cells.append(f'<td{cls} data-detector="{_e(d)}">{_e(_cell(entry))}</td>')
            body.append(f'<tr><td><a href="#{_e(name)}">{_e(name)}</a></td>{"".join(cells)}</tr>')
        body.append("</table><p>* not named in the pattern's manifest: shown, never gating.</p>")
    for name, rs in by_pattern.items():
        pattern = rs[0].case.pattern
        body.append(f'<h2 id="{_e(name)}">{_e(name)}' + (f": {_e(pattern.title)}" if pattern and pattern.title else "") + "</h2>")
        if pattern and pattern.seed:
            body.append(f'<p class="seed">seed {_e(pattern.seed)}: {_e(pattern.seed_story)}</p>')
        if pattern and pattern.mechanism:
            body.append(f"<p><b>Mechanism.</b> {_e(pattern.mechanism)}</p>")
        if pattern and pattern.client:
            body.append(f"<p><b>Client.</b> {_e(pattern.client)}</p>")
        trigger = pattern.trigger if pattern else None
        side = [r for r in rs if r.case.scenario == trigger] if trigger else []
        if side:
            body.append('<div class="pair">' + "\n".join(_variant_html(r, out_dir) for r in side) + "</div>")
        if pattern and pattern.fix:
            body.append(f"<p><b>Fix.</b> {_e(pattern.fix)}</p>")
        rest = [r for r in rs if r not in side]
        if rest:
            body.append("<table><tr><th>case</th><th>outcome</th><th>verdict</th><th>note</th></tr>")
            for r in rest:
                cls = ' class="fails"' if r.outcome.fails else ""
                body.append(f"<tr><td>{_e(r.case.id)}</td><td{cls}>{_e(r.outcome.label)}</td>"
                            f"<td>{_e(r.run.verdict.label)}</td><td>{_e(r.message)}</td></tr>")
            body.append("</table>")
            for r in rest:
                if r.run.judgement.findings or r.outcome.fails:
                    body.append(_variant_html(r, out_dir))
    body.append("<h2>Findings by signature</h2><table><tr><th>signature</th><th>cases</th></tr>")
    for sig, ids in data["signatures"].items():
        body.append(f"<tr><td><code>{_e(sig)}</code></td><td>{_e(', '.join(ids))}</td></tr>")
    body.append("</table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Leak-and-crash matrix</title><style>" + CSS + "</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# -- SARIF -----------------------------------------------------------------------
def sarif_log(results: list[CaseResult]) -> dict:
    rules: dict[str, dict] = {}
    out = []
    for r in results:
        if r.outcome is Outcome.XFAIL:
            continue
        index = r.run.program
        for finding in r.run.judgement.findings:
            frames = own_frames(best_stack(finding), index, 1)
            rules.setdefault(finding.kind, {"id": finding.kind, "name": finding.kind})
            result = {"ruleId": finding.kind, "level": "error" if r.outcome.fails else "note",
                      "message": {"text": f"{finding.what} ({r.case.id})"}}
            if frames:
                path = index.resolve(frames[0])
                result["locations"] = [{"physicalLocation": {
                    "artifactLocation": {"uri": str(path)},
                    "region": {"startLine": frames[0].line or 1}}}]
            out.append(result)
    return {"version": "2.1.0",
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "runs": [{"tool": {"driver": {"name": "leak-harness", "rules": list(rules.values())}},
                      "results": out}]}
