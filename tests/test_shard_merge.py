"""A gate spread over CI jobs (`--shard I/N`) and merged back
(`report merge`): the merged report is the one the unsharded gate writes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report.sarif import sarif_log

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.valgrind, pytest.mark.xdist_group("shards")]
SCENARIOS = ["echo", "reset", "half-close-partial", "sessions-at-stop"]


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.fixture(scope="module")
def gates(toy_server_module, tmp_path_factory):
    """The same gate whole, and in three shards merged."""
    tmp = tmp_path_factory.mktemp("shards")
    gate = ["gate", "--cmd", f"{toy_server_module} leak {{port}}", "--source-dir",
            str(ROOT / "tests" / "progs")] + [a for s in SCENARIOS for a in ("--scenario", s)]
    whole = harness(*gate, "-j", "2", "--out", str(tmp / "whole"))
    shards = []
    for i in (1, 2, 3):
        proc = harness(*gate, "--shard", f"{i}/3", "--out", str(tmp / f"shard{i}"))
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        assert f"(shard {i}/3 of the gate's 4)" in proc.stdout
        shards.append(tmp / f"shard{i}")
    merged = harness("report", "merge", *map(str, shards), "--out", str(tmp / "merged"))
    return tmp, whole, merged, shards


@pytest.fixture(scope="module")
def toy_server_module(build_dir) -> Path:
    return build_dir / "progs" / "toy_server"


def essentials(summary: dict) -> dict:
    return {
        "outcome": summary["outcome"], "passed": summary["passed"], "counts": summary["counts"],
        "signatures": summary["signatures"], "detectors": summary["detectors"],
        "cases": [(c["case"], c["outcome"], c["verdict"], c["signatures"], c["new_signatures"])
                  for c in summary["cases"]],
    }


def test_merged_shards_equal_the_unsharded_gate(gates) -> None:
    tmp, whole, merged, shards = gates
    assert merged.returncode == whole.returncode == 1, merged.stdout + merged.stderr
    one = json.loads((tmp / "whole" / "summary.json").read_text())
    parts = [json.loads((s / "summary.json").read_text()) for s in shards]
    assert sorted(len(p["cases"]) for p in parts) == [1, 1, 2]
    together = json.loads((tmp / "merged" / "summary.json").read_text())
    assert essentials(together) == essentials(one)
    assert [c["case"] for c in together["cases"]] == [f"toy_server-{s}" for s in SCENARIOS]
    assert together["gate"]["merged"] == ["1/3", "2/3", "3/3"]
    # SARIF and JUnit of the merged report: the unsharded gate's.
    sarif = json.loads((tmp / "merged" / "report.sarif").read_text())

    def keys(log: dict) -> set:
        return {(r["ruleId"], r["properties"]["signature"], r["properties"]["case"])
                for r in log["runs"][0]["results"]}
    assert keys(sarif) == keys(sarif_log(one)) and keys(sarif)
    cases = ET.parse(tmp / "merged" / "junit.xml").getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [f"toy_server-{s}" for s in SCENARIOS]
    assert all(c.find("failure") is not None for c in cases)


def test_merged_report_links_resolve(gates) -> None:
    tmp = gates[0]

    class Links(HTMLParser):
        hrefs: list[str] = []

        def handle_starttag(self, tag, attrs):
            href = dict(attrs).get("href")
            if tag == "a" and href and not href.startswith("#"):
                self.hrefs.append(href)

    links = Links()
    links.feed((tmp / "merged" / "index.html").read_text())
    assert any("valgrind.log" in h for h in links.hrefs)
    for href in links.hrefs:
        assert (tmp / "merged" / href).exists(), href
    for case in json.loads((tmp / "merged" / "summary.json").read_text())["cases"]:
        assert Path(case["log"]).is_relative_to(tmp / "merged") and Path(case["log"]).exists()


def test_merge_refuses_what_is_not_one_whole_gate(gates) -> None:
    tmp, _, _, shards = gates

    def merge(*dirs: Path) -> subprocess.CompletedProcess:
        out = tmp / f"bad{len(list(tmp.glob('bad*')))}"
        return harness("report", "merge", *map(str, dirs), "--out", str(out))

    def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        for word in words:
            assert word in proc.stderr, proc.stderr

    refused(merge(shards[0], shards[1]), "shard 3/3 missing")
    refused(merge(shards[0], shards[0], shards[1], shards[2]), "shard 1/3 is also")
    refused(merge(shards[0], tmp / "nowhere"), str(tmp / "nowhere"), "not a folder")
    empty = tmp / "empty"
    empty.mkdir()
    refused(merge(shards[0], empty), str(empty), "not a report folder")
    other = tmp / "other"
    shutil.copytree(shards[2], other)
    data = json.loads((other / "summary.json").read_text())
    data["gate"]["key"] = "0" * 16
    (other / "summary.json").write_text(json.dumps(data))
    refused(merge(shards[0], shards[1], other), str(other), "another gate")
    (other / "summary.json").write_text('{"schema": "leak-harness/summary/1", "cases": [')
    refused(merge(shards[0], shards[1], other), str(other / "summary.json"), "not JSON")
    refused(harness("report", "merge", str(shards[0]), "--out", str(shards[0])), "--out")
