"""The process table, for tests that check nothing is left running."""
from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the command name: state, parent, group, session,
    ...; None once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].split()


def stat_of(pid: int) -> tuple[int, int] | None:
    """(process group, session) of a live process; None once it is gone."""
    fields = stat_fields(pid)
    return (int(fields[2]), int(fields[3])) if fields and fields[0] != b"Z" else None


def matching(fragment: str | Path, servers_only: bool = False) -> dict[int, tuple[int, int]]:
    """pid -> (group, session) of every live process whose command line has
    `fragment` (valgrind keeps the program's path in its own command line):
    the harness and its keepers included, unless `servers_only`; the
    pytest processes, this one and those another test started aside."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(fragment) not in cmdline or " -m pytest" in cmdline or int(entry.name) == os.getpid():
            continue
        if servers_only and (" -m harness" in cmdline or _name(entry) == "leak-keeper"):
            continue
        if not _started_by_this_test(entry):
            continue
        ids = stat_of(int(entry.name))
        if ids:
            out[int(entry.name)] = ids
    return out


TOKEN = b"LEAK_HARNESS_TEST_TOKEN="


def _started_by_this_test(entry: Path) -> bool:
    """Whether a process may belong to the running test. conftest.py gives
    each test a token in LEAK_HARNESS_TEST_TOKEN and every process the test
    starts inherits it (the harness passes its environment to the server),
    so a process of another test running at the same time on another xdist
    worker is told apart. A process without the token (one that cleared its
    environment) counts as ours: the check must be able to fail."""
    ours = os.environ.get("LEAK_HARNESS_TEST_TOKEN", "").encode()
    try:
        environ = (entry / "environ").read_bytes()
    except OSError:
        return True
    theirs = next((item[len(TOKEN):] for item in environ.split(b"\0")
                   if item.startswith(TOKEN)), None)
    return theirs is None or not ours or theirs == ours


def _name(entry: Path) -> str:
    try:
        return (entry / "comm").read_text().strip()
    except OSError:
        return ""


def processes_running(fragment: str | Path) -> list[str]:
    """'PID (group, session)' of every live process whose command line
    mentions `fragment`."""
    return [f"{pid} {ids}" for pid, ids in matching(fragment).items()]


def in_groups(ids: set[tuple[int, int]]) -> list[int]:
    """Live processes in any of these process groups or sessions."""
    groups = {g for g, _ in ids}
    sessions = {s for _, s in ids}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = stat_of(int(entry.name))
            if st and (st[0] in groups or st[1] in sessions):
                found.append(int(entry.name))
    return found
