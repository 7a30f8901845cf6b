"""Every wait the harness does has a deadline, scaled by one multiplier.

HARNESS_TIMEOUT_MULTIPLIER (like libuv's UV_TEST_TIMEOUT_MULTIPLIER) stretches
all of them at once on a slow or loaded machine.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

ENV_MULTIPLIER = "HARNESS_TIMEOUT_MULTIPLIER"


def multiplier() -> float:
    raw = os.environ.get(ENV_MULTIPLIER, "1")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_MULTIPLIER}={raw!r}: expected a number such as 2 or 0.5") from None
    if value <= 0:
        raise ValueError(f"{ENV_MULTIPLIER}={raw!r}: expected a number above 0")
    return value


def scaled(seconds: float) -> float:
    return seconds * multiplier()


@dataclass(frozen=True)
class Deadlines:
    """Seconds, before scaling.  Under valgrind a server starts and stops an
    order of magnitude slower than natively, hence the generous defaults."""

    ready: float = 30.0     # from start to listening
    step: float = 10.0      # one client step (expect, wait for close, ...)
    stop: float = 30.0      # from the stop signal to exit (leak check included)

    def scaled(self) -> "Deadlines":
        m = multiplier()
        return Deadlines(self.ready * m, self.step * m, self.stop * m)


class Deadline:
    """A point in time; `left()` is never negative."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end
