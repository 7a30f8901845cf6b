"""One set of run options for every entry point: `run`, `gate`, `matrix` and
the pytest plugin build the same RunOptions from the same names, checked in
one place (valgrind's own habit: every tool takes the core options).

    make_options(leak_kinds="definite,indirect", stop_signal="SIGINT",
                 suppressions=["my.supp"], valgrind_args=["--num-callers=40"],
                 cwd="srv", env=["MODE=test"], config_template=["nginx.conf"])

Bad values raise OptionError naming the option and what was expected.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from pathlib import Path

from .judge.verdict import LeakPolicy
from .model import DETECTORS, ConfigTemplate
from .timeouts import Deadlines

# The leak kinds that fail a run of a server the project did not write: what
# LeakSanitizer reports, and what redis's own test suite runs valgrind with.
# "possibly lost" (interior pointers) and "still reachable" are reported.
USER_LEAK_KINDS = "definite,indirect"
# valgrind options the harness sets itself, and why a user may not.
OWNED_VALGRIND_OPTIONS = {
    "--log-file": "the harness reads valgrind's text log from the run folder",
    "--log-fd": "the harness reads valgrind's text log from the run folder",
    "--log-socket": "the harness reads valgrind's text log from the run folder",
    "--xml": "the text log is the source of truth (valgrind 3.19's XML has no summaries)",
    "--tool": "choose the tool with --detector (memcheck, helgrind, drd)",
    "--vgdb-prefix": "the gdbserver's FIFOs live in the run folder, removed after the run",
    "--error-markers": "the parser reads each record between valgrind's begin/end markers",
    "--vgdb": "the harness asks the gdbserver where a hung server is; run --debug stops at "
              "the first error",
    "--vgdb-error": "run --debug stops the server at its first error (--vgdb-error=1)",
}
UNSTOPPABLE = (signal.SIGKILL, signal.SIGSTOP)


class OptionError(ValueError):
    pass


@dataclass
class RunOptions:
    """detector: memcheck (default), helgrind or drd run the program under
    that valgrind tool; asan runs it natively (it must be built with
    -fsanitize=address) and reads the sanitizers' reports; native runs it
    with no detector (only how the process ended counts)."""

    detector: str = "memcheck"
    native: bool = False
    leak_policy: LeakPolicy = field(default_factory=LeakPolicy)
    leak_kinds_given: bool = False          # chosen by the user: wins over a scenario's setting
    stop_signal: int | None = None          # None: the scenario's (SIGTERM by default)
    track_origins: bool = False
    suppressions: list[str] = field(default_factory=list)
    valgrind_args: list[str] = field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    config_templates: list[ConfigTemplate] = field(default_factory=list)
    follow_children: bool = False           # a daemonized tree is judged, not refused
    deadlines: Deadlines = field(default_factory=Deadlines)
    require_exit_zero: bool = False
    # Where the server's sources are: to quote its lines, and to tell its own
    # frames where no object is known.  None: the program's folder and the
    # working directory.
    source_dirs: list[str] | None = None

    def valgrind(self, tool: str | None = None):
        """The drive.launch.ValgrindOptions these options mean."""
        from .drive.launch import ValgrindOptions
        return ValgrindOptions(tool=tool or self.detector, track_origins=self.track_origins,
                               extra=list(self.valgrind_args), enabled=not self.native,
                               suppressions=list(self.suppressions),
                               log_per_pid=self.follow_children,
                               trace_children=self.follow_children)

    def with_(self, **changes) -> "RunOptions":
        return replace(self, **changes)


def parse_stop_signal(name: str) -> int:
    upper = name.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    try:
        number = int(signal.Signals[upper])
    except KeyError:
        raise OptionError(f"--stop-signal {name!r}: unknown signal (expected a name such as "
                          "SIGTERM or SIGINT)") from None
    if number in UNSTOPPABLE:
        raise OptionError(f"--stop-signal {name}: cannot be a graceful stop (the server cannot "
                          "catch it, so it could never free anything); the harness sends "
                          "SIGKILL itself to a server that does not stop")
    return number


def _check_valgrind_arg(arg: str) -> str:
    if not arg.startswith("--"):
        raise OptionError(f"--valgrind-arg {arg!r}: expected a valgrind option such as "
                          "--num-callers=40")
    name = arg.split("=", 1)[0]
    for owned, why in OWNED_VALGRIND_OPTIONS.items():
        if name == owned or (owned == "--xml" and name.startswith("--xml")):
            raise OptionError(f"--valgrind-arg {arg}: refused, the harness owns {owned}: {why}")
    return arg


def _check_file(option: str, path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"{option} {path}: no such file")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise OptionError(f"{option} {path}: cannot read: {exc.strerror}") from None
    return str(p.resolve())


def _env_pairs(items: list[str] | dict[str, str]) -> dict[str, str]:
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not name.replace("_", "").isalnum() or name[0].isdigit():
            raise OptionError(f"--env {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def parse_template(spec: str) -> ConfigTemplate:
    """'SRC' or 'SRC:NAME' (the copy's file name in the run folder)."""
    src, sep, name = spec.rpartition(":")
    if not sep:
        src, name = spec, ""
    path = Path(_check_file("--config-template", src))
    name = name or path.name
    if "/" in name or name in (".", "..") or not name:
        raise OptionError(f"--config-template {spec!r}: NAME must be a plain file name")
    return ConfigTemplate(source=path, name=name)


def make_options(*, detector: str = "memcheck", native: bool = False,
                 leak_kinds: str | None = None, default_leak_kinds: str = "strict",
                 stop_signal: str | None = None, track_origins: bool = False,
                 suppressions: list[str] | None = None, valgrind_args: list[str] | None = None,
                 cwd: str | None = None, env: list[str] | dict[str, str] | None = None,
                 config_template: list[str] | None = None, follow_children: bool = False,
                 require_exit_zero: bool = False) -> RunOptions:
    """RunOptions from the values a user typed, each checked."""
    if detector not in DETECTORS:
        raise OptionError(f"--detector {detector!r}: expected one of {', '.join(DETECTORS)}")
    if native and detector != "memcheck":
        raise OptionError("--native runs without any detector: drop --detector")
    try:
        policy = LeakPolicy.parse(leak_kinds if leak_kinds is not None else default_leak_kinds)
    except ValueError as exc:
        raise OptionError(f"--leak-kinds: {exc}") from None
    if cwd is not None and not Path(cwd).is_dir():
        raise OptionError(f"--cwd {cwd}: no such directory")
    if (suppressions or valgrind_args) and (native or detector == "asan"):
        raise OptionError("--suppressions and --valgrind-arg apply to valgrind's detectors, "
                          f"not to {'--native' if native else '--detector asan'}")
    return RunOptions(
        detector=detector, native=native, leak_policy=policy,
        leak_kinds_given=leak_kinds is not None,
        stop_signal=parse_stop_signal(stop_signal) if stop_signal else None,
        track_origins=track_origins,
        suppressions=[_check_file("--suppressions", s) for s in suppressions or []],
        valgrind_args=[_check_valgrind_arg(a) for a in valgrind_args or []],
        cwd=str(Path(cwd).resolve()) if cwd else None, env=_env_pairs(env or []),
        config_templates=[parse_template(t) for t in config_template or []],
        follow_children=follow_children, require_exit_zero=require_exit_zero)


def add_run_options(parser, *, detectors: tuple[str, ...] = DETECTORS) -> None:
    """The run options, as command-line flags (run, gate and matrix)."""
    g = parser.add_argument_group("run options (the same on run, gate, matrix and the pytest plugin)")
    if detectors:   # the matrix takes several: its own --detector
        g.add_argument("--detector", choices=detectors, default="memcheck",
                       help="memcheck (default), asan (a -fsanitize=address build, run "
                            "natively), helgrind, drd")
    g.add_argument("--native", action="store_true",
                   help="run without any detector: only how the process ended counts")
    g.add_argument("--leak-kinds", help="leak kinds that fail: 'strict' (anything in use at exit; "
                   "the project's servers), 'all', or e.g. 'definite,indirect' (the default for "
                   "--cmd: possibly lost and still reachable are reported, not failing)")
    g.add_argument("--stop-signal", help="the signal that stops the server (default SIGTERM)")
    g.add_argument("--track-origins", action="store_true", help="valgrind --track-origins=yes")
    g.add_argument("--suppressions", action="append", default=[], metavar="FILE",
                   help="a valgrind suppressions file (repeatable)")
    g.add_argument("--valgrind-arg", action="append", default=[], metavar="ARG",
                   help="pass an option to valgrind, e.g. --valgrind-arg=--num-callers=40 "
                        "(repeatable; the harness owns --log-file, --xml*, --tool, --vgdb-prefix, "
                        "--vgdb, --vgdb-error)")
    g.add_argument("--cwd", metavar="DIR", help="the server's working directory")
    g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in the server's environment (repeatable; {port} and "
                        "{run_dir} are filled in)")
    g.add_argument("--config-template", action="append", default=[], metavar="SRC[:NAME]",
                   help="copy SRC into the run folder as NAME with {port} and {run_dir} filled "
                        "in; {config} in --cmd is its path (repeatable)")
    g.add_argument("--follow-children", action="store_true",
                   help="judge every process the server starts (valgrind --trace-children=yes, "
                        "a log per PID), a daemon included")


def option_args(options: RunOptions, *, source_dirs: bool = True) -> list[str]:
    """The command-line flags that give these options back (the inverse of
    options_from_args): what a reproduction command passes to `run`."""
    out: list[str] = []
    if options.native:
        out.append("--native")
    elif options.detector != "memcheck":
        out += ["--detector", options.detector]
    if options.leak_kinds_given:
        out += ["--leak-kinds", options.leak_policy.describe()]
    if options.stop_signal is not None:
        out += ["--stop-signal", signal.Signals(options.stop_signal).name]
    if options.track_origins:
        out.append("--track-origins")
    for path in options.suppressions:
        out += ["--suppressions", path]
    out += [f"--valgrind-arg={arg}" for arg in options.valgrind_args]
    if options.cwd:
        out += ["--cwd", options.cwd]
    for name, value in options.env.items():
        out += ["--env", f"{name}={value}"]
    for template in options.config_templates:
        out += ["--config-template", f"{template.source}:{template.name}"]
    if options.follow_children:
        out.append("--follow-children")
    if source_dirs:
        for folder in options.source_dirs or []:
            out += ["--source-dir", folder]
    return out


def options_from_args(args, *, default_leak_kinds: str,
                      require_exit_zero: bool = False) -> RunOptions:
    return make_options(
        detector=args.detector, native=args.native, leak_kinds=args.leak_kinds,
        default_leak_kinds=default_leak_kinds, stop_signal=args.stop_signal,
        track_origins=args.track_origins, suppressions=args.suppressions,
        valgrind_args=args.valgrind_arg, cwd=args.cwd, env=args.env,
        config_template=args.config_template, follow_children=args.follow_children,
        require_exit_zero=require_exit_zero)
