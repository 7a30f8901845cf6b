"""summary.md, from summary.json's data: the outcome, failing cases first,
known findings apart from new ones, passing cases folded."""
from __future__ import annotations

import html

from .summary import FAILING, detector_cell, detectors_in, failing_first, repro_command, suppressed

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|"})


def md(text: object) -> str:
    """Text as Markdown shows it literally: HTML and Markdown's own marks
    escaped, one line (a table cell)."""
    return html.escape(" ".join(str(text).split()), quote=False).translate(_MD_SPECIAL)


def md_code(text: object) -> str:
    """Text in a code span that nothing in it can break out of."""
    return "<code>" + html.escape(" ".join(str(text).split())).replace("|", "&#124;") + "</code>"


def in_use(case: dict) -> str:
    amount = (case.get("heap") or {}).get("in_use")
    return f"{amount['bytes']:,} B in {amount['blocks']:,} blocks" if amount else "-"


def _table(cases: list[dict]) -> list[str]:
    lines = ["| case | outcome | verdict | in use at exit | errors | note |", "|---|---|---|---|---|---|"]
    for c in cases:
        errors = str(c["errors"]["count"]) if c.get("errors") else "-"
        lines.append(f"| {md(c['case'])} | {c['outcome']} | {c['verdict']} | {in_use(c)} | "
                     f"{errors} | {md(c['message'])} |")
    return lines


def _issue_lines(case: dict, statuses: tuple[str, ...]) -> list[str]:
    out = []
    for issue in case["issues"]:
        if issue["status"] not in statuses:
            continue
        where = " < ".join(f"{f['fn']} ({f['file']}:{f['line']})" if f["file"] else f["fn"]
                           for f in issue["frames"][:3])
        out.append(f"  - {issue['status']}: {md_code(issue['signature'])}"
                   + (f" at {md(where)}" if where else ""))
    return out


def detector_markdown(table: dict) -> list[str]:
    """The detector-by-pattern table; no lines when no pair ran."""
    if not table:
        return []
    dets = detectors_in(table)
    lines = ["| pattern | " + " | ".join(dets) + " |", "|---|" + "---|" * len(dets)]
    for name, row in sorted(table.items()):
        lines.append(f"| {name} | " + " | ".join(detector_cell(row.get(d)) for d in dets) + " |")
    lines.append("")
    lines.append("\\* not named in the pattern's manifest: shown, never gating.")
    return lines


def page(data: dict) -> str:
    cases = failing_first(data["cases"])
    failing = [c for c in cases if c["outcome"] in FAILING]
    known = [c for c in cases if c["outcome"] == "known"]
    rest = [c for c in cases if c not in failing and c not in known]
    lines = ["# Leak-and-crash gate", "",
             "**" + {"pass": "PASSED", "fail": "FAILED", "unresolved": "UNDECIDED"}[data["outcome"]]
             + "**: " + ", ".join(f"{n} {k}" for k, n in data["counts"].items()), ""]
    lines += [f"> {md(n)}" for n in data.get("notices") or []] + ([""] if data.get("notices") else [])
    if failing:
        lines += ["## Failing", ""] + _table(failing) + [""]
        for c in failing:
            lines += [f"- {md(c['case'])}"] + _issue_lines(c, ("new", "known"))
            lines += [f"  - note: {md(n)}" for n in c.get("notes") or []]
            if c.get("startup_output"):
                tail = c["startup_output"].splitlines()[-5:]
                lines += ["  - server output: " + " / ".join(md_code(t) for t in tail)]
            if repro_command(c):
                lines += ["  - reproduce: " + md_code(repro_command(c))]
        lines.append("")
    if known:
        lines += ["## Known (accepted in the baseline)", ""] + _table(known) + [""]
        for c in known:
            lines += [f"- {md(c['case'])}"] + _issue_lines(c, ("known",))
        lines.append("")
    if rest:
        lines += [f"<details><summary>{len(rest)} passing case(s)</summary>", ""] + _table(rest) \
            + ["", "</details>", ""]
    hidden = [(c, suppressed(c)) for c in cases if suppressed(c)]
    if hidden:
        lines += ["## Suppressed (matched by a suppressions file)", ""]
        lines += [f"- {md(c['case'])}: {md(what)}" for c, what in hidden] + [""]
    table = detector_markdown(data["detectors"])
    if table:
        lines += ["## Which detector sees which bug", ""] + table + [""]
    lines += ["## Findings by signature", ""]
    if not data["signatures"]:
        lines.append("None.")
    for sig, ids in data["signatures"].items():
        lines.append(f"- {md_code(sig)}: {md(', '.join(ids))}")
    return "\n".join(lines) + "\n"
