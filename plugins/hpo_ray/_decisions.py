"""Ray Tune's decisions in this process: the ray backend's searcher and scheduler as an :class:`hpo.Backend`.

The ray backend is an :class:`hpo.Controller`: Ray Tune's controller runs the study, so the
searcher (what to try) and the scheduler (when to stop) are reached only through a Ray cluster
and its trial actors, seconds per study. :class:`RayDecisions` builds the two objects the driver
gives Ray for the study's first experiment (:func:`hpo_ray._driver.experiment_searcher`,
:func:`hpo_ray._driver.make_scheduler`, metric ``objective``, mode from the direction) and makes
the calls Ray's controller makes on them (Ray 2.60, ``ray/tune/tune.py`` and
``ray/tune/execution/tune_controller.py``), from hpo's ask/tell loop, in milliseconds, without
``ray.init``:

- ``ask``: ``search_alg.next_trial()``, the trial added to the scheduler and set running; its
  params are the driver's (:func:`hpo_ray._driver.trial_params`);
- ``should_prune`` after epoch ``e`` before the last: the trainable's result ``{"epoch": e,
  "objective": value}`` goes to ``scheduler.on_trial_result``; ``STOP`` prunes the trial (both
  get ``on_trial_complete``, as in Ray's ``stop_trial``), otherwise the searcher gets
  ``on_trial_result``. The last epoch's result is held back, as the trainable holds it back until
  the final validation, and reported in ``tell``;
- ``tell``: a trial that trained every epoch (complete, or failed for a non-finite objective,
  which Ray saw complete) reports its last epoch, then both get ``on_trial_complete``; one the
  time budget stopped gets ``on_trial_complete`` with its last result (Ray's stopper); one whose
  training failed gets ``scheduler.on_trial_error`` and ``search_alg.on_trial_complete(error=True)``;
  a trial Ray never proposed (hpo re-ran it after a kill) is not shown to Ray, as in the driver;
- ``restore``: what the driver's resume does. Ray's ``Tuner.restore`` brings back the searcher's
  saved state (here saved after every ``tell`` to ``<study>/ray-decisions``, as Ray saves its
  experiment state) and the scheduler as it was built (``tuner.pkl``), re-adding the experiment's
  trials to it without their results. So a resumed ASHA has forgotten every rung: its decisions
  after a resume are not those of the uninterrupted study (the in-process kit shows it).

Left to the end-to-end tests (:class:`hpo.testing.BackendConformance`, ``tests/test_backend_ray.py``):
the cluster, trial actors, checkpoints and their continuation, Ray's experiment state on the
volume, later experiments (``tune-2``...), the stopper's precedence over the scheduler at the
epoch where the time budget runs out (here the scheduler sees that result first), and the
``hyperband`` scheduler, which pauses trials at a rung and continues them later from their
checkpoint, which only Ray's controller does (refused here).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher, SearchGenerator

from hpo import Backend, ConfigError, Suggestion, TrialRecord, TrialStatus

from . import RayOptions
from ._driver import experiment_searcher, make_scheduler, param_space, trial_params, tune_mode
from ._trainable import OBJECTIVE, tune_value

__all__ = ["RayDecisions", "STATE_DIR"]

#: ``<study>/ray-decisions``: where :class:`RayDecisions` saves its searcher's state after every ``tell``.
STATE_DIR = "ray-decisions"


def _never_run(config: dict[str, Any]) -> None:
    """The experiment's trainable: Ray's searcher needs one to build trials; nothing runs it."""


class _Controller:
    """The part of Ray's ``TuneController`` a scheduler may call: its live trials."""

    def __init__(self) -> None:
        self.live: set[Any] = set()

    def get_live_trials(self) -> set[Any]:
        return self.live


class RayDecisions(Backend):
    """The ray backend's searcher and scheduler, driven in this process by hpo's ask/tell loop.

    Not a registered backend (``hpo tune --backend ray`` runs :class:`hpo_ray.RayBackend`): a way to
    test Ray's decisions with hpo's settings in milliseconds (``tests/test_backend_kit.py``).

    Args:
        config, study, options: see :class:`hpo.Backend` (``options`` are :class:`hpo_ray.RayOptions`).

    Raises:
        hpo.ConfigError: the ``hyperband`` scheduler (it pauses trials: only Ray's controller runs it).
    """

    name = "ray"
    description = "Ray Tune's searcher and scheduler in this process (tests)"
    library = "ray"
    Options = RayOptions
    options: RayOptions

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        cfg, opts = self.config, self.options
        if opts.scheduler == "hyperband":
            raise ConfigError(
                "ray option 'scheduler': hyperband pauses trials at a rung and continues them from their checkpoint, "
                "which only Ray's controller does; test it end to end (BackendConformance)"
            )
        space = param_space(cfg.space)
        mode = tune_mode(cfg.direction)
        searcher = experiment_searcher(cfg, opts, 1)
        self.search_alg = SearchGenerator(searcher) if isinstance(searcher, Searcher) else searcher
        self.search_alg.set_search_properties(OBJECTIVE, mode, space)
        self.scheduler = make_scheduler(opts, cfg.epochs)
        self.scheduler.set_search_properties(OBJECTIVE, mode)
        self.state_dir = Path(self.study.path) / STATE_DIR
        self.search_alg.add_configurations(
            {"hpo": {"run": _never_run, "config": space, "num_samples": sys.maxsize, "storage_path": str(self.state_dir)}}
        )
        self._controller = _Controller()
        self._lock = threading.RLock()  # Ray's controller calls the searcher and the scheduler from one thread
        self._trials: dict[int, Any] = {}
        self._last: dict[int, dict[str, Any]] = {}
        self._stopped: set[int] = set()

    def ask(self) -> Suggestion:
        """Ray's next trial: its params, and the next unused trial id.

        Raises:
            RuntimeError: the searcher proposes none now (more trials at once than ``max_concurrent``).
        """
        with self._lock:
            trial = self.search_alg.next_trial()
            if trial is None:
                raise RuntimeError(f"ray: the searcher proposed no trial ({len(self._trials)} running; max_concurrent reached?)")
            self.scheduler.on_trial_add(self._controller, trial)
            trial.set_status(Trial.RUNNING)
            self._controller.live.add(trial)
            tid = max([*self.study.records(), *self._trials, -1]) + 1  # as the driver's TrialDirname reserves ids
            self._trials[tid] = trial
        return Suggestion(trial_params(trial, self.config.space), trial_id=tid)

    def should_prune(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """The scheduler's decision on this epoch's result (``STOP``: prune); never for the last epoch."""
        epoch = int(row.get("epoch", record.epochs_completed))
        with self._lock:
            trial = self._trials.get(record.id)
            if trial is None or record.id in self._stopped or epoch >= self.config.epochs:
                return False
            result = {"epoch": epoch, OBJECTIVE: tune_value(row.get(self.config.metric)), "training_iteration": epoch}
            self._last[record.id] = result
            if self.scheduler.on_trial_result(self._controller, trial, result) == TrialScheduler.STOP:
                self._stopped.add(record.id)
                self._complete(trial, result)
                return True
            self.search_alg.on_trial_result(trial.trial_id, result)  # CONTINUE (PAUSE needs waiting trials: none here)
            return False

    def tell(self, record: TrialRecord) -> None:
        with self._lock:
            trial = self._trials.pop(record.id, None)
            stopped = record.id in self._stopped
            self._stopped.discard(record.id)
            last = self._last.pop(record.id, None)
            if trial is None or stopped:  # never proposed by Ray; or Ray completed it when it stopped it
                return
            trained_all = record.epochs_completed >= self.config.epochs and bool(record.epochs)
            if record.status is TrialStatus.FAILED and not trained_all:  # the trainable raised: Ray's trial errored
                self.scheduler.on_trial_error(self._controller, trial)
                self.search_alg.on_trial_complete(trial.trial_id, error=True)
                trial.set_status(Trial.ERROR)
                self._controller.live.discard(trial)
            else:
                if trained_all:  # the held-back last epoch, reported with the outcome
                    e = self.config.epochs
                    last = {"epoch": e, OBJECTIVE: tune_value(record.epochs[-1].get(self.config.metric)), "training_iteration": e}
                    if self.scheduler.on_trial_result(self._controller, trial, last) != TrialScheduler.STOP:
                        self.search_alg.on_trial_result(trial.trial_id, last)
                self._complete(trial, last or {})
            self.search_alg.save_to_dir(str(self.state_dir), session_str="hpo")

    def _complete(self, trial: Any, result: dict[str, Any]) -> None:
        """Ray's ``stop_trial`` of a running trial: both hear it completed with its last result."""
        self.scheduler.on_trial_complete(self._controller, trial, result)
        self.search_alg.on_trial_complete(trial.trial_id, result=result)
        trial.set_status(Trial.TERMINATED)
        self._controller.live.discard(trial)

    def restore(self, finished: list[TrialRecord]) -> None:
        """As the driver's resume: the searcher's saved state comes back; the scheduler is the one
        built in ``__init__`` (Ray restores it from ``tuner.pkl``, as it was built)."""
        with self._lock:
            if self.search_alg.has_checkpoint(str(self.state_dir)):
                self.search_alg.restore_from_dir(str(self.state_dir))
