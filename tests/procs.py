"""The process table, for tests that check nothing is left running."""
from __future__ import annotations

from pathlib import Path


def processes_running(fragment: str | Path) -> list[str]:
    """'PID CMDLINE' of every process whose command line mentions `fragment`
    (valgrind keeps the program's path in its own command line), this test
    run's own processes aside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(fragment) in cmdline and "pytest" not in cmdline:
            found.append(f"{entry.name} {cmdline}")
    return found
