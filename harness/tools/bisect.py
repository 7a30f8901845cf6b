"""`harness bisect`: the first commit where a case shows the finding it shows at --bad.

git drives the search (`git bisect run`).  At each commit it visits, the
step (this module again, `bisect --step STATE`) builds with the user's
command, runs the case through the harness's own `run` subcommand (a
subprocess: the CLI is the public contract) and answers git:

  good (0)   the run does not show the finding seen at --bad (clean, or
             another finding)
  bad (1)    a finding with the same signature as at --bad
  skip (125) the build failed or timed out, the server could not start, or
             the run was unresolved

The repository is left as found: the same HEAD (branch or detached),
`git bisect reset` also on errors and on Ctrl-C/SIGTERM, and the harness's
own files (run folders, the step's state) outside it, under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..model import Frame
from ..options import add_run_options
from ..paths import REPORTS, ROOT
from ..timeouts import scaled

EXIT_FOUND, EXIT_USAGE, EXIT_UNDECIDED = 0, 2, 3
GOOD, BAD, SKIP, ERROR = "good", "bad", "skip", "error"
STEP_EXIT = {GOOD: 0, BAD: 1, SKIP: 125, ERROR: 128}    # 128: git bisect run aborts
STEP_PREFIX = "harness-bisect: "       # the step's lines in git's output
RUN_BOUND = 900.0      # seconds for one `run` (its own deadlines come first)
GRACE = 30.0           # seconds a child has after SIGTERM, then SIGKILL
GIT_TIMEOUT = 120.0    # seconds for one git command (a checkout of a big tree)

# The `run` options a case passes through unchanged: (flag, takes a value, repeatable).
RUN_OPTIONS = (
    ("--cmd", True, False), ("--port", True, False), ("--host", True, False),
    ("--scenario", True, False), ("--stop-signal", True, False),
    ("--leak-kinds", True, False), ("--track-origins", False, False),
    ("--native", False, False), ("--detector", True, False), ("--source-dir", True, True),
    ("--suppressions", True, True), ("--valgrind-arg", True, True), ("--cwd", True, False),
    ("--env", True, True), ("--config-template", True, True), ("--follow-children", False, False),
)
# Files a case reads: copied out of the repository before any checkout.
COPIED = ("--scenario", "--suppressions", "--config-template")


class BisectUsage(ValueError):
    """Bad usage or a repository the bisect refuses (exit status 2)."""


class GitError(RuntimeError):
    """git failed once the bisect was under way (exit status 3)."""


# -- the command line ------------------------------------------------------------
def add_parser(sub) -> None:
    """Register `bisect` on the CLI's subparsers."""
    pb = sub.add_parser(
        "bisect", help="find the commit that introduced a finding (git bisect run)",
        description="Build and run the case at each commit git bisect visits; the first "
                    "commit whose run shows the finding seen at --bad is named.")
    pb.add_argument("--good", help="a commit where the case does not show the finding")
    pb.add_argument("--bad", help="a commit where it does")
    pb.add_argument("--build", help="shell command that builds the server, run in the "
                                    "repository at each commit (e.g. 'make')")
    pb.add_argument("--build-timeout", type=float, default=300.0,
                    help="seconds per build (default 300); a build past it is a skip")
    pb.add_argument("-C", "--repo", metavar="DIR",
                    help="run as if started in DIR (relative paths too), like git -C")
    pb.add_argument("--signature", help="bisect this finding when --bad shows several")
    pb.add_argument("--out", help="folder for the runs and logs, outside the repository "
                                  "(default reports/bisect)")
    pb.add_argument("--json", metavar="PATH|-", help="write the result as JSON ('-': stdout)")
    pb.add_argument("--cmd", help="the server: 'PROGRAM ARGS {port}', relative to the repository")
    pb.add_argument("--port", type=int, help="the fixed port of a --cmd server without {port}")
    pb.add_argument("--host", help="loopback address (default 127.0.0.1)")
    pb.add_argument("--scenario", help="a named scenario or a file (copied before any checkout)")
    pb.add_argument("--source-dir", action="append", default=[],
                    help="where the server's sources are (for its own frames)")
    add_run_options(pb)
    pb.add_argument("--step", metavar="STATE", help=argparse.SUPPRESS)
    pb.set_defaults(func=cmd_bisect)


def cmd_bisect(args: argparse.Namespace) -> int:
    if args.step:
        return run_step(Path(args.step))
    try:
        return Bisect(make_plan(args), json_dest=args.json).run()
    except GitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNDECIDED


# -- the plan: everything a step needs, written once ------------------------------
@dataclass
class Plan:
    repo: str                  # where git, the build and the server run
    top: str                   # the work tree's top folder
    good: str
    bad: str
    build: str
    build_timeout: float
    run_args: list[str]        # `run` options, paths made absolute
    out: str
    state: str = ""            # folder of the step's state (under out)
    target: str = ""           # the signature bisected, found at --bad

    def save(self) -> Path:
        path = Path(self.state) / "plan.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> "Plan":
        return cls(**json.loads(path.read_text()))


def make_plan(args: argparse.Namespace) -> Plan:
    if not args.good or not args.bad or not args.build:
        raise BisectUsage("bisect needs --good REV, --bad REV and --build 'CMD'")
    if not args.cmd:
        raise BisectUsage("bisect needs the case: --cmd 'PROGRAM ARGS {port}' [--scenario ...]")
    if args.build_timeout <= 0:
        raise BisectUsage("--build-timeout: expected seconds above 0")
    repo = Path(args.repo).resolve() if args.repo else Path.cwd()
    if not repo.is_dir():
        raise BisectUsage(f"-C {args.repo}: not a folder")
    try:
        top = Path(git(repo, "rev-parse", "--show-toplevel")).resolve()
    except GitError:
        raise BisectUsage(f"{repo} is not inside a git work tree") from None
    if ROOT.resolve() == top or top in ROOT.resolve().parents:
        raise BisectUsage(f"{top} holds the harness itself ({ROOT}): bisect a copy "
                          "(git worktree add ../copy) so that checkouts do not change it")
    out = (repo / args.out).resolve() if args.out else REPORTS / "bisect"
    if (out == top or top in out.parents) and not ignored(top, out):
        raise BisectUsage(f"--out {out} is inside the repository and not ignored by git: "
                          "choose a folder outside it")
    source_dirs = [str((repo / d).resolve()) for d in args.source_dir]
    try:
        shlex.split(args.cmd)
    except ValueError as exc:
        raise BisectUsage(f"--cmd: {exc}") from None
    return Plan(repo=str(repo), top=str(top), good=args.good, bad=args.bad, build=args.build,
                build_timeout=args.build_timeout, run_args=_run_args(args, repo, source_dirs),
                out=str(out), target=args.signature or "")


def _run_args(args: argparse.Namespace, repo: Path, source_dirs: list[str]) -> list[str]:
    out = []
    for flag, takes_value, repeatable in RUN_OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if flag == "--source-dir":
            value = source_dirs
        if flag == "--scenario" and value:
            value = _scenario_ref(value, repo)
        elif flag in ("--suppressions", "--config-template"):
            value = [_file_ref(flag, v, repo) for v in value]
        elif flag == "--cwd" and value:
            value = str((repo / value).resolve())
        if not takes_value:
            out += [flag] if value else []
        elif repeatable:
            for v in value:
                out += [flag, str(v)]
        elif value is not None:
            out += [flag, str(value)]
    return out


def _file_ref(flag: str, spec: str, repo: Path) -> str:
    """An absolute path (a --config-template keeps its ':NAME')."""
    src, sep, name = spec.rpartition(":") if flag == "--config-template" else ("", "", spec)
    if not sep:
        src, name = spec, ""
    path = repo / src
    if not path.is_file():
        raise BisectUsage(f"{flag} {spec}: no such file")
    return str(path.resolve()) + (f":{name}" if name else "")


def _scenario_ref(ref: str, repo: Path) -> str:
    """A file becomes an absolute path (copied into the state folder before
    any checkout, see Bisect.prepare); a name stays a name."""
    path = repo / ref
    if path.exists():
        return str(path.resolve())
    if not path.suffix and os.sep not in ref:
        return ref
    raise BisectUsage(f"--scenario {ref}: no such file")


# -- git ---------------------------------------------------------------------------
def git(repo: Path | str, *args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=scaled(GIT_TIMEOUT))
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)}: no answer within {scaled(GIT_TIMEOUT):.0f} s") from None
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def ignored(top: Path, path: Path) -> bool:
    proc = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=top,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=scaled(GIT_TIMEOUT))
    return proc.returncode == 0


def bisect_in_progress(repo: str) -> bool:
    path = Path(git(repo, "rev-parse", "--git-path", "BISECT_START"))
    return (path if path.is_absolute() else Path(repo) / path).exists()


def subject(repo: str, commit: str) -> str:
    return git(repo, "log", "-1", "--format=%s", commit)


# -- children: bounded, in their own process group, always reaped ------------------
def child(argv: list[str], cwd: str, log: Path, seconds: float,
          env: dict[str, str] | None = None) -> int | None:
    """Run argv with its output in `log`; its exit status, or None past `seconds`.
    It gets one SIGTERM (then SIGKILL) when the deadline passes or when the
    caller is interrupted."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        end_group(proc)
        return None
    except BaseException:
        end_group(proc)
        raise


def end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, scaled(GRACE)), (signal.SIGKILL, scaled(GRACE))):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            if sig == signal.SIGTERM:
                # The leader is gone; what it left in its group goes with it.
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def harness_env() -> dict[str, str]:
    """The environment of a child `python3 -m harness` run from the repository."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def harness_argv(*args: str) -> list[str]:
    # -P: the repository (the child's cwd) is not put on sys.path, so a
    # `harness` folder of its own cannot shadow this one.
    return [sys.executable, "-P", "-m", "harness", *args]


# -- one commit: build, run, answer ------------------------------------------------
@dataclass
class Record:
    label: str             # --bad, --good, step N
    commit: str
    subject: str
    build: str             # ok, failed (exit N), timed out
    verdict: str = ""      # the run's verdict, "" when it did not run
    answer: str = SKIP
    why: str = ""
    signatures: list[str] = field(default_factory=list)
    result: str = ""       # the run's JSON
    seconds: float = 0.0

    def line(self) -> str:
        verdict = self.verdict or "-"
        text = (f"{self.label:>7}  {self.commit[:10]}  {self.subject[:44]:44}  "
                f"build {self.build:10}  {verdict:13} {self.answer}")
        return text + (f" ({self.why})" if self.why else "")


def try_commit(plan: Plan, label: str) -> Record:
    """Build the checked-out commit and run the case on it."""
    started = time.monotonic()
    commit = git(plan.repo, "rev-parse", "HEAD")
    record = Record(label=label, commit=commit, subject=subject(plan.repo, commit), build="")
    folder = Path(plan.out) / commit[:10]
    folder.mkdir(parents=True, exist_ok=True)
    status = child(["/bin/sh", "-c", plan.build], plan.repo, folder / "build.log",
                   scaled(plan.build_timeout))
    record.build = "ok" if status == 0 else "timed out" if status is None else f"failed ({status})"
    if status == 0:
        _run(plan, folder, record)
    else:
        record.why = _build_error(folder / "build.log")
    record.seconds = round(time.monotonic() - started, 2)
    return record


def _run(plan: Plan, folder: Path, record: Record) -> None:
    result = folder / "result.json"
    result.unlink(missing_ok=True)
    status = child(harness_argv("run", *plan.run_args, "--json", str(result), "--out",
                                str(folder / "run")),
                   plan.repo, folder / "run.txt", scaled(RUN_BOUND), env=harness_env())
    record.result = str(result)
    if status == 2:
        record.answer, record.why = ERROR, "run refused the case: " + _tail(folder / "run.txt")
        return
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        record.verdict = "unresolved"
        record.why = ("the run passed its bound" if status is None else
                      f"no result (exit {status}): " + _tail(folder / "run.txt"))
        return
    record.verdict = data.get("verdict", "unresolved")
    record.signatures = list(data.get("signatures") or [])
    record.answer, record.why = classify(record.verdict, record.signatures, plan.target)
    if record.answer == SKIP and data.get("reasons"):
        record.why = str(data["reasons"][0])[:120]


def classify(verdict: str, signatures: list[str], target: str) -> tuple[str, str]:
    if verdict == "unresolved":
        return SKIP, "unresolved run"
    if verdict == "startup-failure" and target != "startup-failure":
        return SKIP, "the server did not start"
    if not target or target in signatures:
        return BAD, ""
    return GOOD, "another finding" if signatures else ""


def untestable(record: Record) -> str:
    what = f"build {record.build}" if record.build != "ok" else record.verdict or "no run"
    return what + (f": {record.why}" if record.why else "")


def _build_error(log: Path) -> str:
    """The build's first error line (the compiler's), else its last line."""
    try:
        lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    errors = [l for l in lines if "error" in l.lower()]
    return (errors or lines or [""])[0 if errors else -1][:120]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(text[-lines:])


# -- the finding, as the run's JSON has it ----------------------------------------
def describe_finding(data: dict, target: str) -> list[str]:
    """Kind, bytes and top frames of the finding with the target signature
    (the `run` JSON gives every finding its signature, as the gate signs it)."""
    for raw in data.get("findings") or []:
        if raw.get("signature") != target:
            continue
        head = f"{raw['kind']}: {raw['what']}" if raw.get("what") else raw["kind"]
        stack = raw.get("stack") or next((a["stack"] for a in raw.get("aux") or []
                                          if a.get("stack")), [])
        frames = [Frame(fn=f.get("fn") or "???", file=f.get("file"), line=f.get("line"),
                        obj=f.get("obj")) for f in stack]
        return [head] + [f"    at {f.where()}" for f in frames if f.fn != "???"][:3]
    return list(data.get("reasons") or [target])


# -- the step: one commit for git bisect run ----------------------------------------
def run_step(state: Path) -> int:
    """git bisect run's command.  Any failure of the step itself is exit 128,
    which aborts the bisect (2 would mean bad)."""
    try:
        plan = Plan.load(state)
        steps = Path(plan.state) / "steps.jsonl"
        done = len(steps.read_text().splitlines()) if steps.exists() else 0
        record = try_commit(plan, f"step {done + 1}")
        with steps.open("a") as f:
            f.write(json.dumps(asdict(record)) + "\n")
    except (OSError, ValueError, KeyError, TypeError, GitError) as exc:
        print(f"{STEP_PREFIX}error: the step failed: {exc}", flush=True)
        return STEP_EXIT[ERROR]
    print(STEP_PREFIX + record.line(), flush=True)
    return STEP_EXIT[record.answer]


# -- the whole bisect -----------------------------------------------------------------
class Bisect:
    def __init__(self, plan: Plan, json_dest: str | None = None) -> None:
        self.plan = plan
        self.json_dest = json_dest
        self.records: list[Record] = []
        self.started = time.monotonic()
        self.orig_branch = ""
        self.orig_head = ""
        self.state_dir: Path | None = None
        self.bisecting = False

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def run(self) -> int:
        self.check_repo()
        try:
            self.prepare()
            return self.search()
        finally:
            self.restore()

    # -- before anything moves
    def check_repo(self) -> None:
        plan = self.plan
        if bisect_in_progress(plan.repo):
            raise BisectUsage(f"{plan.top}: a bisect is already in progress "
                              "(git bisect log; git bisect reset ends it)")
        dirty = git(plan.repo, "status", "--porcelain", "--untracked-files=no")
        if dirty:
            raise BisectUsage(f"{plan.top}: the work tree has changes to tracked files "
                              f"({dirty.splitlines()[0].strip()}, ...): commit or stash them first")
        for name in ("good", "bad"):
            try:
                setattr(plan, name, git(plan.repo, "rev-parse", "--verify", "-q",
                                        getattr(plan, name) + "^{commit}"))
            except GitError:
                raise BisectUsage(f"--{name} {getattr(plan, name)}: not a commit") from None
        if plan.good == plan.bad:
            raise BisectUsage("--good and --bad are the same commit")
        if subprocess.run(["git", "merge-base", "--is-ancestor", plan.good, plan.bad],
                          cwd=plan.repo, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=scaled(GIT_TIMEOUT)).returncode != 0:
            raise BisectUsage(f"--good {plan.good[:10]} is not an ancestor of --bad {plan.bad[:10]}")
        self.orig_branch = git(plan.repo, "symbolic-ref", "-q", "--short", "HEAD", check=False)
        try:
            self.orig_head = git(plan.repo, "rev-parse", "--verify", "HEAD")
        except GitError:
            raise BisectUsage(f"{plan.top}: HEAD is not a commit yet") from None

    def prepare(self) -> None:
        """The state folder (outside the repository) and a copy of a scenario
        file, so that checkouts cannot change or remove it."""
        out = Path(self.plan.out)
        out.mkdir(parents=True, exist_ok=True)
        self.state_dir = Path(tempfile.mkdtemp(prefix=".bisect-state-", dir=out))
        self.plan.state = str(self.state_dir)
        args = self.plan.run_args
        for i, flag in enumerate(args[:-1]):
            if flag in COPIED:
                src, sep, name = args[i + 1].rpartition(":") if flag == "--config-template" \
                    else ("", "", args[i + 1])
                src = src if sep else args[i + 1]
                if Path(src).is_absolute():
                    copy = Path(tempfile.mkdtemp(prefix="file-", dir=self.state_dir)) / Path(src).name
                    shutil.copyfile(src, copy)
                    args[i + 1] = str(copy) + (f":{name}" if sep else "")

    def checkout(self, rev: str) -> None:
        git(self.plan.repo, "checkout", "-q", "--detach", rev)

    def search(self) -> int:
        plan = self.plan
        self.say(f"bisect: good {plan.good[:10]} ({subject(plan.repo, plan.good)}), "
                 f"bad {plan.bad[:10]} ({subject(plan.repo, plan.bad)})")
        refused = self.check_ends()
        if refused:
            return refused
        git(plan.repo, "checkout", "-q", self.orig_branch or self.orig_head)
        started = git(plan.repo, "bisect", "start", plan.bad, plan.good)
        self.bisecting = True
        for line in started.splitlines():
            if line.startswith("Bisecting:"):
                self.say(f"bisect: {line[len('Bisecting: '):]}")
        output = self.bisect_run()
        self.collect_steps()
        (Path(plan.out) / "bisect-log.txt").write_text(git(plan.repo, "bisect", "log") + "\n")
        return self.conclude(output)

    def check_ends(self) -> int:
        """Run the case at --bad (its finding is the target) and at --good
        (it must not show it).  A refusal's exit status, or 0."""
        plan = self.plan
        self.checkout(plan.bad)
        bad = try_commit(plan, "--bad")
        self.records.append(bad)
        self.say(bad.line())
        if bad.answer in (ERROR, SKIP):
            hint = ("; --signature startup-failure bisects that"
                    if bad.verdict == "startup-failure" else "")
            return self.refuse(f"--bad {plan.bad[:10]} cannot be tested: {untestable(bad)}{hint}")
        if not bad.signatures:
            return self.refuse(f"--bad {plan.bad[:10]} is not bad: the case is {bad.verdict} there")
        plan.target = plan.target or bad.signatures[0]
        self.say(f"  target: {plan.target}")
        if plan.target not in bad.signatures:
            return self.refuse(f"--signature {plan.target!r}: not seen at --bad (seen: "
                               + "; ".join(bad.signatures) + ")")
        bad.answer, bad.why = BAD, ""
        others = [s for s in bad.signatures if s != plan.target]
        if others:
            self.say("  also at --bad (pick with --signature): " + "; ".join(others))
        self.checkout(plan.good)
        good = try_commit(plan, "--good")
        self.records.append(good)
        self.say(good.line())
        if good.answer == BAD:
            return self.refuse(f"--good {plan.good[:10]} is not good: it shows the same finding "
                               f"({plan.target})")
        if good.answer != GOOD:
            return self.refuse(f"--good {plan.good[:10]} cannot be tested: {untestable(good)}")
        return 0

    def refuse(self, message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        self.write_json(None, [], EXIT_USAGE)
        return EXIT_USAGE

    def bisect_run(self) -> str:
        """git bisect run with the step; the step's lines are shown as they
        come, the rest of git's output is kept (and returned)."""
        plan = self.plan
        state = plan.save()
        log_path = Path(plan.out) / "git-bisect-run.txt"
        proc = subprocess.Popen(["git", "bisect", "run", *harness_argv("bisect", "--step", str(state))],
                                cwd=plan.repo, env=harness_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        lines: list[str] = []
        try:
            pump(proc, lines, self.show_step, None)
            proc.wait()
        except BaseException:
            # One SIGTERM to git and the step (which ends its build or run),
            # then wait for the pipe to close: every writer has exited.
            _signal_group(proc.pid, signal.SIGTERM)
            if not pump(proc, lines, self.show_step, scaled(GRACE) * 3):
                _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            log_path.write_text("\n".join(lines) + "\n")
        return "\n".join(lines)

    def show_step(self, line: str) -> None:
        if line.startswith(STEP_PREFIX):
            self.say(line[len(STEP_PREFIX):])

    def collect_steps(self) -> None:
        steps = Path(self.plan.state) / "steps.jsonl"
        if steps.exists():
            self.records += [Record(**json.loads(l)) for l in steps.read_text().splitlines() if l]

    def conclude(self, output: str) -> int:
        plan = self.plan
        found = re.search(r"^([0-9a-f]{40}) is the first bad commit$", output, re.M)
        elapsed = time.monotonic() - self.started
        runs = sum(1 for r in self.records if r.verdict)
        builds = len(self.records)
        failed = sum(1 for r in self.records if r.build != "ok")
        skipped = sum(1 for r in self.records if r.answer == SKIP)
        totals = (f"{runs} runs, {builds} builds ({failed} failed), {skipped} skipped, "
                  f"{elapsed:.1f} s")
        if not found:
            candidates = _candidates(output)
            if candidates:
                self.say("undecided: only skipped commits are left; the first bad commit is one of:")
                for c in candidates:
                    self.say(f"  {c[:10]}  {subject(plan.repo, c)}")
            else:
                self.say("undecided: git bisect run stopped without a first bad commit "
                         f"(see {shown(Path(plan.out) / 'git-bisect-run.txt')})")
            self.say(f"bisect: {totals}")
            self.write_json(None, candidates, EXIT_UNDECIDED)
            return EXIT_UNDECIDED
        commit = found.group(1)
        record = next((r for r in self.records if r.commit == commit), None)
        self.say(f"first bad commit: {commit} {subject(plan.repo, commit)}")
        data = {}
        if record and record.result:
            try:
                data = json.loads(Path(record.result).read_text())
            except (OSError, ValueError):
                data = {}
        for line in describe_finding(data, plan.target):
            self.say(f"  {line}")
        self.say(f"  signature: {plan.target}")
        if record and record.result:
            self.say(f"  run: {shown(record.result)}")
        self.say(f"bisect: {totals}")
        self.write_json(commit, [], EXIT_FOUND, data)
        return EXIT_FOUND

    def write_json(self, commit: str | None, candidates: list[str], status: int,
                   data: dict | None = None) -> None:
        if not self.json_dest:
            return
        plan = self.plan
        result = {
            "first_bad": None if commit is None else {
                "commit": commit, "subject": subject(plan.repo, commit),
                "signature": plan.target,
                "findings": (data or {}).get("findings", [])},
            "candidates": candidates, "good": plan.good, "bad": plan.bad,
            "signature": plan.target or None, "exit": status,
            "steps": [asdict(r) for r in self.records],
            "runs": sum(1 for r in self.records if r.verdict),
            "seconds": round(time.monotonic() - self.started, 2),
        }
        text = json.dumps(result, indent=2) + "\n"
        if self.json_dest == "-":
            sys.stdout.write(text)
        else:
            Path(self.json_dest).parent.mkdir(parents=True, exist_ok=True)
            Path(self.json_dest).write_text(text)

    # -- always
    def restore(self) -> None:
        """bisect reset, the original branch or commit, no state folder.  A
        second Ctrl-C must not cut this short: the signals wait."""
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        problems = []
        try:
            repo = self.plan.repo
            if self.bisecting or bisect_in_progress(repo):
                try:
                    git(repo, "bisect", "reset", self.orig_branch or self.orig_head)
                except GitError as exc:
                    problems.append(str(exc))
            if self.orig_head and (git(repo, "rev-parse", "HEAD") != self.orig_head or
                                   git(repo, "symbolic-ref", "-q", "--short", "HEAD",
                                       check=False) != self.orig_branch):
                try:
                    git(repo, "checkout", "-q", self.orig_branch or self.orig_head)
                except GitError as exc:
                    problems.append(str(exc))
            if self.state_dir is not None:
                shutil.rmtree(self.state_dir, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for problem in problems:
            print(f"error: could not put the repository back: {problem}", file=sys.stderr)
        if self.orig_head and not problems:
            where = self.orig_branch or "detached HEAD"
            print(f"repository back at {where} ({self.orig_head[:10]})", flush=True)


def pump(proc: subprocess.Popen, lines: list[str], show, seconds: float | None) -> bool:
    """Read proc's output into `lines` (showing each) until EOF, or until
    `seconds` pass: True at EOF."""
    deadline = None if seconds is None else time.monotonic() + seconds
    partial = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                if partial:
                    lines.append(partial.decode(errors="replace"))
                    show(lines[-1])
                return True
            partial += chunk
            *complete, partial = partial.split(b"\n")
            for raw in complete:
                lines.append(raw.decode(errors="replace"))
                show(lines[-1])


def shown(path: Path | str) -> str:
    """A path as short as it reads well: relative to the current folder when
    it is at most one level up."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else str(path)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _candidates(output: str) -> list[str]:
    """The commits git names when only skipped ones are left."""
    match = re.search(r"could be any of:\n((?:[0-9a-f]{40}\n?)+)", output)
    return match.group(1).split() if match else []
