"""The study's clock: real time, or a simulated clock that simulations advance instead of sleeping.

The study loop measures its time budget with :func:`monotonic`; a simulated trainer
(:mod:`hpo.simulate`, the benchmark's surrogate trainer) waits with :func:`sleep`. Normally these
are ``time.monotonic`` and ``time.sleep``. Inside :func:`simulated`, :func:`sleep` returns at once
and moves the clock forward instead, so a study with a 4-minute budget of simulated 6-second
epochs runs in milliseconds and still stops where the real one would (the idea of Syne Tune's
simulator backend). Real trainings never call :func:`sleep`: their seconds are real.

The simulated clock is one counter for the whole process: it is exact with one trial at a time
(``concurrent_trials=1``); with several trials at once their sleeps would add up instead of
overlapping.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

__all__ = ["monotonic", "sleep", "simulated", "SimulatedClock"]


class SimulatedClock:
    """A clock that moves only when :meth:`advance` is called.

    Args:
        start: its reading at the start, seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current reading, seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (negative values are ignored)."""
        with self._lock:
            self._now += max(0.0, float(seconds))


_active: SimulatedClock | None = None


def monotonic() -> float:
    """Seconds of the study's clock: ``time.monotonic()``, or the simulated clock inside :func:`simulated`."""
    return _active.now() if _active is not None else time.monotonic()


def sleep(seconds: float) -> None:
    """Wait ``seconds``: ``time.sleep``, or advance the simulated clock at once inside :func:`simulated`."""
    if _active is not None:
        _active.advance(seconds)
    else:
        time.sleep(max(0.0, seconds))


@contextlib.contextmanager
def simulated(start: float = 0.0) -> Iterator[SimulatedClock]:
    """Run the block on a :class:`SimulatedClock` (restored to real time after it; not reentrant)."""
    global _active
    previous, _active = _active, SimulatedClock(start)
    try:
        yield _active
    finally:
        _active = previous
