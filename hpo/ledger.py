"""The study's ledger: :class:`StudyLedger`, the single writer of a study's records.

It owns trial ids (reserved, taken from a backend, queued for a retry), the trials in flight,
counting against ``iterations``, recording each trial (started, epochs, finished, interrupted),
``best.yaml`` and the elapsed time in ``study.json``, and it tells the study's observers
(:class:`hpo.events.Observers`) about each trial. It is the :class:`hpo.TrialRecorder` a
:class:`hpo.Controller` (Ray Tune) records through; the ask/tell scheduler
(:mod:`hpo.scheduler`) drives a :class:`hpo.Backend` through it.

It trains nothing and asks no backend: training is the runner's (:mod:`hpo.runner`), deciding
the backend's. The time budget (:class:`hpo.budget.TimeBudget`) and the volume guard
(:class:`hpo.volume.VolumeGuard`) are its parts.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from typing import Any

from .budget import TimeBudget
from .config import TuneConfig
from .errors import TrialLostError, VolumeError
from .events import Observers
from .study import Study, TrialRecord, TrialStatus, settings_versions, utcnow
from .trial import TrialOutcome, TrialSpec, objective_of
from .values import format_duration
from .volume import VolumeGuard

_log = logging.getLogger("hpo.ledger")

__all__ = ["StudyLedger", "UNCAPPED"]

#: What :meth:`StudyLedger.missing` and :meth:`StudyLedger.remaining` say for a study without an
#: iteration cap (a time budget alone): more trials than any budget holds.
UNCAPPED = 1 << 30


class StudyLedger:
    """The record keeper and single writer of one open study (see the module docstring).

    Args:
        config: the study settings.
        study: the open study (locked, or joined).
        events: the run's observers (default: none).
        budget: the study's time budget (default: ``config.time_budget`` with the elapsed time
            stored in ``study.json``).
    """

    def __init__(
        self, config: TuneConfig, study: Study, events: Observers | None = None, budget: TimeBudget | None = None
    ) -> None:
        self.config = config
        self.study = study
        self.events = events if events is not None else Observers()
        self.budget = (
            budget if budget is not None else TimeBudget(config.time_budget, float(study.settings.get("elapsed_s") or 0.0))
        )
        self.volume = VolumeGuard(study)
        #: serialises id allocation, counting and asking/telling (re-entrant)
        self.lock = threading.RLock()
        self._in_flight: set[int] = set()
        self._retry: list[tuple[int, dict[str, Any]]] = []
        self._next_id = max(study.records(), default=-1) + 1
        self._data = str(study.path / "data.yaml") if config.data.kind == "yaml" else config.data.source
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
        self._clock_s: dict[int, float] = {}  # trial id -> seconds it trained on the study's clock (note_clock)

    # --- the time budget
    def elapsed_s(self) -> float:
        """Wall-clock seconds the study has run, over all its runs (:meth:`TimeBudget.elapsed_s`)."""
        return self.budget.elapsed_s()

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
        less :meth:`final_reserve_s`. For a caller that then starts no trial: a spent budget is
        recorded as what ended the run (:attr:`budget_ended`)."""
        left = self.budget.time_left()
        if left is not None and left - self.final_reserve_s() <= 0:
            self.budget_ended = True
            return True
        return False

    def stop_for_budget(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """Whether a running trial stops after this epoch because the time budget is spent (never
        after its last epoch: it completes). Such a trial is recorded ``pruned`` with the reason."""
        if int(row.get("epoch", 0)) >= self.config.epochs or not self.budget_spent():
            return False
        self.budget_pruned.add(record.id)
        return True

    def save_elapsed(self) -> None:
        """Store :meth:`elapsed_s` in ``study.json`` (the writer only; joined processes keep theirs)."""
        if self.config.join:
            return
        self.study.settings["elapsed_s"] = round(self.elapsed_s(), 3)
        self.study.save_settings()

    # --- counting and ids
    def missing(self) -> int:
        """Finished trials the study still lacks to reach ``iterations`` (a running or interrupted
        record does not count); :data:`UNCAPPED` without a cap (a time budget alone); 0 once the
        time budget is spent (:meth:`budget_spent`)."""
        if self.budget_spent():
            return 0
        if self.config.iterations is None:
            return UNCAPPED
        return max(0, self.config.iterations - self.study.finished_count())

    def remaining(self) -> int:
        """Trials still to start so the study reaches ``iterations`` finished trials.

        Counts every trial id of the study (finished, running in this or a joined process, or
        queued for retry) plus the ids this process is starting; call it inside
        :meth:`hpo.study.Study.reserving` when other processes may join the study.
        """
        if self.config.iterations is None:
            return UNCAPPED
        with self.lock:
            taken = self.study.trial_count(also=[*self._in_flight, *(tid for tid, _ in self._retry)])
            return max(0, self.config.iterations - taken)

    def reserve_id(self) -> int:
        """Reserve the next trial id (ints from 0, unique in the study)."""
        with self.lock:
            tid = self._next_id
            self._next_id += 1
            return tid

    def take_id(self, suggested: int | None) -> int:
        """The id of a new trial: the backend's own (checked unused) or the next of :meth:`reserve_id`.

        Raises:
            RuntimeError: the backend suggested an id the study already uses.
        """
        if suggested is None:
            return self.reserve_id()
        tid = int(suggested)
        if tid < 0 or self.study.record(tid) is not None or tid in self._in_flight:
            raise RuntimeError(f"backend {self.config.backend}: suggested trial id {tid} is already in use in the study")
        with self.lock:
            self._next_id = max(self._next_id, tid + 1)
        return tid

    def queue_retry(self, trial_id: int, params: dict[str, Any]) -> None:
        """Re-run an interrupted trial with the same id before asking for new ones."""
        with self.lock:
            self._retry.append((trial_id, params))

    def retries(self) -> int:
        """Interrupted trials queued to run again."""
        return len(self._retry)

    def next_retry(self) -> tuple[int, dict[str, Any]] | None:
        """The next queued retry ``(id, params)``, taken off the queue, or ``None``."""
        with self.lock:
            return self._retry.pop(0) if self._retry else None

    def claim_lost(self) -> tuple[int, dict[str, Any]] | None:
        """Take over a lost trial, if the study has one and still misses finished trials: a trial
        without a result whose every process is proven gone (:meth:`hpo.study.Study.process_gone`:
        SIGKILLed, preempted, stopped, a resumed study's earlier writer); a trial of this process's
        own records file that this process does not run counts as lost too (an earlier process of
        the same name, e.g. a restarted container). It is recorded ``running`` in this process's
        records file at once, so no other process takes it too; the caller runs it under its id with
        its params, as ``--resume`` re-runs an interrupted trial. Returns ``(id, params)``, or ``None``.

        Call it inside :meth:`hpo.study.Study.reserving`: two processes never take the same trial.

        Raises:
            hpo.errors.VolumeError: the volume refused the record.
        """
        with self.lock:
            if self.missing() == 0:
                return None
            mine = self.study.records_file.name
            busy = {*self._in_flight, *(tid for tid, _ in self._retry)}
            gone: dict[str, bool] = {}

            def lost(name: str) -> bool:
                if name == mine:
                    return True  # written by an earlier process of this name: this one does not run it
                if name not in gone:
                    gone[name] = self.study.process_gone(name)
                return gone[name]

            for record in self.study.unfinished():
                if record.id in busy:
                    continue
                files = self.study.record_files(record.id)
                if files and all(lost(f) for f in files):
                    params = dict(record.params)
                    if files != [mine]:  # another process's trial (an earlier run's own ones: --resume, as always)
                        _log.warning(
                            f"trial {record.id}: the process that ran it ({record.worker or ', '.join(files)}) is gone; "
                            "re-running it here with its params"
                        )
                    self.reserve_trial(record.id, params)
                    return record.id, params
        return None

    def others_running(self) -> bool:
        """Whether a trial without a result is held by another process (not in flight here): a
        process that waits for the study's end (the writer) waits for it, to take it over if that
        process dies (:meth:`claim_lost`)."""
        with self.lock:
            return any(r.id not in self._in_flight for r in self.study.unfinished())

    def reserve_trial(self, trial_id: int, params: dict[str, Any]) -> None:
        """Record a new trial ``running`` at once (before it trains), so that processes joined to
        the study count it; call it inside :meth:`hpo.study.Study.reserving`."""
        with self.lock:
            self.study.append(TrialRecord(id=trial_id, params=params, start=utcnow(), settings=self.settings_version))
            self._in_flight.add(trial_id)

    def in_flight(self, trial_id: int) -> None:
        """Count a trial taken from the retry queue as in flight (it trains next)."""
        with self.lock:
            self._in_flight.add(trial_id)

    def note_clock(self, trial_id: int, seconds: float) -> None:
        """The seconds a trial trained, on the study's clock (:mod:`hpo.clock`, a simulation's too):
        what :meth:`final_reserve_s` estimates from (else the record's ``duration_s``)."""
        self._clock_s[trial_id] = seconds

    def release(self, trial_id: int) -> None:
        """The trial is no longer in flight (finished, or its run broke)."""
        with self.lock:
            self._in_flight.discard(trial_id)

    # --- one trial (the hpo.TrialRecorder surface)
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
            hpo.errors.VolumeError: the volume lacks :meth:`VolumeGuard.space_needed` bytes, or
                refused the record.
        """
        params = self.config.space.validate_params(params)
        self.volume.check_space()
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
        with self.lock:
            self._in_flight.add(trial_id)
        self.study.append(record)
        self.events.emit("on_trial_start", record)
        return record

    def trial_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """Record one epoch's metrics of a running trial and emit ``on_epoch``.

        A row whose ``epoch`` is not after the last recorded one (a trial continued from an
        earlier checkpoint) replaces the rows from that epoch on.

        Raises:
            hpo.errors.VolumeError: the volume refused the record.
        """
        n = row.get("epoch")
        if n is not None and record.epochs and record.epochs[-1].get("epoch", 0) >= n:
            record.epochs = [r for r in record.epochs if r.get("epoch", 0) < n]
        record.epochs.append(row)
        record.epochs_completed = len(record.epochs)
        self.study.append(record)
        self.events.emit("on_epoch", record, row)

    def trial_batch(self, record: TrialRecord, progress: dict[str, int]) -> None:
        """A running trial's batch progress (``{"epoch": n, "batch": i, "batches": nb}``, 1-based):
        emitted to the observers (``on_batch``), not recorded."""
        self.events.emit("on_batch", record, progress)

    def trial_finished(self, record: TrialRecord, outcome: TrialOutcome) -> TrialRecord:
        """Finish a trial from its outcome: status, objective (a missing or non-finite objective makes
        it ``failed``), record appended, ``best.yaml`` updated, ``on_trial_end`` emitted.

        ``outcome.epochs`` replaces the recorded epochs when not empty. Returns ``record``.

        Raises:
            hpo.errors.VolumeError: the trial failed because the study's volume did
                (:meth:`VolumeGuard.trial_failed_by_volume`): it is recorded ``interrupted``, not
                as a result, and ``--resume`` re-runs it once the volume is fixed; or the volume
                refused the record.
        """
        if self.volume.trial_failed_by_volume(outcome):
            error = self.volume.error_of(record.id, outcome)
            self.trial_interrupted(record, error)
            raise error
        try:
            self._finish(record, outcome)
            self.study.append(record)
        finally:
            self.release(record.id)
        seconds = self._clock_s.pop(record.id, None) or record.duration_s
        if record.status is TrialStatus.COMPLETE and seconds:
            self._complete_s.append(float(seconds))
        with self.lock:
            best = self.study.best()
            if best is not None and best.id == record.id:
                self.study.write_best(best)
            self.save_elapsed()
        self.events.emit("on_trial_end", record)
        return record

    def trial_interrupted(self, record: TrialRecord, why: BaseException) -> None:
        """Record a trial the run stopped (an interrupt, a volume or engine failure, a lost worker) as
        ``interrupted``: not a result. ``--resume`` re-runs it with the same id and params; for a
        :class:`hpo.errors.TrialLostError` the backend runs it again itself, later in this run if the
        run goes on. Best effort: if the volume refuses the record, the trial's ``running`` record
        means the same."""
        record.status = TrialStatus.INTERRUPTED
        record.end = utcnow()
        rerun = "--resume re-runs this trial"
        if isinstance(why, TrialLostError):  # the backend runs it again itself, in this run
            what = f"its worker was lost ({why})"
            rerun = "it runs again under its id with its params, later in this run, or on --resume if the run ends first"
        elif isinstance(why, VolumeError):
            what = "the volume failed"
        elif isinstance(why, KeyboardInterrupt):
            what = "the run was interrupted (Ctrl-C or SIGTERM)"
        else:
            what = f"the run stopped ({type(why).__name__})"
        record.error = f"{what} after epoch {record.epochs_completed}; {rerun}"
        self.release(record.id)
        try:
            self.study.append(record)
        except (VolumeError, OSError):
            pass

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
            reserve = self.final_reserve_s()
            record.error = (
                f"stopped after epoch {record.epochs_completed}: the study's time budget "
                f"({format_duration(cfg.time_budget or 0)}) is spent"
                + (f" (the last {format_duration(reserve)} of it are the final stage's)" if reserve else "")
            )
        elif record.status is TrialStatus.PRUNED:
            record.error = record.error or f"pruned after epoch {record.epochs_completed}"
