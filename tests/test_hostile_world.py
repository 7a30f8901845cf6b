"""The harness under a hostile world: never lose a finding, never leave a
process, and keep the command line's contract whatever the input.

Each test plays one way a real server, a CI runner or a user broke the
harness, through the command line as a user would, and checks the verdict,
the exit status, the process table (no process of the run left, found by
command line, by session and by process group) and /tmp (no vgdb FIFO)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from harness.drive.launch import ephemeral_range, free_port
from procs import in_groups, matching, stat_fields, stat_of

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOY = ROOT / "build" / "progs" / "toy_server"
pytestmark = pytest.mark.valgrind


# -- helpers -------------------------------------------------------------------------
def harness(*args: str, env: dict | None = None, timeout: float = 180,
            cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "harness", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def start_harness(*args: str, ignore_sigint: bool = False, **kw) -> subprocess.Popen:
    def preexec() -> None:
        if ignore_sigint:       # what '&' in a script does to a job
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return subprocess.Popen([PYTHON, "-m", "harness", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec, **kw)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A private copy of toy_server: a path no other test's process has."""
    if not TOY.exists():
        pytest.fail("build/progs/toy_server is missing: run the tests through `make test`")
    path = tmp_path / f"toy_{uuid.uuid4().hex[:10]}"
    shutil.copy2(TOY, path)
    return path


def wait_for(predicate, seconds: float, what: str):
    """Poll `predicate` (a process table, a file) until true, with a deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)    # the process table has no event to wait on
    raise AssertionError(f"{what} did not happen within {seconds}s")


def assert_nothing_left(fragment: str, seen: dict[int, tuple[int, int]] | None = None,
                        seconds: float = 10.0) -> None:
    """No process of the run: none with the fragment in its command line, and
    none in a group or session that one of the run's processes had."""
    ids = set((seen or {}).values())
    deadline = time.monotonic() + seconds
    while True:
        left = list(matching(fragment)) + (in_groups(ids) if ids else [])
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left: {[(p, stat_of(p)) for p in left]}")
        time.sleep(0.02)


def vgdb_fifos(pids) -> list[str]:
    return [n for n in os.listdir("/tmp") if n.startswith("vgdb-pipe")
            and any(re.search(rf"-{pid}-by-", n) for pid in pids)]


def execed(comm: str, fragment: str) -> int | None:
    """The process of this test whose command line has `fragment` once it
    runs `comm`: not a parent still between its fork and its exec, nor
    setpriv on its way to the server."""
    for pid in matching(fragment, True):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return pid
        except OSError:
            pass
    return None


def asleep(pid: int) -> bool:
    """The process sleeps in a system call (for `sleep`: its nanosleep).
    Just after its exec the dynamic loader still holds descriptors of its
    own, such as /etc/ld.so.cache: a program's descriptors are read once it
    sleeps."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] == b"S"


def scenario(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SLOW = '[[steps]]\ndo = "open"\nconn = "c"\n\n[[steps]]\ndo = "pause"\nseconds = 8\n'
ECHO = ('[[steps]]\ndo = "open"\nconn = "c"\n\n[[steps]]\ndo = "send"\nconn = "c"\n'
        'text = "{line}\\n"\n\n[[steps]]\ndo = "expect"\nconn = "c"\necho = true\n\n'
        '[[steps]]\ndo = "close"\nconn = "c"\n')


def up(run_dir_glob: Path, toy: Path, seconds: float = 60) -> dict[int, tuple[int, int]]:
    """Wait until the toy server runs, and return its processes."""
    return wait_for(lambda: matching(str(toy), servers_only=True), seconds, "the server's start")


# -- findings are never lost, and never hidden ---------------------------------------
def test_same_scenario_file_name_in_two_folders_gives_two_run_folders(toy, tmp_path) -> None:
    a = scenario(tmp_path, "a/smoke.toml", ECHO.format(line="hello"))
    b = scenario(tmp_path, "b/smoke.toml", ECHO.format(line="READ"))
    out = tmp_path / "out"
    proc = harness("gate", "--cmd", f"{toy} invalid-read {{port}}", "--scenario", str(a),
                   "--scenario", str(b), "-j", "2", "--out", str(out), "--json", "-")
    assert proc.returncode == 1, proc.stderr
    cases = {c["case"]: c for c in json.loads(proc.stdout)["cases"]}
    name = toy.name
    assert set(cases) == {f"{name}-smoke", f"{name}-smoke-2"}
    assert cases[f"{name}-smoke"]["verdict"] == "clean"
    bad = cases[f"{name}-smoke-2"]
    assert bad["verdict"] == "memory-error" and bad["outcome"] == "fail"
    assert any(f["kind"] == "InvalidRead" for f in bad["findings"])
    assert Path(bad["log"]).parent.name == f"{name}-smoke-2"
    assert Path(cases[f"{name}-smoke"]["log"]).parent != Path(bad["log"]).parent
    assert f"runs/{name}-smoke-2/valgrind.log" in (out / "index.html").read_text()


def test_two_harness_runs_with_one_out_folder_keep_their_own_logs(toy, tmp_path) -> None:
    """Two invocations at once, the same --out and the same case name."""
    slow = scenario(tmp_path, "x/case.toml", ECHO.format(line="READ")
                    + '\n[[steps]]\ndo = "pause"\nseconds = 2\n')
    fast = scenario(tmp_path, "y/case.toml", ECHO.format(line="hello"))
    out = tmp_path / "out"
    first = start_harness("run", "--cmd", f"{toy} invalid-read {{port}}", "--scenario", str(slow),
                          "--out", str(out), "--json", "-")
    wait_for(lambda: matching(str(toy), servers_only=True), 60, "the first run's server")
    second = harness("run", "--cmd", f"{toy} invalid-read {{port}}", "--scenario", str(fast),
                     "--out", str(out), "--json", "-")
    out1, err1 = first.communicate(timeout=120)
    r1, r2 = json.loads(out1), json.loads(second.stdout)
    assert (first.returncode, r1["verdict"]) == (1, "memory-error"), err1
    assert (second.returncode, r2["verdict"]) == (0, "clean"), second.stderr
    assert Path(r1["log"]).parent != Path(r2["log"]).parent
    assert "Invalid read of size" in Path(r1["log"]).read_text()
    assert "Invalid read of size" not in Path(r2["log"]).read_text()


def baseline_for(toy: Path, tmp_path: Path) -> Path:
    good = scenario(tmp_path, "good/leaky.toml", ECHO.format(line="hello"))
    path = tmp_path / "baseline.toml"
    proc = harness("gate", "--cmd", f"{toy} leak-quit {{port}}", "--scenario", str(good),
                   "--write-baseline", str(path), "--out", str(tmp_path / "adopt"))
    assert proc.returncode == 1 and "Leak_DefinitelyLost" in path.read_text(), proc.stderr
    proc = harness("gate", "--cmd", f"{toy} leak-quit {{port}}", "--scenario", str(good),
                   "--baseline", str(path), "--out", str(tmp_path / "known"), "--json", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["cases"][0]["outcome"] == "known"
    return path


def test_a_baseline_never_hides_a_failed_step(toy, tmp_path) -> None:
    baseline = baseline_for(toy, tmp_path)
    wrong = scenario(tmp_path, "bad/leaky.toml", ECHO.format(line="hello").replace(
        'echo = true', 'text = "HELLO\\n"'))
    proc = harness("gate", "--cmd", f"{toy} leak-quit {{port}}", "--scenario", str(wrong),
                   "--baseline", str(baseline), "--out", str(tmp_path / "o"), "--json", "-")
    case = json.loads(proc.stdout)["cases"][0]
    assert proc.returncode == 3, proc.stderr
    assert case["outcome"] == "unresolved" and case["verdict"] == "leak"
    assert "step 3 (expect)" in case["message"] and "reply differs" in case["message"]


def test_a_baseline_never_hides_a_server_that_ended_before_the_scenario(toy, tmp_path) -> None:
    baseline = baseline_for(toy, tmp_path)
    # The server quits after its echo; the client waits for the close, then
    # lets it finish (the scenario's own pause) before the scenario ends.
    quits = scenario(tmp_path, "quit/leaky.toml", ECHO.format(line="QUIT").replace(
        'do = "close"', 'do = "wait_closed"') + '\n[[steps]]\ndo = "pause"\nseconds = 3\n')
    proc = harness("gate", "--cmd", f"{toy} leak-quit {{port}}", "--scenario", str(quits),
                   "--baseline", str(baseline), "--out", str(tmp_path / "o"), "--json", "-")
    case = json.loads(proc.stdout)["cases"][0]
    assert proc.returncode == 3, proc.stderr
    assert case["outcome"] == "unresolved"
    assert "the server exited with status 0 before the scenario ended" in case["message"]


@pytest.mark.parametrize("fixed", [False, True], ids=["port-placeholder", "fixed-port"])
def test_readiness_never_connects_to_the_server(toy, tmp_path, fixed) -> None:
    """One client in the scenario, one connection accepted: readiness was
    read from the kernel's tables, not probed."""
    args = ["--cmd", f"{toy} echo {{port}}"]
    if fixed:
        port = free_port()
        args = ["--cmd", f"{toy} echo {port}", "--port", str(port)]
    proc = harness("run", *args, "--out", str(tmp_path), "--json", "-")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "toy_server: 1 connections accepted" in Path(data["stderr"]).read_text()


def test_a_server_that_ignores_its_port_is_named_at_once(toy, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{toy} wrong-port {{port}}", "--out", str(tmp_path),
                   "--json", "-")
    data = json.loads(proc.stdout)
    assert (proc.returncode, data["verdict"]) == (1, "startup-failure")
    assert re.fullmatch(r"listening on 127\.0\.0\.1:\d+, not on \d+: does it ignore the port "
                        r"argument\?", data["reasons"][0]), data["reasons"]
    # Far sooner than the 30 s readiness deadline it would otherwise wait out.
    assert data["seconds"] < 15, data["seconds"]
    assert_nothing_left(str(toy))


# A server whose first `takes` starts each tell the test their port and wait
# until the test has taken it, the way a client's outgoing connection takes
# an ephemeral port between the harness's check and the server's bind().
PORT_THIEF = """\
import os, sys, time
state, port, toy, takes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start = len(os.listdir(state)) // 2 + 1
if start <= takes:
    with open(os.path.join(state, f"port.{start}.tmp"), "w") as f:
        f.write(port)
    os.rename(os.path.join(state, f"port.{start}.tmp"), os.path.join(state, f"port.{start}"))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(state, f"go.{start}")) and time.monotonic() < deadline:
        time.sleep(0.01)
os.execv(toy, [toy, "echo", port])
"""


def take_ports(state: Path, takes: int, held: list) -> None:
    """Take each port the server announces, with a real client connection
    bound to it, then let the server go on (and fail to bind)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        for start in range(1, takes + 1):
            port = int(wait_for(lambda: (state / f"port.{start}").exists()
                                and (state / f"port.{start}").read_text(), 60, f"start {start}"))
            client = socket.socket()
            client.bind(("127.0.0.1", port))
            client.connect(listener.getsockname())
            held.append(client)
            (state / f"go.{start}").touch()


@pytest.mark.parametrize("takes", [1, 3])
def test_a_port_taken_before_the_server_binds_it_is_the_harness_s_to_retry(
        toy, tmp_path, takes) -> None:
    """The harness chose the port; another process took it before the server
    bound it.  That is not the server's startup failure: start again on
    another port, up to three starts, and say so."""
    thief, state = tmp_path / "thief.py", tmp_path / "state"
    thief.write_text(PORT_THIEF)
    state.mkdir()
    run = start_harness("run", "--cmd", f"{PYTHON} {thief} {state} {{port}} {toy} {takes}",
                        "--detector", "asan", "--out", str(tmp_path / "o"), "--json", "-")
    held: list[socket.socket] = []
    try:
        take_ports(state, takes, held)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        for client in held:
            client.close()
    data = json.loads(out)
    retried = [n for n in data["notes"] if "was taken by another process" in n]
    if takes == 1:
        assert (run.returncode, data["verdict"]) == (0, "clean"), err
        assert len(retried) == 1 and data["port"] != int((state / "port.1").read_text())
        assert "toy_server: 1 connections accepted" in Path(data["stderr"]).read_text()
    else:   # every start lost its port: the third one's failure is the verdict
        assert (run.returncode, data["verdict"]) == (1, "startup-failure"), err
        assert data["reasons"][0] == "exited before it was listening"
        assert len(retried) == 2
        assert "Address already in use" in Path(data["stderr"]).read_text()
    assert_nothing_left(str(toy))


def test_ports_for_the_placeholder_are_drawn_outside_the_ephemeral_range() -> None:
    """Outgoing connections get their local port from the ephemeral range;
    a server's port drawn from there can be taken by any client meanwhile."""
    low, high = ephemeral_range()
    ports = {free_port() for _ in range(200)}
    assert len(ports) > 150
    assert not [p for p in ports if low <= p <= high], (low, high)


def test_cases_sharing_a_fixed_port_never_run_at_once(toy, tmp_path) -> None:
    port = free_port()
    scenarios = [scenario(tmp_path, f"s{i}/p{i}.toml", ECHO.format(line=f"case {i}")
                          + '\n[[steps]]\ndo = "pause"\nseconds = 0.5\n') for i in range(3)]
    args = [a for s in scenarios for a in ("--scenario", str(s))]
    proc = harness("gate", "--cmd", f"{toy} echo {port}", "--port", str(port), "-j", "2", *args,
                   "--out", str(tmp_path / "o"), "--json", "-")
    cases = json.loads(proc.stdout)["cases"]
    assert proc.returncode == 0, proc.stderr
    assert [c["verdict"] for c in cases] == ["clean"] * 3 and {c["port"] for c in cases} == {port}
    spans = sorted((c["started_at"], c["started_at"] + c["seconds"]) for c in cases)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), spans
    for c in cases:     # each server accepted its own case's single client
        assert "1 connections accepted" in Path(c["stderr"]).read_text()


def test_a_fixed_port_already_taken_is_refused(toy, tmp_path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = harness("run", "--cmd", f"{toy} echo {port}", "--port", str(port),
                       "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"port {port} is already taken" in proc.stderr and "Traceback" not in proc.stderr
    assert_nothing_left(str(toy))


# -- every process ends with the harness ----------------------------------------------
KEEPER_PATHS = pytest.mark.parametrize("spawn", ["native", "setpriv", "fork"])


def keeper_env(spawn: str) -> dict:
    """native: keeper.c, spawned by the harness; setpriv and fork: the
    Python keeper, from the fork server, starting the server either way."""
    return dict(os.environ, LEAK_HARNESS_KEEPER="native" if spawn == "native" else "python",
                LEAK_HARNESS_KEEPER_FORK="1" if spawn == "fork" else "0")


@KEEPER_PATHS
def test_a_daemon_is_caught_and_refused(toy, tmp_path, spawn) -> None:
    proc = harness("run", "--cmd", f"{toy} daemon {{port}}", "--out", str(tmp_path), "--json", "-",
                   env=keeper_env(spawn))
    data = json.loads(proc.stdout)
    assert (proc.returncode, data["verdict"]) == (3, "unresolved"), data["reasons"]
    assert any("the server daemonized" in r and "daemon off;" in r for r in data["reasons"])
    assert_nothing_left(str(toy))


def test_a_daemon_followed_is_judged_with_every_process(toy, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{toy} daemon-leak {{port}}", "--follow-children",
                   "--out", str(tmp_path), "--json", "-")
    data = json.loads(proc.stdout)
    assert (proc.returncode, data["verdict"]) == (1, "leak"), data["reasons"]
    assert data["processes"] == 3      # the first process, the middle one, the daemon
    leaks = [f for f in data["findings"] if f["kind"] == "Leak_DefinitelyLost"]
    assert leaks and leaks[0]["bytes"] == 15      # the daemon's one block
    assert any("(pid " in r for r in data["reasons"])
    assert len(list(Path(data["log"]).parent.glob("valgrind.*.log"))) == 3
    assert_nothing_left(str(toy))


@KEEPER_PATHS
def test_the_harness_killed_takes_its_servers_with_it(toy, tmp_path, spawn) -> None:
    slow = scenario(tmp_path, "slow.toml", SLOW)
    proc = start_harness("run", "--cmd", f"{toy} fork {{port}}", "--scenario", str(slow),
                         "--out", str(tmp_path), env=keeper_env(spawn))
    seen = wait_for(lambda: len(matching(str(toy), True)) >= 2 and matching(str(toy), True), 60,
                    "the server and its child")
    proc.kill()
    proc.communicate(timeout=30)
    assert_nothing_left(str(toy), seen)
    assert not vgdb_fifos(seen)


def _keeper_of(harness_pid: int) -> int | None:
    """The keeper of the harness's server: the harness's child (native) or
    its fork server's."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            parents[int(entry.name)] = (comm, int(stat[stat.rfind(b")") + 2:].split()[1]))
    for pid, (comm, ppid) in parents.items():
        if comm == "leak-keeper" and (ppid == harness_pid or
                                      parents.get(ppid) == ("leak-forkserver", harness_pid)):
            return pid
    return None


def test_setpriv_is_known_by_its_usage_text(tmp_path) -> None:
    """The setpriv path needs util-linux 2.33+ (--pdeathsig): told from the
    program's own usage text, read, not run."""
    from harness.drive import keeper
    assert keeper.sets_pdeathsig("/usr/bin/setpriv")    # Debian 12: util-linux 2.38
    assert not keeper.sets_pdeathsig("/bin/true")
    assert not keeper.sets_pdeathsig(str(tmp_path / "missing"))


@KEEPER_PATHS
def test_the_keeper_killed_takes_the_server_with_it(toy, tmp_path, spawn) -> None:
    """The server's parent-death signal: SIGKILL to the keeper alone (the
    harness lives on) leaves no server behind, and the harness ends the run."""
    slow = scenario(tmp_path, "slow.toml", SLOW)
    proc = start_harness("run", "--cmd", f"{toy} echo {{port}}", "--scenario", str(slow),
                         "--out", str(tmp_path), "--json", "-", env=keeper_env(spawn))
    seen = up(tmp_path, toy)
    keeper = wait_for(lambda: _keeper_of(proc.pid), 30, "the keeper")
    os.kill(keeper, signal.SIGKILL)
    assert_nothing_left(str(toy), seen)
    out, err = proc.communicate(timeout=60)
    assert json.loads(out)["verdict"] != "clean", err     # a run cut short is no clean run


@KEEPER_PATHS
def test_the_server_starts_with_default_signal_dispositions(tmp_path, spawn) -> None:
    """A job started with '&' ignores SIGINT, and the keeper ignores SIGTERM,
    SIGHUP and more: the server inherits none of it, nor a blocked signal.
    (Natively, and a program that sets no handler: valgrind would hide it.)"""
    token = f"{40 + uuid.uuid4().int % 1000 / 1000:.3f}"
    proc = start_harness("run", "--cmd", f"sh -c 'exec sleep {token}' {{port}}", "--detector",
                         "asan", "--out", str(tmp_path), ignore_sigint=True, env=keeper_env(spawn))
    try:
        pid = wait_for(lambda: execed("sleep", token), 30, "the server")
        fields = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        ignorable = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP,
                     signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE)
        mask = sum(1 << (int(sig) - 1) for sig in ignorable)
        assert int(fields["SigIgn"], 16) & mask == 0, fields["SigIgn"]
        assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert_nothing_left(f"sleep {token}")


# A process that runs several servers, natively.  Each server writes the
# /proc/PID/stat line of its parent (its keeper: setpriv execs the server in
# place) before it starts; after each case the process prints the verdict,
# that line's pid, name and parent, the PID of its fork server (0: none) and
# its session.  Then it waits for a line on stdin, or is killed.
FORK_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from harness.drive import launch
from harness.drive.launch import Target
from harness.drive.scenario import load_scenario
from harness.options import RunOptions
from harness.runner import run_case
target = Target(argv=["sh", "-c", "cat /proc/$PPID/stat; exec {toy} echo {{port}}"],
                port_mode="substitute")
for i in range({cases}):
    if i == {kill_before}:
        os.kill(launch._fork_server.pid(), 9)
    run = run_case(target, load_scenario(Path({scenario!r})), Path({out!r}) / str(i),
                   RunOptions(detector="asan"))
    stat = (run.run_dir / "stdout.txt").read_text().splitlines()[0]
    pid, rest = stat.split(" (", 1)
    name, fields = rest.rsplit(") ", 1)
    print(run.verdict.label, pid, name, fields.split()[1], launch._fork_server.pid() or 0,
          fields.split()[3], flush=True)
sys.stdin.readline()
"""


def several_servers(toy: Path, tmp_path: Path, cases: int, kill_before: int = -1,
                    spawn: str = "setpriv"):
    echo = scenario(tmp_path, "echo.toml", ECHO.replace("{line}", "hello"))
    code = FORK_SCRIPT.format(root=str(ROOT), toy=str(toy), cases=cases, scenario=str(echo),
                              out=str(tmp_path / "runs"), kill_before=kill_before)
    proc = subprocess.Popen([PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=keeper_env(spawn))
    rows = []
    for _ in range(cases):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the script stopped: {proc.communicate(timeout=30)[1]}")
        verdict, keeper, name, parent, fork_server, session = line.split()
        rows.append((verdict, int(keeper), name, int(parent), int(fork_server), int(session)))
    return proc, rows


def gone(pid: int) -> bool:
    return stat_of(pid) is None


def test_one_fork_server_forks_every_keeper_and_ends_with_the_harness(toy, tmp_path) -> None:
    """The harness forks once: a fork server, in a session of its own, whose
    children are the keepers (each server's parent, a new one per server).
    When the harness exits, the fork server exits too."""
    proc, rows = several_servers(toy, tmp_path, 4)
    try:
        assert [r[0] for r in rows] == ["clean"] * 4
        assert {r[2] for r in rows} == {"leak-keeper"}
        assert len({r[1] for r in rows}) == 4
        fork_server = rows[0][4]
        assert {r[3] for r in rows} == {r[4] for r in rows} == {fork_server}
        assert Path(f"/proc/{fork_server}/comm").read_text().strip() == "leak-forkserver"
        fields = stat_fields(fork_server)
        assert int(fields[1]) == proc.pid and int(fields[3]) == fork_server  # its own session
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children == [str(fork_server)]      # nothing else, the keepers reaped
        proc.communicate("\n", timeout=60)
        assert proc.returncode == 0
        wait_for(lambda: gone(fork_server), 10, "the fork server's exit with the harness")
    finally:
        proc.kill()
        proc.communicate()


def test_the_harness_spawns_each_native_keeper_and_reaps_it(toy, tmp_path) -> None:
    """Natively, no fork server: each keeper is the harness's own child, in
    a session of its own, and reaped when its server ends (no zombie)."""
    proc, rows = several_servers(toy, tmp_path, 3, spawn="native")
    try:
        assert [r[0] for r in rows] == ["clean"] * 3
        assert {r[2] for r in rows} == {"leak-keeper"}
        assert len({r[1] for r in rows}) == 3
        assert {r[3] for r in rows} == {proc.pid} and {r[4] for r in rows} == {0}
        assert all(r[5] == r[1] for r in rows)     # each its own session's leader
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children == []
        proc.communicate("\n", timeout=60)
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.communicate()


def test_the_native_keeper_is_built_once_into_the_cache(toy, tmp_path) -> None:
    """keeper.c is compiled at a machine's first run, into the user's cache
    folder, under a name that changes with its source; the next run uses it.
    A file there that cannot be run costs a run nothing."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), LEAK_HARNESS_KEEPER="native",
               LEAK_HARNESS_KEEPER_FORK="0")
    for i in range(2):
        out = harness("run", "--cmd", f"{toy} echo {{port}}", "--detector", "asan", "--out",
                      str(tmp_path / str(i)), "--json", "-", env=env)
        assert json.loads(out.stdout)["verdict"] == "clean", out.stderr
        folders = list((tmp_path / "cache" / "leak-harness").iterdir())
        assert len(folders) == 1 and re.fullmatch(r"keeper-\w+-[0-9a-f]{8}", folders[0].name)
        assert [p.name for p in folders[0].iterdir()] == ["leak-keeper"]
        built = folders[0] / "leak-keeper"
        assert os.access(built, os.X_OK)
        if i == 0:
            first = built.stat().st_mtime_ns
    assert built.stat().st_mtime_ns == first
    # One that cannot be run (here: not a program): the Python keeper serves.
    built.write_bytes(b"not a program")
    out = harness("run", "--cmd", f"{toy} echo {{port}}", "--detector", "asan", "--out",
                  str(tmp_path / "2"), "--json", "-", env=env)
    assert json.loads(out.stdout)["verdict"] == "clean", out.stderr


def test_without_a_cache_folder_the_python_keeper_serves(toy, tmp_path) -> None:
    """Where keeper.c cannot be built (here: the cache folder is a file),
    the Python keeper, from the fork server, keeps the server all the same."""
    (tmp_path / "cache").write_text("not a folder")
    slow = scenario(tmp_path, "slow.toml", SLOW)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), LEAK_HARNESS_KEEPER="native",
               LEAK_HARNESS_KEEPER_FORK="0")
    proc = start_harness("run", "--cmd", f"{toy} echo {{port}}", "--scenario", str(slow),
                         "--out", str(tmp_path), "--json", "-", env=env)
    try:
        seen = up(tmp_path, toy)
        keeper = wait_for(lambda: _keeper_of(proc.pid), 30, "the keeper")
        parent = int(stat_fields(keeper)[1])
        assert Path(f"/proc/{parent}/comm").read_text().strip() == "leak-forkserver"
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert_nothing_left(str(toy), seen)


@KEEPER_PATHS
def test_the_server_inherits_no_descriptor_of_the_harness(tmp_path, spawn) -> None:
    """A descriptor the harness was given open (a make jobserver's pipe)
    never reaches the server: it has its stdin, stdout and stderr only."""
    token = f"{40 + uuid.uuid4().int % 1000 / 1000:.3f}"
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        proc = start_harness("run", "--cmd", f"sleep {token} {{port}}", "--detector", "asan",
                             "--out", str(tmp_path), env=keeper_env(spawn), pass_fds=(w,))
    finally:
        os.close(w)
        os.close(r)
    try:
        pid = wait_for(lambda: execed("sleep", token), 30, "the server")
        wait_for(lambda: asleep(pid), 30, "the server's sleep")
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert sorted(fds) == ["0", "1", "2"], (fds, Path(f"/proc/{pid}/comm").read_text())
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert_nothing_left(f"sleep {token}")


def test_the_fork_server_ends_when_the_harness_is_killed(toy, tmp_path) -> None:
    proc, rows = several_servers(toy, tmp_path, 2)
    fork_server = rows[-1][4]
    assert not gone(fork_server)
    proc.kill()
    proc.communicate(timeout=30)
    wait_for(lambda: gone(fork_server), 10, "the fork server's exit after SIGKILL to the harness")


def test_a_dead_fork_server_is_replaced(toy, tmp_path) -> None:
    """Someone killed the fork server: the next server gets a keeper from a
    new one, and the run is what it would have been."""
    proc, rows = several_servers(toy, tmp_path, 4, kill_before=2)
    try:
        assert [r[0] for r in rows] == ["clean"] * 4
        killed = rows[1][4]
        assert rows[2][4] == rows[3][4] != killed and gone(killed)
        assert rows[2][3] == rows[2][4]
    finally:
        proc.kill()
        proc.communicate()


def test_sigint_ignored_at_start_still_stops_the_harness(toy, tmp_path) -> None:
    """(trap '' INT; harness ...) &: the job inherits SIGINT ignored."""
    slow = scenario(tmp_path, "slow.toml", SLOW)
    proc = start_harness("run", "--cmd", f"{toy} echo {{port}}", "--scenario", str(slow),
                         "--out", str(tmp_path), ignore_sigint=True)
    seen = up(tmp_path, toy)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert_nothing_left(str(toy), seen)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_parallel_gate_stops_promptly_on_a_signal(toy, tmp_path, sig) -> None:
    slow = scenario(tmp_path, "slow.toml", SLOW)
    proc = start_harness("gate", "--cmd", f"{toy} echo {{port}}", "-j", "2",
                         *[a for _ in range(6) for a in ("--scenario", str(slow))],
                         "--out", str(tmp_path / "o"))
    seen = wait_for(lambda: len(matching(str(toy), True)) >= 2 and matching(str(toy), True), 60,
                    "two servers")
    signalled = time.monotonic()
    proc.send_signal(sig)       # to the parent only, as a CI runner's cancel does
    out, err = proc.communicate(timeout=60)
    # The queue left would take over 20 s (4 cases of 8 s, 2 at a time).
    assert time.monotonic() - signalled < 10
    assert proc.returncode == 130, out + err
    assert_nothing_left(str(toy), seen)


def test_sigterm_at_any_moment_of_a_start_leaves_nothing(toy, tmp_path) -> None:
    """The window between starting a server and registering it is closed:
    SIGTERM at 12 moments through the start."""
    for i in range(12):
        proc = start_harness("run", "--cmd", f"{toy} echo {{port}}", "--out", str(tmp_path / str(i)))
        time.sleep(0.05 * i)    # a different moment of the start each time, on purpose
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        # -15: the signal came before the interpreter had installed its handlers
        assert proc.returncode in (0, 130, -signal.SIGTERM), (i, proc.returncode)
        assert_nothing_left(str(toy))


USER_TEST = '''
import threading

def test_blocks(valgrind_server):
    valgrind_server("{toy} echo {{port}}")
    threading.Event().wait(120)
'''


def test_sigterm_to_pytest_ends_the_fixture_servers(toy, tmp_path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST.format(toy=toy))
    proc = subprocess.Popen([PYTHON, "-m", "pytest", "-p", "harness.pytest_plugin", "-p",
                             "no:cacheprovider", "test_user.py"], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = up(tmp_path, toy)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert_nothing_left(str(toy), seen)


def test_runs_leave_no_fifo_outside_their_folder(toy, tmp_path) -> None:
    """Every valgrind run makes vgdb FIFOs; a hang even talks to them."""
    proc = harness("run", "--cmd", f"{toy} ignore-term {{port}}", "--out", str(tmp_path),
                   "--json", "-", env={"HARNESS_TIMEOUT_MULTIPLIER": "0.1"})
    data = json.loads(proc.stdout)
    assert data["verdict"] == "hang" and data["hang"], data["reasons"]
    pids = [int(m) for m in re.findall(r"^==(\d+)==", Path(data["log"]).read_text(), re.M)]
    assert pids and not vgdb_fifos(set(pids))
    assert not list(Path(data["log"]).parent.glob("vgdb-pipe*"))


# -- the command line's contract ---------------------------------------------------------
def check_usage_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


def test_out_that_is_a_file(tmp_path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    check_usage_error(harness("run", "echo", "--out", str(target)), "--out", str(target))
    check_usage_error(harness("gate", "--cmd", f"{TOY} echo {{port}}", "--out", str(target)),
                      str(target))


@pytest.mark.parametrize("option", ["--out", "--json", "--sarif", "--write-baseline"])
def test_unwritable_outputs(tmp_path, option) -> None:
    dest = "/dev/null/report" if option == "--out" else "/dev/null/out.file"
    command = "run" if option in ("--out", "--json") else "gate"
    args = ["echo"] if command == "run" else ["--cmd", f"{TOY} echo {{port}}"]
    if option != "--out":
        args += ["--out", str(tmp_path)]
    check_usage_error(harness(command, *args, option, dest), option, dest)


def test_the_run_folder_deleted_during_the_run(toy, tmp_path) -> None:
    slow = scenario(tmp_path, "slowish.toml", SLOW.replace("seconds = 8", "seconds = 3"))
    out = tmp_path / "out"
    proc = start_harness("run", "--cmd", f"{toy} echo {{port}}", "--scenario", str(slow),
                         "--out", str(out))
    up(out, toy)
    shutil.rmtree(out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    assert "verdict:" in stdout                         # the verdict is still printed
    assert "the run folder was deleted during the run" in stderr
    assert "Traceback" not in stderr


def test_a_program_name_of_300_characters(tmp_path) -> None:
    name = "/tmp/" + "x" * 300
    check_usage_error(harness("run", "--cmd", f"{name} {{port}}", "--out", str(tmp_path)),
                      "cannot start", "File name too long")


@pytest.mark.parametrize("kind", ["scenario", "baseline"])
def test_input_nested_100000_levels_deep(tmp_path, kind) -> None:
    path = tmp_path / f"deep-{kind}.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    if kind == "scenario":
        proc = harness("run", "echo", "--scenario", str(path), "--out", str(tmp_path))
    else:
        proc = harness("gate", "--cmd", f"{TOY} echo {{port}}", "--baseline", str(path),
                       "--out", str(tmp_path))
    check_usage_error(proc, str(path), "nested too deeply")


def test_a_send_of_absurd_size_is_refused_with_the_limit(tmp_path) -> None:
    path = scenario(tmp_path, "huge.toml", '[[steps]]\ndo = "open"\nconn = "c"\n\n[[steps]]\n'
                    'do = "send"\nconn = "c"\nsize = 268435456\nrepeat = 1000000\n')
    check_usage_error(harness("run", "echo", "--scenario", str(path), "--out", str(tmp_path)),
                      str(path), "step 2 (send)", "limit of 4 GiB")


def test_a_large_send_is_streamed_not_built(build_dir, tmp_path) -> None:
    """512 MiB natively to the echo server: the harness never holds it."""
    path = scenario(tmp_path, "big.toml", '[[steps]]\ndo = "open"\nconn = "c"\n\n[[steps]]\n'
                    'do = "send"\nconn = "c"\nsize = 268435456\nrepeat = 2\ntimeout = 120\n'
                    'may_fail = true\n')
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    proc = subprocess.run([PYTHON, "-c", wrapper, PYTHON, "-m", "harness", "run", "echo",
                           "--native", "--scenario", str(path), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    assert peak_kb < 200 * 1024, f"peak RSS {peak_kb} kB"


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_parse_of_a_device_or_a_fifo_ends(tmp_path, kind) -> None:
    if kind == "fifo":
        path = tmp_path / "log.fifo"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    proc = harness("parse", str(path), timeout=120)
    check_usage_error(proc, str(path))


@pytest.mark.parametrize("ending", [b"\n==1== ERROR SUMMARY: 0 errors\n", b""],
                         ids=["ended", "never-ended"])
def test_a_line_longer_than_a_mib_is_refused_with_where_it_starts(tmp_path, ending) -> None:
    """Whether the line ends in the file or never does, the refusal names
    the byte it starts at (after 64 KB chunks that were parsed)."""
    text = (ROOT / "tests" / "inputs" / "leaks.log").read_bytes() * 40
    path = tmp_path / "long-line.log"
    path.write_bytes(text + b"==1== " + b"x" * (1 << 20) + ending)
    proc = harness("parse", str(path))
    check_usage_error(proc, str(path), f"at byte {len(text):,}", "not a valgrind log")
    assert ("a line of 1,048,582 bytes" in proc.stderr) == bool(ending), proc.stderr


def test_a_number_of_5000_digits_in_a_log(tmp_path) -> None:
    text = (ROOT / "tests" / "inputs" / "leaks.log").read_text()
    path = tmp_path / "digits.log"
    path.write_text(re.sub(r"ERROR SUMMARY: \d+ errors", "ERROR SUMMARY: " + "9" * 5000
                           + " errors", text))
    check_usage_error(harness("parse", str(path)), str(path))


def test_a_scenario_file_name_that_is_not_utf8(tmp_path) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/sc\xff\xfe.toml"
    with open(raw, "w") as f:
        f.write(ECHO.format(line="hi"))
    proc = subprocess.run([os.fsencode(PYTHON), b"-m", b"harness", b"gate", b"--cmd",
                           os.fsencode(f"{TOY} echo {{port}}"), b"--scenario", raw, b"--out",
                           os.fsencode(str(tmp_path / "o"))], cwd=ROOT, capture_output=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.decode(errors="replace")
    assert "not valid UTF-8" in err and "Traceback" not in err


def test_json_to_stdout_is_the_only_thing_there(build_dir, tmp_path) -> None:
    proc = harness("run", "echo", "--json", "-", "--out", str(tmp_path))
    assert json.loads(proc.stdout)["verdict"] == "clean"
    assert "verdict: clean" in proc.stderr


def test_a_gigabyte_of_output_before_listening_keeps_memory_bounded(toy, tmp_path) -> None:
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
               "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    proc = subprocess.run([PYTHON, "-c", wrapper, PYTHON, "-m", "harness", "run", "--native",
                           "--cmd", f"{toy} flood-exit {{port}}", "--out", str(tmp_path),
                           "--json", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    code, peak_kb = (int(x) for x in proc.stdout.split())
    data = json.loads((tmp_path / "r.json").read_text())
    assert (code, data["verdict"]) == (1, "startup-failure")
    assert peak_kb < 200 * 1024, f"peak RSS {peak_kb} kB"
    assert Path(data["stdout"]).stat().st_size == 64 << 20
    assert any("1,073,741,824 bytes" in n for n in data["notes"]), data["notes"]


@pytest.mark.parametrize("args,words", [
    (["-j", "0"], ["-j", "1 to 64"]),
    (["-j", "-1"], ["-j", "1 to 64"]),
    (["--stop-signal", "SIGKILL"], ["SIGKILL", "graceful"]),
    (["--stop-signal", "SIGSTOP"], ["SIGSTOP", "graceful"]),
])
def test_bad_values_are_refused(tmp_path, args, words) -> None:
    check_usage_error(harness("gate", "--cmd", f"{TOY} echo {{port}}", *args,
                              "--out", str(tmp_path)), *words)


def test_an_absurd_repeat_is_refused(tmp_path) -> None:
    check_usage_error(harness("run", "echo", "--repeat", "100000000", "--out", str(tmp_path)),
                      "--repeat", "1 to 1000")


def test_summary_md_escapes_what_it_quotes(toy, tmp_path) -> None:
    path = scenario(tmp_path, "a|b<i>.toml", ECHO.format(line="READ"))
    proc = harness("gate", "--cmd", f"{toy} invalid-read {{port}}", "--scenario", str(path),
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    md = (tmp_path / "o" / "summary.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| ") and "a\\|b" in line)
    assert "a\\|b&lt;i&gt;" in row and "<i>" not in md
    assert row.count(" | ") == 5      # six cells: the id's bar does not split the row


def test_server_output_on_the_terminal_shows_control_characters(toy, tmp_path) -> None:
    proc = harness("run", "--cmd", f"{toy} escapes {{port}}", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b[31mred\\x1b[0m \\x07 bell" in proc.stdout
