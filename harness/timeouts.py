"""Every wait the harness does has a deadline, scaled by one multiplier.

HARNESS_TIMEOUT_MULTIPLIER (like libuv's UV_TEST_TIMEOUT_MULTIPLIER) stretches
all of them at once on a slow or loaded machine.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
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


# -- holds: time a person takes does not count --------------------------------------------
# While a hold is on (`run --debug`: the server stopped at its first error,
# a person in gdb), every deadline of this process stands still: a step, the
# stop, the readiness wait go on where they were once the hold ends.  No
# deadline is put on the person; an interrupt still ends the run.
_hold_lock = threading.Lock()
_held_before = 0.0              # seconds held by the holds that have ended
_hold_since: float | None = None


def held() -> float:
    """Seconds this process has spent holding, the current hold included."""
    with _hold_lock:
        now = time.monotonic()
        return _held_before + (now - _hold_since if _hold_since is not None else 0.0)


@contextmanager
def hold():
    """Every Deadline stands still while this is on."""
    global _held_before, _hold_since
    with _hold_lock:
        nested = _hold_since is not None
        if not nested:
            _hold_since = time.monotonic()
    try:
        yield
    finally:
        if not nested:
            with _hold_lock:
                _held_before += time.monotonic() - _hold_since
                _hold_since = None


class Deadline:
    """A point in time, pushed back by the time spent in holds; `left()` is
    never negative."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.held_at_start = held()

    def left(self) -> float:
        return max(0.0, self.end + held() - self.held_at_start - time.monotonic())

    def expired(self) -> bool:
        return self.left() <= 0.0
