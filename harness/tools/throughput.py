"""The fixes cost nothing: each pair's buggy and fixed variant, natively, under
the same load (build/bench/load, from bench/load.c: N connections on
127.0.0.1 exchanging lines with their echoes), on a workload that does not
trigger the pair's bug.  `make bench` measures it at length, `make demo`
in a few rounds.

Runs of the two variants alternate (buggy first, then fixed first, ...), each
against a freshly started server; the fixed/buggy ratio is taken round by
round, so that the two runs compared saw the same machine, and the median of
the rounds is reported.  Besides the load generator's lines/s and round trips, the
server's own CPU time per line (from wait4) is shown: a machine shared with
other jobs moves throughput more than it moves CPU time.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..paths import BUILD_DIR, ROOT

LOAD = ROOT / "build" / "bench" / "load"
SERVERS = BUILD_DIR
READY_S = 10
STOP_S = 10

# Every pair's servers echo every line as it was sent (checked by the load
# generator, byte for byte).  The workload: clients that connect, exchange
# lines (each echo read before the connection ends) and close normally; no
# reset, no stalled reader, nobody connected at stop.  Where even that runs
# the bug, the note says so.
NOTES = {
    "empty_callback": "bug only when a client leaves with echoes still queued (stall + reset)",
    "fire_and_forget": "bug only for sessions still open at stop",
    "double_delete": "bug only on a reset with echoes queued",
    "captured_context": "every echo runs the bug (its completion reads freed captures): natively "
                        "the buggy variant dies of SIGSEGV at the first line, so the fixed one "
                        "is compared with servers/echo instead",
    "dangling_stack_ref": "every second line on a connection runs the bug (a stale read of a dead "
                          "local into a counter, harmless natively): no line workload avoids it",
    "reentrant_resume": "bug only on a 'self:' line; the load's lines never start so",
    "stop_order": "bug only with sessions still open at stop",
    "unguarded_registry": "the racy registry is touched at connect and close only: 8 connections "
                          "per run, natively no corruption seen",
}
NO_BUGGY_RUN = {"captured_context"}


@dataclass
class Workload:
    connections: int = 8
    depth: int = 8
    length: int = 64
    seconds: float = 0.3

    def args(self) -> list[str]:
        return ["--connections", str(self.connections), "--depth", str(self.depth),
                "--length", str(self.length), "--seconds", str(self.seconds)]

    def describe(self) -> str:
        return (f"{self.connections} connections, {self.depth} lines in flight each, "
                f"{self.length}-byte lines, {self.seconds:g} s a run")


class ServerError(RuntimeError):
    pass


def _ready_port(proc: subprocess.Popen, deadline: float) -> int:
    """The port from the server's readiness line, read with a deadline."""
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise ServerError("no readiness line before the deadline")
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                raise ServerError(f"exited before it was listening ({proc.wait()})")
            buf += data
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("listening on 127.0.0.1:"):
        raise ServerError(f"unexpected readiness line {line!r}")
    return int(line.rsplit(":", 1)[1])


def _stop(proc: subprocess.Popen) -> tuple[int, float]:
    """SIGTERM, then wait for the exit (its pidfd becomes readable) up to the
    deadline, SIGKILL to its group past it: its exit status and CPU seconds."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        os.kill(proc.pid, signal.SIGTERM)     # not proc.send_signal: it may reap
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            if not sel.select(STOP_S):
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    return proc.returncode, usage.ru_utime + usage.ru_stime


def run_once(binary: Path, workload: Workload) -> dict:
    """A fresh server, one run of the load against it, the server stopped."""
    proc = subprocess.Popen([str(binary), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port = _ready_port(proc, time.monotonic() + READY_S)
        load = subprocess.run([str(LOAD), "--port", str(port), *workload.args()],
                              capture_output=True, text=True,
                              timeout=workload.seconds + 30)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        raise
    status, cpu = _stop(proc)
    result = json.loads(load.stdout) if load.stdout.strip() else {"error": load.stderr.strip()}
    ok = load.returncode == 0 and status == 0
    result |= {"ok": ok, "server_status": status, "server_cpu_s": cpu,
               "cpu_us_per_line": cpu / result["lines"] * 1e6 if result.get("lines") else None}
    return result


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return statistics.median(values) if values else None


def summary(runs: list[dict]) -> dict:
    return {"runs": len(runs), "failed": sum(not r.get("ok") for r in runs),
            "lines_per_s": _median(runs, "lines_per_s"), "p50_us": _median(runs, "p50_us"),
            "p99_us": _median(runs, "p99_us"), "cpu_us_per_line": _median(runs, "cpu_us_per_line"),
            "errors": sorted({r.get("error") for r in runs if not r.get("ok")} - {None})}


def compare(a: Path, b: Path, workload: Workload, rounds: int) -> dict:
    """`rounds` rounds of one run of each, alternating which goes first;
    the ratios b/a are taken round by round (two runs next to each other
    see the same machine), then their median."""
    runs_a, runs_b = [], []
    for i in range(rounds):
        order = [(a, runs_a), (b, runs_b)] if i % 2 == 0 else [(b, runs_b), (a, runs_a)]
        for binary, runs in order:
            runs.append(run_once(binary, workload))

    def ratio(key: str) -> float | None:
        pairs = [(x[key], y[key]) for x, y in zip(runs_a, runs_b)
                 if x.get("ok") and y.get("ok") and x.get(key) and y.get(key)]
        return statistics.median(y / x for x, y in pairs) if pairs else None

    return {"a": summary(runs_a), "b": summary(runs_b), "ratio": ratio("lines_per_s"),
            "cpu_ratio": ratio("cpu_us_per_line")}


def reference(pattern: str) -> Path:
    """What a pair's fixed variant is measured against: its buggy variant,
    or servers/echo where the buggy one dies at its first line natively."""
    return SERVERS / ("echo/echo" if pattern in NO_BUGGY_RUN else f"{pattern}/buggy")


def pairs() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "servers").glob("*/buggy.c"))


def bench(workload: Workload, rounds: int, progress=print) -> dict:
    echo = SERVERS / "echo" / "echo"
    out = {"workload": workload.describe(), "rounds": rounds, "pairs": {}}
    progress("  echo against itself ...")
    noise = compare(echo, echo, workload, rounds)
    out["echo"] = noise["a"]
    out["noise"] = {"ratio": noise["ratio"], "cpu_ratio": noise["cpu_ratio"]}
    for pattern in pairs():
        progress(f"  {pattern} ...")
        fixed = SERVERS / pattern / "fixed"
        c = compare(reference(pattern), fixed, workload, rounds)
        out["pairs"][pattern] = {
            "against": "servers/echo" if pattern in NO_BUGGY_RUN else "buggy",
            "buggy": None if pattern in NO_BUGGY_RUN else c["a"],
            "reference": c["a"], "fixed": c["b"], "ratio": c["ratio"],
            "cpu_ratio": c["cpu_ratio"], "note": NOTES.get(pattern, "")}
    return out
