"""make bench: the harness's speed, measured side by side in one run, written
to reports/bench.md with the goals beside the figures.

  1. per-case overhead: the harness running one case vs bench/minimal.py doing
     the same by hand (start valgrind, connect, send, read, stop, read the log);
  2. the memcheck matrix serial vs parallel (-j 2);
  3. the same matrix under memcheck vs ASan;
  4. the parser on large real logs (tests/progs/logstorm under memcheck):
     throughput and peak memory, at two sizes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from harness.matrix import project_cases, run_cases  # noqa: E402
from harness.drive.launch import Target  # noqa: E402
from harness.options import RunOptions  # noqa: E402
from harness.runner import run_case  # noqa: E402
from harness.drive.scenario import DEFAULT  # noqa: E402
from minimal import minimal_case  # noqa: E402

ECHO = ROOT / "build" / "servers" / "echo" / "echo"
LOGSTORM = ROOT / "build" / "progs" / "logstorm"
REPEATS = int(os.environ.get("BENCH_REPEATS", "10"))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_case(out: Path) -> dict:
    """Per case, in one process (as in a matrix): the harness's run_case vs
    minimal_case.  Once, as fresh processes (as a one-off CI command): the
    CLI vs the minimal script; the difference is the interpreter's imports."""
    target = Target(argv=[str(ECHO), "--port", "0"], name="echo")
    harness_t, minimal_t, cli_t, script_t = [], [], [], []
    for i in range(REPEATS):
        # Interleaved, so both see the same machine.
        harness_t.append(timed(lambda: run_case(target, DEFAULT, out / f"case-{i}",
                                                RunOptions(require_exit_zero=True))))
        minimal_t.append(timed(lambda: minimal_case(str(ECHO), str(out / f"min-{i}.log"))))
        cli_t.append(timed(lambda: subprocess.run(
            [sys.executable, "-m", "harness", "run", "echo", "--out", str(out / f"cli-{i}")],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL)))
        script_t.append(timed(lambda: subprocess.run(
            [sys.executable, str(ROOT / "bench" / "minimal.py"), str(ECHO), str(out / f"s-{i}.log")],
            check=True)))
    h, m = statistics.median(harness_t), statistics.median(minimal_t)
    c, s = statistics.median(cli_t), statistics.median(script_t)
    return {"harness_s": h, "minimal_s": m, "overhead_pct": (h / m - 1) * 100,
            "cli_s": c, "script_s": s, "cli_overhead_pct": (c / s - 1) * 100,
            "harness_all": harness_t, "minimal_all": minimal_t}


def matrix(out: Path, jobs: int, detector: str) -> dict:
    cases = project_cases(detectors=(detector,))
    t0 = time.perf_counter()
    results = run_cases(cases, out / f"matrix-{detector}-j{jobs}", jobs)
    seconds = time.perf_counter() - t0
    dirs = {r.run.run_dir for r in results}
    ports = [r.run.port for r in results]
    return {"cases": len(cases), "seconds": seconds, "failing": sum(r.outcome.fails for r in results),
            "distinct_run_dirs": len(dirs) == len(results),
            "startup_failures": sum(r.run.verdict.label == "startup-failure" for r in results),
            "ports": len(ports)}


def parser_run(log: Path) -> dict:
    """Parse in a fresh interpreter, so its peak RSS is the parser's alone."""
    code = ("import resource, sys, time; sys.path.insert(0, %r)\n"
            "from harness.logs.vglog import parse_lines\n"
            "t0 = time.perf_counter()\n"
            "with open(%r, encoding='utf-8', errors='replace') as f: log = parse_lines(f)\n"
            "dt = time.perf_counter() - t0\n"
            "n = sum(len(p.findings) + p.dropped_findings for p in log.processes)\n"
            "print(dt, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)") % (str(ROOT), str(log))
    base = subprocess.run([sys.executable, "-c", "import resource, sys; sys.path.insert(0, %r); "
                           "import harness.logs.vglog; print(resource.getrusage(resource.RUSAGE_SELF)"
                           ".ru_maxrss)" % str(ROOT)], capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, records, rss_kb = out.stdout.split()
    size = log.stat().st_size
    return {"mb": size / 1e6, "seconds": float(seconds), "records": int(records),
            "mb_per_s": size / 1e6 / float(seconds),
            "peak_rss_mb": int(rss_kb) / 1024, "baseline_rss_mb": int(base.stdout) / 1024}


def big_logs(out: Path) -> list[Path]:
    """A real log of 16,384 loss records and 4,096 error records, and one four
    times larger: the same program under four PIDs in one file, as valgrind
    writes with --trace-children into a single log."""
    small = out / "storm-1x.log"
    subprocess.run(["valgrind", "--leak-check=full", "--show-leak-kinds=all", "--error-limit=no",
                    "--num-callers=30", f"--log-file={small}", str(LOGSTORM), "64", "4"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = small.read_text()
    pid = text.split("==", 2)[1]
    large = out / "storm-4x.log"
    with open(large, "w") as f:
        for k in range(4):
            f.write(text.replace(f"=={pid}==", f"=={int(pid) + k}=="))
    return [small, large]


def main() -> int:
    report = ROOT / "reports" / "bench.md"
    report.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp)
        print("per-case overhead ...", flush=True)
        case = per_case(out)
        print("matrix serial ...", flush=True)
        serial = matrix(out, 1, "memcheck")
        print("matrix -j 2 ...", flush=True)
        parallel = matrix(out, 2, "memcheck")
        print("matrix -j 2 under ASan ...", flush=True)
        asan = matrix(out, 2, "asan")
        print("parser ...", flush=True)
        parsed = [parser_run(p) for p in big_logs(out)]
    speedup = serial["seconds"] / parallel["seconds"]
    ok = lambda good: "met" if good else "NOT met"  # noqa: E731
    flat = parsed[1]["peak_rss_mb"] - parsed[0]["peak_rss_mb"]
    lines = [
        "# Harness benchmarks", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores "
        f"({REPEATS} repeats per case figure, medians).", "",
        "| figure | measured | goal | |", "|---|---|---|---|",
        f"| one case in-process, harness `run_case` (start, connect/send/read/close, stop, parse, judge, "
        f"result.json) | {case['harness_s']:.3f} s | | |",
        f"| one case in-process, `minimal_case` in bench/minimal.py doing the same by hand | "
        f"{case['minimal_s']:.3f} s | | |",
        f"| per-case overhead of the harness | {case['overhead_pct']:+.1f} % | at most +10 % | "
        f"{ok(case['overhead_pct'] <= 10)} |",
        f"| one-off command: `python3 -m harness run echo` vs `python3 bench/minimal.py` | "
        f"{case['cli_s']:.3f} s vs {case['script_s']:.3f} s ({case['cli_overhead_pct']:+.1f} %: the "
        f"harness's imports, paid once per process) | | |",
        f"| memcheck matrix, serial ({serial['cases']} cases) | {serial['seconds']:.1f} s | | |",
        f"| memcheck matrix, -j 2 | {parallel['seconds']:.1f} s | | |",
        f"| speed-up on 2 cores | {speedup:.2f}x | at least 1.8x | {ok(speedup >= 1.8)} |",
        f"| port collisions / shared run folders with -j 2 | {parallel['startup_failures']} / "
        f"{'none' if parallel['distinct_run_dirs'] else 'SHARED'} | none | "
        f"{ok(parallel['startup_failures'] == 0 and parallel['distinct_run_dirs'])} |",
        f"| failing cases (serial, -j 2, ASan) | {serial['failing']}, {parallel['failing']}, "
        f"{asan['failing']} | 0 | {ok(serial['failing'] + parallel['failing'] + asan['failing'] == 0)} |",
        f"| ASan matrix, -j 2 ({asan['cases']} cases) | {asan['seconds']:.1f} s "
        f"({parallel['seconds'] / asan['seconds']:.1f}x faster than memcheck) | | |",
    ]
    for p in parsed:
        lines.append(f"| parser, {p['mb']:.1f} MB log ({p['records']:,} records) | "
                     f"{p['mb_per_s']:.1f} MB/s, {p['seconds']:.2f} s, peak RSS {p['peak_rss_mb']:.0f} MB "
                     f"(interpreter alone {p['baseline_rss_mb']:.0f} MB) | | |")
    lines.append(f"| parser memory growth, 4x the log | {flat:+.0f} MB | flat (findings past 5,000 "
                 f"in a log are counted, not kept) | {ok(flat < parsed[0]['peak_rss_mb'] * 0.5)} |")
    lines += ["", "Raw figures:", "", "```json",
              json.dumps({"case": case, "serial": serial, "parallel": parallel, "asan": asan,
                          "parser": parsed}, indent=1), "```", ""]
    report.write_text("\n".join(lines))
    print("\n".join(lines[:len(lines) - 5]))
    print(f"\nwritten: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
