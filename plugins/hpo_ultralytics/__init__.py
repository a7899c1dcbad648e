"""hpo backend ``ultralytics``: Ultralytics' own genetic tuner, run through hpo's core.

Proposals come from the native algorithm, ``ultralytics.engine.tuner.Tuner._mutate`` of the
installed Ultralytics (8.4.x): the first trial evaluates the defaults, each later one mutates a
fitness-weighted parent among the best previous results. Trials run through hpo's runner and
study; the native files ``<study>/ultralytics/tune_results.ndjson`` and
``best_hyperparameters.yaml`` are written too, for users who know them. Their ``fitness`` is
the study objective (negated when the objective is minimised, since the native tuner maximises),
not Ultralytics' ``fitness``. Failed trials are not written there, so they never become parents.

What the native tuner lacks, added here (the numbers: "Defaults and the numbers behind them" in
benchmarks/README.md):

- Log-scaled ranges (``{type: logfloat, ...}``, the default space's ``lr0`` under Adam-family
  optimizers): the native form is linear ``(low, high)``, so such a key is handed to the native
  tuner in ``log10`` coordinates and its proposals turned back (:class:`._native.NativeProposals`):
  the mutation and the random start are uniform in the logarithm. Choice parameters stay refused.
- The start: the first proposal is the space's starting configuration (:meth:`hpo.SearchSpace.defaults`),
  Ultralytics' defaults as in the native tuner unless the space sets a ``start`` (hpo's ``resolve``
  optimizer policy starts at ``optimizer=auto``'s ``lr0`` and ``momentum``).

- The native start by default (``initial_random=0``): after the first trial (the start), every
  proposal is the native mutation of the complete trials so far. Chosen on 2026-12-07 on
  development seeds by a rule committed before the run (benchmarks/protocol-dev-ultralytics.yaml,
  benchmarks/results/dev-ultralytics/decision.md): under hpo's defaults (no optimizer given, so
  Ultralytics' ``auto``; the task's default space), the mean final test score over 4 seed-problem
  cells was 0.570 with the native start against 0.555 with 2 uniform draws and 0.522 with 6 (0.578
  with median stopping on top, a tie by the rule, which prefers no stopping). Where Ultralytics'
  defaults start far from the good region (``optimizer=AdamW`` at the SGD default ``lr0=0.01``),
  a random initial population helped instead (``initial_random=6`` won 13 of 14 real seed-problem
  pairs against ``model.tune`` there): ``--initial-random 6`` draws 6 proposals uniformly from the
  space after the start before the mutation begins. A proposal asked before any trial has
  completed (concurrent trials at the start) is drawn uniformly too: the mutation needs a result,
  and without one the native tuner would propose the start again.
- Early stopping, off by default (``pruner="none"``: every trial trains all its epochs, as in the
  native tuner). With ``pruner="percentile"``, after each epoch a trial whose objective is worse
  than the median (``prune_percentile=50``) of the complete trials' objectives at the same epoch
  is stopped and recorded ``pruned`` (the rule of Optuna's ``PercentilePruner``); pruned trials
  never become parents. Off since 2026-12-05: in the real equal-wall-clock runs of 2026-12-04 (2
  seeds x 2 problems) it stopped 46 of 58 digits-cls trials after epoch 1 or 2, whose rankings are
  mostly noise (epoch-1/final Spearman 0.27 in the bfloat16-era recording, 0.28 in fp32), leaving
  6 complete trials per study as parents against ``model.tune``'s 12; the backend lost to
  ``model.tune`` on 3 of 4 seed-problem pairs and tied the fourth. On top of the random start it is
  ahead in the simulator (+0.024 top-1, p = 0.010) but level in the real runs, 7 seeds paired with
  the defaults (+0.019 top-1, p = 0.69; -0.006 mAP50-95, p = 0.53), so it stays off.

Every trial costs less than a ``model.tune`` iteration (no ``yolo train`` subprocess), so more
proposals fit in the same wall time.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from hpo import (
    Backend,
    BackendOptions,
    ConfigError,
    Kind,
    RunFailedError,
    Suggestion,
    TrialRecord,
    TrialStatus,
    TuneConfig,
    hookimpl,
)
from hpo.files import atomic_write_text

from ._native import NativeProposals

__all__ = ["UltralyticsBackend", "hpo_register_backends"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of Ultralytics' log prefix


class UltralyticsOptions(BackendOptions):
    """Options of the ultralytics backend (the arguments of the native ``Tuner._mutate``)."""

    parents: int = Field(9, ge=1, description="number of best previous results a child is mutated from (native n=9)")
    sigma: float = Field(0.2, gt=0, le=1, description="normalised mutation standard deviation (native sigma=0.2)")
    initial_random: int = Field(
        0,
        ge=0,
        description="proposals after the first (the start) drawn uniformly from the space before the mutation "
        "starts: a random initial population (0, the default: the native tuner's start, mutating the start; "
        "6 helps where Ultralytics' defaults start far from the good region, e.g. optimizer=AdamW at lr0 0.01)",
    )
    pruner: Literal["none", "percentile"] = Field(
        "none",
        description="early stopping: 'none': every trial trains all its epochs, as Ultralytics' own tuner; "
        "'percentile' stops a trial whose objective after an epoch is worse than "
        "prune_percentile of the complete trials' at that epoch (Optuna's PercentilePruner rule)",
    )
    prune_percentile: float = Field(
        50.0,
        gt=0,
        lt=100,
        description="percentile of the complete trials' objectives at the same epoch a trial must reach (50: the median)",
    )
    prune_startup_trials: int = Field(4, ge=1, description="complete trials with that epoch before a trial may be stopped")
    prune_min_epoch: int = Field(1, ge=1, description="first epoch after which a trial may be stopped")

    def check(self, config: TuneConfig) -> None:
        """Refuse choice parameters (the native form is numeric ``(low, high)``; log-scaled ranges are
        searched in ``log10`` coordinates, :class:`hpo_ultralytics._native.NativeProposals`), and a space with
        fewer distinct configurations than ``config.iterations`` (the native ``Tuner._mutate`` never
        repeats one and raises after 200 tries; counted by :func:`_distinct_values`).

        Raises:
            hpo.errors.ConfigError: naming the parameters and the fix.
        """
        bad = [k for k, p in config.space.items() if p.kind is Kind.CHOICE]
        if bad:
            raise ConfigError(
                f"space: the ultralytics backend mutates numeric (low, high) ranges only; {', '.join(bad)} "
                f"{'is a choice parameter' if len(bad) == 1 else 'are choice parameters'}: use --backend optuna or ray, "
                "or give a range"
            )
        sizes = {k: _distinct_values(p) for k, p in config.space.items()}
        total = math.prod(sizes.values())
        if config.iterations is not None and total < config.iterations:
            shown = ", ".join(f"{k}: {n} values" for k, n in sizes.items())
            raise ConfigError(
                f"space: the ultralytics backend tries each configuration once (Tuner._mutate refuses duplicates) but "
                f"this space holds only {total} distinct configurations ({shown}) for --iterations {config.iterations}; widen an integer range, "
                f"add a float parameter, lower --iterations to {total}, or use --backend optuna"
            )


class UltralyticsBackend(Backend):
    """Ultralytics' native genetic mutation (``Tuner._mutate``), with hpo's runner, records and resume.

    Proposal ``k`` of the study (0-based, counting every trial recorded before it) draws from
    ``numpy.random.default_rng([seed, k])`` when ``--seed`` is given, so a seeded study proposes
    the same sequence on every run.
    """

    name = "ultralytics"
    description = "Ultralytics' native genetic tuner (mutation of the best previous results); --concurrent-trials N trains N proposals at once"
    library = "ultralytics"
    Options = UltralyticsOptions
    options: UltralyticsOptions

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.tune_dir = Path(self.study.path) / "ultralytics"
        self.tune_dir.mkdir(parents=True, exist_ok=True)
        self.native = NativeProposals(
            self.config.space.to_ultralytics(),
            self.config.train_args,
            self.tune_dir,
            int_keys=frozenset(k for k, p in self.config.space.items() if p.kind is Kind.INT),
            log_keys=frozenset(k for k, p in self.config.space.items() if p.log),
            start=self.config.space.defaults(),
        )
        self.sign = 1.0 if self.config.direction == "maximize" else -1.0
        self._complete = 0  # complete trials told (the native file's rows)
        self._best: dict[str, Any] | None = None  # the native row of the best of them (the first on ties)
        self._curves: list[dict[int, float]] = []  # {epoch: objective} of each complete trial
        records = self.study.records()
        self._asked = len(records)  # proposal counter (seeds the native draws)
        # a log-scaled integer key can map two native proposals to one value: the mutation is drawn again
        self._log_int = any(p.log and p.kind is Kind.INT for p in self.config.space.values())
        # configurations proposed so far, which the uniform draws (and a log integer key's mutations) avoid:
        # kept while one may follow
        keep = (
            self._log_int
            or self._asked <= self.options.initial_random
            or not any(r.status is TrialStatus.COMPLETE for r in records.values())
        )
        self._tried = {_key(r.params) for r in records.values()} if keep else set()

    def ask(self) -> Suggestion:
        """The next proposal: proposal 0 (no results yet) is the study's start (:meth:`hpo.SearchSpace.defaults`:
        Ultralytics' defaults, as the native start, unless the space sets ``start``);
        proposals ``1 .. initial_random`` are drawn uniformly from the space (through the native
        ``Tuner._constrain``), and so is any later one asked before a trial has completed
        (concurrent trials at the start: the native mutation would propose the start again); every
        other one is the native mutation (``Tuner._mutate``) of the complete trials so far.

        Raises:
            hpo.errors.RunFailedError: the native tuner found no untried configuration in its 200 tries
                (a nearly exhausted integer space: ``check`` only guarantees there are enough).
        """
        k, self._asked = self._asked, self._asked + 1
        if 1 <= k and (k <= self.options.initial_random or self._complete == 0):  # the mutation needs a result
            for attempt in range(100):  # a small integer space may repeat a configuration: draw again
                params = self.native.uniform(seed=self.config.seed, draw=k, attempt=attempt)
                if _key(params) not in self._tried:
                    self._remember(params)
                    return Suggestion(params)
        try:
            retries = 100 if self._log_int else 1
            for attempt in range(retries):
                params = self.native.mutate(
                    self.options.parents, self.options.sigma, seed=self.config.seed, draw=k, attempt=attempt
                )
                if _key(params) not in self._tried:
                    break
        except RuntimeError as e:
            native = _ANSI.sub("", str(e)).strip()
            raise RunFailedError(
                f"ultralytics backend: {native} after {self._complete} complete trials (the space holds "
                f"{math.prod(_distinct_values(p) for p in self.config.space.values())} configurations); widen the space, "
                "or use --resume with a smaller --iterations"
            ) from None
        self._remember(params)
        return Suggestion(params)

    def _remember(self, params: dict[str, Any]) -> None:
        """Keep a proposal for the uniform draws still to come (none after the first
        ``initial_random`` proposals: the native mutation checks its history itself, except in
        ``log10`` coordinates, where two proposals can round to one log-scaled integer value)."""
        if self._log_int or self._asked <= self.options.initial_random or self._complete == 0:
            self._tried.add(_key(params))

    def _native_record(self, record: TrialRecord) -> dict[str, Any]:
        data_name = Path(self.config.data.source).stem
        objective = record.objective
        assert objective is not None  # told only for complete trials
        return self.native.result_record(
            record.id + 1,
            self.sign * float(objective),
            dict(record.params),
            {data_name: {**record.final_metrics, "fitness": self.sign * float(objective)}},
            {data_name: str(self.study.trial_dir(record.id))},
        )

    def _curve(self, record: TrialRecord) -> dict[int, float]:
        """``{epoch: objective}`` of a trial's epochs that have a finite value (a NaN is ``None`` in a
        record read back from the study, as :meth:`restore` gets them)."""
        metric = self.config.metric
        values = {int(r["epoch"]): r.get(metric) for r in record.epochs if "epoch" in r}
        return {e: float(v) for e, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}

    def should_prune(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """With ``pruner="percentile"``, stop a trial clearly behind: its objective after epoch ``e`` (``prune_min_epoch <= e <
        epochs``) is worse than ``prune_percentile`` of the objectives of the complete trials at ``e``,
        once ``prune_startup_trials`` of them have one (the rule of Optuna's ``PercentilePruner``,
        ``numpy.percentile``, linear interpolation). An epoch without the metric is never pruned on;
        the last epoch never is (the trial is then complete)."""
        if self.options.pruner == "none":
            return False
        epoch = int(row.get("epoch", 0))
        value = row.get(self.config.metric, math.nan)
        if epoch < self.options.prune_min_epoch or epoch >= self.config.epochs or not math.isfinite(value):
            return False
        peers = [self.sign * c[epoch] for c in self._curves if epoch in c]
        if len(peers) < self.options.prune_startup_trials:
            return False
        import numpy as np

        return bool(self.sign * value < float(np.percentile(peers, self.options.prune_percentile)))

    def tell(self, record: TrialRecord) -> None:
        if record.status is not TrialStatus.COMPLETE or record.objective is None:
            return
        self._curves.append(self._curve(record))
        result = self._native_record(record)
        self.native.save_result(result)
        self._count(result)
        self._write_best()

    def restore(self, finished: list[TrialRecord]) -> None:
        complete = [r for r in finished if r.status is TrialStatus.COMPLETE and r.objective is not None]
        results = [self._native_record(r) for r in complete]
        self._curves = [self._curve(r) for r in complete]
        self.native.set_results(results)
        self._complete, self._best = 0, None
        for result in results:
            self._count(result)
        if results:
            self._write_best()

    def _count(self, result: dict[str, Any]) -> None:
        self._complete += 1
        if self._best is None or result["fitness"] > self._best["fitness"]:
            self._best = result

    def _write_best(self) -> None:
        import yaml

        best = self._best
        assert best is not None
        header = (
            f"# hpo study {self.study.path}: best of {self._complete} complete iterations "
            f"at iteration {best['iteration']}, fitness={best['fitness']} ({self.config.metric})\n"
        )
        atomic_write_text(
            self.tune_dir / "best_hyperparameters.yaml", header + yaml.safe_dump(best["hyperparameters"], sort_keys=False)
        )


def _key(params: Any) -> tuple[tuple[str, Any], ...]:
    """A configuration as a hashable key, to recognise one proposed before."""
    return tuple(sorted((k, float(v)) for k, v in dict(params).items()))


def _distinct_values(param: Any) -> int:
    """How many values the native ``Tuner._constrain`` can give a parameter: every whole number
    in an integer range (``CFG_INT_KEYS`` and the space's other integer keys), every multiple of 1e-5 in a float range (it rounds to 5 decimals),
    of ``log10`` of the value for a log-scaled float range."""
    if param.kind is Kind.INT:
        return int(param.high) - int(param.low) + 1
    low, high = (math.log10(param.low), math.log10(param.high)) if param.log else (param.low, param.high)
    return math.floor(round(high * 1e5, 6)) - math.ceil(round(low * 1e5, 6)) + 1


@hookimpl
def hpo_register_backends() -> list[type[Backend]]:
    """Register the ultralytics backend."""
    return [UltralyticsBackend]
