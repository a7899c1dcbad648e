"""The top of the core: :class:`Tuner`, the public entry point.

Data flows one way: settings (:class:`hpo.TuneSettings`) -> validation (:mod:`hpo.validate`) ->
study directory (:mod:`hpo.resume`) -> the backend asks for trials (:mod:`hpo.scheduler`, or a
:class:`hpo.Controller` that owns its loop) -> the runner trains (:mod:`hpo.runner`) -> records go
to the study through its ledger (:mod:`hpo.ledger`) and to the observers (:mod:`hpo.events`) ->
result (:class:`hpo.TuneResult`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .backend import Backend, Controller
from .callbacks import TunerCallback
from .errors import ConfigError, HpoError, RunFailedError, StudyError
from .events import Observers
from .files import volume_errors
from .ledger import StudyLedger
from .log import get_logger, notice
from .plugins import get_backend, study_observers
from .redact import mask_secrets
from .report import FINISHED, count_trials, leaderboard_markdown, trials_frame  # re-exported: old import paths
from .result import TuneResult
from .resume import SILENT_TRAIN_ARGS, open_study
from .runner import start_workers
from .scheduler import AskTellScheduler
from .settings import (
    DEPRECATED_WORKERS,
    REQUIRED,
    WORDING,
    TuneSettings,
    check_keywords,
    python_wording,
    settings_doc,
    specs,
)
from .study import Study, TrialRecord, TrialStatus
from .trial import TrialOutcome, objective_of, trainer_in_process
from .validate import build_config, check_first, format_duration

_log = get_logger("tuner")

__all__ = [
    "Tuner",
    "TuneResult",
    "TunerCallback",
    "TrialOutcome",
    "trials_frame",
    "leaderboard_markdown",
    "objective_of",
    "SILENT_TRAIN_ARGS",
    "DEPRECATED_WORKERS",
]


@contextlib.contextmanager
def _worded() -> Any:
    """Say an :class:`HpoError` in the caller's words: Python users read ``iterations=``, not
    ``--iterations`` (:data:`hpo.settings.WORDING`; the ``hpo`` commands keep their flags)."""
    try:
        yield
    except HpoError as e:
        if WORDING.get() != "cli" and e.args and isinstance(e.args[0], str):
            from .plugins import backends

            try:
                names = [n for cls in backends().values() for n in cls.Options.model_fields]
            except Exception:  # noqa: BLE001 - the wording is not worth a second error
                names = []
            e.args = (python_wording(e.args[0], names), *e.args[1:])
        raise


def _start_workers_for(backend_cls: type[Backend | Controller], trainer: str) -> None:
    """Start the runner's forkserver early when trials will fork from it: a :class:`Backend`
    (a :class:`Controller` trains its own way) with a trainer that is not ``in_process``."""
    if issubclass(backend_cls, Backend) and not trainer_in_process(trainer):
        start_workers()


class Tuner:
    """Tune an Ultralytics YOLO model with a pluggable backend.

    Example:
        >>> from hpo import Tuner
        >>> result = Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data="digits-cls",
        ...                iterations=4, epochs=2, train_args={"imgsz": 32}, output="runs/hpo").run()
        >>> result.best_params, result.best_objective, result.study_dir

    The settings are the fields of :class:`hpo.TuneSettings`: give a ``TuneSettings``, or its
    fields as keyword arguments (which also change a given one), e.g.
    ``Tuner(settings, iterations=40)``.

    Args:
        settings: the study's settings (:class:`hpo.TuneSettings`), or ``None`` (the keywords alone).
        callbacks: :class:`TunerCallback` observers (plugins add theirs when :meth:`run` starts,
            hook :func:`hpo.hookspecs.hpo_study_observers`).
        workers: deprecated spelling of ``concurrent_trials`` (a ``FutureWarning``; removed in the
            next release).

    The settings (keyword-only; :class:`hpo.TuneSettings`), by group:

    @SETTINGS@
    Raises:
        hpo.errors.ConfigError: bad input (at construction, before anything is written).
        TypeError: a keyword that is no setting (naming the closest one), or ``model``/``data`` missing.
    """

    def __init__(
        self,
        settings: TuneSettings | None = None,
        /,
        *,
        callbacks: Sequence[TunerCallback] = (),
        workers: int | None = None,
        **overrides: Any,
    ) -> None:
        from .pretrained import fetch_pretrained, is_official_name, wants_download

        if settings is None:
            check_keywords(overrides, "Tuner()")
            missing = [s.name for s in specs() if s.default is REQUIRED and s.name not in overrides]
            if missing:
                raise TypeError(
                    f"Tuner() missing required keyword argument{'s' if len(missing) > 1 else ''}: "
                    + ", ".join(map(repr, missing))
                )
            settings = TuneSettings(**overrides)
        elif overrides:
            check_keywords(overrides, "Tuner()")  # named as the user called it, not TuneSettings.replace()
            settings = settings.replace(**overrides)
        if workers is not None:
            import warnings

            warnings.warn(DEPRECATED_WORKERS, FutureWarning, stacklevel=2)
            settings = settings.replace(concurrent_trials=workers)
        with _worded():
            check_first(settings)
            if wants_download(settings.download_weights) and is_official_name(str(settings.model)):
                folder = settings.weights_dir or Path(settings.output).expanduser() / "pretrained"
                settings = settings.replace(model=fetch_pretrained(str(settings.model), folder))
            #: the settings as given (with fetched official weights: their local path as ``model``)
            self.settings = settings
            #: the validated settings the study runs with
            self.config = build_config(settings, warm_up=_start_workers_for)
        for text in self.config.notices:  # what hpo chose for the user (e.g. the optimizer): one line each
            notice(_log, text)
        self.callbacks = list(callbacks)
        #: observers the plugins contributed to the last :meth:`run` (set when it starts): the
        #: progress display, the plots, MLflow tracking, the weights keeper, third-party ones
        self.observers: list[Any] = []

    @property
    def observer_settings(self) -> Mapping[str, Any]:
        """The settings the plugins' observers get (hook ``hpo_study_observers``), read-only, credentials masked."""
        return MappingProxyType(mask_secrets(self.settings.as_dict()))

    @property
    def allow_changes(self) -> bool:
        """Whether a resume accepts changed data, train args or trainer (the setting ``allow_changes``)."""
        return self.settings.allow_changes

    @property
    def tracker(self) -> TunerCallback | None:
        """The MLflow tracker (:class:`hpo.tracking.MlflowTracker`) of the last :meth:`run`, or
        ``None`` (tracking off, or before :meth:`run`)."""
        return next((o for o in self.observers if getattr(o, "name", None) == "mlflow"), None)

    @property
    def study_dir(self) -> Path:
        """``output / name``."""
        return self.config.study_dir

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
        with _worded():  # messages in the Python user's words (hpo's commands keep their flags)
            return self._run()

    def _run(self) -> TuneResult:
        """:meth:`run`'s body (its errors in the command line's words)."""
        cfg = self.config
        backend_cls = get_backend(cfg.backend)
        # the result's DataFrame needs pandas (~0.4 s to import): import it now, while the trial
        # workers' forkserver is still preloading on another core, rather than after the last trial
        import pandas  # noqa: F401

        # the plugins' observers (the progress display, the plots, MLflow: create-or-get the
        # experiment, the weights keeper), before anything is written; callbacks= among them
        everyone = study_observers(cfg, self.observer_settings, callbacks=self.callbacks)
        self.observers = [o for o in everyone if not any(o is c for c in self.callbacks)]
        events = Observers(everyone)
        new_dir = not cfg.study_dir.exists()
        study = open_study(cfg, allow_changes=self.settings.allow_changes)
        result: TuneResult | None = None
        ledger = StudyLedger(cfg, study, events)
        backend: Backend | Controller | None = None
        started = False
        try:
            with volume_errors(study.path):
                records = study.records()
                finished = [r for r in records.values() if r.status.finished]
                if ledger.missing() == 0:  # the total reached, or the time budget spent by earlier runs
                    result = self._result(study, nothing_to_do=True, ledger=ledger)
                    self._fail_without_result(study, result)
                    if cfg.final_epochs and not cfg.join:  # a finished search, resumed for its final stage
                        started = True
                        events.emit("on_study_start", study, cfg)
                        self._final_stage(study, ledger, result)
                    return result
                if not cfg.join:
                    study.keep_reserve()
                    self._refresh_best(study, finished)
                if issubclass(backend_cls, Controller):  # the library owns its loop (Ray Tune)
                    backend = backend_cls(config=cfg, options=cfg.options)
                    started = True
                    events.emit("on_study_start", study, cfg)
                    backend.run(ledger)
                else:
                    backend = backend_cls(config=cfg, study=study, options=cfg.options)
                    backend.restore(finished)
                    # unfinished trials (interrupted, or whose process died) are re-run with their ids
                    # and params by the loop, once their processes are proven gone (StudyLedger.claim_lost)
                    started = True
                    events.emit("on_study_start", study, cfg)
                    AskTellScheduler(ledger).run(backend)
            result = self._result(study, ledger=ledger)
            self._fail_without_result(study, result)
            self._final_stage(study, ledger, result)
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
                        ledger.save_elapsed()
                events.emit("on_study_end", study, result)
            finally:
                study.close()

    def _final_stage(self, study: Study, ledger: StudyLedger, result: TuneResult) -> None:
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

        try:
            result.final = run_final_stage(
                study,
                epochs=cfg.final_epochs,
                seeds=cfg.final_seeds,
                top=cfg.final_top,
                time_budget_s=ledger.budget.time_left(),
                observers=ledger.events.observers,
            )
        finally:
            with contextlib.suppress(HpoError, OSError):
                ledger.save_elapsed()  # the final stage's time is the study's too
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
            raise RunFailedError(why + (f"; {first}" if first else ""))
        if finished and len(failed) == len(finished):
            raise RunFailedError(f"every trial failed{idle}; {first}")
        if not finished:
            raise RunFailedError(f"no trial finished{idle}; the study has no result")
        raise RunFailedError(
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

    def _result(self, study: Study, *, nothing_to_do: bool = False, ledger: StudyLedger | None = None) -> TuneResult:
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
            stopped_by="time_budget" if ledger is not None and ledger.budget_ended else None,
            elapsed_s=ledger.elapsed_s() if ledger is not None else None,
            iterations=self.config.iterations,
        )


def _tuner_signature() -> inspect.Signature:
    """``Tuner(settings=None, /, *, callbacks=(), workers=None, <every setting>=<its default>)``:
    what ``help(Tuner)`` and ``inspect.signature`` show (the settings come from :mod:`hpo.settings`)."""
    P = inspect.Parameter
    params = [
        P("self", P.POSITIONAL_ONLY),
        P("settings", P.POSITIONAL_ONLY, default=None, annotation="TuneSettings | None"),
        P("callbacks", P.KEYWORD_ONLY, default=(), annotation="Sequence[TunerCallback]"),
        P("workers", P.KEYWORD_ONLY, default=None, annotation="int | None"),
    ]
    hints = inspect.get_annotations(TuneSettings)
    for s in specs():
        default = P.empty if s.default is REQUIRED else s.default
        params.append(P(s.name, P.KEYWORD_ONLY, default=default, annotation=hints.get(s.name, P.empty)))
    return inspect.Signature(params, return_annotation="None")


Tuner.__init__.__signature__ = _tuner_signature()  # type: ignore[attr-defined]
Tuner.__doc__ = (Tuner.__doc__ or "").replace("    @SETTINGS@\n", settings_doc("    ") + "\n")
