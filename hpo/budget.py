"""The study's time budget: :class:`TimeBudget`, a pure object (its queries change nothing).

The budget is wall-clock seconds of the whole study, over all its runs: the seconds its earlier
runs spent (``elapsed_s`` in ``study.json``, saved after every trial) plus this run's, read from
:mod:`hpo.clock` (real time, or a simulation's). Whoever acts on a spent budget (the ledger, when
it starts no more trials or stops a running one) records that it did.
"""

from __future__ import annotations

from . import clock

__all__ = ["TimeBudget"]


class TimeBudget:
    """The wall-clock budget of a study.

    Args:
        limit_s: the budget in seconds (``None``: no budget; never spent).
        elapsed_before: seconds the study's earlier runs spent.
    """

    def __init__(self, limit_s: float | None, elapsed_before: float = 0.0) -> None:
        self.limit_s = limit_s
        self.elapsed_before = float(elapsed_before)
        self._start = clock.monotonic()  # real time, or a simulation's (hpo.clock)

    def elapsed_s(self) -> float:
        """Seconds the study has run: its earlier runs plus this one."""
        return self.elapsed_before + (clock.monotonic() - self._start)

    def time_left(self) -> float | None:
        """Seconds left (``None``: no budget; 0 when spent)."""
        return None if self.limit_s is None else max(0.0, self.limit_s - self.elapsed_s())

    def spent(self) -> bool:
        """Whether the budget is spent (never, without one)."""
        left = self.time_left()
        return left is not None and left <= 0
