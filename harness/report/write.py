"""The one entry point that writes a gate's reports: summary.json (the
data), and from it alone summary.md, index.html and, when asked, SARIF and
JUnit XML.  `report merge` writes a merged report through `write_data`."""
from __future__ import annotations

import json
from pathlib import Path

from ..judge.gate import CaseResult
from . import html, junit, markdown, sarif
from .summary import summary


def write_data(data: dict, out_dir: Path, sarif_path: Path | None = None,
               junit_path: Path | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "summary.json", "md": out_dir / "summary.md",
             "html": out_dir / "index.html"}
    paths["json"].write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown.page(data), encoding="utf-8")
    paths["html"].write_text(html.page(data, out_dir), encoding="utf-8")
    if sarif_path:
        sarif_path.parent.mkdir(parents=True, exist_ok=True)
        sarif_path.write_text(json.dumps(sarif.sarif_log(data), indent=1) + "\n", encoding="utf-8")
        paths["sarif"] = sarif_path
    if junit_path:
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        junit_path.write_bytes(junit.junit_xml(data, out_dir))
        paths["junit"] = junit_path
    return paths


def write_all(results: list[CaseResult], out_dir: Path, *, baseline: dict[str, str] | None = None,
              gate: dict | None = None, sarif_path: Path | None = None,
              junit_path: Path | None = None, srcroot: Path | None = None) -> tuple[dict, dict[str, Path]]:
    """Every report of `results` into `out_dir`; the summary data and the
    paths written (json, md, html, and sarif, junit when asked)."""
    data = summary(results, out_dir, baseline, gate, srcroot)
    return data, write_data(data, out_dir, sarif_path, junit_path)
