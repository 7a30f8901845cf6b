"""`harness bisect` on a small git repository built here: eight commits of a
libuv echo server (tests/bisect_toy/), where commit 3 does not build, commit
4 fixes that and commit 5 makes a reset session leak its read buffer.  The
bisect must name commit 5 and leave the repository as it found it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOY = Path(__file__).resolve().parent / "bisect_toy"

# Git without the machine's configuration, with fixed identities and dates.
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "Toy Author", "GIT_AUTHOR_EMAIL": "toy@example.invalid",
           "GIT_COMMITTER_NAME": "Toy Author", "GIT_COMMITTER_EMAIL": "toy@example.invalid"}

LEAK_OLD = '''    if (nread != UV_EOF && nread != UV_ECONNRESET)
      fprintf(stderr, "toy: read: %s\\n", uv_err_name((int)nread));
    session_close(s);'''
LEAK_NEW = '''    if (nread == UV_ECONNRESET) {
      session_drop(s);
      return;
    }
    if (nread != UV_EOF)
      fprintf(stderr, "toy: read: %s\\n", uv_err_name((int)nread));
    session_close(s);'''
DROP = '''/* The peer reset the connection: nothing is left to flush, so the session
 * goes at once.  (Its read buffer is forgotten: the leak bisect finds.) */
static void on_dropped(uv_handle_t *handle) { free(handle->data); }

static void session_drop(session_t *s) {
  s->link.prev->next = s->link.next;
  s->link.next->prev = s->link.prev;
  uv_close((uv_handle_t *)&s->tcp, on_dropped);
}

static void on_alloc('''

# Commits 2..8: (subject, [(file, old text, new text)]); old "" creates the file.
EDITS = [
    ("toy: log each connection on stderr",
     [("toy.c", "  s = session_new(server);\n",
       '  s = session_new(server);\n  fprintf(stderr, "toy: connection\\n");\n')]),
    ("toy: count the sessions",     # no semicolon: does not build
     [("toy.c", "  link_t sessions;\n", "  link_t sessions;\n  unsigned long seen;\n"),
      ("toy.c", "  s->buf = xmalloc(BUF_SIZE);\n", "  s->buf = xmalloc(BUF_SIZE);\n  server->seen++\n"),
      ("toy.c", "  server.sessions.prev =", "  server.seen = 0;\n  server.sessions.prev =")]),
    ("toy: fix the build (a missing semicolon)",
     [("toy.c", "  server->seen++\n", "  server->seen++;\n")]),
    ("toy: drop a reset session at once",
     [("toy.c", LEAK_OLD, LEAK_NEW), ("toy.c", "static void on_alloc(", DROP)]),
    ("toy: a README", [("README", "", "toy: a libuv echo server.  make; ./toy PORT\n")]),
    ("toy: name the listen backlog",
     [("toy.c", "#define BUF_SIZE 256\n", "#define BUF_SIZE 256\n#define BACKLOG 128\n"),
      ("toy.c", "listener, 128, on_connection", "listener, BACKLOG, on_connection")]),
    ("toy: say so when stopped cleanly",
     [("toy.c", '"toy: stopped\\n"', '"toy: stopped cleanly\\n"')]),
]


def git(repo: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=dict(os.environ, **GIT_ENV), check=check,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def commit(repo: Path, subject: str, n: int) -> str:
    git(repo, "add", "-A")
    date = f"2024-01-0{n} 12:00:00 +0000"
    subprocess.run(["git", "commit", "-q", "-m", subject], cwd=repo, check=True, timeout=60,
                   env=dict(os.environ, **GIT_ENV, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date))
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def toy_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """The repository and its eight commits, oldest first; HEAD is main."""
    repo = tmp_path / "toy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name in ("toy.c", "Makefile", "reset.toml"):
        shutil.copy(TOY / name, repo / name)
    (repo / ".gitignore").write_text("toy\n")
    commits = [commit(repo, "toy: a libuv line-echo server", 1)]
    for n, (subject, edits) in enumerate(EDITS, start=2):
        for name, old, new in edits:
            path = repo / name
            text = path.read_text() if old else ""
            assert not old or text.count(old) == 1, f"commit {n}: {old!r} not found once in {name}"
            path.write_text(text.replace(old, new) if old else new)
        commits.append(commit(repo, subject, n))
    return repo, commits


def bisect(repo: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "bisect", "-C", str(repo),
                           "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def case(good: str, bad: str, build: str = "make") -> list[str]:
    return ["--good", good, "--bad", bad, "--build", build, "--cmd", "./toy {port}",
            "--scenario", "reset.toml"]


def repo_state(repo: Path) -> tuple[str, str, str]:
    """HEAD's branch and commit, and git status (untracked and ignored files too)."""
    return (git(repo, "symbolic-ref", "-q", "HEAD", check=False), git(repo, "rev-parse", "HEAD"),
            git(repo, "status", "--porcelain", "--ignored"))


def assert_as_found(repo: Path, before: tuple[str, str, str]) -> None:
    branch, head, status = repo_state(repo)
    assert (branch, head) == before[:2]
    # The build's own output (the ignored ./toy) is the user's; nothing else appears.
    assert set(status.splitlines()) - set(before[2].splitlines()) <= {"!! toy"}
    assert not (repo / ".git" / "BISECT_START").exists()
    assert processes_in(repo) == []


def processes_in(folder: Path) -> list[str]:
    """'PID CMDLINE' of every process working in `folder` (git, the build,
    the harness's runs and the servers all do)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if cwd == folder or folder in cwd.parents:
            found.append(f"{entry.name} {cmdline}")
    return found


# From commit 1 to 8, git's midpoints are 4, 6, 5; from 1 to 6 it visits 3 first.
@pytest.mark.valgrind
@pytest.mark.parametrize("bad", [8, 6])
def test_bisect_names_the_commit_that_introduced_the_leak(toy_repo, tmp_path: Path,
                                                          bad: int) -> None:
    repo, commits = toy_repo
    before = repo_state(repo)
    proc = bisect(repo, tmp_path / "out", *case(commits[0], commits[bad - 1]),
                  "--json", str(tmp_path / "bisect.json"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"first bad commit: {commits[4]} toy: drop a reset session at once" in proc.stdout
    assert "Leak_DefinitelyLost" in proc.stdout and "256 bytes in 1 blocks" in proc.stdout
    assert "session_new (toy.c:" in proc.stdout
    assert_as_found(repo, before)

    data = json.loads((tmp_path / "bisect.json").read_text())
    assert data["first_bad"]["commit"] == commits[4]
    assert data["signature"] == ("Leak_DefinitelyLost xmalloc@toy.c < session_new@toy.c "
                                 "< on_connection@toy.c")
    # Every answer git got was right: a commit that does not build is skipped,
    # the others are bad from commit 5 on.
    answers = {}
    for step in data["steps"]:
        n = commits.index(step["commit"]) + 1
        answers[n] = step["answer"]
        expected = "skip" if n == 3 else "bad" if n >= 5 else "good"
        assert step["answer"] == expected, (n, step)
    if bad == 6:
        assert answers[3] == "skip"
        assert "build failed (2)" in proc.stdout
    assert data["runs"] == len([s for s in data["steps"] if s["verdict"]])
    # For the figures in the README (pytest -s shows them).
    print(f"commits 1..{bad}: {data['runs']} runs, {data['seconds']} s")


@pytest.mark.parametrize("spoil, message", [
    ("dirty", "changes to tracked files"),
    ("bisecting", "a bisect is already in progress"),
])
def test_bisect_refuses_a_repository_in_use(toy_repo, tmp_path: Path, spoil: str,
                                            message: str) -> None:
    repo, commits = toy_repo
    if spoil == "dirty":
        (repo / "toy.c").write_text("/* edited */\n" + (repo / "toy.c").read_text())
    else:
        git(repo, "bisect", "start", commits[-1], commits[0])
    before = repo_state(repo)
    proc = bisect(repo, tmp_path / "out", *case(commits[0], commits[-1]))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert repo_state(repo) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.valgrind
@pytest.mark.parametrize("good, bad, message", [
    (6, 8, "is not good: it shows the same finding"),
    (1, 4, "is not bad: the case is clean there"),
])
def test_bisect_refuses_ends_that_are_not_what_they_say(toy_repo, tmp_path: Path, good: int,
                                                        bad: int, message: str) -> None:
    repo, commits = toy_repo
    before = repo_state(repo)
    proc = bisect(repo, tmp_path / "out", *case(commits[good - 1], commits[bad - 1]))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "first bad commit:" not in proc.stdout
    assert_as_found(repo, before)


@pytest.mark.valgrind
def test_bisect_is_undecided_when_only_skipped_commits_are_left(toy_repo, tmp_path: Path) -> None:
    """Commit 3 does not build, and this build command refuses commit 4:
    between 2 (good) and 5 (bad) nothing can be tested."""
    repo, commits = toy_repo
    before = repo_state(repo)
    build = f"test $(git rev-parse HEAD) != {commits[3]} && make"
    proc = bisect(repo, tmp_path / "out", *case(commits[1], commits[4], build),
                  "--json", str(tmp_path / "bisect.json"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "undecided: only skipped commits are left" in proc.stdout
    assert "first bad commit:" not in proc.stdout
    data = json.loads((tmp_path / "bisect.json").read_text())
    assert data["first_bad"] is None
    assert data["candidates"] == commits[2:5]
    steps = {s["commit"]: s for s in data["steps"] if s["label"].startswith("step")}
    assert set(steps) == {commits[2], commits[3]}
    assert steps[commits[2]]["build"].startswith("failed") and steps[commits[2]]["answer"] == "skip"
    assert "error" in steps[commits[2]]["why"]      # the compiler's line
    assert_as_found(repo, before)


@pytest.mark.valgrind
def test_bisect_interrupted_puts_the_repository_back(toy_repo, tmp_path: Path) -> None:
    repo, commits = toy_repo
    before = repo_state(repo)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "bisect", "-C", str(repo),
                             "--out", str(tmp_path / "out"), *case(commits[0], commits[-1])],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:        # ends at EOF if the bisect never gets there
            seen.append(line)
            if line.strip().startswith("step 1 "):
                break
        assert seen and seen[-1].strip().startswith("step 1 "), "".join(seen)
        # git has more commits to visit after the first step (7 candidates).
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, "".join(seen) + out + err
    assert "first bad commit:" not in out
    assert_as_found(repo, before)
    assert not list((tmp_path / "out").glob(".bisect-state-*"))


# -- the answers, without valgrind ---------------------------------------------------
@pytest.mark.parametrize("verdict, signatures, answer", [
    ("leak", ["Leak_DefinitelyLost a@t.c"], "bad"),
    ("leak", ["Leak_DefinitelyLost b@t.c"], "good"),         # another finding
    ("clean", [], "good"),
    ("crash", ["crash SIGSEGV f@t.c", "Leak_DefinitelyLost a@t.c"], "bad"),
    ("unresolved", ["Leak_DefinitelyLost a@t.c"], "skip"),
    ("startup-failure", ["startup-failure"], "skip"),
])
def test_a_step_answers_good_bad_or_skip(verdict: str, signatures: list[str], answer: str) -> None:
    from harness.tools.bisect import classify
    assert classify(verdict, signatures, "Leak_DefinitelyLost a@t.c")[0] == answer
