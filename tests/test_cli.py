"""The command line is built for the subcommand given (each command's
options cost every start of the harness otherwise): what each subcommand
accepts must be the same as in the whole parser, and every subcommand must
still be listed."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def shape(parser: argparse.ArgumentParser) -> list[tuple]:
    """What a parser accepts, nested subcommands included."""
    out = []
    for a in parser._actions:
        out.append((type(a).__name__, tuple(a.option_strings), a.dest, repr(a.default), a.required,
                    repr(a.nargs), repr(a.choices if not isinstance(a.choices, dict) else None)))
        if isinstance(a, argparse._SubParsersAction):
            out += [(name, shape(sub)) for name, sub in a.choices.items()]
    return out


def test_every_subcommand_is_known_and_listed() -> None:
    assert set(subparsers(build_parser())) == set(COMMANDS)
    for command in COMMANDS:
        assert set(subparsers(build_parser([command]))) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_subcommand_built_alone_accepts_what_it_does_in_the_whole_parser(command) -> None:
    whole = subparsers(build_parser())[command]
    alone = subparsers(build_parser([command, "--help"]))[command]
    assert shape(alone) == shape(whole)
    assert len(shape(whole)) > 1 or command == "scenarios"


def test_an_unknown_command_lists_them_all() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "bogus"], cwd=ROOT, text=True,
                          capture_output=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert all(command in proc.stderr for command in COMMANDS), proc.stderr
