"""The matrix's reports, the CI gate and its baseline."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.drive.launch import Target
from harness.drive.scenario import load_scenario
from harness.judge.gate import Case, evaluate
from harness.judge.patterns import all_patterns, find_pattern
from harness.matrix import project_cases, shard
from harness.model import Outcome, Verdict
from harness.options import RunOptions
from harness.runner import run_case

ROOT = Path(__file__).resolve().parent.parent
# One worker runs this module: its fixtures run the demo once, the buggy matrix twice.
pytestmark = [pytest.mark.valgrind, pytest.mark.xdist_group("reports")]
PAIRS = [p for p in all_patterns() if p.is_pair]


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo(demo_report):
    """`make demo`'s run and reports (conftest.py: shared with the browser test)."""
    return demo_report


@pytest.fixture(scope="module")
def buggy_twice(tmp_path_factory, build_dir):
    """Every buggy variant under every detector, twice (the only variants
    that find anything), with SARIF."""
    outs = []
    for n in (1, 2):
        out = tmp_path_factory.mktemp(f"buggy{n}")
        proc = harness("matrix", "-j", "2", "--variant", "buggy", "--detector", "all", "--out", str(out),
                       "--sarif", str(out / "r.sarif"), "--junit", str(out / "junit.xml"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
        outs.append(out)
    return outs


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.anchors: list[str] = []
        self.h3: list[str] = []
        self.src: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2" and "id" in a:
            self.ids.append(a["id"])
        if "id" in a:
            self.anchors.append(a["id"])
        if tag in ("h3",) or (tag == "code" and a.get("class") == "src"):
            self._in = "src" if tag == "code" else "h3"
            (self.src if tag == "code" else self.h3).append("")
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag in ("script", "link", "img") or (tag == "a" and "://" in a.get("href", "")):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag in ("h3", "code"):
            self._in = None

    def handle_data(self, data):
        if self._in == "src":
            self.src[-1] += data
        elif self._in == "h3":
            self.h3[-1] += data


def test_html_report_shows_every_pair_side_by_side(demo) -> None:
    out, _ = demo
    page = PageParser()
    page.feed((out / "index.html").read_text())
    for pattern in all_patterns():
        assert pattern.name in page.ids
    assert sum(h.startswith("buggy") for h in page.h3) >= len(PAIRS)
    assert sum(h.startswith("fixed") for h in page.h3) >= len(PAIRS)
    assert page.external == [], "the page must be self-contained"
    # Every quoted source line is the real line of the file it names.
    all_lines = set()
    for path in (ROOT / "servers").rglob("*.[ch]"):
        all_lines |= {l.strip() for l in path.read_text().splitlines()}
    assert page.src, "no source line quoted"
    assert [s for s in page.src if s not in all_lines] == []
    assert "session_delete(s);" in page.src or "free(s);" in page.src
    # Links to the sources and logs resolve from the report's folder.
    for href in page.links:
        if href.startswith("#"):
            assert href[1:] in page.anchors, href
        else:
            assert (out / href).exists(), href


def test_summary_json_has_the_documented_fields(demo) -> None:
    out, _ = demo
    data = json.loads((out / "summary.json").read_text())
    assert data["passed"] is True
    assert set(data["counts"]) <= {"pass", "xfail", "info"} and data["counts"]["xfail"] >= len(PAIRS)
    for case in data["cases"]:
        for key in ("case", "pattern", "variant", "scenario", "outcome", "verdict", "fatal_signal",
                    "errors", "heap", "findings", "signatures", "log", "stdout", "stderr"):
            assert key in case, key
        assert case["log"] is None or Path(case["log"]).exists()
        assert case["log"] is not None or case["detector"] == "asan"   # a clean sanitizer run writes none
        assert Path(case["stderr"]).exists()
        assert (Path(case["log"]).parent / "result.json").exists()
        for finding in case["findings"]:
            assert set(finding) >= {"kind", "what", "bytes", "blocks", "stack", "aux"}
            for frame in finding["stack"]:
                assert set(frame) == {"fn", "file", "line", "obj"}
    by_case = {c["case"]: c for c in data["cases"]}
    dd = by_case["double_delete-buggy-stall-reset"]
    assert dd["outcome"] == "xfail" and dd["verdict"] == "memory-error"
    assert any(s.startswith("InvalidFree session_delete@buggy.c < after_write@buggy.c") for s in dd["signatures"])
    md = (out / "summary.md").read_text()
    assert "| double_delete-buggy-stall-reset | xfail | memory-error |" in md


def test_detector_table_says_which_tool_sees_which_bug(demo) -> None:
    """Every pattern's manifest detectors caught its buggy variant; the table
    is in the JSON, the Markdown and the HTML."""
    out, stdout = demo
    table = json.loads((out / "summary.json").read_text())["detectors"]
    for pattern in PAIRS:
        row = table[pattern.name]
        for detector in pattern.detectors:
            assert row[detector]["expected"] and row[detector]["caught"], (pattern.name, detector)
        for detector, why in pattern.unsupported.items():
            assert row[detector]["unsupported"] == why
    assert not table["dangling_stack_ref"]["memcheck"]["caught"], "memcheck cannot see it: the point of the pair"
    assert table["unguarded_registry"]["helgrind"]["kinds"] == ["Race"]
    assert "## Which detector sees which bug" in (out / "summary.md").read_text()
    assert 'id="detector-table"' in (out / "index.html").read_text()
    assert "Which detector sees which bug" in stdout


def test_sarif_from_the_same_data(toy_server: Path, tmp_path: Path) -> None:
    sarif_path = tmp_path / "r.sarif"
    proc = harness("gate", "--cmd", f"{toy_server} leak {{port}}", "--source-dir",
                   str(ROOT / "tests" / "progs"), "--out", str(tmp_path / "r"), "--sarif", str(sarif_path))
    assert proc.returncode == 1
    sarif = json.loads(sarif_path.read_text())
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {"Leak_DefinitelyLost"}
    [result] = run["results"]
    assert result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("tests/progs/toy_server.c")
    source = (ROOT / "tests" / "progs" / "toy_server.c").read_text().splitlines()
    assert "malloc" in source[location["region"]["startLine"] - 1]


def test_signatures_are_stable_across_runs(buggy_twice) -> None:
    """The same bug gives the same signatures run after run, under every
    detector its manifest names.  (A detector it does not name may see a
    racy bug differently each time: those runs are information only.)"""
    def gating(out: Path) -> dict:
        cases = json.loads((out / "summary.json").read_text())["cases"]
        return {c["case"]: c["signatures"] for c in cases if c["outcome"] != "info"}

    first, second = (gating(o) for o in buggy_twice)
    assert first == second
    assert all(first.values()), "every buggy variant produces signatures"
    for sig in (s for sigs in first.values() for s in sigs):
        assert "0x" not in sig and "==" not in sig


def test_matrix_junit_has_one_testcase_per_case(buggy_twice) -> None:
    import xml.etree.ElementTree as ET
    out = buggy_twice[0]
    cases = json.loads((out / "summary.json").read_text())["cases"]
    testcases = ET.parse(out / "junit.xml").getroot().findall(".//testcase")
    assert [t.get("name") for t in testcases] == [c["case"] for c in cases]
    assert all(t.find("failure") is None and t.find("error") is None for t in testcases)
    by_name = {t.get("name"): t for t in testcases}
    assert "Invalid free()" in by_name["double_delete-buggy-stall-reset"].find("system-out").text
    # Expected findings of the project's buggy variants are not code-scanning results.
    assert json.loads((out / "r.sarif").read_text())["runs"][0]["results"] == []


def test_shards_partition_the_matrix() -> None:
    cases = project_cases()
    parts = [shard(cases, f"{i}/3") for i in (1, 2, 3)]
    ids = [c.id for part in parts for c in part]
    assert sorted(ids) == sorted(c.id for c in cases)
    assert len(set(ids)) == len(ids)
    assert [c.id for c in shard(cases, "2/3")] == [c.id for c in parts[1]]
    with pytest.raises(ValueError, match="--shard"):
        shard(cases, "4/3")


def test_buggy_variant_that_stops_reproducing_fails_the_gate(build_dir, tmp_path) -> None:
    """Feed the fixed binary where the buggy one is expected: XPASS."""
    pattern = find_pattern("double_delete")
    target = Target(argv=[str(pattern.binary("fixed")), "--port", "0"], name="double_delete-buggy")
    case = Case(id="double_delete-buggy-stall-reset", target=target, scenario=pattern.trigger,
                expect=pattern.expectation("buggy"), variant="buggy", pattern=pattern,
                options=RunOptions(require_exit_zero=True, source_dirs=[str(pattern.directory)]))
    run = run_case(target, load_scenario(pattern.trigger), tmp_path / "x", case.options)
    result = evaluate(case, run, {})
    assert result.outcome is Outcome.XPASS and result.outcome.fails
    assert "no longer reproduces" in result.message


def test_finding_in_a_fixed_variant_fails_the_gate(build_dir, tmp_path) -> None:
    """Feed the buggy binary where the fixed one is expected clean: FAIL."""
    pattern = find_pattern("fire_and_forget")
    target = Target(argv=[str(pattern.binary("buggy")), "--port", "0"], name="fire_and_forget-fixed")
    case = Case(id="fire_and_forget-fixed-sessions-at-stop", target=target, scenario="sessions-at-stop",
                expect=pattern.expectation("fixed"), variant="fixed", pattern=pattern,
                options=RunOptions(source_dirs=[str(pattern.directory),
                                                str(ROOT / "servers" / "common")]))
    run = run_case(target, load_scenario("sessions-at-stop"), tmp_path / "x", case.options)
    result = evaluate(case, run, {})
    assert run.verdict is Verdict.LEAK
    assert result.outcome is Outcome.FAIL
    assert any("on_connection@buggy.c" in s for s in result.new_signatures)


def test_gate_baseline_accepts_known_and_fails_new(toy_server: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.toml"
    leak = ["gate", "--cmd", f"{toy_server} leak {{port}}", "--scenario", "echo",
            "--source-dir", str(ROOT / "tests" / "progs"), "--out", str(tmp_path / "r")]
    first = harness(*leak)
    assert first.returncode == 1 and "FAIL toy_server-echo" in first.stdout
    assert "remember_line (toy_server.c:" in first.stdout
    assert "index.html" in first.stdout
    written = harness(*leak, "--write-baseline", str(baseline))
    assert written.returncode == 1
    assert "Leak_DefinitelyLost" in baseline.read_text()
    known = harness(*leak, "--baseline", str(baseline))
    assert known.returncode == 0, known.stdout
    assert "1 known" in known.stdout
    crash = harness("gate", "--cmd", f"{toy_server} nullcall {{port}}", "--baseline", str(baseline),
                    "--source-dir", str(ROOT / "tests" / "progs"), "--out", str(tmp_path / "r2"))
    assert crash.returncode == 1 and "crash" in crash.stdout


def test_bad_baseline_is_a_usage_error(toy_server: Path, tmp_path: Path) -> None:
    bad = tmp_path / "b.toml"
    bad.write_text('[[accepted]]\nsignatur = "x"\n')
    proc = harness("gate", "--cmd", f"{toy_server} echo {{port}}", "--baseline", str(bad))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "signature" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_tells_each_story(demo) -> None:
    out, stdout = demo
    for pattern in PAIRS:
        assert f"{pattern.name}: {pattern.title}" in stdout
        assert pattern.seed in stdout
    assert "All heap blocks were freed -- no leaks are possible" in stdout
    assert "Process terminating with default action of signal 11 (SIGSEGV)" in stdout
    assert "in use at exit: 1,152 bytes in 4 blocks" in stdout
    assert "InvalidFree" in stdout and "block freed at session_delete" in stdout
    assert f"HTML report: {out / 'index.html'}" in stdout


def test_demo_ends_with_a_fuzz_shrunk_to_its_minimal_form(demo) -> None:
    import tomllib
    out, stdout = demo
    story = stdout[stdout.index("shrink: the named fuzz scenario on captured_context"):]
    minimal = out / "shrink" / "captured_context-buggy-fuzz" / "minimal.toml"
    steps = tomllib.loads(minimal.read_text())["steps"]
    assert 2 <= len(steps) <= 6
    for step in steps:      # the minimal form is printed, step by step
        assert f'  | do = "{step["do"]}"' in story
    sizes = re.search(r"Shrunk: +4 steps \((\d+) once its random steps were expanded\) -> "
                      r"(\d+) steps in (\d+) runs, ([\d.]+) s", story)
    assert sizes and int(sizes[1]) > 100 and int(sizes[2]) == len(steps)
    assert "Finding:  memory-error, InvalidRead reply_resume@buggy.c" in story
    assert "Reproduced 10 of 10 times." in story
