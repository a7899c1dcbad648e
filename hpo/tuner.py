"""The core: :class:`Tuner` (the public entry point) and :class:`StudyLoop` (the ask/run/tell loop).

Data flows one way: settings -> validation -> study directory -> backend asks for trials ->
runner trains -> records go to the study (and the callbacks) -> result.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import clock, ultra
from .callbacks import TunerCallback
from .config import TuneConfig, build_config, format_duration, gpu_indices
from .errors import ConfigError, HpoError, RunFailed, StudyError, VolumeError
from .files import free_bytes, tree_bytes, volume_errors
from .report import FINISHED, count_trials, leaderboard_markdown, trials_frame  # re-exported: old import paths
from .runner import TrialRunner, start_workers
from .study import Study, TrialRecord, TrialStatus, settings_versions, utcnow
from .trial import ULTRALYTICS_TRAINER, TrialOutcome, TrialSpec, trainer_in_process

if TYPE_CHECKING:
    from .backend import Backend, Controller
    from .final import FinalResult

__all__ = [
    "Tuner",
    "TuneResult",
    "TunerCallback",
    "StudyLoop",
    "TrialOutcome",
    "trials_frame",
    "leaderboard_markdown",
    "objective_of",
    "SILENT_TRAIN_ARGS",
]

#: Ultralytics train args that may change between the runs of one study without a word: they change
#: where and how fast a trial trains, or what it prints, not what it measures. A change of any other
#: train arg (``imgsz``, ``batch``, ``classes``, ``fraction``, ``amp``, ``seed``, ...), of the data
#: (its path or its YAML's content: names, splits) or of the trainer is refused on resume unless
#: ``allow_changes`` (CLI ``--allow-changes``), and always refused for a joined process.
SILENT_TRAIN_ARGS = frozenset({"workers", "device", "cache", "verbose", "plots"})


#: What :meth:`StudyLoop.missing` and :meth:`StudyLoop.remaining` say for a study without an
#: iteration cap (a time budget alone): more trials than any budget holds.
UNCAPPED = 1 << 30
#: Below this many free bytes on the study's volume no trial starts (see :meth:`StudyLoop.space_needed`).
MIN_FREE_BYTES = 16 << 20
#: A failed trial whose error says this failed because the volume did (errno texts of ENOSPC,
#: EDQUOT, EROFS, EIO, and torch's checkpoint writer's "file write failed").
_VOLUME_TEXT = re.compile(
    r"No space left on device|Errno 28\b|Disk quota exceeded|Errno 122\b|Read-only file system|Errno 30\b|"
    r"Input/output error|Errno 5\b|PytorchStreamWriter failed writing|file write failed",
)


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


@dataclass
class TuneResult:
    """The outcome of :meth:`Tuner.run`.

    Attributes:
        best_params: params of the best complete trial (``{}`` if none).
        best_objective: its objective value (``None`` if none).
        best_trial: its id (``None`` if none).
        metric, direction: the objective and whether it is maximised or minimised.
        trials: every trial as a DataFrame (see :func:`trials_frame`).
        study_dir: the study directory.
        best_weights: ``<study>/weights/best.pt`` if written.
        counts: ``{"complete": n, "failed": n, "pruned": n}``.
        nothing_to_do: the study had already reached its total (or spent its time budget).
        stopped_by: ``"time_budget"`` when the time budget ended the study, else ``None``.
        elapsed_s: wall-clock seconds the study has run, over all its runs.
        iterations: the total of finished trials this run aimed at (the ``iterations`` given;
            ``None``: no cap). With ``nothing_to_do`` the study already had at least that many.
        final: the final stage's result (``final_epochs``; :class:`hpo.FinalResult`), else ``None``.
    """

    best_params: dict[str, Any]
    best_objective: float | None
    best_trial: int | None
    metric: str
    direction: str
    trials: Any
    study_dir: Path
    best_weights: Path | None
    counts: dict[str, int] = field(default_factory=dict)
    nothing_to_do: bool = False
    stopped_by: str | None = None
    elapsed_s: float | None = None
    iterations: int | None = None
    final: FinalResult | None = None


class StudyLoop:
    """Runs the trials of one study and records them: the study's single writer.

    It owns trial ids, retries of interrupted trials, counting and the volume checks. A
    :class:`hpo.Backend` is driven by :meth:`ask_tell`; a :class:`hpo.Controller` (Ray Tune)
    records its trials through the :class:`hpo.TrialRecorder` methods (``reserve_id``,
    ``missing``, ``trial_spec``, ``trial_started``, ``trial_epoch``, ``trial_finished``,
    ``trial_interrupted``).

    Args:
        config: the study settings.
        study: the open, locked study.
        callbacks: observers.
        runner: what trains a trial (default: a :class:`hpo.runner.TrialRunner` with the
            study's ``trial_timeout``).
    """

    def __init__(
        self, config: TuneConfig, study: Study, callbacks: Sequence[TunerCallback] = (), runner: TrialRunner | None = None
    ):
        self.config = config
        self.study = study
        self.callbacks = list(callbacks)
        self.runner = runner or TrialRunner(timeout_s=config.trial_timeout)
        self._lock = threading.RLock()
        self._in_flight: set[int] = set()
        self._retry: list[tuple[int, dict[str, Any]]] = []
        self._next_id = max(study.records(), default=-1) + 1
        self._data = str(study.path / "data.yaml") if config.data.kind == "yaml" else config.data.source
        self.gpus = [str(g) for g in gpu_indices(config.train_args.get("device"))]
        self._trial_bytes = 0  # the largest trial folder of this run (bytes), for the free-space check
        self._run_start = clock.monotonic()  # real time, or a simulation's (hpo.clock)
        self._elapsed_before = float(study.settings.get("elapsed_s") or 0.0)  # spent by the study's earlier runs
        #: ids of trials stopped because the time budget was spent (recorded ``pruned`` with that reason)
        self.budget_pruned: set[int] = set()
        #: whether the time budget ended this run (no trial started after it)
        self.budget_ended = False
        #: the study's settings version the trials of this run train under (:attr:`TrialRecord.settings`)
        self.settings_version = max(settings_versions(study.settings), default=0)
        #: seconds of the complete trials (for the final stage's reserve, :meth:`final_reserve_s`)
        self._complete_s = [
            float(r.duration_s) for r in study.records().values() if r.status is TrialStatus.COMPLETE and r.duration_s
        ]
        self._clock_s: dict[int, float] = {}  # trial id -> seconds on the study's clock (run_trial)

    # --- the time budget
    def elapsed_s(self) -> float:
        """Wall-clock seconds the study has run: its earlier runs (``elapsed_s`` in ``study.json``,
        saved after every trial, so a killed run loses at most the time since its last trial) plus this one."""
        return self._elapsed_before + (clock.monotonic() - self._run_start)

    def time_left(self) -> float | None:
        """Seconds of ``config.time_budget`` left (``None``: no budget; 0 when spent)."""
        budget = self.config.time_budget
        return None if budget is None else max(0.0, budget - self.elapsed_s())

    def final_reserve_s(self) -> float:
        """Seconds of the time budget the search leaves to the final stage (``final_epochs``): its
        estimated cost, ``final_top x final_seeds x final_epochs / epochs x`` the median duration
        of the study's complete trials (0 before a trial completed, or without a final stage or a
        budget). Final runs train one at a time, so they cost that in sequence."""
        cfg = self.config
        if not cfg.final_epochs or cfg.time_budget is None or not self._complete_s:
            return 0.0
        import statistics

        per_epoch = statistics.median(self._complete_s) / cfg.epochs
        return cfg.final_top * cfg.final_seeds * cfg.final_epochs * per_epoch

    def budget_spent(self) -> bool:
        """Whether the search's share of the time budget is spent (never, without one): the budget
        less :meth:`final_reserve_s`."""
        left = self.time_left()
        if left is not None and left - self.final_reserve_s() <= 0:
            self.budget_ended = True
            return True
        return False

    def save_elapsed(self) -> None:
        """Store :meth:`elapsed_s` in ``study.json`` (the writer only; joined processes keep theirs)."""
        if self.config.join:
            return
        self.study.settings["elapsed_s"] = round(self.elapsed_s(), 3)
        self.study.save_settings()

    # --- the volume
    def space_needed(self) -> int:
        """Bytes a new trial needs free on the study's volume: the largest trial folder seen so far
        (weights, logs) plus the space reserve, at least :data:`MIN_FREE_BYTES`."""
        if not self._trial_bytes:
            done = [r.id for r in self.study.finished()][-5:]
            self._trial_bytes = max((tree_bytes(self.study.trial_dir(t)) for t in done), default=0)
        return max(MIN_FREE_BYTES, self._trial_bytes + Study.RESERVE_BYTES)

    def check_space(self) -> None:
        """Refuse to start a trial on a volume without :meth:`space_needed` bytes free.

        Raises:
            VolumeError: naming the volume, the free and the needed space.
        """
        needed = self.space_needed()
        if free_bytes(self.study.path) < needed:
            from .files import volume_error

            raise volume_error(OSError(errno.ENOSPC, "No space left on device"), self.study.path, needed=needed)

    def volume_failure(self, outcome: TrialOutcome) -> bool:
        """Whether a failed trial failed because the study's volume did (full, read-only, I/O error):
        its error names such a write error, or the volume now lacks :meth:`space_needed` bytes.
        Such a trial is not a result (:meth:`trial_finished` records it ``interrupted``)."""
        if outcome.status is not TrialStatus.FAILED:
            return False
        if _VOLUME_TEXT.search(outcome.error or ""):
            return True
        try:
            return free_bytes(self.study.path) < self.space_needed()
        except OSError:
            return True

    @property
    def stopping(self) -> bool:
        """Whether the run is stopping (an interrupt or a volume failure): no new trial starts."""
        return self.runner.stopping

    # --- counting
    def finished(self) -> list[TrialRecord]:
        """Finished trials recorded so far."""
        return self.study.finished()

    def missing(self) -> int:
        """Finished trials the study still lacks to reach ``iterations`` (a running or interrupted
        record does not count); :data:`UNCAPPED` without a cap (a time budget alone); 0 once the
        time budget is spent."""
        if self.budget_spent():
            return 0
        if self.config.iterations is None:
            return UNCAPPED
        return max(0, self.config.iterations - len(self.study.finished()))

    def remaining(self) -> int:
        """Trials still to start so the study reaches ``iterations`` finished trials.

        Counts every trial id of the study (finished, running in this or a joined process, or
        queued for retry) plus the ids this process is starting; call it inside
        :meth:`hpo.study.Study.reserving` when other processes may join the study.
        """
        if self.config.iterations is None:
            return UNCAPPED
        with self._lock:
            taken = set(self.study.records()) | self._in_flight | {tid for tid, _ in self._retry}
            return max(0, self.config.iterations - len(taken))

    def reserve_id(self) -> int:
        """Reserve the next trial id (ints from 0, unique in the study)."""
        with self._lock:
            tid = self._next_id
            self._next_id += 1
            return tid

    def _take_id(self, suggested: int | None) -> int:
        """The id of a new trial: the backend's own (checked unused) or the next of :meth:`reserve_id`."""
        if suggested is None:
            return self.reserve_id()
        tid = int(suggested)
        if tid < 0 or tid in self.study.records() or tid in self._in_flight:
            raise RuntimeError(f"backend {self.config.backend}: suggested trial id {tid} is already in use in the study")
        with self._lock:
            self._next_id = max(self._next_id, tid + 1)
        return tid

    def queue_retry(self, trial_id: int, params: dict[str, Any]) -> None:
        """Re-run an interrupted trial with the same id before asking for new ones."""
        self._retry.append((trial_id, params))

    # --- one trial
    def trial_spec(self, trial_id: int, params: dict[str, Any]) -> TrialSpec:
        """What trial ``trial_id`` trains: the study's model, task, data, fixed train args, epochs,
        metric and trainer, with ``params``, in ``<study>/trials/<id>``. Parsed once, here."""
        cfg = self.config
        return TrialSpec(
            trial_id=trial_id,
            model=cfg.model,
            task=cfg.task,
            data=self._data,
            params=dict(params),
            train_args=dict(cfg.train_args),
            epochs=cfg.epochs,
            run_dir=str(self.study.trial_dir(trial_id)),
            metric=cfg.metric,
            trainer=cfg.trainer,
            trainer_options=dict(cfg.trainer_options),
        )

    def run_trial(
        self,
        trial_id: int,
        params: dict[str, Any],
        *,
        backend: Backend | None = None,
        slot: int = 0,
    ) -> TrialRecord:
        """Train one trial in a worker process, record it, and return its finished record.

        Args:
            trial_id: from :meth:`reserve_id` (or a retried id).
            params: values for every key of the space (validated against it).
            backend: asked ``should_prune`` after each epoch, if given.
            slot: the worker slot (0..workers-1); picks the GPU when ``device`` lists several.
        """
        worker = f"{socket.gethostname()}:{os.getpid()}"
        spec = self.trial_spec(trial_id, params)
        if len(self.gpus) > 1:
            spec.env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
            spec.train_args["device"] = "0"
            worker += f" gpu{spec.env['CUDA_VISIBLE_DEVICES']}"
        record = self.trial_started(trial_id, params, worker=worker)
        spec.params = dict(record.params)
        try:

            def on_epoch(row: dict[str, float]) -> bool:
                self.trial_epoch(record, row)
                stop = bool(backend.should_prune(record, row)) if backend is not None else False
                return stop or self.stop_for_budget(record, row)

            began = clock.monotonic()
            outcome = self.runner.run(spec, on_epoch, lambda p: self.trial_batch(record, p))
            self._clock_s[trial_id] = clock.monotonic() - began  # the study's clock (a simulation's too)
        except BaseException as e:
            with self._lock:
                self._in_flight.discard(trial_id)
            if isinstance(e, (KeyboardInterrupt, VolumeError)):
                self.trial_interrupted(record, e)
            raise
        try:
            return self.trial_finished(record, outcome)
        except VolumeError:
            self.runner.abort()  # the other running trials stop too: resumable, not failed
            raise

    def stop_for_budget(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """Whether a running trial stops after this epoch because the time budget is spent (never
        after its last epoch: it completes). Such a trial is recorded ``pruned`` with the reason."""
        if int(row.get("epoch", 0)) >= self.config.epochs or not self.budget_spent():
            return False
        self.budget_pruned.add(record.id)
        return True

    def trial_interrupted(self, record: TrialRecord, why: BaseException) -> None:
        """Record a trial the run stopped (interrupt, volume failure) as ``interrupted``: not a
        result, and ``--resume`` re-runs it with the same id and params. Best effort: if the volume
        refuses the record, the trial's ``running`` record means the same."""
        record.status = TrialStatus.INTERRUPTED
        record.end = utcnow()
        if isinstance(why, VolumeError):
            what = "the volume failed"
        elif isinstance(why, KeyboardInterrupt):
            what = "the run was interrupted (Ctrl-C or SIGTERM)"
        else:
            what = f"the run stopped ({type(why).__name__})"
        record.error = f"{what} after epoch {record.epochs_completed}; --resume re-runs this trial"
        with self._lock:
            self._in_flight.discard(record.id)
        try:
            self.study.append(record)
        except (VolumeError, OSError):
            pass

    # --- the pieces of run_trial, public for backends that own their loop (Ray Tune): they train
    # --- elsewhere and report each trial's start, epochs and end here, in the driver process.
    def trial_started(
        self, trial_id: int, params: dict[str, Any], *, worker: str | None = None, continued: TrialRecord | None = None
    ) -> TrialRecord:
        """Record that trial ``trial_id`` started: a ``running`` record is appended, ``on_trial_start`` emitted.

        Args:
            trial_id: from :meth:`reserve_id` (or an interrupted trial's id, whose record is replaced).
            params: values for every key of the space.
            worker: who trains it (default ``host:pid`` of this process).
            continued: the trial's earlier record when it continues from a checkpoint (a
                controller's paused or errored trial): its start and epochs so far are kept.

        Raises:
            hpo.errors.SpaceError: ``params`` do not fit the space.
            hpo.errors.VolumeError: the volume lacks :meth:`space_needed` bytes (no record written).
        """
        params = self.config.space.validate_params(params)
        self.check_space()
        record = TrialRecord(
            id=trial_id,
            params=params,
            start=utcnow(),
            worker=worker or f"{socket.gethostname()}:{os.getpid()}",
            settings=self.settings_version,
        )
        if continued is not None:
            record.start, record.epochs, record.epochs_completed = (
                continued.start,
                list(continued.epochs),
                continued.epochs_completed,
            )
        with self._lock:
            self._in_flight.add(trial_id)
        self.study.append(record)
        self._emit("on_trial_start", record)
        return record

    def trial_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """Record one epoch's metrics of a running trial and emit ``on_epoch``.

        A row whose ``epoch`` is not after the last recorded one (a trial continued from an
        earlier checkpoint) replaces the rows from that epoch on.
        """
        n = row.get("epoch")
        if n is not None and record.epochs and record.epochs[-1].get("epoch", 0) >= n:
            record.epochs = [r for r in record.epochs if r.get("epoch", 0) < n]
        record.epochs.append(row)
        record.epochs_completed = len(record.epochs)
        self.study.append(record)
        self._emit("on_epoch", record, row)

    def trial_batch(self, record: TrialRecord, progress: dict[str, int]) -> None:
        """A running trial's batch progress (``{"epoch": n, "batch": i, "batches": nb}``, 1-based):
        emitted to the observers (``on_batch``), not recorded."""
        self._emit("on_batch", record, progress)

    def trial_finished(self, record: TrialRecord, outcome: TrialOutcome) -> TrialRecord:
        """Finish a trial from its outcome: status, objective (a missing or non-finite objective makes
        it ``failed``), record appended, ``best.yaml`` updated, ``on_trial_end`` emitted.

        ``outcome.epochs`` replaces the recorded epochs when not empty. Returns ``record``.

        Raises:
            hpo.errors.VolumeError: the trial failed because the study's volume did
                (:meth:`volume_failure`): it is recorded ``interrupted``, not as a result, and
                ``--resume`` re-runs it once the volume is fixed.
        """
        if self.volume_failure(outcome):
            text = outcome.error or ""
            code = (
                errno.EROFS
                if re.search(r"Read-only|Errno 30\b", text)
                else (errno.EIO if re.search(r"Input/output|Errno 5\b", text) else errno.ENOSPC)
            )
            try:
                with volume_errors(self.study.path, needed=self.space_needed()):
                    raise OSError(code, f"trial {record.id}'s own writes failed")
            except VolumeError as e:
                self.trial_interrupted(record, e)
                raise
        try:
            self._finish(record, outcome)
            self.study.append(record)
        finally:
            with self._lock:
                self._in_flight.discard(record.id)
        seconds = self._clock_s.pop(record.id, None) or record.duration_s
        if record.status is TrialStatus.COMPLETE and seconds:
            self._complete_s.append(float(seconds))
        self._after_trial(record)
        return record

    def _finish(self, record: TrialRecord, outcome: TrialOutcome) -> None:
        cfg = self.config
        record.epochs = outcome.epochs or record.epochs
        record.epochs_completed = len(record.epochs)
        record.final_metrics = outcome.final_metrics
        record.applied = outcome.applied
        record.train_s = outcome.train_s
        record.duration_s = outcome.duration_s
        record.weights = outcome.weights
        record.end = utcnow()
        record.error = outcome.error
        record.status = outcome.status
        if record.status is TrialStatus.FAILED:
            record.objective = None
            return
        value = objective_of(record.epochs, record.final_metrics, cfg.metric)
        if value is None or not math.isfinite(value):
            record.status = TrialStatus.FAILED
            record.objective = None
            record.error = f"objective {cfg.metric} is {value} (diverged or not reported); the trial counts as failed"
            return
        record.objective = value
        if record.status is TrialStatus.PRUNED and record.id in self.budget_pruned:
            from .config import format_duration

            reserve = self.final_reserve_s()
            record.error = (
                f"stopped after epoch {record.epochs_completed}: the study's time budget "
                f"({format_duration(cfg.time_budget or 0)}) is spent"
                + (f" (the last {format_duration(reserve)} of it are the final stage's)" if reserve else "")
            )
        elif record.status is TrialStatus.PRUNED:
            record.error = record.error or f"pruned after epoch {record.epochs_completed}"

    def _after_trial(self, record: TrialRecord) -> None:
        with self._lock:
            best = self.study.best()
            if best is not None and best.id == record.id:
                self.study.write_best(best)
            self.save_elapsed()
        self._emit("on_trial_end", record)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            method = getattr(cb, event, None)  # an observer need not subclass TunerCallback
            if method is not None:
                method(*args)

    # --- the default loop
    def ask_tell(self, backend: Backend) -> None:
        """The core loop: ``ask -> run -> tell`` until the study has ``iterations`` finished trials.

        With ``workers > 1``, that many threads each run this loop; asking and telling are
        serialised, training runs in parallel (one worker process per running trial). Queued
        retries (:meth:`queue_retry`) run first, with their ids and params. A new trial's id is
        the backend's :attr:`Suggestion.trial_id`, else the loop's own; counting, taking the id
        and recording the new trial happen under :meth:`Study.reserving`, so processes joined to
        the study (``--join``) together start exactly the trials the total needs.
        """
        errors: list[BaseException] = []

        done = [threading.Event() for _ in range(max(1, self.config.workers))]

        def worker(slot: int) -> None:
            try:
                while True:
                    with self._lock, self.study.reserving():
                        if self.stopping or self.budget_spent():
                            return
                        self.check_space()
                        if self._retry:
                            tid, params = self._retry.pop(0)
                        elif self.remaining() > 0:
                            suggestion = backend.ask()
                            tid = self._take_id(suggestion.trial_id)
                            params = self.config.space.validate_params(suggestion.params)
                            # recorded at once, under the reservation lock: joined processes count it
                            self.study.append(TrialRecord(id=tid, params=params, start=utcnow(), settings=self.settings_version))
                        else:
                            return
                        self._in_flight.add(tid)
                    record = self.run_trial(tid, params, backend=backend, slot=slot)
                    with self._lock, volume_errors(self.study.path):
                        backend.tell(record)
            except BaseException as e:  # noqa: BLE001
                if isinstance(e, VolumeError):
                    self.runner.abort()  # stop the other trials at once: resumable, not failed
                errors.append(e)
            finally:
                done[slot].set()

        # no more threads than trials left to start (--concurrent-trials 100000 for 3 trials: 3 threads)
        n = max(1, min(self.config.workers, self.remaining() + len(self._retry)))
        if n == 1:
            worker(0)
        else:
            threads = [threading.Thread(target=worker, args=(k,), name=f"hpo-worker-{k}", daemon=True) for k in range(n)]
            for t in threads:
                t.start()
            # Wait on each worker's own event, not Thread.join: a KeyboardInterrupt (SIGINT/SIGTERM)
            # raised inside join() can leave a live thread reported stopped (seen on CPython 3.11:
            # is_alive() False while it still trained), and the study then exited before that
            # thread recorded its trial 'interrupted'.
            try:
                while not all(d.wait(0.2) for d in done[:n]):  # short waits: signals reach the main thread promptly
                    pass
            except BaseException:
                self.runner.abort()  # stop running trials: each thread records its trial 'interrupted'
                for d in done[:n]:
                    d.wait(30)
                raise
        if errors:
            # a volume failure explains the interrupts it caused; a crash beats an interrupt
            volume = [e for e in errors if isinstance(e, VolumeError)]
            real = [e for e in errors if not isinstance(e, KeyboardInterrupt)]
            raise (volume or real or errors)[0]


DEPRECATED_WORKERS = (
    "hpo's 'workers' (trials at once) is deprecated and goes away in the next release: it is easily confused with "
    "Ultralytics' workers= train arg (data-loader workers); use concurrent_trials= (CLI: --concurrent-trials N)"
)


def _start_workers_for(backend_cls: type[Backend | Controller], trainer: str) -> None:
    """Start the runner's forkserver early when trials will fork from it: a :class:`Backend`
    (a :class:`Controller` trains its own way) with a trainer that is not ``in_process``."""
    from .backend import Backend

    if issubclass(backend_cls, Backend) and not trainer_in_process(trainer):
        start_workers()


class Tuner:
    """Tune an Ultralytics YOLO model with a pluggable backend.

    Example:
        >>> from hpo import Tuner
        >>> result = Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data="digits-cls",
        ...                iterations=4, epochs=2, train_args={"imgsz": 32}, output="runs/hpo").run()
        >>> result.best_params, result.best_objective, result.study_dir

    Args (keyword-only):
        backend: installed backend name (``hpo backends``), default ``"ultralytics"``.
        model: bundled model YAML (``"yolov8n.yaml"``) or local ``.pt``; never downloaded.
        data: data YAML (detect/segment/pose/obb) or classification folder. A relative ``path:``
            inside the YAML is relative to the YAML file.
        space: ``None`` (Ultralytics' default tuner space), a mapping, a YAML/JSON file or inline JSON
            (see :meth:`hpo.SearchSpace.parse`).
        iterations: total finished trials of the study (>= 1; default 10, or no cap when a
            ``time_budget`` is given: then it is a cap); on resume, the total to reach.
        epochs: training epochs per trial (>= 1), the full fidelity.
        metric: objective metric (default by task: detect ``metrics/mAP50-95(B)``, classify
            ``metrics/accuracy_top1``, segment ``metrics/mAP50-95(M)``, pose ``metrics/mAP50-95(P)``,
            obb ``metrics/mAP50-95(B)``), maximised (losses are minimised).
        train_args: fixed Ultralytics train args (``{"imgsz": 32, "device": "cpu"}``).
        output: folder holding studies (default ``runs/hpo``), e.g. the mounted volume.
        name: study name (default ``<data name>-<backend>``); the study is ``output/name``.
        resume: continue the existing study ``output/name`` up to ``iterations`` (a total below
            its finished trials does nothing and leaves the stored total as it is). Its data (path
            and content), train args (but :data:`SILENT_TRAIN_ARGS`) and trainer must match the
            stored ones unless ``allow_changes``; its model, space, metric, epochs and backend
            always.
        allow_changes: with ``resume``, accept changed data, train args or trainer: the study
            takes the new settings (``<study>/data.yaml`` is rewritten, the change is recorded in
            ``study.json`` ``resumes`` as a new settings version) and each trial records the
            version it trained under, which ``hpo show`` marks. Default ``False``.
        join: add this process to the study ``output/name`` that a live writer is running
            (backends with ``supports_join``, e.g. optuna): its records go to
            ``trials.<host>-<pid>.jsonl``, it takes no lock and retries no interrupted trial; all
            processes together stop at ``iterations``, which must be the study's. Every stored
            setting (data, model, space, metric, epochs, backend, backend options, train args but
            :data:`SILENT_TRAIN_ARGS`) must match. A study that no live process writes is refused
            (``resume`` continues it), unless it is finished already (nothing to do).
        trial_timeout: seconds before a trial is killed and recorded as failed.
        time_budget: wall-clock budget of the whole study: seconds, or text such as ``"90m"``,
            ``"2h"``, ``"1h30m"`` (:func:`hpo.config.parse_duration`). No trial starts once it is
            spent; trials still running stop at their next epoch boundary and are recorded
            ``pruned`` (their partial curves still inform the sampler); the study ends normally
            (``TuneResult.stopped_by == "time_budget"``). The elapsed time is kept in the study
            (``study.json`` ``elapsed_s``), so ``resume`` continues with what is left (a resume may
            raise the budget; the change is recorded like a changed ``iterations``).
        concurrent_trials: trials trained at once by this process (several GPUs: one each); not
            Ultralytics' ``workers`` train arg (data-loader workers), which goes in ``train_args``.
        workers: deprecated spelling of ``concurrent_trials`` (a ``FutureWarning``; removed in
            the next release).
        seed: seed of the backend's sampler.
        backend_options: the backend's options (``hpo backends`` lists them).
        callbacks: :class:`TunerCallback` observers (plugins add theirs when :meth:`run` starts,
            hook :func:`hpo.hookspecs.hpo_study_observers`).
        mlflow: MLflow tracking (the observer plugin :mod:`hpo.tracking`, docs/mlflow.md):
            ``True`` on, ``False`` off, ``None`` (default) on when ``MLFLOW_TRACKING_URI`` is set
            or ``experiment`` given. Without ``MLFLOW_TRACKING_URI`` it logs to
            ``sqlite:///<study>/mlflow.db``. Checked when :meth:`run` starts.
        experiment: MLflow experiment name (default: the study name).
        plots: draw ``<study>/plots/`` (PNGs and ``report.html``, :mod:`hpo.plots`) when the run
            ends; a plotting error is a warning, never a failed study. ``None`` (default): on,
            unless the environment sets ``HPO_PLOTS=0`` (about 5 s per study on 2 CPU cores).
        download_weights: let Ultralytics fetch official weights named by ``model`` (``yolov8n.pt``)
            once, before the first trial, into ``weights_dir`` (:mod:`hpo.pretrained`); ``None``
            (default): the environment variable ``HPO_DOWNLOAD_WEIGHTS``, else off.
        weights_dir: where fetched weights are kept (default ``<output>/pretrained``).
        verbose: show live progress on stderr (:mod:`hpo.progress`: a rich display on a terminal,
            plain lines with a heartbeat elsewhere); default ``False``.
        keep_weights: which trials keep ``trials/<id>/weights/*.pt`` (:mod:`hpo.weights`):
            ``"best"``, ``"top-K"`` (default ``"top-3"``) or ``"all"``; the others' are deleted as
            trials finish (``<study>/weights/best.pt`` always stays).
        trainer: ``"module:function"`` that trains a trial (:mod:`hpo.trial`); default: the
            environment variable ``HPO_TRAINER``, else Ultralytics (:data:`hpo.trial.ULTRALYTICS_TRAINER`).
            ``"hpo.simulate:simulated_trainer"`` runs the study on simulated learning curves
            (milliseconds per trial; tests and benchmark simulations).
        trainer_options: JSON-able options of the trainer (default: ``HPO_TRAINER_OPTIONS``, JSON).
        final_epochs: after the search ends (normally: not after a failure or an interrupt), train
            the best ``final_top`` configurations for this many epochs, ``final_seeds`` times each
            with seeds no trial used, and score them on the data's test split (:mod:`hpo.final`;
            ``None`` or 0: no final stage). With a ``time_budget`` the search leaves the stage its
            estimated cost (:meth:`StudyLoop.final_reserve_s`) and the stage gets what is left.
            The result is :attr:`TuneResult.final`; a stage without a complete run raises
            :class:`~hpo.errors.RunFailedError` (``hpo final STUDY`` continues it).
        final_seeds: runs per configuration (>= 1; default 1): seeds ``seed+1 .. seed+R`` of the
            train arg ``seed`` (Ultralytics' default 0).
        final_top: how many of the best configurations (>= 1; default 1).

    Raises:
        hpo.errors.ConfigError: bad input (at construction, before anything is written).
    """

    def __init__(
        self,
        *,
        backend: str = "ultralytics",
        model: str,
        data: str | os.PathLike,
        space: Any = None,
        iterations: int | str | None = None,
        epochs: int | str = 10,
        metric: str | None = None,
        train_args: dict[str, Any] | None = None,
        output: str | os.PathLike = "runs/hpo",
        name: str | None = None,
        resume: bool = False,
        join: bool = False,
        trial_timeout: float | None = None,
        time_budget: float | str | None = None,
        concurrent_trials: int | str = 1,
        workers: int | None = None,
        seed: int | None = None,
        backend_options: dict[str, Any] | None = None,
        callbacks: Sequence[TunerCallback] = (),
        mlflow: bool | None = None,
        experiment: str | None = None,
        plots: bool | None = None,
        keep_weights: str | int = "top-3",
        verbose: bool = False,
        download_weights: bool | None = None,
        weights_dir: str | os.PathLike | None = None,
        trainer: str | None = None,
        trainer_options: dict[str, Any] | None = None,
        allow_changes: bool = False,
        final_epochs: int | str | None = None,
        final_seeds: int | str = 1,
        final_top: int | str = 1,
    ):
        from .pretrained import fetch_pretrained, is_official_name, wants_download

        if allow_changes and not resume:
            raise ConfigError(
                "allow_changes: --allow-changes applies to --resume only (a new study has nothing to change, and a "
                "joined process runs with the running study's settings); add --resume or drop --allow-changes"
            )
        #: accept changed data, train args or trainer on resume (see the class docstring)
        self.allow_changes = bool(allow_changes)

        if wants_download(download_weights) and is_official_name(str(model)):
            model = fetch_pretrained(str(model), weights_dir or Path(output).expanduser() / "pretrained")
        from .weights import WeightsKeeper, parse_keep_weights

        keep = parse_keep_weights(keep_weights)
        if workers is not None:
            import warnings

            warnings.warn(DEPRECATED_WORKERS, FutureWarning, stacklevel=2)
            concurrent_trials = workers
        self.config = build_config(
            backend=backend,
            model=model,
            data=data,
            space=space,
            iterations=iterations,
            epochs=epochs,
            metric=metric,
            train_args=train_args,
            output=output,
            name=name,
            resume=resume,
            join=join,
            trial_timeout=trial_timeout,
            time_budget=time_budget,
            workers=concurrent_trials,
            seed=seed,
            backend_options=backend_options,
            trainer=trainer,
            trainer_options=trainer_options,
            final_epochs=final_epochs,
            final_seeds=final_seeds,
            final_top=final_top,
            warm_up=_start_workers_for,
        )
        self.callbacks = list(callbacks)
        if verbose:
            from .progress import ProgressDisplay

            self.callbacks.insert(0, ProgressDisplay())
        if plots is None:
            plots = os.environ.get("HPO_PLOTS", "1").strip().lower() not in ("0", "false", "no", "off")
        if plots:
            from .plots import PlotCallback

            self.callbacks.append(PlotCallback())  # before the plugins' observers: MLflow logs the plots
        #: the settings passed to the plugins' observers (hook ``hpo_study_observers``, e.g. MLflow tracking)
        self.observer_settings: dict[str, Any] = {"mlflow": mlflow, "experiment": experiment}
        #: observers the plugins contributed to the last :meth:`run` (set when it starts)
        self.observers: list[TunerCallback] = []
        self._keeper = WeightsKeeper(keep)  # last: after every observer saw the trial

    @property
    def tracker(self) -> TunerCallback | None:
        """The MLflow tracker (:class:`hpo.tracking.MlflowTracker`) of the last :meth:`run`, or
        ``None`` (tracking off, or before :meth:`run`)."""
        return next((o for o in self.observers if getattr(o, "name", None) == "mlflow"), None)

    @property
    def study_dir(self) -> Path:
        return self.config.study_dir

    def _open_study(self) -> Study:
        cfg = self.config
        path = cfg.study_dir
        if cfg.join:
            if not Study.exists(path):
                raise StudyError(
                    f"join: there is no study at '{path}' to join; start it first without --join (same --output/--name)"
                )
            worker = re.sub(r"[^A-Za-z0-9._-]", "_", f"{socket.gethostname()}-{os.getpid()}")
            study = Study.open(path, worker=worker)
            fixed = {k: v for k, v in cfg.identity().items() if k != "data"}  # the data: with _measured_changes
            diff = "; ".join(
                x
                for x in (
                    _changed(study.settings, {**fixed, "options": cfg.options.model_dump(mode="json")}),
                    *_measured_changes(study.settings, cfg),
                )
                if x
            )
            if diff:
                raise StudyError(f"join: the running study's settings differ ({diff}); join with the stored settings")
            _check_join(study, cfg)
            return study
        if Study.exists(path):
            if not cfg.resume:
                raise StudyError(f"study: '{path}' already exists; pass --resume to continue it or choose another --name")
            study = Study.open(path, writer=True)
            dead = study.lock.took_over if study.lock else None
            if dead:
                print(
                    f"hpo: warning: took over the lock of a writer that is gone (host {dead.get('host')} pid "
                    f"{dead.get('pid')}, heartbeat {dead.get('age_s', 0):.0f} s ago)",
                    file=sys.stderr,
                    flush=True,
                )
            try:
                self._resume_settings(study)
            except BaseException:
                study.close()
                raise
            return study
        if cfg.resume:
            raise StudyError(f"resume: there is no study at '{path}' to resume; drop --resume to start it")
        settings = cfg.to_settings()
        settings["versions"] = _versions(cfg)
        study = Study.create(path, settings)
        cfg.data.write(path)
        return study

    def _resume_settings(self, study: Study) -> None:
        """Check a resume's settings against the stored ones and record what it changes.

        The model, space, metric, epochs and backend must match; the data (path and content), the
        train args other than :data:`SILENT_TRAIN_ARGS` and the trainer must match unless
        :attr:`allow_changes`, which makes them a new settings version (``resumes[]`` gets
        ``settings`` and ``allowed_changes``). ``<study>/data.yaml`` is rewritten from the data as
        checked. An ``iterations`` below the study's finished trials leaves the stored total as it
        is (the run has nothing to do).

        Raises:
            StudyError: a refused change (one line with the diff and the fix; nothing written).
            VolumeError: the volume refused a write.
        """
        cfg = self.config
        stored = study.settings
        fixed = {k: v for k, v in cfg.identity().items() if k != "data"}
        detail = _changed(stored, fixed)
        if detail:
            raise StudyError(
                f"resume: the study's settings changed ({detail}); resume with the stored settings or start a new --name"
            )
        ran_by = _run_by_other_backend(study, cfg.backend)  # the stored backend is the given one here
        if ran_by:
            raise StudyError(
                f"resume: study.json names backend '{cfg.backend}', but {ran_by} (was study.json edited?); "
                "put back the backend that ran the study and resume with it, or start a new --name"
            )
        measured = "; ".join(_measured_changes(stored, cfg))
        if measured and not self.allow_changes:
            raise StudyError(
                f"resume: settings that change what a trial measures differ from the study's ({measured}); start a new "
                "study (another --name), or pass --allow-changes to continue this one with them (hpo show then marks "
                "each trial's settings)"
            )
        changes = {k: v for k, v in cfg.to_settings().items() if k not in cfg.identity() and stored.get(k) != v}
        if "iterations" in changes and cfg.iterations is not None and cfg.iterations < len(study.finished()):
            del changes["iterations"]  # the stored total never drops below the finished trials: nothing to do
        entry: dict[str, Any] = {"at": utcnow(), "changed": changes}
        if measured:
            if _normal(stored.get("data")) != _normal(cfg.data.source):
                changes["data"] = cfg.data.source
            entry.update(settings=max(settings_versions(stored), default=0) + 1, allowed_changes=measured)
        with volume_errors(study.path):
            # the trials from now on train on what study.json says (also heals a study whose data.yaml an
            # older hpo left behind its recorded data_resolved)
            cfg.data.write(study.path)
        stored.setdefault("resumes", []).append(entry)
        stored.update(changes)
        study.save_settings()

    def run(self) -> TuneResult:
        """Run (or resume) the study until it has ``iterations`` finished trials.

        Returns:
            :class:`TuneResult`.

        Raises:
            hpo.errors.StudyLockedError: another live process writes this study.
            hpo.errors.StudyError: the study exists (without ``resume``), is missing (with
                ``resume``), or its stored data/model/space/metric/epochs/backend differ.
            hpo.errors.RunFailedError: the study has no complete trial when the run ends, also when
                it had nothing to do (a resume of a finished study): every trial failed (the
                message holds the first error and its log), the time budget ended it before any
                trial completed, or the rest were pruned.
            hpo.errors.ConfigError: a plugin's observers refused the run, e.g. MLflow tracking is
                on and its experiment is deleted or its server unreachable, or ``experiment`` is
                given with ``mlflow=False`` (hook ``hpo_study_observers``, called before the
                study directory is touched).
        """
        cfg = self.config
        backend_cls = cfg.backend_class
        # the result's DataFrame needs pandas (~0.4 s to import): import it now, while the trial
        # workers' forkserver is still preloading on another core, rather than after the last trial
        import pandas  # noqa: F401

        from .plugins import study_observers

        # plugins' observers (MLflow: create-or-get the experiment), before anything is written
        self.observers = study_observers(cfg, self.observer_settings)
        new_dir = not cfg.study_dir.exists()
        study = self._open_study()
        result: TuneResult | None = None
        loop = StudyLoop(cfg, study, [*self.callbacks, *self.observers, self._keeper])
        backend: Backend | Controller | None = None
        started = False
        try:
            with volume_errors(study.path):
                records = study.records()
                finished = [r for r in records.values() if r.status.finished]
                if loop.missing() == 0:  # the total reached, or the time budget spent by earlier runs
                    result = self._result(study, nothing_to_do=True, loop=loop)
                    self._fail_without_result(study, result)
                    if cfg.final_epochs and not cfg.join:  # a finished search, resumed for its final stage
                        started = True
                        loop._emit("on_study_start", study, cfg)
                        self._final_stage(study, loop, result)
                    return result
                if not cfg.join:
                    study.keep_reserve()
                    self._refresh_best(study, finished)
                from .backend import Controller

                if issubclass(backend_cls, Controller):  # the library owns its loop (Ray Tune)
                    backend = backend_cls(config=cfg, options=cfg.options)
                    started = True
                    loop._emit("on_study_start", study, cfg)
                    backend.run(loop)
                else:
                    backend = backend_cls(config=cfg, study=study, options=cfg.options)
                    backend.restore(finished)
                    if not cfg.join:  # a joined process leaves others' trials alone
                        for r in records.values():
                            if not r.status.finished:  # interrupted: re-run with its id and params
                                loop.queue_retry(r.id, dict(r.params))
                    started = True
                    loop._emit("on_study_start", study, cfg)
                    loop.ask_tell(backend)
            result = self._result(study, loop=loop)
            self._fail_without_result(study, result)
            self._final_stage(study, loop, result)
            return result
        except (ConfigError, StudyError):  # StudyError is no ConfigError (both exit 2, nothing left)
            if new_dir and not started:
                # bad input found after the study directory was made (e.g. a backend's storage): leave nothing
                self._remove_new_study(study)
            raise
        finally:
            try:
                if backend is not None:
                    backend.close()
                if started:
                    with contextlib.suppress(HpoError, OSError):  # best effort: a full volume is reported already
                        loop.save_elapsed()
                loop._emit("on_study_end", study, result)
            finally:
                study.close()

    def _final_stage(self, study: Study, loop: StudyLoop, result: TuneResult) -> None:
        """After a search that ended normally: the final stage (``final_epochs``), its result in
        ``result.final``, with what is left of the time budget (:mod:`hpo.final`). A joined process
        leaves it to the study's writer.

        Raises:
            RunFailedError: no final run completed (one line; ``hpo final STUDY`` continues the stage).
        """
        cfg = self.config
        if not cfg.final_epochs or cfg.join:
            return
        from .final import require_complete, run_final_stage

        observers = [*self.callbacks, *self.observers]
        try:
            result.final = run_final_stage(
                study,
                epochs=cfg.final_epochs,
                seeds=cfg.final_seeds,
                top=cfg.final_top,
                time_budget_s=loop.time_left(),
                observers=observers,
            )
        finally:
            with contextlib.suppress(HpoError, OSError):
                loop.save_elapsed()  # the final stage's time is the study's too
        require_complete(result.final, resume_hint=f"run 'hpo final {study.path}'")

    def _fail_without_result(self, study: Study, result: TuneResult) -> None:
        """Raise :class:`~hpo.errors.RunFailedError` when the study has no complete trial: a run
        with no result never ends as if it had one (fresh, resumed, joined, or with nothing to do).

        The one line says why: every trial failed (with the first error and its log), the time
        budget ended the study before any trial completed, or no trial completed (failed and pruned
        ones only; a pruned trial is never the best), and for a run that had nothing to do, that
        the study already had its finished trials.
        """
        finished = study.finished()
        if any(r.status is TrialStatus.COMPLETE for r in finished):
            return
        failed = [r for r in finished if r.status is TrialStatus.FAILED]
        n_pruned = sum(r.status is TrialStatus.PRUNED for r in finished)
        first = ""
        if failed:
            log = study.trial_dir(failed[0].id) / "train.log"
            error = ((failed[0].error or "").strip().splitlines() or ["unknown"])[0]
            first = f"first error (trial {failed[0].id}): {error}" + (f" (log: {log})" if log.is_file() else "")
        idle = (
            f" (the study already has its {len(finished)} finished trials, so --resume ran none; fix the cause, then "
            "start a new --name or raise --iterations)"
            if result.nothing_to_do
            else ""
        )
        if result.stopped_by == "time_budget":
            why = (
                f"time budget: {format_duration(self.config.time_budget or 0)} ended the study before any trial "
                f"completed ({len(failed)} failed, {n_pruned} pruned); --resume with a larger --time-budget continues it"
            )
            raise RunFailed(why + (f"; {first}" if first else ""))
        if finished and len(failed) == len(finished):
            raise RunFailed(f"every trial failed{idle}; {first}")
        if not finished:
            raise RunFailed(f"no trial finished{idle}; the study has no result")
        raise RunFailed(
            f"no trial completed ({len(failed)} failed, {n_pruned} pruned; a pruned trial is never the best){idle}"
            + (f"; {first}" if first else "")
        )

    @staticmethod
    def _refresh_best(study: Study, finished: list[TrialRecord]) -> None:
        """Rewrite ``best.yaml`` if it does not name the best recorded trial (a run stopped between
        recording a trial and writing its best, e.g. on a full volume)."""
        import yaml

        best = study.best(finished)
        if best is None:
            return
        try:
            doc = yaml.safe_load((study.path / "best.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            doc = {}
        if not isinstance(doc, dict) or doc.get("trial") != best.id or doc.get("objective") != best.objective:
            study.write_best(best)

    @staticmethod
    def _remove_new_study(study: Study) -> None:
        import shutil

        study.close()
        shutil.rmtree(study.path, ignore_errors=True)

    def _result(self, study: Study, *, nothing_to_do: bool = False, loop: StudyLoop | None = None) -> TuneResult:
        finished = study.finished()
        best = study.best(finished)
        counts = count_trials(finished, FINISHED)
        weights = study.path / "weights" / "best.pt"
        return TuneResult(
            best_params=dict(best.params) if best else {},
            best_objective=best.objective if best else None,
            best_trial=best.id if best else None,
            metric=self.config.metric,
            direction=self.config.direction,
            trials=trials_frame(finished),
            study_dir=study.path,
            best_weights=weights if weights.is_file() else None,
            counts=counts,
            nothing_to_do=nothing_to_do,
            stopped_by="time_budget" if loop is not None and loop.budget_ended else None,
            elapsed_s=loop.elapsed_s() if loop is not None else None,
            iterations=self.config.iterations,
        )


def _run_by_other_backend(study: Study, backend: str) -> str | None:
    """What in the study's own files shows that another backend ran it, or ``None``: its stored
    ``options`` are not this backend's options, or it has trials, no ``<study>/<backend>/`` state
    folder and the state folder of another installed backend (each built-in backend keeps its state
    in ``<study>/<name>/``). Resuming with the wrong backend would start from an empty state
    (Optuna would hand out trial ids the study already holds)."""
    from .plugins import backends

    installed = backends()
    cls = installed.get(backend)
    stored = study.settings.get("options")
    if cls is not None and isinstance(stored, dict) and stored and not set(stored) <= set(cls.Options.model_fields):
        owner = [n for n, c in installed.items() if n != backend and set(stored) <= set(c.Options.model_fields)]
        whose = f"the options of backend '{owner[0]}'" if owner else f"no options of backend '{backend}'"
        return f"its stored options ({', '.join(sorted(stored))}) are {whose}"
    if study.records() and not (study.path / backend).is_dir():
        others = [n for n in installed if n != backend and (study.path / n).is_dir()]
        if others:
            return f"'{study.path / others[0]}' holds the state of backend '{others[0]}' and there is no '{study.path / backend}'"
    return None


def _changed(stored: dict[str, Any], given: dict[str, Any]) -> str:
    """``"key: stored X != given Y; ..."`` for the keys of ``given`` whose stored value differs; ``""`` if none."""
    diff = [k for k in given if _normal(stored.get(k)) != _normal(given[k])]
    return "; ".join(f"{k}: stored {_short(stored.get(k))} != given {_short(given[k])}" for k in diff)


def _check_join(study: Study, cfg: TuneConfig) -> None:
    """A joined process needs a live writer (the study's lock, :meth:`hpo.lock.StudyLock.live_holder`)
    and the running study's ``iterations`` and ``time_budget``. A finished study that nobody writes
    is let through with the same totals: the run has nothing to do (a late KFP worker).

    Raises:
        StudyError: no live writer (the fix: ``--resume``), or other totals (the fix: the stored ones).
    """
    from .lock import StudyLock

    stored = study.settings
    asked = {"iterations": cfg.iterations, "time_budget": cfg.time_budget}
    mismatch = _changed(stored, asked)
    total, budget = stored.get("iterations"), stored.get("time_budget")
    if StudyLock(study.path / "lock").live_holder() is None:
        done = len(study.finished())
        finished = (total is not None and done >= total) or (
            budget is not None and float(stored.get("elapsed_s") or 0.0) >= float(budget)
        )
        if finished and not mismatch:
            return
        raise StudyError(
            f"join: no process is running the study '{study.path}' ({done} of {total if total is not None else 'uncapped'} "
            "trials finished, its lock is free); --join adds a process to a running study: continue this one with --resume"
        )
    if mismatch:
        want = f"--iterations {total}" if total is not None else "no --iterations"
        want += f" --time-budget {format_duration(float(budget))}" if budget is not None else ""
        raise StudyError(f"join: the running study's totals differ ({mismatch}); join with {want}")


#: How a train arg or data key that one side does not set is shown in a diff.
_UNSET = "(unset)"


def _measured_changes(stored: dict[str, Any], cfg: TuneConfig) -> list[str]:
    """``"field: stored X != given Y"`` for each setting that changes what a trial measures and
    differs between the stored study (``study.json``) and ``cfg``: the data's path, the data YAML's
    content (names, splits, ...), every train arg but :data:`SILENT_TRAIN_ARGS`, the trainer."""
    out = []
    if _normal(stored.get("data")) != _normal(cfg.data.source):
        out.append(f"data: stored {_short(stored.get('data'))} != given {_short(cfg.data.source)}")
    old_data, new_data = stored.get("data_resolved"), cfg.data.content or cfg.data.source
    if isinstance(old_data, dict) and isinstance(new_data, dict):  # a folder's is its path: compared above
        a, b = _normal(old_data), _normal(new_data)
        for key in [*a, *(k for k in b if k not in a)]:
            if key == "names" and a.get(key) != b.get(key):
                out += _names_changes(a.get(key), b.get(key))
            elif a.get(key) != b.get(key):
                out.append(f"data {key}: stored {_short(a.get(key, _UNSET))} != given {_short(b.get(key, _UNSET))}")
    old_args, new_args = _normal(stored.get("train_args") or {}), _normal(cfg.train_args)
    for key in sorted(set(old_args) | set(new_args)):
        if key not in SILENT_TRAIN_ARGS and old_args.get(key, _UNSET) != new_args.get(key, _UNSET):
            out.append(
                f"train arg {key}: stored {_short(old_args.get(key, _UNSET))} != given {_short(new_args.get(key, _UNSET))}"
            )
    old_trainer = stored.get("trainer") or ULTRALYTICS_TRAINER
    if old_trainer != cfg.trainer:
        out.append(f"trainer: stored {old_trainer} != given {cfg.trainer}")
    return out


def _names_changes(old: Any, new: Any) -> list[str]:
    """The class names that differ: a changed count, else up to three changed names."""

    def by_index(names: Any) -> dict[str, Any]:
        if isinstance(names, list):
            return {str(i): n for i, n in enumerate(names)}
        if not isinstance(names, dict):
            return {}
        return {
            str(k): names[k]
            for k in sorted(names, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k)))
        }

    def text(m: dict[str, Any]) -> str:
        return f"{len(m)} classes ({', '.join(str(v) for v in list(m.values())[:3])}{', ...' if len(m) > 3 else ''})"

    a, b = by_index(old), by_index(new)
    if len(a) != len(b):
        return [f"data names: stored {text(a)} != given {text(b)}"]
    changed = [k for k in a if a[k] != b.get(k)]
    out = [f"data names[{k}]: stored {a[k]!r} != given {b.get(k)!r}" for k in changed[:3]]
    return out + ([f"{len(changed) - 3} more names differ"] if len(changed) > 3 else [])


def _normal(x: Any) -> Any:
    """``x`` as stored in ``study.json``: JSON values, credentials masked. So a resumed or joined
    study compares the masked forms: the same storage URL with another password (a rotated one)
    is the same setting, and a stored setting from before masking matches the given one."""
    import json

    from .redact import mask_secrets

    return json.loads(json.dumps(mask_secrets(x), sort_keys=True, default=str))


def _short(x: Any) -> str:
    import json

    text = json.dumps(x, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _versions(cfg: TuneConfig) -> dict[str, str]:
    import importlib.metadata
    import platform

    out = {"python": platform.python_version(), "ultralytics": ultra.version()}
    library = cfg.backend_class.library
    for key, dist in (("hpo", "hpo-yolo"), ("torch", "torch"), *(((library, library),) if library else ())):
        if dist:
            try:
                out[key] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return out
