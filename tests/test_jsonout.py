"""harness.report.jsonout: the same JSON document as json.dumps(indent=2),
written item by item, and the parse command's --json through it."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biglogs import repeat_records
from harness.judge.verdict import LeakPolicy, judge
from harness.logs.asanlog import parse_asan_lines
from harness.logs.vglog import LogParseError, parse_text
from harness.logs.vgxml import parse_xml
from harness.model import ExitInfo
from harness.report.jsonout import Raw, dump, findings_json, write_json

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "tests" / "inputs"

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


def written(data: dict) -> str:
    out = io.StringIO()
    dump(data, out)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_same_document_as_json_dumps(data: dict) -> None:
    text = written(data)
    assert json.loads(text) == json.loads(json.dumps(data, indent=2))
    assert text.endswith("}\n")


def test_a_list_may_be_an_iterator_read_once() -> None:
    items = [{"kind": "Leak_DefinitelyLost", "stack": [{"fn": "f", "line": 3}]}, {"k": [1, 2]}]
    data = {"verdict": "leak", "findings": iter(items), "none": iter([]), "tuple": (1, "a")}
    assert json.loads(written(data)) == {"verdict": "leak", "findings": items, "none": [],
                                         "tuple": [1, "a"]}


def test_one_key_and_one_list_item_a_line() -> None:
    text = written({"a": 1, "b": [{"x": 1}, {"y": [2, 3]}], "c": []})
    assert text.splitlines() == ['{', '  "a": 1,', '  "b": [', '    {"x": 1},',
                                 '    {"y": [2, 3]}', '  ],', '  "c": []', '}']


def test_raw_items_are_written_as_they_are() -> None:
    assert json.loads(written({"a": [Raw('{"x": [1, 2]}'), {"y": 3}]})) == {"a": [{"x": [1, 2]},
                                                                               {"y": 3}]}


def every_recorded_finding() -> list:
    findings = []
    for path in sorted(INPUTS.iterdir()):
        if path.suffix == ".xml":
            findings += parse_xml(path.read_bytes()).findings()
        elif path.name.startswith(("asan", "lsan")):
            findings += parse_asan_lines(path.read_text().splitlines()).findings()
        else:
            try:
                findings += parse_text(path.read_text()).findings()
            except LogParseError:
                pass
    return findings


def test_findings_json_is_each_findings_to_json() -> None:
    findings = every_recorded_finding()
    findings += parse_text(repeat_records((INPUTS / "invalid-read.log").read_text(), 50)).findings()
    assert {f.kind for f in findings} >= {"InvalidRead", "Leak_DefinitelyLost", "Race", "InvalidFree"}
    assert any(f.tool_kind for f in findings) and any(f.aux for f in findings)
    encoded = list(findings_json(findings))
    assert all(isinstance(text, Raw) for text in encoded)
    assert [json.loads(text) for text in encoded] == [f.to_json() for f in findings]
    # Text for text what json.dumps writes of each: the same bytes, not only the same value.
    assert encoded == [json.dumps(f.to_json()) for f in findings]


def test_keys_that_json_would_turn_into_strings_are_refused() -> None:
    with pytest.raises(TypeError):
        written({1: "a"})


def test_write_json_to_a_file_and_nowhere(tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "r.json"
    write_json({"a": iter([1])}, str(dest))
    assert json.loads(dest.read_text()) == {"a": [1]}
    write_json({"a": 1}, None)      # no --json: nothing written, no error


def test_parse_command_json_of_a_log_past_the_findings_budget(tmp_path: Path) -> None:
    """5,000 findings kept of 5,200, streamed: valid JSON, the same findings
    as judging the log in-process, on stdout and in a file alike."""
    text = repeat_records((INPUTS / "leaks.log").read_text(), 1300)
    log_path = tmp_path / "big.log"
    log_path.write_text(text)
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "harness", "parse", str(log_path)]
    printed = subprocess.run(cmd + ["--json", "-"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    subprocess.run(cmd + ["--json", str(out)], cwd=ROOT, capture_output=True, timeout=120)
    expected = [f.to_json() for f in judge(parse_text(text), ExitInfo(returncode=None,
                                                                      stop_signal=15),
                                           LeakPolicy()).findings]
    for doc in (json.loads(printed.stdout), json.loads(out.read_text())):
        assert doc["verdict"] == "leak"
        assert len(doc["findings"]) == 5000
        assert doc["findings"] == expected
