"""Delta debugging over a scenario's data (harness/tools/reduce.py), with
oracles written in Python: no server, no valgrind."""
from __future__ import annotations

import pytest

from harness.drive.scenario import ScenarioError, parse_scenario
from harness.tools.reduce import (OutOfBudget, Reducer, closure, connections, smaller_numbers,
                                  without_connections)


def valid(data) -> bool:
    try:
        parse_scenario(data, "t", "t")
    except ScenarioError:
        return False
    return True


class FakeOracle:
    """`bug(steps)` says whether a scenario shows the finding; counts the
    candidates it was asked about, and runs out after `budget`."""

    def __init__(self, bug, budget: int = 100_000) -> None:
        self.bug = bug
        self.asked = 0
        self.budget = budget

    def first(self, candidates):
        for i, c in enumerate(candidates):
            if self.asked >= self.budget:
                raise OutOfBudget()
            self.asked += 1
            if self.bug(c["steps"]):
                return i
        return None


def two_connections_x_and_reset(steps) -> bool:
    """The peer_reset program's bug: two connections opened in this order,
    an X on the first, then a reset of the second."""
    opened: list[str] = []
    x_on = None
    for s in steps:
        if s["do"] == "open":
            opened += [s["conn"]] if "conn" in s else s["conns"]
        elif s["do"] == "send" and "X" in s.get("text", "") and x_on is None:
            i = opened.index(s["conn"])
            x_on = (s["conn"], opened[i + 1] if i + 1 < len(opened) else None)
        elif s["do"] == "reset" and x_on and s["conn"] == x_on[1]:
            return True
    return False


NOISY = {"description": "noisy", "steps": [
    {"do": "open", "conns": ["noise", "a"]},
    {"do": "send", "conn": "noise", "text": "hello\n"},
    {"do": "open", "conn": "b"},
    {"do": "send", "conn": "a", "text": "ping X\n"},
    {"do": "send", "conn": "b", "text": "pong\n"},
    {"do": "open", "conn": "c"},
    {"do": "pause", "seconds": 0.5},
    {"do": "close", "conn": "noise"},
    {"do": "send", "conn": "c", "size": 4096, "repeat": 3},
    {"do": "reset", "conn": "b"},
    {"do": "half_close", "conn": "c"},
    {"do": "send", "conn": "a", "text": "after\n", "repeat": 3},
]}


def single_removals(steps):
    """Each step left out (with what then names an unopened connection)."""
    for i in range(len(steps)):
        yield closure(steps[:i] + steps[i + 1:])


def test_noisy_scenario_shrinks_to_exactly_the_bug_and_is_1_minimal() -> None:
    oracle = FakeOracle(two_connections_x_and_reset)
    reducer = Reducer(NOISY, oracle, valid)
    out = reducer.run()
    assert reducer.minimal
    assert out["steps"] == [{"do": "open", "conn": "a"}, {"do": "open", "conn": "b"},
                            {"do": "send", "conn": "a", "text": "X"},
                            {"do": "reset", "conn": "b"}]
    for smaller in single_removals(out["steps"]):
        assert not two_connections_x_and_reset(smaller)
    assert valid(out)


def test_connections_go_with_every_step_on_them() -> None:
    steps = [{"do": "open", "conns": ["a", "b"], "rcvbuf": 4096},
             {"do": "open", "conn": "g", "count": 2},
             {"do": "send", "conn": "g2", "text": "x"}, {"do": "send", "conn": "b", "text": "y"},
             {"do": "stop"}, {"do": "reset", "conn": "a"}]
    assert connections(steps) == ["a", "b", "g"]
    assert without_connections(steps, {"a", "g"}) == [
        {"do": "open", "conn": "b", "rcvbuf": 4096}, {"do": "send", "conn": "b", "text": "y"},
        {"do": "stop"}]
    assert without_connections(steps, {"b"})[0] == {"do": "open", "conn": "a", "rcvbuf": 4096}
    assert closure(steps[2:]) == [{"do": "stop"}]


def test_numbers_and_payloads_get_smaller() -> None:
    assert smaller_numbers(6291456, 1) == [1, 393216, 1572864, 3145728]
    assert smaller_numbers(1, 1) == []
    assert smaller_numbers(0.4, 0.0) == [0.0, 0.025, 0.1, 0.2]

    def needs_1000_bytes(steps) -> bool:
        return any(s["do"] == "send" and s.get("size", 0) * s.get("repeat", 1) >= 1000
                   for s in steps)

    data = {"steps": [{"do": "open", "conn": "c"},
                      {"do": "send", "conn": "c", "size": 6291456, "repeat": 4},
                      {"do": "pause", "seconds": 2.0}]}
    out = Reducer(data, FakeOracle(needs_1000_bytes), valid).run()
    send = out["steps"][1]
    assert 1000 <= send["size"] * send.get("repeat", 1) < 4000
    assert len(out["steps"]) == 2


def test_a_spent_budget_keeps_the_best_found_so_far() -> None:
    oracle = FakeOracle(two_connections_x_and_reset, budget=12)
    reducer = Reducer(NOISY, oracle, valid)
    with pytest.raises(OutOfBudget):
        reducer.run()
    assert not reducer.minimal
    assert two_connections_x_and_reset(reducer.data["steps"])
    assert len(reducer.data["steps"]) < len(NOISY["steps"])


def test_simplify_drops_may_fail_and_nodelay_when_the_bug_does_not_need_them() -> None:
    steps = [{"do": "open", "conn": "f1", "nodelay": True, "may_fail": True},
             {"do": "open", "conn": "f2", "nodelay": True, "may_fail": True},
             {"do": "send", "conn": "f1", "text": "X", "may_fail": True},
             {"do": "reset", "conn": "f2", "may_fail": True}]
    out = Reducer({"steps": steps}, FakeOracle(two_connections_x_and_reset), valid).run()
    assert all("may_fail" not in s and "nodelay" not in s for s in out["steps"])


# -- shrink's search over runs that are not always alike ------------------------------------------
class FakeRunner:
    """Stands for shrink's Runner: `bug(steps, nth)` says whether the nth run
    of that very scenario shows the finding."""

    def __init__(self, folder, bug) -> None:
        self.folder = folder
        self.bug = bug
        self.jobs = 2
        self.runs = 0
        self.elapsed = 0.0
        self.seen: dict[str, int] = {}

    def left(self) -> int:
        return 10_000

    def run(self, texts):
        import tomllib
        out = []
        for text in texts:
            self.runs += 1
            self.seen[text] = self.seen.get(text, 0) + 1
            folder = self.folder / f"run{self.runs}"
            folder.mkdir()
            (folder / "scenario.toml").write_text(text)
            shows = self.bug(tomllib.loads(text)["steps"], self.seen[text])
            out.append({"verdict": "memory-error" if shows else "clean",
                        "signatures": ["InvalidFree f@x.c"] if shows else [],
                        "run_dir": str(folder)})
        return out


def stalled_reset(steps, nth: int) -> bool:
    """Open, send, reset on one connection shows the bug on every other run;
    with a stall before the send, on every run."""
    kinds = [s["do"] for s in steps]
    if not {"open", "send", "reset"} <= set(kinds):
        return False
    if "stall" in kinds and kinds.index("stall") < kinds.index("send"):
        return True
    return nth % 2 == 1


def test_a_flaky_result_is_replaced_by_one_that_reproduces_every_time(tmp_path) -> None:
    from harness.drive.launch import Target
    from harness.options import RunOptions
    from harness.tools.shrink import EXIT_MINIMAL, Shrink
    original = tmp_path / "original.toml"
    original.write_text("".join(f"[[steps]]\n{body}\n" for body in (
        'do = "open"\nconn = "c"', 'do = "open"\nconn = "d"', 'do = "stall"\nconn = "c"',
        'do = "send"\nconn = "d"\ntext = "noise"', 'do = "send"\nconn = "c"\nsize = 4096',
        'do = "pause"\nseconds = 0.1', 'do = "reset"\nconn = "c"')))
    said = []
    job = Shrink(target=Target(argv=["srv", "{port}"], port_mode="substitute"),
                 options=RunOptions(), scenario_path=original, out=tmp_path / "work",
                 output=tmp_path / "minimal.toml", say=said.append)
    runner = FakeRunner(tmp_path, stalled_reset)
    status, report = job._run(runner)
    assert status == EXIT_MINIMAL, said
    assert report.reproduced == 10 and report.minimal
    assert any("reproduce every time" in line for line in said)
    import tomllib
    steps = tomllib.loads((tmp_path / "minimal.toml").read_text())["steps"]
    assert [s["do"] for s in steps] == ["open", "stall", "send", "reset"]
    assert steps[2]["size"] == 1


def test_tidy_leaves_out_what_the_defaults_say() -> None:
    from harness.tools.reduce import tidy
    data = {"steps": [{"do": "open", "conn": "s", "count": 1, "rcvbuf": 4096},
                      {"do": "send", "conn": "s", "size": 5, "repeat": 1, "chunk": "all",
                       "line_length": 0},
                      {"do": "expect", "conn": "s", "echo": True, "line": False},
                      {"do": "storm", "count": 3, "echo": True}]}
    assert tidy(data)["steps"] == [{"do": "open", "conn": "s", "rcvbuf": 4096},
                                   {"do": "send", "conn": "s", "size": 5, "line_length": 0},
                                   {"do": "expect", "conn": "s", "echo": True},
                                   {"do": "storm", "count": 3, "echo": True}]
    assert valid(tidy(data))
