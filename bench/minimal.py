"""The baseline for the per-case overhead: the least a script can do to run
one case by hand.  Start the server under valgrind, wait for its readiness
line, connect, send a line, read the echo, close, SIGTERM, wait, read the log
and look for its ERROR SUMMARY.  No scenario language, no judging, no
reports.  As a command it prints how long the case took.   usage: minimal.py SERVER LOGFILE"""
import os
import signal
import socket
import subprocess
import sys
import time


class on_cpu:
    """What this process starts meanwhile runs on `cpu` only (None: where it
    would anyway); this process gets its CPUs back after.  (The bench uses
    it too; a class, not contextlib, to keep this script's imports few.)"""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu

    def __enter__(self) -> None:
        self.anywhere = os.sched_getaffinity(0)
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc) -> None:
        os.sched_setaffinity(0, self.anywhere)


def minimal_case(server: str, log: str, cpu: int | None = None) -> bool:
    """cpu: the one CPU the server runs on (the bench's choice), or any."""
    with on_cpu(cpu):
        proc = subprocess.Popen(["valgrind", "--tool=memcheck", "--leak-check=full",
                                 "--show-leak-kinds=all", f"--log-file={log}", server, "--port",
                                 "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hello\n")
        s.recv(100)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    proc.stdout.close()
    with open(log) as f:
        return "ERROR SUMMARY: 0 errors" in f.read()


if __name__ == "__main__":
    t0 = time.perf_counter()
    clean = minimal_case(sys.argv[1], sys.argv[2])
    print(f"case {time.perf_counter() - t0:.6f}")   # the bench parts the case from the imports
    sys.exit(0 if clean else 1)
