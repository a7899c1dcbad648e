"""A plain random-search baseline, as an hpo backend that lives only inside the benchmark.

It is not installed as a built-in backend: :func:`register` adds it to hpo's plugin manager of the
current process (``pm.register``), the same hook third-party plugins implement, so the study runs
through hpo's core (runner, records, timeouts) exactly like the other hpo contenders and only the
proposals differ.
"""

from __future__ import annotations

import math
from typing import Any

from hpo import Backend, Kind, Suggestion, TrialRecord, hookimpl

__all__ = ["RandomBackend", "register", "hpo_register_backends"]

NAME = "bench-random"


class RandomBackend(Backend):
    """Independent uniform samples from the search space (log-uniform for ``log`` parameters).

    Deterministic for a given study ``seed``: proposal ``k`` (0-based, counting the trials the
    study held when the backend was made) draws from ``numpy.random.default_rng([seed, k])``;
    never prunes, never learns.
    """

    name = NAME
    description = "benchmark baseline: uniform random search (log-uniform for log parameters)"
    library = "numpy"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._asked = len(self.study.records()) if self.study is not None else 0

    def ask(self) -> Suggestion:
        import numpy as np

        seed = self.config.seed if self.config.seed is not None else 0
        rng = np.random.default_rng([seed, self._asked])
        self._asked += 1
        out: dict[str, Any] = {}
        for key, p in self.config.space.items():
            if p.kind is Kind.CHOICE:
                out[key] = p.choices[int(rng.integers(len(p.choices)))]
                continue
            low, high = p.low, p.high
            if low is None or high is None:  # a range always has both (hpo.SearchSpace checks it)
                raise ValueError(f"space: '{key}' is a range without bounds")
            if p.log:
                value = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                value = rng.uniform(low, high)
            out[key] = p.clip(value)
        return Suggestion(out)

    def tell(self, record: TrialRecord) -> None:
        """Random search learns nothing."""


@hookimpl
def hpo_register_backends() -> list[type[Backend]]:
    """Register :class:`RandomBackend` (only in a process that called :func:`register`)."""
    return [RandomBackend]


def register() -> None:
    """Add this module to hpo's plugin manager of this process (idempotent).

    Must run before the first :func:`hpo.plugins.backends` call of the process, which caches the list.
    """
    import sys

    from hpo.plugins import register as register_plugin

    register_plugin(sys.modules[__name__], name="hpo_bench.random_search")
