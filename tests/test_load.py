"""bench/load.c, the load generator of make bench: a short run against the
echo server reports a sane result, and an echo that comes back altered, or
a server that hangs up, is reported as such (no timing asserted)."""
from __future__ import annotations

import json
import selectors
import signal
import subprocess
from pathlib import Path

import pytest

import pyserver
from procs import processes_running

pytestmark = pytest.mark.needs_build


@pytest.fixture
def load(build_dir: Path) -> Path:
    path = build_dir / "bench" / "load"
    if not path.exists():
        pytest.fail("build/bench/load is missing: `make progs` builds it")
    return path


def run_load(load: Path, port: int, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([str(load), "--port", str(port), *args], capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def ready_port(proc: subprocess.Popen, seconds: float) -> int:
    """The port from the server's readiness line, waited for with a deadline."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(seconds), "no readiness line"
    return int(proc.stdout.readline().decode().rsplit(":", 1)[1])


def test_against_the_echo_server(load: Path, echo_server: Path) -> None:
    server = subprocess.Popen([str(echo_server), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        port = ready_port(server, 10)
        status, report = run_load(load, port, "--seconds", "0.3", "--connections", "4",
                                  "--depth", "3", "--length", "100")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0      # every connection closed normally
        server.stdout.close()
    assert status == 0, report
    assert (report["mismatches"], report["errors"], report["error"]) == (0, 0, None)
    assert report["connections"] == 4 and report["depth"] == 3 and report["length"] == 100
    assert report["lines"] > 0 and report["lines_per_s"] > 0
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["max_us"]
    assert processes_running(load) == []


def altered(server: pyserver.PyServer, seen: pyserver.Seen) -> None:
    """Echoes everything, its last byte changed once it has seen 500 bytes."""
    total = 0
    while (chunk := server.recv(seen)) is not None:
        total += len(chunk)
        if total > 500:
            chunk = chunk[:-1] + b"!"
        server.send(seen, chunk)
    server.close(seen)


def test_an_altered_echo_is_a_mismatch(load: Path) -> None:
    with pyserver.PyServer(altered) as srv:
        status, report = run_load(load, srv.port, "--seconds", "5", "--connections", "2")
        assert srv.wait_for(srv.settled, 10)
    assert status == 1
    assert report["mismatches"] >= 1 and report["error"] == "echo mismatch"


def test_a_server_that_hangs_up_is_an_error(load: Path) -> None:
    with pyserver.PyServer(pyserver.close_on_data) as srv:
        status, report = run_load(load, srv.port, "--seconds", "5", "--connections", "2")
    assert status == 1
    assert report["errors"] >= 1 and report["error"] == "server closed the connection: EOF"


def test_nothing_listening(load: Path) -> None:
    with pyserver.PyServer(pyserver.record) as srv:
        port = srv.port
    status, report = run_load(load, port, "--seconds", "1")
    assert status == 1 and report["error"] == "connect: ECONNREFUSED" and report["lines"] == 0


def test_bad_usage(load: Path) -> None:
    proc = subprocess.run([str(load), "--connections", "4"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 2 and "usage: load --port P" in proc.stderr
