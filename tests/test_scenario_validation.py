"""Malformed scenario files: one clear error naming the file, the step and
the key, from load_scenario and through the CLI (exit 2, no traceback).
Also: every named scenario loads, the CLI refuses non-loopback hosts, and
docs/scenarios.md lists every step and key (so the doc cannot drift)."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.drive.scenario import (SETTINGS, STEPS, ScenarioError, load_scenario, named_scenarios,
                                    parse_scenario, protocol_scenarios)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
DOC = ROOT / "docs" / "scenarios.md"

OPEN = '[[steps]]\ndo = "open"\nconn = "c"\n\n'

# name -> (file text, fragments the message must contain besides the file name)
BAD = {
    "toml-syntax": (
        'description = "x"\n\n[[steps]]\ndo = "open"\nconn = \n',
        ["TOML syntax", "line 5", "column"]),
    "unknown-top-level-key": (
        'descripton = "typo"\n\n' + OPEN,
        ["unknown top-level key", "'descripton'"]),
    "unknown-step": (
        '[[steps]]\ndo = "opne"\nconn = "c"\n',
        ["step 1", "'do'", "'opne'"]),
    "missing-do": (
        OPEN + '[[steps]]\nconn = "c"\ntext = "hello"\n',
        ["step 2", "'do' missing"]),
    "unknown-key-in-step": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\ntxt = "hello"\n',
        ["step 2 (send)", "unknown key 'txt'"]),
    "wrong-type": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\nsize = "4096"\n',
        ["step 2 (send)", "'size'", "expected an integer"]),
    "bool-for-int": (
        '[[steps]]\ndo = "open"\nconn = "c"\ncount = true\n',
        ["step 1 (open)", "'count'", "expected an integer"]),
    "negative-size": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\nsize = -5\n',
        ["step 2 (send)", "'size'", "below the minimum"]),
    "pause-too-long": (
        OPEN + '[[steps]]\ndo = "pause"\nseconds = 11\n',
        ["step 2 (pause)", "'seconds'", "above the maximum 10"]),
    "pause-without-seconds": (
        '[[steps]]\ndo = "pause"\n',
        ["step 1 (pause)", "'seconds' missing"]),
    "nan-timeout": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nline = true\ntimeout = nan\n',
        ["step 2 (expect)", "'timeout'", "not a finite number"]),
    "never-opened": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "ghost"\ntext = "boo\\n"\n',
        ["step 2 (send)", "'conn'", "'ghost' was never opened"]),
    "opened-twice": (
        OPEN + OPEN,
        ["step 2 (open)", "'conn'", "'c' is already open"]),
    "group-member-reopened": (
        '[[steps]]\ndo = "open"\nconn = "g"\ncount = 3\n\n'
        '[[steps]]\ndo = "open"\nconn = "g2"\n',
        ["step 2 (open)", "'conn'", "'g2' is already open"]),
    "send-text-and-size": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\ntext = "x"\nsize = 10\n',
        ["step 2 (send)", "'text'", "'size'", "got text, size"]),
    "send-nothing": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\n',
        ["step 2 (send)", "'text'", "'hex'", "'size'"]),
    "line-length-without-size": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\ntext = "x"\nline_length = 10\n',
        ["step 2 (send)", "'line_length'", "'size'"]),
    "expect-nothing": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\n',
        ["step 2 (expect)", "'echo'", "'text'", "'line'"]),
    "expect-echo-false-only": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\necho = false\n',
        ["step 2 (expect)", "exactly one of 'echo'"]),
    "bad-hex": (
        OPEN + '[[steps]]\ndo = "send"\nconn = "c"\nhex = "0g"\n',
        ["step 2 (send)", "'hex'", "'0g' is not hex"]),
    "bad-hex-in-expect": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nhex = "abc"\n',
        ["step 2 (expect)", "'hex'", "not hex"]),
    "bad-choice": (
        OPEN + '[[steps]]\ndo = "wait_closed"\nconn = "c"\nhow = "fin"\n',
        ["step 2 (wait_closed)", "'how'", "'fin' is not one of any, eof, reset"]),
    "bad-ending": (
        '[[steps]]\ndo = "storm"\ncount = 3\nendings = ["close", "explode"]\n',
        ["step 1 (storm)", "'endings'", "explode"]),
    "bad-conn-name": (
        '[[steps]]\ndo = "open"\nconn = "a b"\n',
        ["step 1 (open)", "'conn'", "not a valid connection name"]),
    "step-not-a-table": (
        'steps = [1]\n',
        ["step 1", "expected a table"]),
    "unknown-settings-key": (
        '[settings]\nstop_sig = "SIGINT"\n\n' + OPEN,
        ["[settings]", "unknown key 'stop_sig'"]),
    "bad-stop-signal": (
        '[settings]\nstop_signal = "SIGFOO"\n\n' + OPEN,
        ["[settings]", "'stop_signal'", "unknown signal 'SIGFOO'"]),
    "bad-expected-verdict": (
        '[settings]\nexpect = "leaky"\n\n' + OPEN,
        ["[settings]", "'expect'", "'leaky' is not one of"]),
    "bad-leak-kinds": (
        '[settings]\nleak_kinds = "definite,lost"\n\n' + OPEN,
        ["[settings]", "'leak_kinds'", "lost"]),
    "settings-out-of-range": (
        '[settings]\nstep_timeout = 0\n\n' + OPEN,
        ["[settings]", "'step_timeout'", "below the minimum"]),
    "host-private": (
        '[settings]\nhost = "10.0.0.1"\n\n' + OPEN,
        ["[settings]", "'host'", "10.0.0.1", "loopback"]),
    "host-public": (
        '[settings]\nhost = "8.8.8.8"\n\n' + OPEN,
        ["[settings]", "'host'", "8.8.8.8", "loopback"]),
    "host-name": (
        '[settings]\nhost = "example.com"\n\n' + OPEN,
        ["[settings]", "'host'", "example.com", "loopback"]),
    "expect-text-and-until": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\ntext = "x"\nuntil = "\\r\\n"\n',
        ["step 2 (expect)", "exactly one of", "got text, until"]),
    "expect-prefix-with-exact": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nhex = "00"\nprefix = "x"\n',
        ["step 2 (expect)", "key 'prefix'", "'hex' already says the whole reply"]),
    "expect-prefix-and-hex-prefix": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nuntil = "\\n"\nprefix = "x"\nhex_prefix = "00"\n',
        ["step 2 (expect)", "'prefix'", "'hex_prefix'", "got both"]),
    "expect-bad-hex-prefix": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nhex_prefix = "2g"\n',
        ["step 2 (expect)", "key 'hex_prefix'", "'2g' is not hex"]),
    "expect-bad-regex": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nuntil = "\\n"\nmatch = \'HTTP/1\\.[01\'\n',
        ["step 2 (expect)", "key 'match'", "not a regular expression", "unterminated character set"]),
    "expect-empty-until": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nuntil = ""\n',
        ["step 2 (expect)", "key 'until'", "empty"]),
    "expect-max-bytes-with-size": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nsize = 4\nmax_bytes = 10\n',
        ["step 2 (expect)", "key 'max_bytes'", "only goes with 'line', 'until' or 'match'"]),
    "expect-max-bytes-zero": (
        OPEN + '[[steps]]\ndo = "expect"\nconn = "c"\nuntil = "x"\nmax_bytes = 0\n',
        ["step 2 (expect)", "'max_bytes'", "below the minimum 1"]),
    "quiesce-too-short": (
        '[[steps]]\ndo = "quiesce"\nquiet_ms = 20\n',
        ["step 1 (quiesce)", "'quiet_ms'", "below the minimum 50"]),
    "quiesce-unknown-key": (
        '[[steps]]\ndo = "quiesce"\nconn = "c"\n',
        ["step 1 (quiesce)", "unknown key 'conn'"]),
    "storm-text-and-hex": (
        '[[steps]]\ndo = "storm"\ncount = 3\ntext = "PING\\r\\n"\nhex = "00"\n',
        ["step 1 (storm)", "'text'", "'hex'", "got both"]),
    "storm-text-and-lines": (
        '[[steps]]\ndo = "storm"\ncount = 3\ntext = "PING\\r\\n"\nlines = 2\n',
        ["step 1 (storm)", "key 'lines'", "not with 'text'"]),
    "storm-empty-text": (
        '[[steps]]\ndo = "storm"\ncount = 3\ntext = ""\n',
        ["step 1 (storm)", "key 'text'", "empty", "lines = 0"]),
    "storm-bad-hex": (
        '[[steps]]\ndo = "storm"\ncount = 3\nhex = "zz"\n',
        ["step 1 (storm)", "key 'hex'", "'zz' is not hex"]),
    "storm-may-close-not-bool": (
        '[[steps]]\ndo = "storm"\ncount = 3\nserver_may_close = "yes"\n',
        ["step 1 (storm)", "'server_may_close'", "expected true or false"]),
    "fuzz-empty-hex": (
        '[[steps]]\ndo = "fuzz"\nhex = ""\n',
        ["step 1 (fuzz)", "key 'hex'", "empty", "junk = false"]),
    "fuzz-huge-payload": (
        '[[steps]]\ndo = "fuzz"\ntext = "' + "x" * ((1 << 20) + 1) + '"\n',
        ["step 1 (fuzz)", "key 'text'", "more than the 1 MiB"]),
    "empty-steps": (
        'description = "nothing to do"\nsteps = []\n',
        ["'steps' missing or empty"]),
    "no-steps": (
        'description = "nothing to do"\n',
        ["'steps' missing or empty"]),
}


@pytest.fixture(params=sorted(BAD))
def bad_file(request, tmp_path: Path) -> tuple[Path, list[str]]:
    text, fragments = BAD[request.param]
    path = tmp_path / f"{request.param}.toml"
    path.write_text(text)
    return path, fragments


def test_load_scenario_refuses(bad_file):
    path, fragments = bad_file
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    assert info.value.source == str(path)


def test_toml_syntax_error_keeps_line_and_column(tmp_path: Path):
    text = BAD["toml-syntax"][0]
    with pytest.raises(tomllib.TOMLDecodeError) as raw:
        tomllib.loads(text)
    where = re.search(r"\(at line \d+, column \d+\)", str(raw.value)).group(0)
    path = tmp_path / "syntax.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert where in str(info.value)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_cli_refuses_with_exit_2(bad_file):
    path, fragments = bad_file
    proc = cli("run", "echo", "--scenario", str(path))
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: "), lines
    for fragment in fragments:
        assert fragment in lines[0]
    # the key (or table) at fault is named
    assert re.search(r"'[a-z_]+'|\[settings\]|\[\[steps\]\]|TOML syntax", lines[0])


def test_each_step_case_names_the_step_number():
    """Step-level cases carry 'step N'; the others are file-level (TOML,
    top-level keys, settings)."""
    file_level = {"toml-syntax", "unknown-top-level-key", "empty-steps", "no-steps"}
    for name, (text, fragments) in BAD.items():
        if name in file_level or "[settings]" in fragments:
            continue
        assert any(re.fullmatch(r"step \d+( \(\w+\))?", f) for f in fragments), name


def test_parse_scenario_refuses_a_non_table_settings():
    with pytest.raises(ScenarioError, match=r"test: \[settings\]: expected a table"):
        parse_scenario({"settings": 3, "steps": [{"do": "stop"}]}, "test", "test")


def test_unknown_scenario_name_lists_the_known_ones():
    with pytest.raises(ScenarioError) as info:
        load_scenario("no-such-scenario")
    assert "no scenario of that name" in str(info.value)
    assert "echo" in str(info.value)


def test_missing_file():
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("/nonexistent/dir/x.toml")


@pytest.mark.parametrize("name", named_scenarios())
def test_named_scenarios_load(name):
    scenario = load_scenario(name)
    assert scenario.steps and scenario.description


@pytest.mark.parametrize("name", protocol_scenarios())
def test_protocol_scenarios_load_by_their_folder_name(name):
    scenario = load_scenario(name)
    assert name.startswith("protocols/") and scenario.name == name.split("/", 1)[1]
    assert scenario.steps and scenario.description


def test_protocol_scenarios_stay_out_of_the_matrix():
    """named_scenarios() is what every project server plays: protocol
    scenarios live one folder down, and an unknown name lists both."""
    assert set(protocol_scenarios()) >= {"protocols/memcached-text", "protocols/redis-resp",
                                         "protocols/mqtt-311", "protocols/mqtt-5",
                                         "protocols/http-11"}
    assert not any("/" in n for n in named_scenarios())
    assert {"connect-close", "connect-reset", "connect-idle-at-stop", "half-open",
            "slow-connect-storm"} <= set(named_scenarios())
    with pytest.raises(ScenarioError, match="protocols/redis-resp"):
        load_scenario("protocols/no-such-protocol")


@pytest.mark.parametrize("extra", [[], ["--cmd", "build/progs/toy_server echo {port}"]])
def test_cli_refuses_a_non_loopback_host(extra):
    args = ["run"] + (extra or ["echo"]) + ["--host", "10.1.2.3"]
    proc = cli(*args)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == ("error: target host 10.1.2.3 refused: not a loopback "
                                   "address; the harness sends traffic to 127.0.0.0/8 or ::1 only")


# -- the doc's step table --------------------------------------------------------------
def doc_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables by the heading above them: rows as {column: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"\|[\s:|-]+\|$",
                                                                       lines[i + 1]):
            cols = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                rows.append(dict(zip(cols, cells)))
                i += 1
            tables[heading] = rows
            continue
        i += 1
    return tables


def _plain(cell: str) -> str:
    return cell.replace("`", "").replace("**", "").strip()


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def test_doc_step_table_lists_every_step_and_key():
    tables = doc_tables(DOC.read_text())
    rows = tables.get("Step reference")
    assert rows, "docs/scenarios.md has no table under '## Step reference'"
    documented: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        documented[(_plain(row["step"]), _plain(row["key"]))] = row
    for step, (keys, _) in STEPS.items():
        if not keys:
            assert (step, "-") in documented, f"step {step!r} is not in the doc's table"
        for key, spec in keys.items():
            row = documented.get((step, key))
            assert row is not None, f"step {step!r} key {key!r} is not in the doc's table"
            # its default and its range, as declared
            if spec.default is not None:
                assert _plain(row["default"]) == _fmt(spec.default), (step, key, row)
            if spec.low is not None or spec.high is not None:
                rng = _plain(row["range"])
                for bound in (spec.low, spec.high):
                    if bound is not None:
                        assert _fmt(bound) in rng.replace(",", "").replace("_", ""), \
                            (step, key, rng)
            assert ("required" in _plain(row["default"])) == spec.required, (step, key, row)
    # and nothing in the table that the code does not know
    for (step, key) in documented:
        assert step in STEPS, f"the doc lists an unknown step {step!r}"
        assert key == "-" or key in STEPS[step][0], f"the doc lists an unknown key {step}.{key}"


def test_doc_settings_table_lists_every_setting():
    rows = doc_tables(DOC.read_text()).get("Settings")
    assert rows, "docs/scenarios.md has no table under '## Settings'"
    keys = {_plain(r["key"]) for r in rows}
    assert keys == set(SETTINGS)


def test_doc_toml_examples_are_valid_scenarios():
    """Every ```toml block of the doc is a scenario that validates."""
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    shown = set()
    for i, block in enumerate(blocks, start=1):
        data = tomllib.loads(block)
        scenario = parse_scenario(data, f"docs/scenarios.md block {i}", "doc")
        shown |= {s.do for s in scenario.steps}
    assert shown == set(STEPS), f"no example for {set(STEPS) - shown}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
