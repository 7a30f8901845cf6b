"""The one command that reproduces a run locally.

`run` with the same server (one of the project's, by name and variant, or
`--cmd` as given), the scenario as it was played (the run folder's
scenario.toml: a fuzz or storm step with its seed made explicit, so the
command still works after the user's own files change) and the same run
options.  The runner writes it into every result.json (`repro`); the gate,
the matrix and the reports show it for every failing case; `shrink` reads
it back to rebuild the case."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from .drive.launch import Target
from .options import RunOptions, option_args
from .paths import CHECKOUT, ROOT

_PLAIN = re.compile(r"[\w@%+=:,./{}-]+")    # shown unquoted ('{port}' reads better bare)


def quote(word: str) -> str:
    return word if _PLAIN.fullmatch(word) else shlex.quote(word)


def join(words: list[str]) -> str:
    return " ".join(quote(w) for w in words)


def run_args(target: Target, options: RunOptions, scenario: str | Path) -> list[str]:
    """`run`'s arguments for this case (without the program's own name)."""
    args = ["run"]
    if target.pattern:
        args += [target.pattern, "--variant", target.variant]
    else:
        args += ["--cmd", join(target.argv)]
        if target.port_mode == "fixed":
            args += ["--port", str(target.port)]
    if target.host != "127.0.0.1":
        args += ["--host", target.host]
    args += ["--scenario", str(scenario)]
    # The project's servers get their source folders from `run PATTERN` itself.
    return args + option_args(options, source_dirs=not target.pattern)


def program() -> str:
    """How a person starts the harness here: the checkout's module (with
    PYTHONPATH when the command is not run from the checkout), or the
    installed command."""
    if not CHECKOUT:
        return "leak-harness"
    if Path.cwd().resolve() == ROOT.resolve():
        return "python3 -m harness"
    return f"PYTHONPATH={quote(str(ROOT))} python3 -m harness"


def command(args: list[str]) -> str:
    return f"{program()} {join(args)}"


def shown_path(path: Path) -> Path:
    """A path as a reproduction command names it: relative to where the
    harness runs when it lies below (a CI's report folder, downloaded into
    a checkout, gives the same command), else absolute."""
    path = path.resolve()
    here = Path.cwd().resolve()
    return path.relative_to(here) if here in path.parents else path


def repro(target: Target, options: RunOptions, scenario: str | Path) -> dict:
    """{"args": run's arguments, "command": the shell command line}."""
    args = run_args(target, options, scenario)
    return {"args": args, "command": command(args), "cwd": os.getcwd()}
