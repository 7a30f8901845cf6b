"""Debian's memcached, redis, mosquitto and nginx under the gate, with the
exact commands docs/real-servers.md gives (read from its code blocks, so
the doc and the test cannot drift), and the outcomes it documents:

- memcached and nginx: every case `known` (a one-time startup leak the
  baseline accepts), exit 0; redis and mosquitto: every case clean, exit 0;
- nginx: the master and its worker are both judged, each log complete;
- a wrong protocol answer fails the gate and the message names the step.

Each command writes its report into the test's tmp_path (`--out`, `--json`
appended); the servers listen on ports the harness picks on 127.0.0.1.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.logs.source import log_texts
from harness.logs.vglog import parse_texts

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "real-servers.md"
PROGRAMS = {"memcached": "memcached", "redis": "redis-server", "mosquitto": "mosquitto",
            "nginx": "nginx"}
GATE_SECONDS = 600      # a whole gate; valgrind starts each of these servers in seconds

pytestmark = pytest.mark.valgrind


def documented() -> dict[str, str]:
    """server -> the shell command under '<!-- gate: SERVER -->'."""
    text = DOC.read_text()
    found = dict(re.findall(r"<!-- gate: (\w+) -->\n```sh\n(.*?)```", text, re.S))
    assert set(found) == set(PROGRAMS), f"docs/real-servers.md gates {sorted(found)}"
    return found


def runnable(command: str) -> str:
    """The documented command as this suite runs it: this interpreter."""
    assert command.count("python3 -m harness gate") == 1, command
    return command.replace("python3 -m harness", f"{sys.executable} -m harness")


def gate(server: str, tmp_path: Path, scenarios: list[str] | None = None):
    """Run the documented gate for `server` (with other --scenario options,
    when given), its report in tmp_path.  Returns (process, summary)."""
    program = PROGRAMS[server]
    if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
        pytest.fail(f"{program} is not installed: `make deps` installs it")
    command = runnable(documented()[server]).replace("\\\n", " ").strip()
    if scenarios is not None:
        command = re.sub(r"\s*--scenario \S+", "", command)
        command += "".join(f" --scenario {s}" for s in scenarios)
    out = tmp_path / "report"
    command += f" --out {out} --json {out / 'summary.json'}"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LC_ALL": "C", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=GATE_SECONDS, env=env)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return proc, summary


def story(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


def scenarios_of(server: str) -> list[str]:
    return re.findall(r"--scenario (\S+)", documented()[server])


def definite(case: dict) -> tuple[int, int]:
    lost = case["heap"]["definitely_lost"]
    return lost["bytes"], lost["blocks"]


# -- the doc ---------------------------------------------------------------------------
def test_each_gate_plays_its_protocol_scenarios_and_the_protocol_free_ones():
    protocol = {"memcached": {"protocols/memcached-text"}, "redis": {"protocols/redis-resp"},
                "mosquitto": {"protocols/mqtt-311", "protocols/mqtt-5"},
                "nginx": {"protocols/http-11"}}
    free = {"connect-close", "connect-reset", "half-open", "slow-connect-storm",
            "connect-idle-at-stop"}
    for server, command in documented().items():
        assert set(scenarios_of(server)) == protocol[server] | free, server
        assert "127.0.0.1" in command or "--config-template" in command, server
    nginx = documented()["nginx"]
    assert "--follow-children" in nginx and "--config-template docs/real-servers/nginx.conf" in nginx
    conf = (ROOT / "docs/real-servers/nginx.conf").read_text()
    for line in ("daemon off;", "master_process on;", "worker_processes 1;",
                 "listen 127.0.0.1:{port};"):
        assert line in conf


# -- memcached, redis, mosquitto: clean or known -------------------------------------------
@pytest.mark.parametrize("server", ["redis", "mosquitto"])
def test_gate_is_clean(server, tmp_path):
    proc, summary = gate(server, tmp_path)
    assert proc.returncode == 0, story(proc)
    assert summary is not None and summary["passed"], story(proc)
    assert summary["counts"] == {"pass": len(scenarios_of(server))}, story(proc)
    for case in summary["cases"]:
        assert case["verdict"] == "clean" and case["scenario_failures"] == [], case["case"]
        assert definite(case) == (0, 0) and case["heap"]["indirectly_lost"]["bytes"] == 0
        assert case["errors"]["count"] == case["errors"]["contexts"]    # leak records only
        assert not [f for f in case["findings"] if not f["kind"].startswith("Leak_")], case["case"]


def shipped_signatures(server: str) -> list[str]:
    from harness.judge.gate import load_baseline
    return sorted(load_baseline(ROOT / "docs" / "real-servers" / f"{server}.baseline.toml"))


def test_memcached_gate_is_known_its_startup_leak(tmp_path):
    proc, summary = gate("memcached", tmp_path)
    assert proc.returncode == 0, story(proc)
    assert summary is not None and summary["passed"], story(proc)
    assert summary["counts"] == {"known": len(scenarios_of("memcached"))}, story(proc)
    for case in summary["cases"]:
        assert case["verdict"] == "leak" and case["scenario_failures"] == [], case["case"]
        # the one 40-byte block main() never frees, whatever the clients did
        assert definite(case) == (40, 1), case["case"]
        assert case["heap"]["indirectly_lost"]["bytes"] == 0
        # signed by its two frames in the stripped executable, by offset:
        # the signature the shipped baseline accepts
        assert case["signatures"] == shipped_signatures("memcached"), case["case"]
        assert case["signatures"][0].startswith("Leak_DefinitelyLost memcached+0x")


# -- nginx: master and worker --------------------------------------------------------------
def test_nginx_gate_judges_master_and_worker(tmp_path):
    proc, summary = gate("nginx", tmp_path)
    assert proc.returncode == 0, story(proc)
    assert summary is not None and summary["passed"], story(proc)
    assert summary["counts"] == {"known": len(scenarios_of("nginx"))}, story(proc)
    for case in summary["cases"]:
        assert case["scenario_failures"] == [] and case["processes"] == 2, case["case"]
        assert len(case["logs"]) == 2, case["logs"]
        procs = [p for path in case["logs"] for p in parse_texts(log_texts(Path(path))).processes]
        assert len(procs) == 2 and all(p.complete for p in procs), case["case"]
        master, worker = procs      # the first log is the first process's
        assert master.command and "nginx" in master.command
        assert master.heap.definitely_lost.bytes == 0
        assert (worker.heap.definitely_lost.bytes, worker.heap.definitely_lost.blocks) == (8, 1)
        assert {f["pid"] for f in case["findings"] if f["kind"] == "Leak_DefinitelyLost"} \
            == {worker.pid}
        assert case["signatures"] == shipped_signatures("nginx"), case["case"]
        assert "ngx_set_environment@nginx" in case["signatures"][0]


# -- a wrong protocol answer -------------------------------------------------------------------
def test_a_wrong_answer_fails_the_gate_naming_the_step(tmp_path):
    proc, summary = gate("redis", tmp_path, ["tests/scenarios/redis-wrong-answer.toml"])
    assert proc.returncode == 3, story(proc)
    assert summary is not None and summary["counts"] == {"unresolved": 1}, story(proc)
    case = summary["cases"][0]
    assert case["verdict"] == "unresolved"
    assert case["scenario_failures"] == ["step 3 (expect): c: reply differs at byte 2: got "
                                         "b'ONG\\r\\n', expected b'ANG\\r\\n'"]
    assert "FAIL redis-server-redis-wrong-answer: unresolved: scenario: step 3 (expect)" \
        in proc.stdout, story(proc)


def test_a_wrong_answer_is_not_hidden_by_the_baseline(tmp_path):
    """memcached's baseline accepts its startup leak; a run whose scenario
    broke is still not `known`."""
    proc, summary = gate("memcached", tmp_path, ["tests/scenarios/memcached-wrong-answer.toml"])
    assert proc.returncode == 3, story(proc)
    assert summary is not None and summary["counts"] == {"unresolved": 1}, story(proc)
    case = summary["cases"][0]
    assert case["verdict"] == "leak" and case["outcome"] == "unresolved"
    assert case["scenario_failures"] == ["step 3 (expect): c: reply does not start with "
                                         "b'VALUE never-set ': differs at byte 0: got "
                                         "b'END\\r\\n', expected b'VALUE never-set '"]
    assert "its findings are in the baseline, the rest is unknown" in case["message"]
