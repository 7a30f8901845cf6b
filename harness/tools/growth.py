"""Leak growth: the same scenario at two connection counts, and the leak's
slope (bytes and blocks per connection) and constant part.

A leak that grows with the sessions alive (fire_and_forget: every session's
state) has a clear per-connection slope; a one-time leak has slope 0."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..drive.scenario import Scenario
from ..runner import RunResult


def with_load(scenario: Scenario, count: int) -> Scenario:
    """The scenario with every explicit connection count (`open` with
    `count`, `storm`) set to `count`."""
    scaled = copy.deepcopy(scenario)
    changed = 0
    for step in scaled.steps:
        if step.do in ("open", "storm") and "count" in step.args:
            step.args["count"] = count
            changed += 1
    if not changed:
        raise ValueError(f"scenario {scenario.name!r} has no connection count to vary: "
                         "it needs an `open` step with `count` or a `storm` step")
    scaled.name = f"{scenario.name}-x{count}"
    return scaled


def leaked(result: RunResult) -> tuple[int, int]:
    """Bytes and blocks left at exit: `in use at exit` where valgrind says it,
    else the lost amounts (a sanitizer's leak report)."""
    if result.log is None:
        return 0, 0
    heap = result.log.main.heap
    if heap.in_use is not None:
        return heap.in_use.bytes, heap.in_use.blocks
    parts = [a for a in (heap.definitely_lost, heap.indirectly_lost, heap.possibly_lost) if a]
    return sum(a.bytes for a in parts), sum(a.blocks for a in parts)


@dataclass
class Slope:
    points: list[tuple[int, int, int]]      # (connections, bytes, blocks)
    bytes_per_conn: float
    blocks_per_conn: float
    const_bytes: float
    const_blocks: float

    def to_json(self) -> dict:
        return {"points": [{"connections": n, "bytes": b, "blocks": k} for n, b, k in self.points],
                "bytes_per_connection": self.bytes_per_conn,
                "blocks_per_connection": self.blocks_per_conn,
                "constant_bytes": self.const_bytes, "constant_blocks": self.const_blocks}

    def describe(self) -> str:
        if self.bytes_per_conn == 0:
            kind = "no per-connection growth"
        else:
            kind = "grows with every connection"
        return (f"leak slope: {self.bytes_per_conn:,.1f} bytes and {self.blocks_per_conn:,.2f} blocks "
                f"per connection, constant part {self.const_bytes:,.0f} bytes in "
                f"{self.const_blocks:,.0f} blocks ({kind})")


def slope(points: list[tuple[int, int, int]]) -> Slope:
    (n1, b1, k1), (n2, b2, k2) = points[0], points[-1]
    if n1 == n2:
        raise ValueError("--load needs two different connection counts")
    per_b = (b2 - b1) / (n2 - n1)
    per_k = (k2 - k1) / (n2 - n1)
    return Slope(points, per_b, per_k, b1 - per_b * n1, k1 - per_k * n1)
