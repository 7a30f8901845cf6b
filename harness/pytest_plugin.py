"""A pytest plugin: your own server under valgrind, driven by your own test.

Installed with the package it is active by itself (the `pytest11` entry
point); from a checkout, enable it with `-p harness.pytest_plugin` or
`pytest_plugins = ["harness.pytest_plugin"]` in a conftest.py.  The
`valgrind_server` fixture starts a server command under memcheck and hands
the test its port; when the test's body has run, the server is stopped and
judged, and a verdict other than clean fails the test itself with the
finding (kind, bytes, top frames):

    def test_quit_command(valgrind_server):
        server = valgrind_server("./build/myserver --port {port}")
        with socket.create_connection((server.host, server.port)) as s:
            s.sendall(b"QUIT\\r\\n")

`{port}` is replaced by a free port; `port=N` names a fixed one instead.
The keyword arguments are the run options of `harness run` and `gate`:
leak_kinds ("definite,indirect" by default, or "strict", "all"),
stop_signal ("SIGTERM"), track_origins, suppressions (files),
valgrind_args, cwd, env ({"NAME": "VALUE"}), config_template
(["SRC[:NAME]"]; {config} in the command is its path), detector,
follow_children, and source_dirs (where the sources are, for the server's
own frames).  Session-wide defaults: --valgrind-leak-kinds,
--valgrind-suppressions FILE and --valgrind-arg ARG on pytest's command line.

Each server's files (valgrind.log, stdout.txt, stderr.txt) are in a folder
under pytest's own temporary directory.  Every process a server starts ends
with the test, and with pytest itself, however pytest ends.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from .drive.launch import Server, Target
from .judge.frames import Program, annotate_log, best_stack, shown_frames
from .judge.verdict import Judgement, judge
from .model import Verdict
from .options import USER_LEAK_KINDS, RunOptions, make_options
from .runner import detector_setup, program_of, read_detector_log
from .timeouts import Deadlines

SERVERS_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("valgrind_server", "servers under valgrind (leak-harness)")
    group.addoption("--valgrind-leak-kinds", default=None,
                    help=f"leak kinds that fail a test (default {USER_LEAK_KINDS})")
    group.addoption("--valgrind-suppressions", action="append", default=[], metavar="FILE",
                    help="a valgrind suppressions file for every valgrind_server (repeatable)")
    group.addoption("--valgrind-arg", action="append", default=[], metavar="ARG",
                    help="an option passed to valgrind for every valgrind_server (repeatable)")


@dataclass
class ServerUnderTest:
    host: str
    port: int
    log_path: Path
    stderr_path: Path
    run_dir: Path
    server: Server
    options: RunOptions
    stop_signal: int
    judgement: Judgement | None = None
    program: Program | None = None

    def stop(self) -> Judgement:
        """Stop and judge now (idempotent); the plugin does it after the test."""
        if self.judgement is None:
            exit_info = self.server.stop(self.stop_signal, Deadlines().scaled().stop)
            log, error = read_detector_log(self.options, self.server.valgrind, self.server)
            annotate_log(log, self.server.maps)
            self.program = program_of(self.server.target, log, self.options)
            self.judgement = judge(log, exit_info, self.options.leak_policy, parse_error=error,
                                   daemonized=self.server.daemonized
                                   and not self.options.follow_children)
        return self.judgement

    def failure_text(self) -> str:
        j = self.stop()
        index = self.program
        tool = "valgrind" if self.options.detector == "memcheck" else self.options.detector
        lines = [f"{' '.join(self.server.target.argv)} under {tool}: {j.verdict.label}"]
        lines += [f"  {r}" for r in j.reasons]
        shown = set()
        for finding in j.findings:
            if finding.kind in shown:
                continue
            shown.add(finding.kind)
            amount = f" ({finding.bytes:,} bytes in {finding.blocks} blocks)" if finding.bytes else ""
            lines.append(f"  {finding.kind}{amount}: {finding.what}")
            frames = shown_frames(best_stack(finding), index, 3)
            lines += [f"      at {f.where()}" for f in frames]
        lines.append(f"  log: {self.log_path}")
        return "\n".join(lines)


@pytest.fixture
def valgrind_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Factory: valgrind_server(cmd, **options) -> ServerUnderTest."""
    started: list[ServerUnderTest] = request.node.stash.setdefault(SERVERS_KEY, [])
    config = request.config

    def start(cmd: str | list[str], port: int | None = None, leak_kinds: str | None = None,
              stop_signal: str = "SIGTERM", track_origins: bool = False,
              suppressions: list[str] | None = None, valgrind_args: list[str] | None = None,
              cwd: str | None = None, env: dict[str, str] | None = None,
              config_template: list[str] | None = None, detector: str = "memcheck",
              follow_children: bool = False, source_dirs: list[str] | None = None,
              ready_timeout: float | None = None) -> ServerUnderTest:
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        options = make_options(
            detector=detector, leak_kinds=leak_kinds or config.getoption("valgrind_leak_kinds"),
            default_leak_kinds=USER_LEAK_KINDS, stop_signal=stop_signal,
            track_origins=track_origins,
            suppressions=list(config.getoption("valgrind_suppressions")) + list(suppressions or []),
            valgrind_args=list(config.getoption("valgrind_arg")) + list(valgrind_args or []),
            cwd=cwd, env=env or {}, config_template=config_template,
            follow_children=follow_children)
        options.source_dirs = list(source_dirs) if source_dirs else None
        mode = "fixed" if port is not None else "substitute"
        target = Target(argv=argv, port_mode=mode, port=port, cwd=options.cwd)
        run_dir = tmp_path_factory.mktemp(f"valgrind-server-{len(started) + 1}-")
        valgrind, run_env = detector_setup(options, run_dir)
        server = Server(target, run_dir, valgrind, run_env, options.config_templates)
        sut = ServerUnderTest(host=target.host, port=0, log_path=server.log_path,
                              stderr_path=server.stderr_path, run_dir=run_dir, server=server,
                              options=options, stop_signal=options.stop_signal)
        started.append(sut)
        server.start()
        if not server.wait_ready(ready_timeout or Deadlines().scaled().ready):
            server.stop(sut.stop_signal, 5)
            pytest.fail(f"{' '.join(argv)} did not start listening under {detector}: "
                        f"{server.not_ready}\n" + server.output_tail(), pytrace=False)
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
