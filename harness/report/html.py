"""index.html, from summary.json's data: one self-contained page (no
external assets, everything quoted is escaped).

At the top, the verdict and the failing cases; then the failing cases in
full, the known ones apart; the detector-by-pattern table when a pair ran;
then one section per pattern (or server): the seed, each pair's buggy and
fixed variant side by side, the fix, and the other cases, the passing ones
folded.  Also `load_page`: the leak slope of `run --load` as a plot."""
from __future__ import annotations

import html
import os
from pathlib import Path

from .summary import (FAILING, detector_cell, detectors_in, failing_first, headline, repro_command,
                      suppressed)

# The font stack names the CJK faces Debian's fonts-noto-cjk installs, so
# the seeds' titles (Coroutine 陷阱) never show as boxes.
FONTS = ('system-ui, "DejaVu Sans", "Noto Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", '
         '"Noto Sans CJK TC", "Noto Sans CJK KR", sans-serif')
MONO = 'ui-monospace, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", monospace'
CSS = f"""
body{{font:14px/1.45 {FONTS};margin:1.2em auto;max-width:1200px;color:#222;padding:0 1em}}
h1{{font-size:1.5em;margin:.2em 0}}h2{{margin-top:1.6em;border-bottom:1px solid #ccc}}
h3{{font-size:1.05em;margin:.1em 0 .4em}}
#verdict{{border:2px solid #ccc;border-radius:8px;padding:.6em 1em;background:#fcfcfc}}
#verdict.fail{{border-color:#b00020}}#verdict.pass{{border-color:#2a7d2a}}
#verdict.unresolved{{border-color:#5a3d99}}#verdict ul{{margin:.3em 0;padding-left:1.2em}}
.pair{{display:grid;grid-template-columns:1fr 1fr;gap:1em;align-items:stretch;margin:.6em 0}}
.variant{{border:1px solid #ddd;border-radius:6px;padding:.8em;background:#fafafa;min-width:0;
  overflow-wrap:anywhere}}
.variant+.variant{{margin-top:.6em}}.pair>.variant+.variant{{margin-top:0}}
.verdict,.outcome{{font-weight:bold;padding:.05em .45em;border-radius:4px;color:#fff;
  white-space:nowrap}}
.clean,.o-pass,.o-xfail{{background:#2a7d2a}}.leak{{background:#b36b00}}
.memory-error,.crash,.o-fail,.o-xpass,.o-timeout{{background:#b00020}}
.hang,.startup-failure,.unresolved,.o-unresolved{{background:#5a3d99}}
.o-known,.o-info{{background:#666}}
.tag{{font-size:11px;border:1px solid #999;border-radius:3px;padding:0 .3em;margin-right:.3em}}
.tag.new{{border-color:#b00020;color:#b00020;font-weight:bold}}.tag.known{{color:#555}}
pre{{background:#fff;border:1px solid #eee;padding:.5em;white-space:pre-wrap;font:12px/1.35 {MONO};
  overflow-wrap:anywhere;margin:.4em 0}}
code,.frame{{font-family:{MONO};font-size:12px}}
.src{{color:#555;margin-left:2em;display:block}}.note{{color:#444}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ddd;padding:.25em .5em;text-align:left;
  vertical-align:top}}
.fails{{color:#b00020;font-weight:bold}}.seed{{color:#444;font-style:italic}}
details{{margin:.6em 0}}summary{{cursor:pointer;color:#333}}
svg text{{font:12px {FONTS}}}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _href(rel: str) -> str:
    return _e(Path(rel).as_posix())


def _source_link(frame: dict, out_dir: Path) -> str:
    label = f"{Path(frame['file']).name}:{frame['line']}" if frame.get("line") else frame["file"]
    if frame.get("path"):
        return f'<a href="{_href(os.path.relpath(frame["path"], out_dir))}">{_e(label)}</a>'
    return _e(label)


def frames_html(frames: list[dict], out_dir: Path) -> list[str]:
    out = []
    for f in frames:
        where = _source_link(f, out_dir) if f.get("file") else \
            (f"in {_e(f['obj'])}" if f.get("obj") else "")
        out.append(f'<div class="frame">&nbsp;&nbsp;at {_e(f["fn"])}'
                   + (f" ({where})" if where else "") + "</div>")
        if f.get("quote"):
            out.append(f'<code class="src">{_e(f["quote"])}</code>')
    return out


def issue_html(issue: dict, out_dir: Path) -> str:
    status = issue["status"]
    kind, _, rest = headline(issue).partition(": ")
    parts = [f'<div class="issue" data-status="{_e(status)}"><span class="tag {_e(status)}">'
             f'{_e(status)}</span><b>{_e(kind)}</b>: {_e(rest)}']
    parts += frames_html(issue["frames"], out_dir)
    for aux in issue.get("aux", []):
        parts.append(f"<div>{_e(aux['what'])}</div>")
        parts += frames_html(aux["frames"], out_dir)
    parts.append("</div>")
    return "\n".join(parts)


def _links(case: dict) -> str:
    files = case["files"]
    log_name = "ASan report" if case["detector"] == "asan" else f"valgrind {case['detector']} log"
    links = []
    if files.get("log"):
        links.append(f'<a href="{_href(files["log"])}">{_e(log_name)}</a>')
    for i, extra in enumerate(files.get("logs") or [], start=2):
        links.append(f'<a href="{_href(extra)}">log {i}</a>')
    links.append(f'<a href="{_href(files["stderr"])}">server stderr</a>')
    links.append(f'<a href="{_href(files["stdout"])}">stdout</a>')
    return "<div>" + " · ".join(links) + "</div>"


MAX_ISSUES = 6


def case_box(case: dict, out_dir: Path, anchor: bool) -> str:
    """One case: the verdict, each process's heap summary, the findings
    (new ones marked apart from known ones), notes, the server's output
    when it did not start, and its files."""
    title = case["variant"] if case.get("pattern") else case["case"]
    attrs = f' id="case-{_e(case["case"])}"' if anchor else ""
    out = [f'<div class="variant"{attrs} data-case="{_e(case["case"])}" data-variant="{_e(case["variant"])}" '
           f'data-outcome="{_e(case["outcome"])}">'
           f'<h3>{_e(title)} · {_e(case["detector"])} · <span class="verdict {_e(case["verdict"])}">'
           f'{_e(case["verdict"])}</span> <small>({_e(case["outcome"])})</small></h3>',
           f"<div>scenario <code>{_e(case['scenario'])}</code>, {case['seconds']:.1f}s"
           + (f" · <code>{_e(case['case'])}</code>" if case.get("pattern") else "") + "</div>"]
    procs = case.get("heap_by_process") or []
    if procs:
        text = []
        for p in procs:
            prefix = f"pid {p['pid']}: " if len(procs) > 1 else ""
            if len(procs) > 1 and p.get("command"):
                text.append(f"pid {p['pid']}: {p['command']}")
                prefix = "  "
            text += [prefix + line for line in p["lines"]]
        out.append("<pre>" + _e("\n".join(text)) + "</pre>")
    issues = case["issues"]
    shown_kinds: set[str] = set()
    hidden = 0
    for issue in issues:
        key = (issue["rule"], issue["status"])
        if key in shown_kinds or len(shown_kinds) >= MAX_ISSUES:
            hidden += 1
            continue
        shown_kinds.add(key)
        out.append(issue_html(issue, out_dir))
    if hidden:
        out.append(f'<div class="note">and {hidden} more finding(s) of the same kinds: '
                   "see the log</div>")
    for reason in case["reasons"][:4]:
        out.append(f"<div>{_e(reason)}</div>")
    for note in case.get("notes") or []:
        out.append(f'<div class="note"><b>note:</b> {_e(note)}</div>')
    if case.get("startup_output"):
        tail = "\n".join(case["startup_output"].splitlines()[-20:])
        out.append("<div>server output (end):</div><pre class=\"startup\">" + _e(tail) + "</pre>")
    if case["outcome"] in FAILING and repro_command(case):
        out.append('<div class="repro">reproduce locally:<pre>' + _e(repro_command(case))
                   + "</pre></div>")
    out.append(_links(case) + "</div>")
    return "\n".join(out)


def _row(case: dict, boxed: set[str]) -> str:
    cls = ' class="fails"' if case["outcome"] in FAILING else ""
    name = _e(case["case"])
    if case["case"] in boxed:
        name = f'<a href="#case-{_e(case["case"])}">{name}</a>'
    return (f"<tr><td>{name}</td><td{cls}>{_e(case['outcome'])}</td>"
            f"<td>{_e(case['verdict'])}</td><td>{_e(case['message'])}</td></tr>")


def _table(cases: list[dict], boxed: set[str]) -> str:
    return ("<table><tr><th>case</th><th>outcome</th><th>verdict</th><th>note</th></tr>"
            + "".join(_row(c, boxed) for c in cases) + "</table>")


def header(data: dict) -> str:
    outcome = data["outcome"]
    title = {"pass": "passed", "fail": "FAILED", "unresolved": "UNDECIDED"}[outcome]
    gate = data.get("gate") or {}
    badges = " ".join(f'<span class="outcome o-{_e(k)}">{n} {_e(k)}</span>'
                      for k, n in data["counts"].items())
    out = [f'<header id="verdict" class="{_e(outcome)}"><h1>Leak-and-crash gate: {title}</h1>',
           f"<p>{len(data['cases'])} case(s): {badges}"
           + (f" · merged from {len(gate['merged'])} shards" if gate.get("merged") else "") + "</p>"]
    failing = [c for c in failing_first(data["cases"]) if c["outcome"] in FAILING]
    if failing:
        out.append("<ul>")
        for c in failing[:8]:
            out.append(f'<li><a href="#case-{_e(c["case"])}">{_e(c["case"])}</a>: '
                       f'<span class="outcome o-{_e(c["outcome"])}">{_e(c["outcome"])}</span> '
                       f'{_e(c["message"][:200])}</li>')
        if len(failing) > 8:
            out.append(f"<li>and {len(failing) - 8} more</li>")
        out.append("</ul>")
    known = sum(1 for c in data["cases"] if c["outcome"] == "known")
    if known:
        out.append(f'<p>{known} case(s) show only findings accepted in the baseline: '
                   f'<a href="#known">known</a>.</p>')
    if not failing:
        out.append("<p>Nothing new: no case fails.</p>")
    for notice in data.get("notices") or []:
        out.append(f'<p class="notice">{_e(notice)}</p>')
    out.append("</header>")
    return "\n".join(out)


def detector_html(table: dict) -> list[str]:
    if not table:
        return []
    dets = detectors_in(table)
    out = ['<h2 id="detectors">Which detector sees which bug</h2><table id="detector-table">'
           "<tr><th>pattern</th>" + "".join(f"<th>{_e(d)}</th>" for d in dets) + "</tr>"]
    for name, row in sorted(table.items()):
        cells = []
        for d in dets:
            entry = row.get(d)
            cls = ' class="fails"' if entry and entry["expected"] and not entry["caught"] else ""
            cells.append(f'<td{cls} data-detector="{_e(d)}">{_e(detector_cell(entry))}</td>')
        out.append(f'<tr><td><a href="#{_e(name)}">{_e(name)}</a></td>{"".join(cells)}</tr>')
    out.append("</table><p>* not named in the pattern's manifest: shown, never gating.</p>")
    return out


def _pairs(cases: list[dict], trigger: str | None) -> list[list[dict]]:
    """The trigger's runs, one row per detector: [buggy, fixed]."""
    if not trigger:
        return []
    rows: dict[str, list[dict]] = {}
    for c in cases:
        if c["scenario"] == trigger and c["variant"] in ("buggy", "fixed"):
            rows.setdefault(c["detector"], []).append(c)
    return [sorted(row, key=lambda c: c["variant"]) for row in rows.values()]


def _informational(row: list[dict]) -> bool:
    return all(c["outcome"] not in FAILING for c in row) and any(c["outcome"] == "info" for c in row)


def _pair_html(row: list[dict], out_dir: Path, boxed: set[str]) -> list[str]:
    out = ['<div class="pair">']
    for c in row:
        out.append(case_box(c, out_dir, c["case"] not in boxed))
        boxed.add(c["case"])
    out.append("</div>")
    return out


def section(name: str, cases: list[dict], info: dict | None, out_dir: Path, boxed: set[str]) -> list[str]:
    out = [f'<h2 id="{_e(name)}">{_e(name)}' + (f": {_e(info['title'])}" if info and info["title"] else "")
           + "</h2>"]
    if info and info["seed"]:
        out.append(f'<p class="seed">seed {_e(info["seed"])}: {_e(info["seed_story"])}</p>')
    if info and info["mechanism"]:
        out.append(f"<p><b>Mechanism.</b> {_e(info['mechanism'])}</p>")
    if info and info["client"]:
        out.append(f"<p><b>Client.</b> {_e(info['client'])}</p>")
    rows = _pairs(cases, info["trigger"] if info and info["is_pair"] else None)
    in_pairs = {c["case"] for row in rows for c in row}
    # A detector the manifest does not name sees the pair for information:
    # its rows are folded unless something in them fails.
    shown = [row for row in rows if not _informational(row)]
    folded = [row for row in rows if _informational(row)]
    for row in shown:
        out += _pair_html(row, out_dir, boxed)
    if folded:
        names = ", ".join(row[0]["detector"] for row in folded)
        out.append(f'<details class="passing"><summary>The pair under {_e(names)} '
                   "(not named in the manifest: for information)</summary>")
        for row in folded:
            out += _pair_html(row, out_dir, boxed)
        out.append("</details>")
    if info and info["fix"]:
        out.append(f"<p><b>Fix.</b> {_e(info['fix'])}</p>")
    rest = [c for c in cases if c["case"] not in in_pairs]
    failing = [c for c in rest if c["outcome"] in FAILING]
    passing = [c for c in rest if c["outcome"] not in FAILING]
    if failing:
        out.append(_table(failing, boxed))
        for c in failing:
            if c["case"] not in boxed:
                out.append(case_box(c, out_dir, True))
                boxed.add(c["case"])
    if passing:
        kinds: dict[str, int] = {}
        for c in passing:
            kinds[c["outcome"]] = kinds.get(c["outcome"], 0) + 1
        what = ", ".join(f"{n} {k}" for k, n in kinds.items())
        out.append(f'<details class="passing"><summary>{len(passing)} case(s) that do not fail '
                   f"({_e(what)})</summary>")
        out.append(_table(passing, boxed))
        for c in passing:
            if (c["findings"] or c["verdict"] != "clean" or suppressed(c)) and c["case"] not in boxed:
                out.append(case_box(c, out_dir, True))
                boxed.add(c["case"])
        out.append("</details>")
    return out


def page(data: dict, out_dir: Path) -> str:
    cases = sorted(data["cases"], key=lambda c: c["index"])
    boxed: set[str] = set()
    body = [header(data)]
    failing = [c for c in failing_first(cases) if c["outcome"] in FAILING]
    if failing:
        body.append('<h2 id="failing">Failing cases</h2>')
        for c in failing:
            body.append(case_box(c, out_dir, True))
            boxed.add(c["case"])
    known = [c for c in cases if c["outcome"] == "known"]
    if known:
        body.append('<h2 id="known">Known findings (accepted in the baseline)</h2>')
        reasons = data.get("baseline") or {}
        for c in known:
            body.append(case_box(c, out_dir, True))
            boxed.add(c["case"])
            for sig in c["signatures"]:
                if reasons.get(sig):
                    body.append(f'<div class="note"><code>{_e(sig)}</code>: {_e(reasons[sig])}</div>')
    body += detector_html(data["detectors"])
    groups: dict[str, list[dict]] = {}
    for c in cases:
        groups.setdefault(c.get("pattern") or c["target"], []).append(c)
    for name, group in groups.items():
        body += section(name, group, data["patterns"].get(name), out_dir, boxed)
    if data["signatures"]:
        body.append('<h2 id="signatures">Findings by signature</h2>')
        body.append(f"<details><summary>{len(data['signatures'])} signature(s)</summary>"
                    "<table><tr><th>signature</th><th>cases</th></tr>")
        for sig, ids in data["signatures"].items():
            body.append(f"<tr><td><code>{_e(sig)}</code></td><td>{_e(', '.join(ids))}</td></tr>")
        body.append("</table></details>")
    return document("Leak-and-crash gate", "\n".join(body))


def document(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


# -- run --load: the leak slope as a picture -----------------------------------------
def _ticks(top: float, count: int = 4) -> list[float]:
    """Round values from 0 up to `top`: steps of 1, 2 or 5 times a power of ten."""
    raw = top / count
    power = 10 ** max(0, len(str(int(raw))) - 1)
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(top // step) + 1)]


def load_plot(slope: dict, width: int = 460, height: int = 260) -> str:
    """Bytes left at stop against connections: the measured points, the
    fitted line and its slope, as inline SVG."""
    points = [(p["connections"], p["bytes"]) for p in slope["points"]]
    per, const = slope["bytes_per_connection"], slope["constant_bytes"]
    x_max = max(n for n, _ in points) * 1.15 or 1
    fitted = [const + per * x for x in (0, x_max)]
    y_max = max([b for _, b in points] + fitted + [1]) * 1.15
    left, right, top, bottom = 70, 15, 30, 40

    def sx(x: float) -> float:
        return left + (width - left - right) * x / x_max

    def sy(y: float) -> float:
        return height - bottom - (height - top - bottom) * max(y, 0) / y_max

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="load-plot" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="bytes left at stop against connections">',
           f'<line x1="{left}" y1="{sy(0):.1f}" x2="{width - right}" y2="{sy(0):.1f}" stroke="#444"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{sy(0):.1f}" stroke="#444"/>',
           f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
           "connections</text>",
           f'<text x="14" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
           f'transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})">bytes left at stop</text>']
    for y in _ticks(y_max):
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" '
                   'stroke="#eee"/>')
    for n, b in points:
        out.append(f'<text x="{sx(n):.1f}" y="{sy(0) + 15:.1f}" text-anchor="middle">{n}</text>')
    out.append(f'<line class="fit" x1="{sx(0):.1f}" y1="{sy(fitted[0]):.1f}" x2="{sx(x_max):.1f}" '
               f'y2="{sy(fitted[1]):.1f}" stroke="#b00020" stroke-width="2" stroke-dasharray="6 3"/>')
    for n, b in points:
        out.append(f'<circle class="point" cx="{sx(n):.1f}" cy="{sy(b):.1f}" r="4" fill="#1f4e9e">'
                   f"<title>{n} connections: {b:,} bytes</title></circle>")
    out.append(f'<text class="slope" x="{left + 8}" y="{top - 10}">slope {per:,.1f} bytes per '
               f"connection, constant {const:,.0f} bytes</text>")
    out.append("</svg>")
    return "\n".join(out)


def load_page(data: dict, out_dir: Path) -> str:
    """The page `run --load` writes: the plot, the fit in words, each run."""
    slope = data["slope"]
    body = [f'<header id="verdict" class="{ "pass" if data["verdict"] == "clean" else "fail"}">'
            f"<h1>Leak slope: {_e(data['name'])} · scenario {_e(data['scenario'])}</h1>"
            f"<p>{_e(data['describe'])}</p></header>", load_plot(slope)]
    body.append("<table><tr><th>connections</th><th>verdict</th><th>bytes left</th><th>blocks left</th>"
                "<th>log</th></tr>")
    for point, run in zip(slope["points"], data["runs"]):
        log = f'<a href="{_href(os.path.relpath(run["log"], out_dir))}">log</a>' if run.get("log") else "-"
        body.append(f"<tr><td>{point['connections']}</td><td>{_e(run['verdict'])}</td>"
                    f"<td>{point['bytes']:,}</td><td>{point['blocks']:,}</td><td>{log}</td></tr>")
    body.append("</table>")
    return document(f"Leak slope: {data['name']}", "\n".join(body))
