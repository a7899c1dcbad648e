"""One trial, as every backend and runner sees it: what to train (:class:`TrialSpec`), what came
back (:class:`TrialOutcome`) and the one entry that trains it (:func:`train_trial`).

The trial's *trainer* is a function ``trainer(spec, report, progress) -> TrialOutcome`` named in
``spec.trainer`` (``"module:function"``, so a spec stays picklable across processes and Ray
workers). The default, :data:`ULTRALYTICS_TRAINER`, trains with Ultralytics in the current
process (:mod:`hpo._worker`); :func:`hpo.testing.simulated_trainer` returns learning curves from a
formula in milliseconds (tests, benchmark simulations). Every way of running a trial (the core's
forked workers, the ray backend's Ray workers, the in-process runner of simulations) calls
:func:`train_trial`, so the rules below hold for all of them:

- ``report(row)`` is called after each epoch with ``{"epoch": n, <metric>: value, ...}`` (``n``
  1-based); it returns ``True`` to stop (prune) the trial before its next epoch;
- a trainer that stops on ``report``'s request returns an outcome with status ``PRUNED``;
- an exception of the trainer becomes a ``FAILED`` outcome carrying its first line (the traceback
  goes to the trial's log); a failed trial is never given an objective.

This module is light (no torch): the trainer is imported when a trial runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .study import TrialStatus

__all__ = [
    "TrialSpec",
    "TrialOutcome",
    "objective_of",
    "Trainer",
    "Report",
    "Progress",
    "train_trial",
    "resolve_trainer",
    "trainer_in_process",
    "ULTRALYTICS_TRAINER",
    "error_text",
]

#: The default trainer: real Ultralytics training (:func:`hpo._worker.train_ultralytics`).
ULTRALYTICS_TRAINER = "hpo._worker:train_ultralytics"

#: ``report(row) -> stop?``: called after each epoch.
Report = Callable[[dict[str, float]], bool]
#: ``progress({"epoch": n, "batch": i, "batches": nb})``: called during an epoch (display only).
Progress = Callable[[dict[str, int]], None]


@dataclass
class TrialSpec:
    """What one trial trains. Picklable: it crosses process boundaries (forked workers, Ray).

    Built by the core (:meth:`hpo.ledger.StudyLedger.trial_spec`) from the study settings, parsed once;
    backends never build one by hand.

    Attributes:
        trial_id: the study's trial id.
        model: model YAML name or absolute ``.pt`` path.
        task: Ultralytics task (``detect``, ``classify``, ...).
        data: absolute data YAML path or classification folder.
        params: sampled values ``{train arg: value}``, one per search-space key.
        train_args: fixed Ultralytics train args (``imgsz``, ``batch``, ``device``...).
        epochs: epochs to train (the full fidelity).
        run_dir: the trial's folder (``<study>/trials/<id>``), Ultralytics' run folder.
        metric: the study's objective metric (what ``report`` rows must carry to be judged).
        env: environment variables set in a worker process before training (``CUDA_VISIBLE_DEVICES``).
        integrations: Ultralytics integration settings to leave on (default: none).
        trainer: ``"module:function"`` of the trainer (default :data:`ULTRALYTICS_TRAINER`).
        trainer_options: JSON-able options for the trainer (a simulated trainer's curve settings).
        eval_split: after a complete training, also validate the best weights (``best.pt``, chosen
            by Ultralytics on the validation split) on this split of the data (``"test"``), into
            :attr:`TrialOutcome.eval_metrics`; ``None`` (trials): no extra validation. The final
            model's runs set it (:mod:`hpo.final`).
    """

    trial_id: int
    model: str
    task: str
    data: str
    params: dict[str, Any]
    train_args: dict[str, Any]
    epochs: int
    run_dir: str
    metric: str = ""
    env: dict[str, str] = field(default_factory=dict)
    integrations: tuple[str, ...] = ()
    trainer: str = ULTRALYTICS_TRAINER
    trainer_options: dict[str, Any] = field(default_factory=dict)
    eval_split: str | None = None

    @property
    def log_file(self) -> Path:
        """``<run_dir>/train.log``: the trial's stdout and stderr."""
        return Path(self.run_dir) / "train.log"

    @property
    def in_process(self) -> bool:
        """Whether the trainer declares itself safe to run without a process of its own (``in_process``,
        :class:`Trainer`): no global state, so a worker process may also run one trial after another."""
        return trainer_in_process(self.trainer)

    def replace(self, **changes: Any) -> TrialSpec:
        """A copy with ``changes`` (e.g. another trial's id, params and run folder)."""
        return dataclasses.replace(self, **changes)


@dataclass
class TrialOutcome:
    """What came back from a trial.

    Attributes:
        status: ``TrialStatus.COMPLETE``, ``PRUNED`` or ``FAILED``.
        epochs: per-epoch metric rows, ``[{"epoch": 1, ...}, ...]``.
        final_metrics: metrics of the final validation of the best weights (complete trials).
        applied: the values of the space's keys as the trainer applied them.
        train_s: seconds inside the trainer.
        duration_s: seconds from starting the trial to its result (the driver's view).
        weights: best (else last) weights path, if any.
        error: why a trial failed (or was pruned), one line.
        eval_metrics: metrics of the best weights on ``spec.eval_split`` (Ultralytics' names, e.g.
            ``metrics/accuracy_top1``), when the spec asked for it and the training completed.
    """

    status: TrialStatus
    epochs: list[dict[str, float]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    train_s: float | None = None
    duration_s: float = 0.0
    weights: str | None = None
    error: str | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = TrialStatus(self.status)
        if not self.status.finished:
            raise ValueError(f"a trial outcome is complete, pruned or failed, not {self.status.value}")

    def objective(self, metric: str) -> float | None:
        """The trial's objective: :func:`objective_of` its epochs and final metrics."""
        return objective_of(self.epochs, self.final_metrics, metric)


def objective_of(outcome_epochs: list[dict[str, float]], final_metrics: dict[str, float], metric: str) -> float | None:
    """The objective of a trial: ``metric`` from the final validation (best weights), else from the
    last epoch that reported it. Computed from the raw metric, never from Ultralytics' ``fitness``.
    """
    if metric in final_metrics:
        return float(final_metrics[metric])
    for row in reversed(outcome_epochs):
        if metric in row:
            return float(row[metric])
    return None


class Trainer(Protocol):
    """``trainer(spec, report, progress) -> TrialOutcome``: trains ``spec`` in this process.

    May set the attribute ``in_process = True`` when it is safe to run in the driver's own thread
    (no global state, no GPU, e.g. a simulation); the core's runner then skips the worker process.
    """

    def __call__(self, spec: TrialSpec, report: Report, progress: Progress | None) -> TrialOutcome: ...


def resolve_trainer(name: str) -> Trainer:
    """The trainer function named ``"module:function"``.

    Raises:
        hpo.errors.ConfigError: the module or the function cannot be imported.
    """
    from .errors import ConfigError

    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"trainer: cannot import '{name}' ({type(e).__name__}: {e}); give module:function") from None
    if not callable(fn):
        raise ConfigError(f"trainer: '{name}' is not a function")
    return fn


def trainer_in_process(name: str) -> bool:
    """Whether the trainer named ``"module:function"`` runs in the driver's own thread (its
    ``in_process`` attribute, :class:`Trainer`).

    hpo's Ultralytics trainer (:data:`ULTRALYTICS_TRAINER`) never does, and is answered without
    importing it: its module imports torch and Ultralytics (3-4 s on a 2-core CPU), which belong in
    the trial workers' forkserver, not in the driver (imported there, they delayed the forkserver's
    start by that much: measured in ``benchmarks/README.md``, "Whole study against the same
    trainings").

    Raises:
        hpo.errors.ConfigError: another trainer that cannot be imported (:func:`resolve_trainer`).
    """
    if name == ULTRALYTICS_TRAINER:
        return False
    return bool(getattr(resolve_trainer(name), "in_process", False))


def error_text(e: BaseException) -> str:
    """The first line of an exception, ``"Type: message"`` (at most 2000 characters)."""
    text = f"{type(e).__name__}: {e}".strip()
    return (text.splitlines()[0] if str(e) else type(e).__name__)[:2000]


def redirect_output(log: str | Path) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log`` (appended)."""
    import os

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _log_traceback(spec: TrialSpec, *, redirected: bool) -> None:
    """The current exception's traceback into the trial's log: stderr when it is the log, else
    appended to ``spec.log_file`` (best effort: the volume may be what failed)."""
    if redirected:
        traceback.print_exc()
        sys.stderr.flush()
        return
    try:
        with open(spec.log_file, "a", encoding="utf-8") as f:
            f.write(traceback.format_exc())
    except OSError:
        pass


def train_trial(spec: TrialSpec, report: Report, progress: Progress | None = None, *, log: bool = False) -> TrialOutcome:
    """Train one trial in this process with its trainer (``spec.trainer``) and return the outcome.

    Never raises for a failed training: the error becomes a ``FAILED`` outcome (its first line in
    ``error``, the traceback in the trial's log), with the epochs reported so far. ``KeyboardInterrupt`` and ``SystemExit`` pass through (the run is stopping).

    Args:
        spec: the trial.
        report: ``report(row) -> stop?`` after each epoch (see the module docstring).
        progress: batch progress during an epoch (display only), or ``None``.
        log: first send this process's stdout and stderr to ``spec.log_file`` (a worker process
            that runs one trial: the core's forked workers, Ray's workers).

    Returns:
        :class:`TrialOutcome` with ``train_s`` set.
    """
    if log:
        redirect_output(spec.log_file)
    epochs: list[dict[str, float]] = []

    def reporting(row: dict[str, float]) -> bool:
        epochs.append(row)
        return bool(report(row))

    t0 = time.perf_counter()
    try:
        outcome = resolve_trainer(spec.trainer)(spec, reporting, progress)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every training error is a failed trial, with its text
        _log_traceback(spec, redirected=log)
        partial = getattr(e, "hpo_outcome", None)
        return TrialOutcome(
            TrialStatus.FAILED,
            epochs=list(getattr(partial, "epochs", None) or epochs),
            applied=dict(getattr(partial, "applied", None) or {}),
            train_s=time.perf_counter() - t0,
            weights=getattr(partial, "weights", None),
            error=error_text(e),
        )
    if outcome.train_s is None:
        outcome.train_s = time.perf_counter() - t0
    return outcome
