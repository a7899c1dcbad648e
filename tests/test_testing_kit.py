"""The in-process kit (hpo.testing.BackendTestCase) fails wrong backends, each on the test meant
for its fault, and passes the documented example: run with pytest's own ``pytester``."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PLUGINS = Path(__file__).parent / "plugins"

#: Backends with one deliberate fault each, derived from the documented example (median-random).
WRONG_BACKENDS = '''
import math
import random
import statistics
import sys

sys.path.insert(0, {plugins!r})

from hpo import Backend, Suggestion, TrialStatus
from hpo.testing import LINEAR_SPACE, LINEAR_SPACES, BackendTestCase
from hpo_median_random import MedianRandom


class BelowTheMedian(MedianRandom):
    """The example's old rule: prune below the median, even when the metric is a loss."""

    def should_prune(self, record, row):
        value = row.get(self.config.metric)
        peers = [c[row["epoch"]] for c in self.curves if row["epoch"] in c]
        return len(peers) >= self.options.warmup and value < statistics.median(peers)


class RawParents(Backend):
    """Mutates the trial with the largest objective, even when the metric is a loss."""

    name = "raw-parents"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.done, self.asked = [], len(self.study.records())

    def ask(self):
        self.asked += 1
        rng = random.Random(f"{{self.config.seed}}/{{self.asked}}")
        parent = max(self.done, key=lambda r: r.objective).params if len(self.done) >= 4 else None
        params = {{}}
        for key, p in self.config.space.items():
            x = rng.uniform(p.low, p.high) if parent is None else parent[key] + rng.gauss(0, 0.1 * (p.high - p.low))
            params[key] = p.clip(x)
        return Suggestion(params)

    def tell(self, record):
        if record.status is TrialStatus.COMPLETE:
            self.done.append(record)


class Forgetful(MedianRandom):
    """Rebuilds nothing on resume."""

    def restore(self, finished):
        pass


class Unsafe(MedianRandom):
    """Keeps every epoch's value in one dict that every trial's thread writes and reads, unguarded
    (its decisions are the example's)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rows = {{}}

    def should_prune(self, record, row):
        self.rows[(record.id, row["epoch"])] = row.get(self.config.metric)
        self.peers = [v for (t, e), v in self.rows.items() if e == row["epoch"] and t != record.id and v is not None]
        return super().should_prune(record, row)


class FloatIntegers(MedianRandom):
    """Proposes 3.0 for an integer key (the core would accept it: the kit does not)."""

    def ask(self):
        s = super().ask()
        return Suggestion({{k: float(v) if self.config.space[k].kind.value == "int" else v for k, v in s.params.items()}})


class TestBelowTheMedian(BackendTestCase):
    backend = BelowTheMedian


class TestRawParents(BackendTestCase):
    backend = RawParents
    space, spaces, prunes = LINEAR_SPACE, LINEAR_SPACES, False


class TestForgetful(BackendTestCase):
    backend = Forgetful


class TestUnsafe(BackendTestCase):
    backend = Unsafe


class TestFloatIntegers(BackendTestCase):
    backend = FloatIntegers


class TestTheExample(BackendTestCase):
    backend = MedianRandom
'''

TESTS = (
    "test_ask_fits_every_space",
    "test_tell_accepts_complete_pruned_and_failed_trials",
    "test_restore_leads_to_the_same_next_decisions_as_telling",
    "test_should_prune_is_safe_from_several_threads",
    "test_minimise_mirrors_maximise",
    "test_pruning_follows_the_direction",
)

#: The tests each wrong backend must fail (and no other).
EXPECTED_FAILURES = {
    "TestBelowTheMedian": {"test_minimise_mirrors_maximise", "test_pruning_follows_the_direction"},
    "TestRawParents": {"test_minimise_mirrors_maximise"},
    "TestForgetful": {"test_restore_leads_to_the_same_next_decisions_as_telling"},
    "TestUnsafe": {"test_should_prune_is_safe_from_several_threads"},
    "TestFloatIntegers": {"test_ask_fits_every_space"},
    "TestTheExample": set(),
}


def run_kit(pytester: pytest.Pytester, *args: str) -> dict[str, dict[str, str]]:
    """``{class: {test: outcome}}`` of an in-process pytest run of the kit on the wrong backends."""
    pytester.makepyfile(test_wrong_backends=WRONG_BACKENDS.format(plugins=str(PLUGINS)))
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", *args)
    out: dict[str, dict[str, str]] = {}
    for report in recorder.getreports("pytest_runtest_logreport"):
        if report.when == "call" or report.outcome != "passed":
            _, cls, test = report.nodeid.split("::")
            out.setdefault(cls, {})[test] = report.outcome
    return out


def test_the_kit_fails_each_wrong_backend_on_its_fault_and_passes_the_example(pytester: pytest.Pytester) -> None:
    got = run_kit(pytester)
    for cls, expected in EXPECTED_FAILURES.items():
        assert set(got[cls]) == set(TESTS), (cls, got[cls])
        failed = {t for t, outcome in got[cls].items() if outcome == "failed"}
        if cls == "TestUnsafe" and not failed:  # a race: caught in 19 of 20 runs on a loaded 2-core machine
            for _ in range(2):
                again = run_kit(pytester, "-k", "TestUnsafe and threads")["TestUnsafe"]
                failed = {t for t, outcome in again.items() if outcome == "failed"}
                if failed:
                    break
        assert failed == expected, f"{cls}: failed {sorted(failed)}, expected {sorted(expected)}"
