"""Staying power: the fixed servers under abuse, the harness under faults.

Bounded in time: a 2,000-connection storm per fixed variant under memcheck,
20,000 connections natively with the server's RSS measured before and after
(`make soak` runs 100,000), hostile input, and servers that misbehave in
every way a server can, with the process table checked afterwards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import processes_running

from harness.drive.clients import play
from harness.drive.launch import Server, Target, ValgrindOptions
from harness.drive.scenario import load_scenario, parse_scenario
from harness.judge.patterns import all_patterns
from harness.model import Verdict
from harness.options import RunOptions
from harness.runner import run_case

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).parent / "scenarios"
FIXED = [(p, v) for p in all_patterns() for v in p.variants if v != "buggy"]
NATIVE_CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "20000"))
pytestmark = pytest.mark.valgrind


def fixed_ids(item) -> str:
    pattern, variant = item
    return f"{pattern.name}-{variant}"


@pytest.mark.parametrize("server", FIXED, ids=fixed_ids)
def test_storm_of_2000_connections_under_memcheck(server, build_dir, tmp_path) -> None:
    pattern, variant = server
    target = Target(argv=[str(pattern.binary(variant)), "--port", "0"], name=pattern.name)
    result = run_case(target, load_scenario(str(SCENARIOS / "storm-2000.toml")), tmp_path,
                      RunOptions(require_exit_zero=True))
    stats = next(iter(result.play.stats.values()))
    assert stats["count"] == 2000 and stats["failed"] == 0, stats
    assert set(stats["endings"]) == {"close", "reset", "half_close", "stall_reset", "idle"}
    assert result.verdict is Verdict.CLEAN, result.judgement.reasons
    assert result.log.main.errors.count == 0 and result.log.main.heap.all_freed


@pytest.mark.parametrize("server", FIXED, ids=fixed_ids)
def test_hostile_input_under_memcheck(server, build_dir, tmp_path) -> None:
    pattern, variant = server
    target = Target(argv=[str(pattern.binary(variant)), "--port", "0"], name=pattern.name)
    result = run_case(target, load_scenario(str(SCENARIOS / "hostile.toml")), tmp_path,
                      RunOptions(require_exit_zero=True))
    assert result.verdict is Verdict.CLEAN, result.judgement.reasons + result.play.failures
    heap = result.log.main.heap
    # Bounded: the server never held the deaf client's 16 MB at once.
    assert heap.allocated_bytes is not None
    assert result.log.main.errors.count == 0 and heap.all_freed


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


DEAF = {"steps": [
    {"do": "open", "conn": "deaf", "rcvbuf": 4096}, {"do": "stall", "conn": "deaf"},
    {"do": "send", "conn": "deaf", "size": 64 << 20, "line_length": 4096, "timeout": 60,
     "may_fail": True},
    {"do": "open", "conn": "good"}, {"do": "send", "conn": "good", "text": "still here\n"},
    {"do": "expect", "conn": "good", "echo": True}]}


@pytest.mark.parametrize("server", FIXED, ids=fixed_ids)
def test_client_that_never_reads_cannot_grow_the_server(server, build_dir, tmp_path) -> None:
    """64 MB from a client that reads nothing: the server closes it past its
    output limit (8 MB) and its peak RSS stays far below what was sent."""
    pattern, variant = server
    srv = Server(Target(argv=[str(pattern.binary(variant)), "--port", "0"]), tmp_path,
                 ValgrindOptions(enabled=False))
    srv.start()
    try:
        assert srv.wait_ready(10)
        played, _ = play(parse_scenario(DEAF, "deaf", "deaf"), "127.0.0.1", srv.port, lambda: None, 30)
        peak = rss_kb(srv.pid, "VmHWM")
    finally:
        exit_info = srv.stop(signal.SIGTERM, 30)
    assert not played.failures, played.failures
    assert any("step 3 (send)" in n and "may_fail" in n for n in played.notes), played.notes
    assert peak < 32 * 1024, f"peak RSS {peak} kB"
    assert exit_info.returncode == 0


def storm(count: int, seed: int):
    return parse_scenario({"steps": [{"do": "storm", "count": count, "concurrency": 64, "seed": seed,
                                      "endings": ["close", "reset", "half_close", "stall_reset"],
                                      "stall_bytes": 16384, "timeout": 120}]}, "soak", "soak")


PHASES = [NATIVE_CONNECTIONS // 10] + [NATIVE_CONNECTIONS * 9 // 40] * 4


def rss_per_phase(target: Target, tmp_path: Path) -> list[int]:
    """A tenth of the connections to warm up, then four equal phases, all
    natively: the server's RSS (kB) read after each."""
    srv = Server(target, tmp_path, ValgrindOptions(enabled=False))
    rss = []
    srv.start()
    try:
        assert srv.wait_ready(10)
        for seed, count in enumerate(PHASES, start=1):
            played, _ = play(storm(count, seed), "127.0.0.1", srv.port, lambda: None, 10)
            assert not played.failures, played.failures
            rss.append(rss_kb(srv.pid))
    finally:
        exit_info = srv.stop(signal.SIGTERM, 30)
    assert exit_info.returncode == 0
    return rss


def flat(rss: list[int]) -> bool:
    """A per-connection leak grows the RSS in every phase; the allocator's
    high-water mark only in a phase that reaches a new peak of concurrent
    sessions (coroutine stacks, queued replies).  Flat: at least one phase
    grew it by less than 256 kB (a leak of 60 bytes per connection would
    not, over 4,500), and the whole run by less than 16 MB."""
    growth = [after - before for before, after in zip(rss, rss[1:])]
    return min(growth) < 256 and rss[-1] - rss[0] < 16 * 1024


@pytest.mark.parametrize("server", FIXED, ids=fixed_ids)
def test_native_storm_keeps_memory_flat(server, build_dir, tmp_path) -> None:
    pattern, variant = server
    rss = rss_per_phase(Target(argv=[str(pattern.binary(variant)), "--port", "0"]), tmp_path)
    assert flat(rss), f"RSS (kB) after each phase {PHASES}: {rss}"


def test_flat_memory_check_catches_a_leaking_server(toy_server, tmp_path) -> None:
    """The same measurement on a server that keeps a copy of every read."""
    rss = rss_per_phase(Target(argv=[str(toy_server), "leak", "{port}"], port_mode="substitute"),
                        tmp_path)
    assert not flat(rss), f"RSS (kB) after each phase {PHASES}: {rss}"


def harness(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **(env or {})))


def test_server_that_floods_its_output(toy_server, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{toy_server} flood {{port}}", "--scenario", "echo",
                   "--out", str(tmp_path), "--json", "-")
    data = json.loads(proc.stdout)
    assert data["verdict"] == "clean", data["reasons"]
    assert Path(data["stdout"]).stat().st_size >= 4 * 65535
    assert Path(data["stderr"]).stat().st_size >= 4 * 65535


def test_server_that_forks_leaves_nothing_behind(toy_server, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{toy_server} fork {{port}}", "--out", str(tmp_path), "--json", "-")
    data = json.loads(proc.stdout)
    # The child, killed with the group, never gets to write its summaries.
    assert data["verdict"] == "clean", data["reasons"]
    assert processes_running(f"{toy_server} fork") == []


def test_server_that_ignores_every_signal(toy_server, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{toy_server} ignore-term {{port}}", "--stop-signal", "SIGINT",
                   "--out", str(tmp_path), "--json", "-", env={"HARNESS_TIMEOUT_MULTIPLIER": "0.1"})
    data = json.loads(proc.stdout)
    assert data["verdict"] == "hang" and proc.returncode == 1
    assert data["hang"] and data["hang"][0]["stack"], "the hang says where it hangs"
    assert processes_running(f"{toy_server} ignore-term") == []


def test_ctrl_c_mid_run_leaves_nothing_behind(toy_server, tmp_path) -> None:
    scenario = tmp_path / "slow.toml"
    scenario.write_text('[[steps]]\ndo = "open"\nconn = "c"\n\n[[steps]]\ndo = "pause"\nseconds = 10\n')
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--cmd",
                             f"{toy_server} echo {{port}}", "--scenario", str(scenario), "--out",
                             str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stderr_file = tmp_path / "toy_server-slow" / "stderr.txt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if stderr_file.exists() and "mode on port" in stderr_file.read_text():
            break
        time.sleep(0.05)    # polling a file the server writes: bounded by the deadline
    assert proc.poll() is None, "the harness ended before the server was up"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert processes_running(f"{toy_server} echo") == []
