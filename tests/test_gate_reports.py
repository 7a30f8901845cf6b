"""The reports of a gate on someone else's server: SARIF that code scanning
accepts (checked against the 2.1.0 schema's required properties), JUnit
XML, known findings apart from new ones, each process's heap summary,
suppressed counts, the server's output when it did not start, and the note
on a binary without debug information."""
from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from harness.report.junit import LOG_HEAD, LOG_TAIL, bounded_log

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "inputs" / "sarif-2.1.0-required.schema.json").read_text())
pytestmark = pytest.mark.valgrind
FF = ["--scenario", "sessions-at-stop", "--source-dir", str(ROOT / "servers" / "fire_and_forget"),
      "--source-dir", str(ROOT / "servers" / "common")]
ACCEPTED = "Leak_DefinitelyLost srv_xcalloc@server.c < task_spawn@task.c < start_accept_task@buggy.c"
NEW = "Leak_DefinitelyLost srv_xcalloc@server.c < task_spawn@task.c < on_connection@buggy.c"


def harness(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def text_of(page: str) -> str:
    """The page's text, tags dropped, entities decoded."""
    import re
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture(scope="module")
def ff_gate(build_dir, tmp_path_factory):
    """fire_and_forget's buggy server gated as a user's server: one of its
    two definitely-lost sites accepted in the baseline, the other new, its
    indirect losses not counted (--leak-kinds definite)."""
    tmp = tmp_path_factory.mktemp("ff")
    baseline = tmp / "baseline.toml"
    baseline.write_text(f'[[accepted]]\nsignature = "{ACCEPTED}"\nreason = "tracked in #42"\n')
    out = tmp / "report"
    proc = harness("gate", "--cmd", f"{build_dir}/servers/fire_and_forget/buggy --port {{port}}", *FF,
                   "--leak-kinds", "definite", "--baseline", str(baseline), "--out", str(out),
                   "--sarif", str(out / "report.sarif"), "--junit", str(out / "junit.xml"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return out, proc


def check_sarif(sarif: dict, srcroot: Path) -> list[dict]:
    jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(sarif)
    [run] = sarif["runs"]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == srcroot.resolve().as_uri() + "/"
    rules = run["tool"]["driver"]["rules"]
    assert len({r["id"] for r in rules}) == len(rules), "one rule per kind"
    for rule in rules:
        assert len(rule["help"]["text"]) > 40 and rule["shortDescription"]["text"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert (result["level"], result["baselineState"]) in (("error", "new"), ("note", "unchanged"))
        [location] = result["locations"]
        artifact = location["physicalLocation"]["artifactLocation"]
        assert artifact["uriBaseId"] == "SRCROOT"
        assert not artifact["uri"].startswith(("/", "file:")) and ".." not in artifact["uri"]
        assert (srcroot / artifact["uri"]).is_file(), artifact["uri"]
        assert location["physicalLocation"]["region"]["startLine"] >= 1
        assert result["partialFingerprints"]["leakHarnessSignature/v1"]
    return run["results"]


def test_sarif_has_only_counted_findings_known_apart_from_new(ff_gate) -> None:
    out, _ = ff_gate
    results = check_sarif(json.loads((out / "report.sarif").read_text()), ROOT)
    by_sig = {r["properties"]["signature"]: r for r in results}
    assert set(by_sig) == {ACCEPTED, NEW}, "indirect losses are not counted: not results"
    assert (by_sig[NEW]["level"], by_sig[NEW]["baselineState"]) == ("error", "new")
    assert (by_sig[ACCEPTED]["level"], by_sig[ACCEPTED]["baselineState"]) == ("note", "unchanged")
    new = by_sig[NEW]
    physical = new["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "servers/common/server.c"
    source = (ROOT / "servers/common/server.c").read_text().splitlines()
    assert "calloc" in source[physical["region"]["startLine"] - 1]
    related = [loc["physicalLocation"]["artifactLocation"]["uri"] for loc in new["relatedLocations"]
               if "physicalLocation" in loc]
    assert "servers/common/task.c" in related and "servers/fire_and_forget/buggy.c" in related
    # The same bug keeps its fingerprint from run to run: a hash of its signature.
    import hashlib
    assert new["partialFingerprints"]["leakHarnessSignature/v1"] == hashlib.sha256(NEW.encode()).hexdigest()


def test_junit_has_the_finding_as_failure_and_the_log_as_output(ff_gate) -> None:
    out, _ = ff_gate
    root = ET.parse(out / "junit.xml").getroot()
    [suite] = root.iter("testsuite")
    [case] = suite.iter("testcase")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "1", "0")
    assert case.get("name") == "buggy-sessions-at-stop"
    failure = case.find("failure")
    assert failure.get("type") == "fail: leak"
    message = failure.get("message")
    assert message.startswith("Leak_DefinitelyLost: ") and "bytes in" in message
    assert "on_connection (buggy.c:" in message and "srv_xcalloc (server.c:" in message
    assert "known: " + ACCEPTED in failure.text
    assert "HEAP SUMMARY" in case.find("system-out").text


def test_reports_mark_known_findings_apart_from_new(ff_gate) -> None:
    out, proc = ff_gate
    page = (out / "index.html").read_text()
    assert '<h2 id="failing">' in page and 'data-status="new"' in page and 'data-status="known"' in page
    md = (out / "summary.md").read_text()
    assert "  - new: <code>" + html.escape(NEW) in md
    assert "  - known: <code>" + html.escape(ACCEPTED) in md
    data = json.loads((out / "summary.json").read_text())
    statuses = {i["signature"]: i["status"] for i in data["cases"][0]["issues"]}
    assert statuses[NEW] == "new" and statuses[ACCEPTED] == "known"
    assert "not-counted" in statuses.values()
    assert data["baseline"] == {ACCEPTED: "tracked in #42"}
    # No pair ran: no detector-by-pattern section anywhere.
    assert data["detectors"] == {}
    assert 'id="detectors"' not in page and "Which detector" not in md


def test_startup_failure_shows_the_server_output_in_gate_and_reports(toy_server, tmp_path) -> None:
    out = tmp_path / "r"
    proc = harness("gate", "--cmd", f"{toy_server} die-at-start {{port}}", "--out", str(out),
                   "--junit", str(out / "junit.xml"))
    assert proc.returncode == 1
    assert "FAIL toy_server-echo: fail: startup-failure" in proc.stdout
    assert "server output (end):" in proc.stdout and "toy_server: cannot start (on purpose)" in proc.stdout
    page = (out / "index.html").read_text()
    assert '<pre class="startup">' in page and "toy_server: cannot start (on purpose)" in page
    assert "toy_server: cannot start (on purpose)" in (out / "summary.md").read_text()
    failure = ET.parse(out / "junit.xml").getroot().find(".//failure")
    assert "cannot start (on purpose)" in failure.text


def test_each_process_has_its_heap_summary(toy_server, tmp_path) -> None:
    out = tmp_path / "r"
    proc = harness("gate", "--cmd", f"{toy_server} daemon-leak {{port}}", "--follow-children",
                   "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [case] = json.loads((out / "summary.json").read_text())["cases"]
    pids = [p["pid"] for p in case["heap_by_process"]]
    assert len(pids) == 3
    text = text_of((out / "index.html").read_text())
    for pid in pids:
        assert f"pid {pid}: {toy_server} daemon-leak" in text
    assert sum((p["heap"]["definitely_lost"] or {}).get("bytes", 0) for p in case["heap_by_process"]) == 15


def test_suppressed_counts_are_in_the_reports(toy_server, tmp_path) -> None:
    supp = tmp_path / "toy.supp"
    supp.write_text("{\n   toy-remembered-line\n   Memcheck:Leak\n   ...\n   fun:remember_line\n}\n")
    out = tmp_path / "r"
    proc = harness("gate", "--cmd", f"{toy_server} leak {{port}}", "--suppressions", str(supp),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [case] = json.loads((out / "summary.json").read_text())["cases"]
    suppressed = case["heap"]["suppressed"]
    assert suppressed["bytes"] > 0
    text = text_of((out / "index.html").read_text())
    assert f"suppressed: {suppressed['bytes']:,} bytes in {suppressed['blocks']:,} blocks" in text


def test_a_binary_without_debug_information(toy_server, tmp_path) -> None:
    """Stripped: the note says so once, the reports show the stack, and the
    SARIF result points at the executable (no source file to point at)."""
    stripped = tmp_path / "toy_server"
    shutil.copy(toy_server, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    proc = harness("gate", "--cmd", "./toy_server leak {port}", "--out", "r", "--sarif", "r/r.sarif",
                   cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("no debug information") == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["cases"][0]["missing_debug_info"] == [str(stripped)]
    assert len(summary["notices"]) == 1 and "no debug information" in summary["notices"][0]
    text = text_of((tmp_path / "r" / "index.html").read_text())
    assert text.count("no debug information") == 1 and f"(in {stripped})" in text
    [result] = check_sarif(json.loads((tmp_path / "r" / "r.sarif").read_text()), tmp_path)
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "toy_server", "uriBaseId": "SRCROOT"}


def test_junit_log_is_bounded(tmp_path) -> None:
    log = tmp_path / "valgrind.log"
    log.write_text("==1== first line\n" + "x" * 1_000_000 + "\n==1== ERROR SUMMARY: last line\n")
    text = bounded_log(log)
    assert len(text) < LOG_HEAD + LOG_TAIL + 100
    assert text.startswith("==1== first line") and text.endswith("ERROR SUMMARY: last line\n")
    assert "bytes left out" in text
