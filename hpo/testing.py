"""Test kits every backend passes, in two layers.

**The in-process layer,** :class:`BackendTestCase` (in the style of Optuna's
``BasicSamplerTestCase`` and ``StorageTestCase``): a backend's ``ask``, ``tell``,
``should_prune`` and ``restore`` called directly, in this process, through the core's own loop
(:meth:`hpo.scheduler.AskTellScheduler.run`, with trials played from formula learning curves instead of
trained) on an in-memory study (:class:`MemoryStudy`) built from settings that need no dataset or
model on disk (:func:`build_settings`). A test takes milliseconds; a backend's test module is a
few lines::

    from hpo.testing import BackendTestCase

    class TestMyBackend(BackendTestCase):
        backend = "mine"                 # the --backend name, or the Backend class itself
        options = {"my_option": 3}       # backend options (optional)

It checks that ``ask`` covers every key of several spaces with the right types and bounds, that
``tell`` accepts complete, pruned and failed trials (also trials it never asked for), that
``restore(finished)`` leads to the same next decisions as having been told the trials one by one,
that ``should_prune`` is safe from several threads while ``tell`` runs under the core's lock,
and that maximising and minimising work alike (a minimised study is the mirror of a maximised one,
and the clearly best trial is never pruned in either).

**The system layer,** :class:`BackendConformance`: the real ``hpo`` command in subprocesses, as a
user runs it (8-16 s per test): records, resume after SIGKILL, SIGTERM, timeouts, a full volume,
``--join``, the time budget and one real training. The in-process layer finds a wrong decision in
milliseconds; the system layer proves the backend inside the real program.

A backend's test module subclasses :class:`BackendConformance` and names the backend::

    from hpo.testing import BackendConformance

    class TestMyBackendConformance(BackendConformance):
        backend = "mine"                 # the --backend name (installed through entry points)
        options = ("--my-option", "3")   # extra CLI options the backend needs here (optional)

Each test runs the real ``hpo`` command the way a user does (the tests import nothing of the
backend). Almost all of them run on *simulated* trials (:mod:`hpo.simulate`: learning curves from
a formula, no training, milliseconds per trial; selected with ``HPO_TRAINER``), so the backend's
real sampler, pruner or scheduler runs through hpo's real loop, records and resume in seconds.
They check what the core promises on every backend:

- every trial's params fit the search space (bounds, and the type of every key: integer keys
  stay integers, choices are among the choices);
- a training error and a NaN objective are recorded ``failed`` (never objective 0), and every
  other trial's objective is the value its curve reached;
- a backend that prunes (:attr:`BackendConformance.prunes`) stops poor trials early, recorded
  ``pruned`` with the objective of their last epoch; one that does not trains every trial fully;
- the same ``--seed`` proposes the same trials (:attr:`BackendConformance.deterministic`);
- a SIGKILL mid-study, then ``--resume``, ends with exactly ``--iterations`` finished trials and
  every trial that had completed before the kill kept as it was;
- SIGTERM with two trials at once (``--concurrent-trials 2``) exits 130; the in-flight trials are
  recorded ``interrupted`` (never ``failed``), no trial starts after the signal, and ``--resume``
  re-runs them with their ids and params;
- ``--trial-timeout`` stops a trial and records it ``failed`` with the reason; a study whose every
  trial failed exits 1 and has no best, and so does its ``--resume`` with nothing to do;
- a volume that fills up mid-study (a real size-limited tmpfs; needs root) stops the run with
  exit 1 and one line naming the volume; ``hpo show`` still reads the study; ``--resume`` after
  space is freed completes it with no completed trial lost;
- ``--join`` (backends with ``supports_join``): two processes share one study and together stop
  at exactly ``--iterations`` trials with unique ids (ordered by events, not time: the writer's
  trials wait until the joined process has started one); a joined process SIGKILLed mid-trial
  loses no trial: the writer re-runs it under its id with its params, once, without ``--resume``,
  and exits 0 with exactly ``--iterations`` finished trials; ``--join`` of a study that no live
  process writes, or with another ``--iterations``, exits 2 naming the fix, and writes nothing;
- ``--time-budget`` ends the study at an epoch boundary; a study it ended before any trial
  completed exits 1 (also on a ``--resume`` with nothing left), and a larger budget continues it;

and one short real-training smoke test (``yolov8n-cls`` on the built-in digits at 32 px) checks
that real Ultralytics trials record real metrics.

Requires pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .backend import Backend, Controller, Suggestion
from .config import TuneConfig
from .ledger import StudyLedger
from .runner import TrialRunner
from .scheduler import AskTellScheduler
from .simulate import curve_value
from .space import Kind
from .study import Study, TrialRecord, TrialStatus, _finite_or_none, _json_default, utcnow
from .trial import TrialOutcome, TrialSpec

__all__ = [
    # the in-process layer
    "BackendTestCase",
    "BackendFactory",
    "MemoryStudy",
    "build_settings",
    "run_trials",
    "simulated_curve",
    "Curve",
    "MAXIMISED",
    "MINIMISED",
    "SPACES",
    "LINEAR_SPACES",
    # the system layer
    "BackendConformance",
    "TRAIN_ARGS",
    "SIMULATED",
    "SPACE",
    "LINEAR_SPACE",
]

#: Fixed train args of the real-training smoke test: a few seconds per trial on a 2-core CPU.
TRAIN_ARGS = ("imgsz=32", "batch=64", "workers=0", "optimizer=AdamW")
#: The simulated trainer (:mod:`hpo.simulate`).
SIMULATED = "hpo.simulate:simulated_trainer"
#: The default conformance space: a log float, a linear float, an integer and a choice key.
SPACE: dict[str, Any] = {
    "lr0": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "momentum": [0.6, 0.98],
    "close_mosaic": [0, 10],
    "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]},
}
#: For backends that search linear numeric ranges only: floats and an integer.
LINEAR_SPACE: dict[str, Any] = {"lr0": [1e-4, 1e-1], "momentum": [0.6, 0.98], "close_mosaic": [0, 10]}


# ================================================================================================
# The in-process layer: BackendTestCase, on an in-memory study, through the core's own loop.
# ================================================================================================

#: The objective of the kit's maximised studies (classification top-1 accuracy).
MAXIMISED = "metrics/accuracy_top1"
#: The objective of the kit's minimised studies (the validation loss). The kit's learning curve of
#: a loss is ``1 - value`` of the same trial's accuracy (:func:`hpo.simulate.curve_value`), so a
#: minimised study is the mirror image of the maximised one.
MINIMISED = "val/loss"

#: The spaces :meth:`BackendTestCase.test_ask_fits_every_space` proposes from: every kind of
#: parameter (linear and log floats, linear and log integers, string, boolean and integer choices).
SPACES: dict[str, dict[str, Any]] = {
    "mixed": SPACE,
    "floats": {
        "lr0": [1e-4, 1e-1],
        "momentum": [0.6, 0.98],
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    },
    "integers": {"close_mosaic": [0, 10], "nbs": {"type": "int", "low": 8, "high": 256, "log": True}},
    "choices": {
        "optimizer": {"type": "choice", "choices": ["SGD", "AdamW", "Adam"]},
        "cos_lr": {"type": "choice", "choices": [True, False]},
        "batch": {"type": "choice", "choices": [16, 32, 64]},
        "lr0": [1e-3, 1e-2],
    },
}
#: :data:`SPACES` for a backend that searches linear numeric ranges only.
LINEAR_SPACES: dict[str, dict[str, Any]] = {
    "mixed": LINEAR_SPACE,
    "floats": {"lr0": [1e-4, 1e-1], "momentum": [0.6, 0.98], "weight_decay": [0.0, 1e-3]},
    "integers": {"close_mosaic": [0, 10], "nbs": [8, 256]},
}

#: Models of the settings builder, by task (Ultralytics' bundled YAMLs: nothing is read from disk).
_MODELS = {
    "detect": "yolov8n.yaml",
    "segment": "yolov8n-seg.yaml",
    "classify": "yolov8n-cls.yaml",
    "pose": "yolov8n-pose.yaml",
    "obb": "yolov8n-obb.yaml",
}

#: ``curve(trial_id, params, epoch, metric) -> value``: the metric a kit trial reports after
#: ``epoch`` (1-based) epochs; NaN for a diverged epoch.
Curve = Callable[[int, dict[str, Any], int, str], float]
#: ``make(config, study) -> backend``: how a test builds the backend under test.
BackendFactory = Callable[["TuneConfig", Study], Backend]


def simulated_curve(trial_id: int, params: dict[str, Any], epoch: int, metric: str) -> float:
    """The kit's default learning curve: :func:`hpo.simulate.curve_value` of ``params`` (the same
    formula as the simulated trainer of :class:`BackendConformance`; a loss is ``1 - value``)."""
    return curve_value(params, epoch, metric)


def build_settings(
    space: Any,
    *,
    backend: str | type[Backend] | type[Controller],
    output: str | os.PathLike,
    options: Mapping[str, Any] | None = None,
    metric: str = MAXIMISED,
    direction: str | None = None,
    task: str = "classify",
    epochs: int = 4,
    seed: int | None = 0,
    iterations: int | None = 12,
    workers: int = 1,
    name: str = "kit",
    check: bool = True,
) -> TuneConfig:
    """Valid study settings (:class:`hpo.config.TuneConfig`) for in-process tests of a backend,
    without a dataset or a model on disk.

    Unlike :func:`hpo.validate.build_config` (what ``hpo tune`` and ``Tuner`` call) this reads no
    dataset, imports no Ultralytics and does not check the metric against the task's; the rest is
    validated as there: the space (:meth:`hpo.SearchSpace.parse`), the backend's options (its
    ``Options`` model) and, with ``check``, the backend's pre-flight (``Options.check``).

    Args:
        space: the search space, in any form :meth:`hpo.SearchSpace.parse` accepts.
        backend: the backend's name (installed through the entry-point group ``hpo.backends``) or
            its class.
        output: the folder that holds the study folder ``output/name`` (``config.study_dir``).
        options: the backend's options (``{"pruner": "median"}``; default: its defaults).
        metric: the objective metric (default :data:`MAXIMISED`).
        direction: ``"maximize"`` or ``"minimize"``; default: the core's rule for ``metric``
            (a name containing ``loss`` is minimised: :func:`hpo.ultra.metric_direction`).
        task: the Ultralytics task; the model is its bundled ``yolov8n`` YAML.
        epochs: epochs per trial, the full fidelity (>= 1).
        seed: the backend's seed (``None``: random).
        iterations: the study's total of finished trials (``None``: no cap).
        workers: trials at once (``concurrent_trials``).
        name: the study name (Optuna's study name, for one).
        check: run the backend's pre-flight ``Options.check(config)``; ``False`` for one that
            reaches a service there (the ray backend connects to its cluster).

    Returns:
        The settings. ``config.data`` is a placeholder folder ``output/data`` that does not exist
        (a backend never reads the dataset); ``config.trainer`` is the simulated trainer.

    Raises:
        hpo.ConfigError: a bad count, direction, task or option, or the backend's pre-flight refused.
        hpo.SpaceError: a bad space.
        hpo.BackendNotFoundError: no installed backend has that name.
    """
    from pydantic import ValidationError

    from .config import TuneConfig
    from .data import ResolvedData
    from .errors import ConfigError
    from .plugins import get_backend
    from .space import SearchSpace
    from .ultra import metric_direction

    cls = get_backend(backend) if isinstance(backend, str) else backend
    for field_name, value, least in (
        ("epochs", epochs, 1),
        ("iterations", iterations, 1),
        ("workers", workers, 1),
        ("seed", seed, 0),
    ):
        if value is None and field_name in ("iterations", "seed"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{field_name}: {value!r} must be a whole number >= {least}")
    direction = direction or metric_direction(metric)
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction: {direction!r} must be 'maximize' or 'minimize'")
    if task not in _MODELS:
        raise ConfigError(f"task: {task!r} is not one of {', '.join(_MODELS)}")
    try:
        opts = cls.Options(**dict(options or {}))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "?"
        raise ConfigError(
            f"{cls.name} option '{loc}': {err['msg']} (options of {cls.name}: {', '.join(cls.Options.model_fields)})"
        ) from None
    out = Path(output).expanduser().resolve()
    config = TuneConfig(
        backend=cls.name,
        model=_MODELS[task],
        task=task,
        data=ResolvedData(source=str(out / "data"), kind="folder"),
        space=SearchSpace.parse(space),
        iterations=iterations,
        epochs=epochs,
        metric=metric,
        direction=direction,
        train_args={},
        output=out,
        name=name,
        workers=workers,
        seed=seed,
        options=opts,
        trainer=SIMULATED,
    )
    if check:
        opts.check(config)
    return config


class MemoryStudy(Study):
    """An open study held in memory: what the core gives a backend, for in-process tests.

    The trial records live in memory as the lines of ``trials.jsonl`` would (so a backend reads
    them back exactly as from the volume: fresh copies, NaN metrics as ``None``); :meth:`records`
    and :meth:`finished` fold them by the core's rule; :attr:`path` is a real folder (created)
    for the backend's own files (Optuna's journal, Ultralytics' ``tune_results.ndjson``);
    :attr:`settings` are the ``study.json`` contents. Nothing else is written: no lock, no
    ``study.json``, no ``best.yaml``, no space reserve. Thread-safe like :class:`hpo.Study`.

    Args:
        path: the study folder (created if missing).
        settings: the ``study.json`` contents (:meth:`hpo.config.TuneConfig.to_settings`).
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any]):
        super().__init__(Path(path), dict(settings))
        self.path.mkdir(parents=True, exist_ok=True)
        self._lines: dict[int, tuple[bool, str]] = {}  # id -> (finished, its JSON line): the fold of trials.jsonl
        self._lines_lock = threading.Lock()
        self._finished_log: list[int] = []  # ids in the order their finished records came (finished_since)
        #: the id of the trial the core last recorded as the study's best (``best.yaml`` on a volume)
        self.best_id: int | None = None

    @classmethod
    def of(cls, config: TuneConfig) -> MemoryStudy:
        """The empty study of ``config``, at ``config.study_dir``."""
        return cls(config.study_dir, config.to_settings())

    def append(self, record: TrialRecord) -> None:
        """Keep a snapshot of ``record`` (the JSON line :meth:`hpo.Study.append` writes); as when
        the file is read, the last snapshot of an id wins, except that a finished one is never
        replaced by an unfinished one."""
        line = json.dumps(_finite_or_none(record.to_json()), default=_json_default, allow_nan=False, separators=(",", ":"))
        with self._lines_lock:
            prev = self._lines.get(record.id)
            if prev is None or not (prev[0] and not record.status.finished):
                self._lines[record.id] = (record.status.finished, line)
                if record.status.finished:
                    self._finished_log.append(record.id)

    def records(self) -> dict[int, TrialRecord]:
        """All trials by id, fresh copies read back from their JSON lines."""
        with self._lines_lock:
            lines = sorted((tid, line) for tid, (_, line) in self._lines.items())
        return {tid: TrialRecord.from_json(json.loads(line)) for tid, line in lines}

    def finished(self) -> list[TrialRecord]:
        """Finished trials (complete, failed, pruned), by id."""
        return [r for r in self.records().values() if r.status.finished]

    def best(self, records: list[TrialRecord] | None = None) -> TrialRecord | None:
        """The complete trial with the best finite objective (ties: the lowest id), of ``records``
        (default: every finished trial), or ``None``."""
        return self._best_of(self.finished() if records is None else records)

    def record(self, trial_id: int) -> TrialRecord | None:
        """Trial ``trial_id``'s record (a fresh copy), or ``None``."""
        with self._lines_lock:
            held = self._lines.get(trial_id)
        return None if held is None else TrialRecord.from_json(json.loads(held[1]))

    def trial_count(self, also: Iterable[int] = ()) -> int:
        """How many trial ids the study holds, plus those of ``also`` it does not hold."""
        with self._lines_lock:
            return len(self._lines) + sum(1 for t in set(also) if t not in self._lines)

    def finished_count(self) -> int:
        """How many trials are finished (complete, failed, pruned)."""
        with self._lines_lock:
            return sum(1 for finished, _ in self._lines.values() if finished)

    def finished_since(self, cursor: int = 0) -> tuple[list[TrialRecord], int]:
        """Trials finished (or whose finished record changed) since ``cursor``, and the next cursor
        (as :meth:`hpo.Study.finished_since`)."""
        with self._lines_lock:
            ids = dict.fromkeys(self._finished_log[cursor:])
            lines = [self._lines[t][1] for t in ids if t in self._lines]
            n = len(self._finished_log)
        return [TrialRecord.from_json(json.loads(line)) for line in lines], n

    def copy(self, path: str | os.PathLike) -> MemoryStudy:
        """A copy at ``path``: the records, the settings and the backend's files (what ``--resume``
        of this study would open, for a second backend to :meth:`~hpo.Backend.restore` from)."""
        shutil.copytree(self.path, path, dirs_exist_ok=True)
        other = MemoryStudy(path, json.loads(json.dumps(self.settings, default=_json_default)))
        with self._lines_lock:
            other._lines = dict(self._lines)
            other._finished_log = list(self._finished_log)
        return other

    def save_settings(self) -> None:
        """Keep the settings in memory (``updated`` set to now)."""
        self.settings["updated"] = utcnow()

    def write_best(self, best: TrialRecord) -> None:
        """Remember the best trial's id (:attr:`best_id`); no file."""
        self.best_id = best.id

    def keep_reserve(self) -> None:
        """No space reserve in memory."""

    def release_reserve(self) -> bool:
        """No space reserve in memory: ``False``."""
        return False

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        """No other process shares an in-memory study: nothing to hold."""
        yield


class _CurveRunner(TrialRunner):
    """Plays each trial from a :data:`Curve` in the calling thread (the runner seam of the core)."""

    def __init__(self, curve: Curve, fail: Collection[int], epoch_s: float):
        super().__init__()
        self.curve, self.fail, self.epoch_s = curve, set(fail), epoch_s

    def run(
        self,
        spec: TrialSpec,
        on_epoch: Callable[[dict[str, float]], bool] | None = None,
        on_batch: Callable[[dict[str, int]], None] | None = None,
    ) -> TrialOutcome:
        if spec.trial_id in self.fail:
            return TrialOutcome(TrialStatus.FAILED, error=f"kit: simulated training error of trial {spec.trial_id}")
        params, metric = dict(spec.params), spec.metric or MAXIMISED
        rows: list[dict[str, float]] = []
        for epoch in range(1, spec.epochs + 1):
            if self.epoch_s > 0:
                time.sleep(self.epoch_s)
            rows.append({"epoch": epoch, metric: self.curve(spec.trial_id, params, epoch, metric)})
            if on_epoch is not None and on_epoch(rows[-1]):
                return TrialOutcome(TrialStatus.PRUNED, epochs=rows, applied=params)
        return TrialOutcome(TrialStatus.COMPLETE, epochs=rows, final_metrics={metric: rows[-1][metric]}, applied=params)


def run_trials(
    backend: Backend,
    study: Study,
    n: int,
    *,
    curve: Curve = simulated_curve,
    fail: Collection[int] = (),
    workers: int = 1,
    epoch_s: float = 0.0,
) -> list[TrialRecord]:
    """Run ``n`` more trials of ``backend`` through the core's own loop, in this process.

    The loop is the core's own (:meth:`hpo.scheduler.AskTellScheduler.run`): ``ask`` under the ledger's lock, the
    proposal validated against the space and recorded ``running``, the trial played epoch by epoch
    from ``curve`` with ``should_prune`` after each epoch (in the trial's own thread), the outcome
    recorded as the core records it (stopped after an epoch: ``pruned`` with that epoch's value; a
    non-finite objective: ``failed``), then ``tell`` under the loop's lock. Only the training is
    simulated.

    Args:
        backend: the backend under test (its ``config`` gives the space, metric and epochs).
        study: its study (a :class:`MemoryStudy`).
        n: trials to add.
        curve: the metric of each trial per epoch (default :func:`simulated_curve`).
        fail: trial ids whose training raises (recorded ``failed``, no epochs).
        workers: trials at once (threads, as ``--concurrent-trials``).
        epoch_s: seconds each epoch sleeps (lets trials of several threads overlap).

    Returns:
        The new finished trials, by id.

    Raises:
        Exception: whatever the backend raised (``ask``, ``tell``, ``should_prune``), or
            :class:`hpo.SpaceError` for a proposal outside the space.
    """
    before = set(study.records())
    config = dataclasses.replace(
        backend.config, iterations=len(before) + n, workers=workers, time_budget=None, trial_timeout=None, join=False
    )
    AskTellScheduler(StudyLedger(config, study), runner=_CurveRunner(curve, fail, epoch_s)).run(backend)
    return [r for r in study.finished() if r.id not in before]


def _kind(value: Any) -> str:
    """The JSON kind of a value (``bool`` is not ``int``; a numpy integer is neither)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _curves(records: Sequence[TrialRecord], metric: str) -> dict[int, list[float]]:
    """``{epoch: [values of every trial at that epoch]}`` (finite values only)."""
    out: dict[int, list[float]] = {}
    for r in records:
        for row in r.epochs:
            if "epoch" in row and _finite(row.get(metric)):
                out.setdefault(int(row["epoch"]), []).append(float(row[metric]))
    return out


def _extremes(config: TuneConfig, finished: Sequence[TrialRecord], margin: float = 0.02) -> tuple[Curve, Curve]:
    """Two curves: better than every trial of ``finished`` at every epoch by ``margin`` (in the
    study's direction), and worse than every one of them."""
    sign = 1.0 if config.direction == "maximize" else -1.0
    at = _curves(finished, config.metric)
    every = [v for vs in at.values() for v in vs]

    def best(tid: int, params: dict[str, Any], epoch: int, metric: str) -> float:
        return max(at.get(epoch) or every, key=lambda v: sign * v) + sign * margin

    def worst(tid: int, params: dict[str, Any], epoch: int, metric: str) -> float:
        return min(at.get(epoch) or every, key=lambda v: sign * v) - sign * margin

    return best, worst


def _brief(records: Sequence[TrialRecord]) -> list[tuple[Any, ...]]:
    return [(r.id, r.status.value, r.epochs_completed, r.params) for r in records]


class BackendTestCase:
    """In-process tests of a :class:`hpo.Backend`: subclass and name the backend.

    Each test builds the backend with the :meth:`backend_factory` fixture on an in-memory study
    (:class:`MemoryStudy`) from :func:`build_settings`, and drives it with :func:`run_trials`
    (the core's own ask/tell loop, trials played from formula curves), in milliseconds.

    Attributes:
        backend: the backend's name (installed through entry points) or its class.
        options: its options, as ``{field: value}`` of its ``Options`` model.
        space: the search space of the studies (default :data:`SPACE`; :data:`LINEAR_SPACE` for a
            backend that refuses log and choice keys).
        spaces: the named spaces of the ask test (default :data:`SPACES`; :data:`LINEAR_SPACES`).
        prunes: whether the backend, with :attr:`options`, stops poor trials early; the kit then
            requires it to stop a trial clearly worse than every other, in both directions.
        deterministic: whether one seed gives one sequence of trials (the mirror test needs it).
        resume_proposes_as_live: whether a restored backend proposes exactly what the backend
            that lived through the same trials proposes next. ``False`` for one that reseeds its
            sampler on resume so as not to draw the first run's values again (optuna: ``seed +
            trials in storage``): its proposals after a restore are then checked to be
            deterministic and new; its pruning decisions must still be the live ones.
        check_options: run the backend's pre-flight (``Options.check``) in :meth:`settings`
            (``False`` for one that reaches a service there, such as a Ray cluster).
        epochs: epochs per trial of the kit's studies.
        trials: trials of the kit's studies (before the probes).
    """

    backend: ClassVar[str | type[Backend]] = ""
    options: ClassVar[dict[str, Any]] = {}
    space: ClassVar[dict[str, Any]] = SPACE
    spaces: ClassVar[dict[str, dict[str, Any]]] = SPACES
    prunes: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True
    resume_proposes_as_live: ClassVar[bool] = True
    check_options: ClassVar[bool] = True
    epochs: ClassVar[int] = 4
    trials: ClassVar[int] = 12

    # --- fixtures and helpers
    def backend_class(self) -> type[Backend]:
        """The class under test (:attr:`backend`, looked up by name through the plugin registry).

        Raises:
            TypeError: it is a :class:`hpo.Controller` (its library owns the loop; see docs/backends.md).
        """
        from .plugins import get_backend

        cls = get_backend(self.backend) if isinstance(self.backend, str) else self.backend
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(f"{cls!r} is not an hpo.Backend (a Controller is tested end to end: BackendConformance)")
        return cls

    @pytest.fixture
    def kit_path(self, tmp_path: Path) -> Iterator[Path]:
        """A fresh folder for the test's studies: on the RAM disk ``/dev/shm`` where there is one
        (the backends' own files are fsync'd per write: Optuna's journal writes about ten times a
        trial), else pytest's ``tmp_path``. Removed after the test."""
        shm = Path("/dev/shm")
        if not (shm.is_dir() and os.access(shm, os.W_OK)):
            yield tmp_path
            return
        folder = Path(tempfile.mkdtemp(prefix="hpo-kit-", dir=shm))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        """``make(config, study) -> Backend``: builds the backend as the core does
        (``cls(config=..., study=..., options=config.options)``). Override it for a backend that is
        built another way."""
        cls = self.backend_class()

        def make(config: TuneConfig, study: Study) -> Backend:
            return cls(config=config, study=study, options=config.options)

        return make

    def settings(self, output: Path, *, space: Any = None, metric: str = MAXIMISED, **changes: Any) -> TuneConfig:
        """:func:`build_settings` for this backend and its :attr:`options` (seed 0, :attr:`epochs`,
        :attr:`trials`), in ``output``; ``changes`` override any argument."""
        kwargs: dict[str, Any] = {
            "backend": self.backend_class(),
            "output": output,
            "options": self.options,
            "metric": metric,
            "epochs": self.epochs,
            "seed": 0,
            "iterations": self.trials,
            "check": self.check_options,
        }
        kwargs.update(changes)
        return build_settings(self.space if space is None else space, **kwargs)

    @contextlib.contextmanager
    def opened(
        self, make: BackendFactory, config: TuneConfig, study: MemoryStudy | None = None
    ) -> Iterator[tuple[Backend, MemoryStudy]]:
        """``(backend, study)`` of ``config`` (a new :class:`MemoryStudy` unless given); the backend
        is closed on the way out, as the core always closes it."""
        study = study if study is not None else MemoryStudy.of(config)
        backend = make(config, study)
        try:
            yield backend, study
        finally:
            backend.close()

    def assert_fits(self, config: TuneConfig, params: Any, label: str) -> None:
        """``params`` (a raw proposal) has exactly the space's keys, each of its kind and within its
        bounds: integer keys ``int`` (not ``bool``, not a numpy integer), float keys ``float``,
        log keys > 0, choices one of the choices (of the same kind: ``1`` is not ``True``)."""
        assert isinstance(params, dict), f"{label}: ask returned params {params!r}, not a dict"
        assert set(params) == set(config.space), f"{label}: keys {sorted(params)} are not the space's {sorted(config.space)}"
        for key, p in config.space.items():
            v = params[key]
            where = f"{label}: {key}={v!r} ({type(v).__name__})"
            if p.kind is Kind.CHOICE:
                assert any(v == c and _kind(v) == _kind(c) for c in p.choices), (
                    f"{where} is not one of the choices {list(p.choices)}"
                )
                continue
            if p.kind is Kind.INT:
                assert _kind(v) == "int", f"{where}: an integer key needs an int"
            else:
                assert _kind(v) == "float", f"{where}: a float key needs a float"
            low, high = p.bounds
            assert math.isfinite(v) and low <= v <= high, f"{where} is outside [{p.low}, {p.high}]"
            if p.log:
                assert v > 0, f"{where}: a log key is > 0"

    # --- the tests
    def test_ask_fits_every_space(self, backend_factory: BackendFactory, kit_path: Path) -> None:
        """Every proposal of a study in each of :attr:`spaces`, before and after the backend has
        learnt, has every key with the right type and bounds; the proposals are not all one."""
        for label, space in self.spaces.items():
            config = self.settings(kit_path / label, space=space)
            asked = self._asked(backend_factory, config)
            for k, s in enumerate(asked):
                assert isinstance(s, Suggestion), f"space {label}: ask returned {s!r}, not an hpo.Suggestion"
                self.assert_fits(config, s.params, f"space {label}, proposal {k}")
                assert s.trial_id is None or _kind(s.trial_id) == "int", f"space {label}: trial_id {s.trial_id!r} is not an int"
            distinct = {json.dumps(s.params, sort_keys=True, default=str) for s in asked}
            assert len(distinct) > 1, f"space {label}: all {len(asked)} proposals are {asked[0].params}"

    def _asked(self, make: BackendFactory, config: TuneConfig) -> list[Suggestion]:
        """What ``ask`` returned, unchanged, in a study of :attr:`trials` trials of ``config``."""
        asked: list[Suggestion] = []
        with self.opened(make, config) as (backend, study):
            ask = backend.ask

            def spy() -> Suggestion:
                asked.append(ask())
                return asked[-1]

            setattr(backend, "ask", spy)  # noqa: B010 - an instance attribute shadows the method
            run_trials(backend, study, self.trials, fail={1})
        return asked

    def test_tell_accepts_complete_pruned_and_failed_trials(self, backend_factory: BackendFactory, kit_path: Path) -> None:
        """``tell`` takes every kind of finished trial as the core records it: complete, pruned
        (stopped by the backend, or by the time budget for a backend that never prunes), failed
        (a training error with no epochs; a NaN objective), and trials it never asked for (the core
        re-runs interrupted trials after a resume with their ids and params); the study goes on."""
        config = self.settings(kit_path)

        def curve(tid: int, params: dict[str, Any], epoch: int, metric: str) -> float:
            return math.nan if tid == 2 else simulated_curve(tid, params, epoch, metric)

        with self.opened(backend_factory, config) as (backend, study):
            first = run_trials(backend, study, 6, curve=curve, fail={1})
            by_id = {r.id: r for r in first}
            assert by_id[1].status is TrialStatus.FAILED and not by_id[1].epochs, by_id[1]
            assert by_id[2].status is TrialStatus.FAILED and by_id[2].objective is None, by_id[2]
            # trials this backend never asked for, recorded by the core (its ledger, the hpo.TrialRecorder)
            loop = StudyLedger(config, study)
            params = next(r.params for r in first if r.status is not TrialStatus.FAILED)
            metric, e = config.metric, config.epochs
            rows = [{"epoch": k, metric: simulated_curve(0, params, k, metric)} for k in range(1, e + 1)]
            nan_row = [dict(r) for r in rows]
            nan_row[0][metric] = math.nan
            outcomes = {
                "complete, one epoch without a value": TrialOutcome(
                    TrialStatus.COMPLETE, epochs=nan_row, final_metrics={metric: rows[-1][metric]}
                ),
                "pruned after epoch 1": TrialOutcome(TrialStatus.PRUNED, epochs=rows[:1]),
                "failed after an epoch": TrialOutcome(TrialStatus.FAILED, epochs=rows[:1], error="kit: CUDA out of memory"),
                "failed at once": TrialOutcome(TrialStatus.FAILED, error="kit: worker died (killed by signal 9)"),
            }
            expected = [TrialStatus.COMPLETE, TrialStatus.PRUNED, TrialStatus.FAILED, TrialStatus.FAILED]
            for (what, outcome), status in zip(outcomes.items(), expected, strict=True):
                record = loop.trial_started(loop.reserve_id(), dict(params))
                for row in outcome.epochs:
                    loop.trial_epoch(record, row)
                loop.trial_finished(record, outcome)
                assert record.status is status, (what, record)
                backend.tell(record)
            more = run_trials(backend, study, 4)
            assert [r.status.finished for r in more] == [True] * 4
            for r in more:
                self.assert_fits(config, r.params, f"trial {r.id} after the told trials")

    def test_restore_leads_to_the_same_next_decisions_as_telling(self, backend_factory: BackendFactory, kit_path: Path) -> None:
        """A backend that restores a study (``restore(finished)``, the records read back from the
        volume: NaN metrics as ``None``) decides what the backend that was told those trials one
        by one decides: the same pruning decisions on the next trials and, unless
        :attr:`resume_proposes_as_live` is ``False``, the same proposals (same seed)."""
        config = self.settings(kit_path / "live")

        def curve(tid: int, params: dict[str, Any], epoch: int, metric: str) -> float:
            if tid == 3 or (tid == 5 and epoch == 2):  # diverged; one epoch without a value
                return math.nan
            return simulated_curve(tid, params, epoch, metric)

        with self.opened(backend_factory, config) as (live, study):
            told = run_trials(live, study, self.trials, curve=curve, fail={2})
            copies = [study.copy(kit_path / f"resumed-{k}" / config.name) for k in (1, 2)]
            probe = self._probes(config, told)
            live_next = run_trials(live, study, 2, curve=probe)
        resumed_next = []
        for copy in copies:
            with self.opened(backend_factory, dataclasses.replace(config, resume=True), copy) as (backend, study):
                backend.restore(study.finished())
                resumed_next.append(run_trials(backend, study, 2, curve=probe))
        decisions = [[(r.status.value, r.epochs_completed) for r in run] for run in (live_next, *resumed_next)]
        assert decisions[1] == decisions[0], (
            f"after restore(finished) the next trials ended {decisions[1]} (status, epochs), but {decisions[0]} for the "
            f"backend told the same {len(told)} trials one by one: restore does not rebuild what tell learnt"
        )
        if self.resume_proposes_as_live:
            assert [r.params for r in resumed_next[0]] == [r.params for r in live_next], (
                f"after restore(finished) the next proposals are {_brief(resumed_next[0])}, but {_brief(live_next)} "
                "for the backend told the same trials one by one (same seed)"
            )
        else:
            assert [r.params for r in resumed_next[1]] == [r.params for r in resumed_next[0]], "two restores proposed differently"
            earlier = [r.params for r in told]
            repeated = [r.params for r in resumed_next[0] if r.params in earlier]
            assert not repeated, f"after restore(finished) the backend proposed {repeated} again (the first run's draws)"

    def _probes(self, config: TuneConfig, finished: Sequence[TrialRecord]) -> Curve:
        """The curve of the two trials after ``finished``: the first worse than every finished trial
        at every epoch, the second their median."""
        _, worst = _extremes(config, finished)
        at = _curves(finished, config.metric)
        every = [v for vs in at.values() for v in vs]
        first: list[int] = []

        def probe(tid: int, params: dict[str, Any], epoch: int, metric: str) -> float:
            if not first:
                first.append(tid)
            if tid == first[0]:
                return worst(tid, params, epoch, metric)
            return float(statistics.median(at.get(epoch) or every))

        return probe

    def test_should_prune_is_safe_from_several_threads(self, backend_factory: BackendFactory, kit_path: Path) -> None:
        """``should_prune`` from several threads at once while ``tell`` runs under the core's lock,
        the interpreter switching threads every microsecond: first the core's loop with four trials
        at once, then rounds of four threads judging four running trials each back to back while the
        core's loop runs trials beside them, until calls have overlapped 30 times (at most 6 rounds or
        about 0.4 s). Nothing raises, every answer is a bool, every trial finishes."""
        # up to 17 trials at once: 4 x 4 judged by the threads and one of the core's loop beside them
        config = self.settings(kit_path, epochs=max(self.epochs, 20), workers=17)
        answers: list[Any] = []
        inside = {"now": 0, "overlaps": 0}
        guard = threading.Lock()
        n = self.trials
        with self.opened(backend_factory, config) as (backend, study):
            should_prune = backend.should_prune

            def spy(record: TrialRecord, row: dict[str, float]) -> bool:
                with guard:
                    inside["now"] += 1
                    inside["overlaps"] += inside["now"] > 1
                try:
                    answer = should_prune(record, row)
                finally:
                    with guard:
                        inside["now"] -= 1
                answers.append(answer)
                return answer

            setattr(backend, "should_prune", spy)  # noqa: B010 - an instance attribute shadows the method
            before = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)
            try:
                done = run_trials(backend, study, n, workers=4, epoch_s=0.001, fail={5})
                hammered: list[TrialRecord] = []
                deadline = time.monotonic() + 0.4
                for _ in range(6):  # more rounds while the calls have seldom overlapped
                    hammered += self._hammer(backend, study, threads=4, each=4)
                    if inside["overlaps"] >= 30 or time.monotonic() > deadline:
                        break
            finally:
                sys.setswitchinterval(before)
        assert len(done) == n and all(r.status.finished for r in done), _brief(done)
        assert all(r.status.finished for r in hammered), _brief(hammered)
        wrong = [a for a in answers if not isinstance(a, bool) and type(a).__name__ not in ("bool", "bool_")]
        assert not wrong, f"should_prune answered {wrong[:3]}, not a bool"

    @staticmethod
    def _hammer(backend: Backend, study: Study, *, threads: int, each: int) -> list[TrialRecord]:
        """Start ``threads * each`` trials (asked and recorded as the core does), judge them in
        ``threads`` threads at once, epoch by epoch (each better than every trial so far, so that
        few are stopped early), while the core's loop runs ``threads`` more trials in this thread
        (asking and telling); then finish the judged trials and tell them.

        Raises:
            Exception: the first error of a judging thread.
        """
        config = backend.config
        curve, _ = _extremes(config, study.finished())  # better than every trial so far: judged at every epoch
        loop = StudyLedger(dataclasses.replace(config, iterations=None, join=False), study)
        started = []
        for _ in range(threads * each):  # as the core asks: one at a time
            s = backend.ask()
            tid = s.trial_id if s.trial_id is not None else loop.reserve_id()
            started.append(loop.trial_started(tid, config.space.validate_params(s.params)))
        pruned: set[int] = set()
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads + 1)

        def judge(mine: list[TrialRecord]) -> None:
            try:
                barrier.wait(30)
                for epoch in range(1, config.epochs + 1):
                    for record in mine:
                        if record.id in pruned:
                            continue
                        row = {"epoch": epoch, config.metric: curve(record.id, record.params, epoch, config.metric)}
                        record.epochs.append(row)  # recorded when the trial finishes: the threads judge back to back
                        record.epochs_completed = epoch
                        if backend.should_prune(record, row) and epoch < config.epochs:
                            pruned.add(record.id)
            except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
                errors.append(e)

        workers = [threading.Thread(target=judge, args=(started[k::threads],), daemon=True) for k in range(threads)]
        for w in workers:
            w.start()
        barrier.wait(30)
        try:
            run_trials(backend, study, threads)  # the core's loop beside them: ask, should_prune, tell
        finally:
            for w in workers:
                w.join(60)
        if errors:
            raise errors[0]
        for record in started:  # finished and told one at a time, as the core tells
            status = TrialStatus.PRUNED if record.id in pruned else TrialStatus.COMPLETE
            metric = config.metric
            last = {metric: record.epochs[-1][metric]} if status is TrialStatus.COMPLETE else {}
            loop.trial_finished(record, TrialOutcome(status, epochs=list(record.epochs), final_metrics=last))
            backend.tell(record)
        return [study.records()[r.id] for r in started]

    def test_minimise_mirrors_maximise(self, backend_factory: BackendFactory, kit_path: Path) -> None:
        """The same seeded study, once maximising accuracy and once minimising a loss whose every
        value is ``1 - accuracy``: a backend that follows ``config.direction`` proposes the same
        trials and stops the same ones at the same epochs. A sampler that prefers high raw values
        or a pruner that drops trials below the median whatever the direction does not."""
        if not self.deterministic:
            pytest.skip("the backend is not deterministic for a seed")
        runs = {}
        for metric, folder in ((MAXIMISED, "max"), (MINIMISED, "min")):
            config = self.settings(kit_path / folder, metric=metric)
            with self.opened(backend_factory, config) as (backend, study):
                runs[metric] = run_trials(backend, study, self.trials + 4, fail={3})
        up, down = (_brief(runs[m]) for m in (MAXIMISED, MINIMISED))
        diff = next((k for k, (a, b) in enumerate(zip(up, down, strict=False)) if a != b), None)
        assert up == down, (
            f"minimising 1 - accuracy went another way than maximising accuracy from trial {diff}: "
            f"maximised {up[diff] if diff is not None else up}, minimised {down[diff] if diff is not None else down}: "
            "the backend does not follow config.direction (a pruner comparing raw values, or a sampler preferring high ones?)"
        )
        for a, b in zip(runs[MAXIMISED], runs[MINIMISED], strict=True):
            if a.objective is not None:
                assert b.objective == pytest.approx(1 - a.objective), (a, b)

    def test_pruning_follows_the_direction(self, backend_factory: BackendFactory, kit_path: Path) -> None:
        """Maximised and minimised: after :attr:`trials` trials, a trial better than every earlier
        one at every epoch completes; one worse than every earlier one at every epoch is stopped
        before its last epoch (if the backend :attr:`prunes`)."""
        for metric, folder in ((MAXIMISED, "max"), (MINIMISED, "min")):
            config = self.settings(kit_path / folder, metric=metric)
            with self.opened(backend_factory, config) as (backend, study):
                best, worst = _extremes(config, run_trials(backend, study, self.trials))
                (top,) = run_trials(backend, study, 1, curve=best)
                (bottom,) = run_trials(backend, study, 1, curve=worst)
            where = f"{config.direction} {metric}"
            assert top.status is TrialStatus.COMPLETE, (
                f"{where}: the trial better than every other at every epoch ({[r[metric] for r in top.epochs]}) "
                f"ended {top.status.value} after epoch {top.epochs_completed}: the pruner does not follow config.direction"
            )
            if self.prunes:
                assert bottom.status is TrialStatus.PRUNED, (
                    f"{where}: the trial worse than every other at every epoch ({[r[metric] for r in bottom.epochs]}) "
                    f"ended {bottom.status.value} after epoch {bottom.epochs_completed} of {config.epochs}: "
                    "the pruner does not stop it (or does not follow config.direction)"
                )


def _records(study: Path) -> dict[int, dict[str, Any]]:
    """Last snapshot per trial id, read the way a person would (every trials*.jsonl, skip a torn tail)."""
    out: dict[int, dict[str, Any]] = {}
    for f in sorted(study.glob("trials*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            prev = out.get(rec["id"])
            finished = ("complete", "failed", "pruned")
            if prev is None or not (prev["status"] in finished and rec["status"] not in finished):
                out[rec["id"]] = rec
    return out


def _wait(what: str, cond: Any, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the study ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting for {what}")


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the volume is full to the last block."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


class BackendConformance:
    """Subclass in a backend's tests (``class TestXConformance(BackendConformance): backend = "x"``).

    Attributes:
        backend: the ``--backend`` name.
        options: extra ``--option value`` tokens for ``hpo tune`` (e.g. a local Ray's CPUs).
        env: extra environment variables of the ``hpo`` processes (e.g. ``PYTHONPATH`` of a plugin).
        space: the search space of the simulated studies (default :data:`SPACE`; :data:`LINEAR_SPACE`
            for a backend that refuses log and choice keys).
        prunes: whether the backend, with its default options, stops poor trials early.
        no_pruning: options that turn the backend's early stopping off (the timeout test needs
            trials that run until stopped), e.g. ``("--pruner", "none")``.
        deterministic: whether one ``--seed`` gives one sequence of trials (one trial at a time).
        joins: whether the backend supports ``--join`` (tested then).
        train_args: the fixed ``KEY=VALUE`` train args (default :data:`TRAIN_ARGS` on the CPU; a
            backend that assigns devices itself, like ray, drops ``device=``).
        supports_volume_test: set ``False`` only for a backend whose own library cannot run on a
            size-limited volume (say why in the subclass).
        budget_s: the ``--time-budget`` of the budget test, seconds (default 2; more for a backend
            that takes long to start, such as a local Ray).
        real_smoke: ``False`` skips the real-training smoke test (only when the backend's own
            tests already train for real).
    """

    backend: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    env: ClassVar[dict[str, str]] = {}
    space: ClassVar[dict[str, Any]] = SPACE
    prunes: ClassVar[bool] = True
    no_pruning: ClassVar[tuple[str, ...]] = ()
    deterministic: ClassVar[bool] = True
    joins: ClassVar[bool] = False
    train_args: ClassVar[tuple[str, ...]] = (*TRAIN_ARGS, "device=cpu")
    supports_volume_test: ClassVar[bool] = True
    budget_s: ClassVar[float] = 2.0
    real_smoke: ClassVar[bool] = True

    # --- fixtures and helpers
    @pytest.fixture(scope="class")
    @classmethod
    def digits(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The built-in digits-cls dataset (real UCI digits), cut to 30 train / 10 val images per
        class so a real trial takes a few seconds; built once per class."""
        from hpo.datasets import make_digits_cls

        root = make_digits_cls(tmp_path_factory.mktemp("conformance-data") / "digits-cls", seed=0)
        for split, keep in (("train", 30), ("val", 10)):
            for folder in (root / split).iterdir():
                for extra in sorted(folder.iterdir())[keep:]:
                    extra.unlink()
        return root

    def tune_args(
        self,
        data: Path,
        output: Path,
        name: str,
        *,
        iterations: int | None,
        epochs: int,
        extra: tuple[str, ...] = (),
        space: dict[str, Any] | None = None,
        real: bool = False,
    ) -> list[str]:
        """The ``hpo tune`` arguments of a conformance study (``real``: with :attr:`train_args`)."""
        return [
            "tune",
            "--backend",
            self.backend,
            "--model",
            "yolov8n-cls.yaml",
            "--data",
            str(data),
            *(("--iterations", str(iterations)) if iterations is not None else ()),
            "--epochs",
            str(epochs),
            "--output",
            str(output),
            "--name",
            name,
            "--space",
            json.dumps(space or self.space),
            "--seed",
            "0",
            *extra,
            *self.options,
            *(self.train_args if real else ("imgsz=32",)),
        ]

    def environment(self, simulated: dict[str, Any] | None) -> dict[str, str]:
        """The ``hpo`` processes' environment: this one, :attr:`env`, and the simulated trainer
        with its options (``simulated=None``: real training)."""
        env = {**os.environ, **self.env, "HPO_PLOTS": "0"}
        env.pop("HPO_TRAINER", None)
        env.pop("HPO_TRAINER_OPTIONS", None)
        if simulated is not None:
            env["HPO_TRAINER"] = SIMULATED
            env["HPO_TRAINER_OPTIONS"] = json.dumps(simulated)
        return env

    def hpo(self, *args: str, simulated: dict[str, Any] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run ``python -m hpo.cli ARGS`` to the end and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "hpo.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(simulated),
        )

    def start(self, *args: str, simulated: dict[str, Any] | None = None) -> subprocess.Popen:
        """Start ``python -m hpo.cli ARGS`` in its own process group (a pod: driver plus trial workers)."""
        return subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=self.environment(simulated),
        )

    def show(self, study: Path) -> dict[str, Any]:
        """What ``hpo show --json STUDY`` prints (:func:`hpo.report.study_summary`, read in this
        process: the command itself is tested in hpo's own suite)."""
        from hpo.report import study_summary

        return json.loads(json.dumps(study_summary(study)))

    def assert_resumed_to(self, study: Path, total: int, kept: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """The study has exactly ``total`` finished trials with unique ids, and every trial of ``kept``
        that was complete is unchanged (params and objective)."""
        shown = self.show(study)
        finished = [t for t in shown["trials"] if t["status"] in ("complete", "failed", "pruned")]
        assert len(finished) == total, shown["trials"]
        ids = [t["id"] for t in shown["trials"]]
        assert len(ids) == len(set(ids))
        now = {t["id"]: t for t in shown["trials"]}
        for tid, rec in kept.items():
            if rec["status"] == "complete":
                assert now[tid]["status"] == "complete"
                assert now[tid]["params"] == rec["params"] and now[tid]["objective"] == rec["objective"]
        return shown

    def assert_params_fit(self, trials: list[dict[str, Any]]) -> None:
        """Every trial has a value for every key of :attr:`space`, inside its bounds, of its type."""
        from hpo import Kind, SearchSpace

        space = SearchSpace.parse(self.space)
        for t in trials:
            assert set(t["params"]) == set(space), (t["id"], t["params"])
            for key, p in space.items():
                v = t["params"][key]
                if p.kind is Kind.CHOICE:
                    assert v in p.choices, (t["id"], key, v)
                    continue
                if p.kind is Kind.INT:
                    assert isinstance(v, int) and not isinstance(v, bool), f"trial {t['id']}: {key}={v!r} is not an integer"
                else:
                    assert isinstance(v, float), f"trial {t['id']}: {key}={v!r} is not a float"
                assert p.low <= v <= p.high, f"trial {t['id']}: {key}={v} outside [{p.low}, {p.high}]"

    # --- the conformance tests, on simulated trials
    def test_params_fit_the_space_failures_are_failed_and_objectives_are_the_curves(self, tmp_path: Path, digits: Path) -> None:
        from hpo.simulate import curve_value

        epochs = 6
        r = self.hpo(*self.tune_args(digits, tmp_path, "sim", iterations=12, epochs=epochs), simulated={"fail": [1], "nan": [2]})
        assert r.returncode == 0, r.stderr[-3000:]
        trials = {t["id"]: t for t in self.show(tmp_path / "sim")["trials"]}
        assert sorted(trials) == list(range(12)), sorted(trials)
        self.assert_params_fit(list(trials.values()))
        assert trials[1]["status"] == "failed" and "simulated training error of trial 1" in trials[1]["error"]
        assert trials[2]["status"] == "failed" and "nan" in trials[2]["error"].lower(), trials[2]
        for t in trials.values():
            if t["status"] == "failed":
                assert t["objective"] is None, t  # never objective 0
                continue
            n = t["epochs_completed"]
            assert t["objective"] == pytest.approx(curve_value(t["params"], n, "metrics/accuracy_top1")), t
            if t["status"] == "complete":
                assert n == epochs, t
            else:
                assert t["status"] == "pruned" and 1 <= n < epochs, t
        pruned = [t for t in trials.values() if t["status"] == "pruned"]
        if self.prunes:
            assert pruned, f"backend {self.backend} pruned no trial of 12 (6 epochs each)"
        else:
            assert not pruned, pruned

    def test_the_same_seed_proposes_the_same_trials(self, tmp_path: Path, digits: Path) -> None:
        if not self.deterministic:
            pytest.skip(f"backend {self.backend} is not deterministic for a seed")
        runs = []
        for name in ("a", "b"):
            r = self.hpo(*self.tune_args(digits, tmp_path, name, iterations=5, epochs=2), simulated={})
            assert r.returncode == 0, r.stderr[-3000:]
            runs.append([t["params"] for t in sorted(self.show(tmp_path / name)["trials"], key=lambda t: t["id"])])
        assert runs[0] == runs[1]
        assert len({json.dumps(p, sort_keys=True) for p in runs[0]}) > 1, "every trial proposed the same params"

    def test_sigkill_then_resume_reaches_exactly_n(self, tmp_path: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.3}
        args = self.tune_args(digits, tmp_path, "kill", iterations=5, epochs=3, extra=self.no_pruning)
        study = tmp_path / "kill"
        proc = self.start(*args, simulated=sim)

        def one_done_one_mid() -> bool:
            recs = _records(study).values()
            return any(r["status"] == "complete" for r in recs) and any(
                r["status"] == "running" and r.get("epochs") for r in recs
            )

        _wait("a complete trial and another mid-training", one_done_one_mid, proc, 300)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its trial workers, like a dead pod
        proc.wait()
        before = _records(study)
        r = self.hpo(*args, "--resume", simulated={})  # the rest without sleeping: the trainer's options are not the study's
        assert r.returncode == 0, r.stderr[-3000:]
        assert "took over the lock of a writer that is gone" in r.stderr  # at once: the kernel proved it dead
        self.assert_resumed_to(study, 5, before)

    def test_sigterm_with_two_at_once_records_interrupted_and_resume_reruns_them(self, tmp_path: Path, digits: Path) -> None:
        # the first two trials wait for each other before their first epoch: two train at once however
        # loaded the machine (a trial start can take seconds, e.g. a Ray actor under load)
        sim = {"epoch_s": 0.4, "barrier": str(tmp_path / "barrier"), "barrier_n": 2}
        args = self.tune_args(
            digits, tmp_path, "term", iterations=5, epochs=4, extra=("--concurrent-trials", "2", *self.no_pruning)
        )
        study = tmp_path / "term"
        proc = self.start(*args, simulated=sim)

        def two_training() -> bool:
            recs = _records(study).values()
            return (
                sum(1 for r in recs if r["status"] == "running" and r.get("epochs")) >= 1
                and sum(1 for r in recs if r["status"] == "running") >= 2
            )

        _wait("two trials training at once", two_training, proc, 300)
        in_flight = {i: r for i, r in _records(study).items() if r["status"] == "running"}
        from hpo.study import utcnow

        signalled = utcnow()
        proc.send_signal(signal.SIGTERM)  # what Kubernetes sends a pod before killing it
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("hpo did not stop within 90 s of SIGTERM")
        assert proc.returncode == 130, err[-3000:]
        assert "--resume" in err.strip().splitlines()[-1]
        after = _records(study)
        late = [r["id"] for r in after.values() if r["id"] not in in_flight and (r.get("start") or "") > signalled]
        assert not late, f"trials {late} started after the interrupt"
        for tid in in_flight:
            assert after[tid]["status"] in ("interrupted", "complete", "pruned"), (after[tid], err[-3000:])  # never 'failed'
        assert any(after[tid]["status"] == "interrupted" for tid in in_flight), after
        r = self.hpo(*args, "--resume", simulated={})
        assert r.returncode == 0, r.stderr[-3000:]
        shown = self.assert_resumed_to(study, 5, after)
        now = {t["id"]: t for t in shown["trials"]}
        for tid, rec in in_flight.items():  # re-run under their ids with their params
            assert now[tid]["status"] in ("complete", "pruned"), now[tid]
            assert now[tid]["params"] == rec["params"]

    def test_trial_timeout_is_failed_and_all_failed_exits_1(self, tmp_path: Path, digits: Path) -> None:
        r = self.hpo(
            *self.tune_args(digits, tmp_path, "slow", iterations=2, epochs=50, extra=("--trial-timeout", "2", *self.no_pruning)),
            simulated={"epoch_s": 0.5},
        )
        assert r.returncode == 1, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert "every trial failed" in last and "timed out after 2 s" in last, last
        shown = self.show(tmp_path / "slow")
        assert [t["status"] for t in shown["trials"]] == ["failed", "failed"]
        assert all(t["objective"] is None for t in shown["trials"]) and shown["best"] is None
        assert all(t["epochs_completed"] < 50 for t in shown["trials"])

    def test_resume_of_a_study_whose_every_trial_failed_exits_1(self, tmp_path: Path, digits: Path) -> None:
        """Nothing to do is no result: the resume of a study with no complete trial fails too (a KFP
        retry must not turn green), with one line naming the first error, also with ``--json``."""
        args = self.tune_args(digits, tmp_path, "failed", iterations=2, epochs=2, extra=self.no_pruning)
        r = self.hpo(*args, simulated={"fail": [0, 1]})
        assert r.returncode == 1, r.stderr[-3000:]
        assert "every trial failed; first error (trial 0): " in r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
        r = self.hpo(*args, "--resume", "--json", simulated={"fail": [0, 1]})
        assert r.returncode == 1, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("hpo: error: every trial failed (the study already has its 2 finished trials"), last
        assert "simulated training error of trial 0" in last and "--name" in last, last
        assert '"nothing_to_do"' not in r.stdout and not r.stdout.strip(), r.stdout  # no result document
        assert [t["status"] for t in self.show(tmp_path / "failed")["trials"]] == ["failed", "failed"]

    def test_full_volume_stops_with_exit_1_and_resumes(self, tmp_path: Path, digits: Path) -> None:
        if not self.supports_volume_test:
            pytest.skip(f"backend {self.backend} does not run on a size-limited volume")
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a size-limited tmpfs needs root")
        vol = tmp_path / "vol"
        vol.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(vol)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here")
        try:
            self._full_volume(vol, digits)
        finally:
            subprocess.run(["umount", "-l", str(vol)], capture_output=True)

    def _full_volume(self, vol: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.5, "weights_bytes": 2 << 20}
        args = self.tune_args(digits, vol, "full", iterations=4, epochs=3, extra=self.no_pruning)
        study = vol / "full"
        proc = self.start(*args, simulated=sim)

        def one_done_one_mid() -> bool:
            recs = _records(study).values()
            return any(r["status"] == "complete" for r in recs) and any(r["status"] == "running" for r in recs)

        _wait("a complete trial and another started", one_done_one_mid, proc, 300)
        started = set(_records(study))
        ballast = vol / "ballast"
        _fill(ballast)
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("hpo kept running on a full volume")
        assert proc.returncode == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("hpo: error: output volume") and str(vol) in last and "--resume" in last, err[-3000:]
        assert "Traceback" not in err, err[-6000:]
        assert set(_records(study)) <= started | {max(started) + 1}, "trials kept starting on a full volume"
        before = _records(study)
        assert any(r["status"] == "complete" for r in before.values())
        assert not any(r["status"] == "failed" for r in before.values()), before  # the volume's fault, not the trials'
        shown = self.show(study)  # readable while the volume is still full
        assert {t["id"] for t in shown["trials"]} == set(before)
        for f in study.rglob("*"):  # every JSON file of the study (the backends' state too) still parses
            if f.is_file() and (f.suffix in (".json", ".jsonl", ".ndjson") or f.name == "journal.log") and f.stat().st_size:
                text = f.read_text(errors="replace")
                if text.lstrip()[:1] not in ("{", "["):
                    continue  # not JSON inside (Ray's basic-variant-state-*.json is a pickle)
                try:
                    json.loads(text)
                except ValueError:
                    for n, line in enumerate(text.splitlines()):
                        try:
                            json.loads(line)
                        except ValueError:
                            # a torn tail is allowed only where hpo repairs it before writing again
                            assert n == len(text.splitlines()) - 1, f"{f} line {n + 1} is damaged"
        ballast.unlink()
        r = self.hpo(*args, "--resume", simulated={"weights_bytes": sim["weights_bytes"]})
        assert r.returncode == 0, r.stderr[-3000:]
        self.assert_resumed_to(study, 4, before)

    def test_join_two_processes_reach_exactly_n(self, tmp_path: Path, digits: Path) -> None:
        if not self.joins:
            pytest.skip(f"backend {self.backend} does not support --join")
        gate = tmp_path / "joined-started"
        args = self.tune_args(digits, tmp_path, "joined", iterations=8, epochs=3, extra=self.no_pruning)
        study = tmp_path / "joined"
        # events, not time: the writer's trials wait until the joined process has started one of its
        # own (simulated gate), so however loaded the machine, the writer cannot finish alone
        writer = self.start(*args, simulated={"epoch_s": 0.1, "gate": str(gate), "gate_s": 300})
        _wait("the study to start", lambda: any(_records(study).values()), writer, 120)
        joined = self.hpo(*args, "--join", simulated={"epoch_s": 0.1, "open_gate": str(gate)})
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-3000:]
        assert joined.returncode == 0, joined.stderr[-3000:]
        trials = self.show(study)["trials"]
        assert len(trials) == 8 and sorted(t["id"] for t in trials) == sorted({t["id"] for t in trials})
        assert all(t["status"] in ("complete", "pruned", "failed") for t in trials)
        assert list(study.glob("trials.*.jsonl")), "the joined process recorded no trial of its own"

    def test_join_a_killed_joined_process_loses_no_trial(self, tmp_path: Path, digits: Path) -> None:
        """A joined process SIGKILLed mid-trial (a preempted pod): its trial is re-run by the
        writer under its id with its params, once, without ``--resume``; the study ends with
        exactly ``--iterations`` finished trials and unique ids, the writer exiting 0."""
        if not self.joins:
            pytest.skip(f"backend {self.backend} does not support --join")
        gate = tmp_path / "joined-started"
        args = self.tune_args(digits, tmp_path, "lost", iterations=5, epochs=2, extra=self.no_pruning)
        study = tmp_path / "lost"
        # events, not time: the writer's trials wait until the joined process has started one of its
        # own, whose epochs take a minute (it is killed long before one ends)
        writer = self.start(*args, simulated={"epoch_s": 0.1, "gate": str(gate), "gate_s": 300})
        joined: subprocess.Popen | None = None
        try:
            _wait("the study to start", lambda: any(_records(study).values()), writer, 120)
            joined = self.start(*args, "--join", simulated={"epoch_s": 60, "open_gate": str(gate)})
            own = study / f"trials.{re.sub(r'[^A-Za-z0-9._-]', '_', socket.gethostname())}-{joined.pid}.jsonl"
            _wait("a trial of the joined process", lambda: own.is_file() and gate.exists(), joined, 120)
            os.killpg(joined.pid, signal.SIGKILL)  # the process and its trial worker: a preempted pod
            joined.wait()
            lost = [json.loads(x) for x in own.read_text().splitlines() if x.strip()]
            assert {r["status"] for r in lost} == {"running"} and len({r["id"] for r in lost}) == 1, lost
            out, err = writer.communicate(timeout=300)
        finally:
            for p in (writer, joined):
                if p is not None and p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        assert writer.returncode == 0, err[-3000:]
        killed = lost[-1]["id"]
        trials = self.show(study)["trials"]
        ids = [t["id"] for t in trials]
        assert len(ids) == len(set(ids)) == 5 and killed in ids, (killed, ids)
        finished = [t for t in trials if t["status"] in ("complete", "pruned", "failed")]
        assert len(finished) == 5, ({t["id"]: t["status"] for t in trials}, err[-3000:])  # exactly --iterations
        assert f"trial {killed}: the process that ran it" in err and "is gone; re-running it here" in err, err[-3000:]
        again = next(t for t in trials if t["id"] == killed)
        assert again["status"] == "complete" and again["params"] == lost[-1]["params"], again
        # the writer ran it (and recorded it in its own file): the dead process's file is as it left it
        mine = [json.loads(x) for x in (study / "trials.jsonl").read_text().splitlines() if x.strip()]
        assert any(r["id"] == killed and r["status"] == "complete" for r in mine)
        assert [json.loads(x) for x in own.read_text().splitlines() if x.strip()] == lost

    def test_join_needs_a_live_writer_and_the_running_studys_iterations(self, tmp_path: Path, digits: Path) -> None:
        """``--join`` adds a process to a *running* study: with another ``--iterations`` it is refused
        (exit 2, nothing written); once no live process writes the study it is refused, naming
        ``--resume``, which continues it; a finished study joined with its own total has nothing to do."""
        if not self.joins:
            pytest.skip(f"backend {self.backend} does not support --join")
        args = self.tune_args(digits, tmp_path, "orphan", iterations=3, epochs=2, extra=self.no_pruning)
        five = self.tune_args(digits, tmp_path, "orphan", iterations=5, epochs=2, extra=self.no_pruning)
        study = tmp_path / "orphan"
        # the writer's first trial waits on a gate that never opens: the writer stays alive, unfinished
        writer = self.start(*args, simulated={"gate": str(tmp_path / "never"), "gate_s": 300})
        try:
            _wait("the study's first trial", lambda: any(_records(study).values()), writer, 120)
            r = self.hpo(*five, "--join", simulated={})
            assert r.returncode == 2, r.stderr[-3000:]
            last = r.stderr.strip().splitlines()[-1]
            assert (
                last
                == "hpo: error: join: the running study's totals differ (iterations: stored 3 != given 5); join with --iterations 3"
            ), last
            assert not list(study.glob("trials.*.jsonl"))
        finally:
            os.killpg(writer.pid, signal.SIGKILL)  # a dead writer: the study is left unfinished
            writer.wait()
        settings = (study / "study.json").read_text()
        r = self.hpo(*args, "--join", simulated={})
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert f"join: no process is running the study '{study}' (0 of 3 trials finished" in last and last.endswith(
            "continue this one with --resume"
        ), last
        assert not list(study.glob("trials.*.jsonl")) and (study / "study.json").read_text() == settings
        r = self.hpo(*args, "--resume", simulated={})
        assert r.returncode == 0, r.stderr[-3000:]
        assert [t["status"] for t in self.show(study)["trials"]] == ["complete"] * 3
        # a finished study nobody runs: more trials through --join are refused, its own total has nothing to do
        settings = (study / "study.json").read_text()
        r = self.hpo(*five, "--join", simulated={})
        assert r.returncode == 2 and "continue this one with --resume" in r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
        r = self.hpo(*args, "--join", "--json", simulated={})
        assert r.returncode == 0 and json.loads(r.stdout)["nothing_to_do"] is True, r.stderr[-3000:]
        assert (study / "study.json").read_text() == settings and not list(study.glob("trials.*.jsonl"))

    def test_time_budget_ends_the_study_and_resume_continues_with_what_is_left(self, tmp_path: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.25}
        budget = self.budget_s
        # trials of at least twice the budget (10 s at the default 2 s): no trial completes in it
        epochs = max(40, int(2 * budget / sim["epoch_s"]) + 8)
        # no --iterations: the budget alone ends the study
        args = self.tune_args(
            digits, tmp_path, "budget", iterations=None, epochs=epochs, extra=("--time-budget", f"{budget:g}s", *self.no_pruning)
        )
        # the budget ends the study before any trial completed: no result, exit 1 with the reason
        r = self.hpo(*args, "--json", simulated=sim)
        assert r.returncode == 1, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"hpo: error: time budget: {budget:g}s ended the study before any trial completed"), last
        assert "--time-budget" in last and not r.stdout.strip(), (last, r.stdout)
        study = tmp_path / "budget"
        settings = json.loads((study / "study.json").read_text())
        assert settings["time_budget"] == budget and settings["elapsed_s"] >= budget
        assert settings["elapsed_s"] < budget + 3 * sim["epoch_s"] + 5, settings  # stopped at the next epoch boundary
        trials = self.show(study)["trials"]
        assert trials and all(t["status"] == "pruned" for t in trials), trials
        for t in trials:  # stopped at an epoch boundary, recorded pruned with its partial curve
            assert "time budget" in t["error"] and 1 <= t["epochs_completed"] < epochs and t["objective"] is not None, t
        # the same budget again: nothing left, nothing runs, still no result: exit 1
        again = self.hpo(*args, "--resume", "--json", simulated=sim)
        assert again.returncode == 1, again.stderr[-3000:]
        assert "ended the study before any trial completed" in again.stderr.strip().splitlines()[-1]
        assert len(self.show(study)["trials"]) == len(trials)
        # a larger budget continues with what is left (the next trial is quick: it completes, and the
        # one after it trains when the budget runs out), and the change is recorded
        more = [a if a != f"{budget:g}s" else f"{2 * budget:g}" for a in args]
        r = self.hpo(*more, "--resume", "--json", simulated={**sim, "quick": [len(trials)]})
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        assert doc["stopped_by"] == "time_budget" and doc["counts"]["complete"] >= 1, doc
        assert doc["elapsed_s"] < 2 * budget + 3 * sim["epoch_s"] + 5, doc  # stopped at the next epoch boundary
        settings = json.loads((study / "study.json").read_text())
        assert settings["time_budget"] == 2 * budget and settings["elapsed_s"] >= 2 * budget
        assert [x["changed"].get("time_budget") for x in settings["resumes"]] == [None, 2 * budget]
        now = self.show(study)["trials"]
        assert len(now) > len(trials) and any("time budget" in (t["error"] or "") for t in now[len(trials) :]), now

    # --- one real training
    def test_real_training_smoke(self, tmp_path: Path, digits: Path) -> None:
        """Two real Ultralytics trials of one epoch: complete, with the real metric in every epoch row."""
        if not self.real_smoke:
            pytest.skip(f"backend {self.backend}'s own tests train for real")
        r = self.hpo(*self.tune_args(digits, tmp_path, "real", iterations=2, epochs=1, space={"lr0": [1e-4, 1e-2]}, real=True))
        assert r.returncode == 0, r.stderr[-3000:]
        trials = self.show(tmp_path / "real")["trials"]
        assert [t["status"] for t in trials] == ["complete", "complete"], trials
        for t in trials:
            assert 0.0 <= t["objective"] <= 1.0
            assert (tmp_path / "real" / "trials" / str(t["id"]) / "train.log").is_file()
