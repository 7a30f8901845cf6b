"""A pytest plugin: your own server under valgrind, driven by your own test.

Enable it with `-p harness.pytest_plugin`, or `pytest_plugins =
["harness.pytest_plugin"]` in a conftest.py.  The `valgrind_server` fixture
starts a server command under memcheck and hands the test its port; when the
test's body has run, the server is stopped and judged, and a verdict other
than clean fails the test itself with the finding (kind, bytes, top frames):

    def test_quit_command(valgrind_server):
        server = valgrind_server("./build/myserver --port {port}")
        with socket.create_connection((server.host, server.port)) as s:
            s.sendall(b"QUIT\\r\\n")

`{port}` is replaced by a free port; `port=N` names a fixed one instead.
Options (keyword arguments): leak_kinds ("definite,indirect,possible" by
default, or "strict", "all"), stop_signal ("SIGTERM"), track_origins,
source_dirs (where the sources are, for the server's own frames).
"""
from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .drive.launch import Server, Target, ValgrindOptions
from .drive.scenario import parse_signal
from .judge.frames import SourceIndex, best_stack, own_frames
from .judge.verdict import Judgement, LeakPolicy, judge
from .model import Verdict
from .runner import read_log
from .timeouts import Deadlines

SERVERS_KEY = pytest.StashKey[list]()


@dataclass
class ServerUnderTest:
    host: str
    port: int
    log_path: Path
    stderr_path: Path
    server: Server
    policy: LeakPolicy
    stop_signal: int
    sources: list[Path]
    judgement: Judgement | None = None

    def stop(self) -> Judgement:
        """Stop and judge now (idempotent); the plugin does it after the test."""
        if self.judgement is None:
            exit_info = self.server.stop(self.stop_signal, Deadlines().scaled().stop)
            log, error = read_log(self.log_path)
            self.judgement = judge(log, exit_info, self.policy, parse_error=error)
        return self.judgement

    def failure_text(self) -> str:
        j = self.stop()
        index = SourceIndex.scan(self.sources)
        lines = [f"{' '.join(self.server.target.argv)} under valgrind: {j.verdict.label}"]
        lines += [f"  {r}" for r in j.reasons]
        shown = set()
        for finding in j.findings:
            if finding.kind in shown:
                continue
            shown.add(finding.kind)
            amount = f" ({finding.bytes:,} bytes in {finding.blocks} blocks)" if finding.bytes else ""
            lines.append(f"  {finding.kind}{amount}: {finding.what}")
            frames = own_frames(best_stack(finding), index, 3) or best_stack(finding)[:3]
            lines += [f"      at {f.where()}" for f in frames]
        lines.append(f"  log: {self.log_path}")
        return "\n".join(lines)


@pytest.fixture
def valgrind_server(request: pytest.FixtureRequest):
    """Factory: valgrind_server(cmd, **options) -> ServerUnderTest."""
    started: list[ServerUnderTest] = request.node.stash.setdefault(SERVERS_KEY, [])
    workdir = Path(tempfile.mkdtemp(prefix="valgrind-server-"))

    def start(cmd: str | list[str], port: int | None = None, leak_kinds: str = "definite,indirect,possible",
              stop_signal: str = "SIGTERM", track_origins: bool = False,
              source_dirs: list[str] | None = None, ready_timeout: float | None = None) -> ServerUnderTest:
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        mode = "fixed" if port is not None else "substitute"
        target = Target(argv=argv, port_mode=mode, port=port)
        server = Server(target, workdir / f"server-{len(started) + 1}",
                        ValgrindOptions(track_origins=track_origins))
        server.start()
        sut = ServerUnderTest(host=target.host, port=0, log_path=server.log_path,
                              stderr_path=server.stderr_path, server=server,
                              policy=LeakPolicy.parse(leak_kinds), stop_signal=parse_signal(stop_signal),
                              sources=[Path(d) for d in source_dirs or []] or
                              [Path(argv[0]).resolve().parent, Path.cwd()])
        started.append(sut)
        if not server.wait_ready(ready_timeout or Deadlines().scaled().ready):
            server.stop(sut.stop_signal, 5)
            pytest.fail(f"{' '.join(argv)} did not start listening under valgrind:\n"
                        + server.output_tail(), pytrace=False)
        sut.port = server.port or 0
        return sut

    yield start
    for sut in started:
        sut.server.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    servers = item.stash.get(SERVERS_KEY, [])
    bad = [s for s in servers if s.stop().verdict is not Verdict.CLEAN]
    if bad and report.passed:
        report.outcome = "failed"
        report.longrepr = "\n\n".join(s.failure_text() for s in bad)
    elif bad:
        report.sections.append(("valgrind", "\n\n".join(s.failure_text() for s in bad)))
