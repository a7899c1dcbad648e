"""The backend contract: a search strategy (:class:`Backend`), or a library that runs its own loop
(:class:`Controller`).

A :class:`Backend` is what a search strategy is, in the style of Optuna's ``BaseSampler`` and
``BasePruner``: it proposes (:meth:`Backend.ask`), learns (:meth:`Backend.tell`), may stop a trial
after an epoch (:meth:`Backend.should_prune`), rebuilds its state on resume
(:meth:`Backend.restore`) and releases resources (:meth:`Backend.close`). The core loop
(:mod:`hpo.ledger`, :mod:`hpo.scheduler`) owns everything else: trial ids, retries of interrupted trials,
counting, the budget, the runner and the study. A backend never writes the study.

A :class:`Controller` is the visible exception for a library that owns its loop (Ray Tune's
controller holds the searcher and the scheduler): :meth:`Controller.run` drives the study and
reports every trial through the narrow :class:`TrialRecorder` (reserve an id, started, epoch,
finished, interrupted). The ray backend is one.

Both declare their options as a pydantic model (:class:`BackendOptions`); the CLI passes the
``--name value`` flags it does not know itself to that model, so a third-party backend gets CLI
options for free, and :meth:`BackendOptions.check` is its pre-flight, run before anything is
written. See ``docs/backends.md`` ("write a backend").
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .config import BackendOptions, TuneConfig
from .study import TrialRecord
from .trial import TrialOutcome, TrialSpec

__all__ = [
    "Backend",
    "BackendOptions",
    "BackendInfo",
    "Controller",
    "Suggestion",
    "StudyView",
    "TrialRecorder",
    "describe_options",
]


class StudyView(Protocol):
    """What a backend or a controller may read of the study (:class:`hpo.Study` is one): its
    folder, its stored settings and its records. Only the core writes the study (its ledger, the
    single writer); a backend keeps its own files in ``study.path / <backend name>``.
    """

    @property
    def path(self) -> Path:
        """The study directory ``<output>/<name>``."""
        ...

    @property
    def settings(self) -> Mapping[str, Any]:
        """``study.json``'s contents (credentials masked)."""
        ...

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``."""
        ...

    def records(self) -> dict[int, TrialRecord]:
        """Every trial's latest record, by id (this process's and joined processes')."""
        ...

    def finished(self) -> list[TrialRecord]:
        """Finished trials (complete, failed, pruned), by id."""
        ...

    def record(self, trial_id: int) -> TrialRecord | None:
        """Trial ``trial_id``'s latest record (read-only), or ``None``; no copy of the others."""
        ...

    def trial_count(self, also: Iterable[int] = ()) -> int:
        """How many trial ids the study holds, plus those of ``also`` it does not hold."""
        ...

    def finished_count(self) -> int:
        """How many trials are finished (complete, failed, pruned)."""
        ...

    def finished_since(self, cursor: int = 0) -> tuple[list[TrialRecord], int]:
        """Trials finished since ``cursor`` (``0``: all) and the cursor to pass next time."""
        ...

    def best(self, records: list[TrialRecord] | None = None) -> TrialRecord | None:
        """The best complete trial (of ``records``, default all), or ``None``."""
        ...

    def ranked(self, records: list[TrialRecord] | None = None) -> list[TrialRecord]:
        """Trials best first (complete ones by objective, then the rest)."""
        ...

    def trial_dir(self, trial_id: int) -> Path:
        """``<study>/trials/<id>``: the trial's Ultralytics run folder."""
        ...


@dataclass(frozen=True)
class Suggestion:
    """What :meth:`Backend.ask` proposes.

    Attributes:
        params: ``{key: value}`` for every key of the search space (the core validates them).
        trial_id: the id the backend's own storage assigned (e.g. an Optuna trial number shared by
            every process joined to the study), or ``None`` (the core numbers trials itself). It
            must not be in use in the study.
    """

    params: dict[str, Any] = field(default_factory=dict)
    trial_id: int | None = None


class BackendInfo:
    """What ``hpo backends`` and the CLI know of a backend: class attributes only, no methods.

    Attributes:
        name: the ``--backend`` value.
        description: one line for ``hpo backends``.
        library: the distribution whose version ``hpo backends`` shows (e.g. ``"optuna"``).
        Options: the pydantic model of the backend's options (a :class:`BackendOptions` subclass).
        supports_join: whether extra processes may join a running study (``--join``): such a
            process opens the study without its lock, writes its records to
            ``trials.<worker>.jsonl`` and retries no interrupted trial (those may be another
            process's live trials). Set it only when the backend's own state is shared safely
            between processes and its :class:`Suggestion` carries storage-assigned ids (optuna).
        plugin, plugin_version: set by the plugin manager (the distribution that registered it).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    library: ClassVar[str | None] = None
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    supports_join: ClassVar[bool] = False
    plugin: ClassVar[str] = ""
    plugin_version: ClassVar[str] = ""


class Backend(BackendInfo, abc.ABC):
    """A search strategy driven by the core loop: ``ask -> train -> tell``.

    The core calls :meth:`ask` and :meth:`tell` under one lock (never concurrently), and
    :meth:`should_prune` from the thread of the running trial (with ``concurrent_trials > 1``,
    several trials' calls may overlap: guard shared state).

    Args:
        config: the validated study settings (:class:`hpo.TuneConfig`: ``space``,
            ``epochs``, ``metric``, ``direction``, ``seed``, ``join``...).
        study: the open study, to read (:class:`StudyView`; ``study.path`` for the backend's own
            files); never append to it.
        options: an instance of :attr:`Options`.
    """

    def __init__(self, *, config: TuneConfig, study: StudyView, options: BackendOptions):
        self.config = config
        self.study = study
        self.options = options

    @abc.abstractmethod
    def ask(self) -> Suggestion:
        """Propose the next new trial.

        Returns:
            :class:`Suggestion` with a value for every key of ``config.space``.
        """

    @abc.abstractmethod
    def tell(self, record: TrialRecord) -> None:
        """Learn from a finished trial: ``record.status`` is ``complete`` (``record.objective`` set),
        ``pruned`` (objective of its last epoch) or ``failed`` (no objective; ``record.error``).

        Also called for trials this backend did not :meth:`ask` for: an interrupted trial the
        core re-ran with its stored params after a resume.
        """

    def should_prune(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """Decide after each epoch whether to stop the trial. Default: never.

        Args:
            record: the running trial (``record.epochs`` already includes ``row``).
            row: this epoch's metrics (``row["epoch"]`` is 1-based; the objective metric is
                ``row[config.metric]`` when the epoch was validated; it may be NaN).

        Returns:
            ``True`` to stop the trial now; it is recorded ``pruned`` with this epoch's objective.
        """
        return False

    def restore(self, finished: list[TrialRecord]) -> None:
        """Rebuild state from a resumed study's finished trials (id order), before the first
        :meth:`ask`. Default: :meth:`tell` each."""
        for record in finished:
            self.tell(record)

    def close(self) -> None:
        """Release resources at the end of the study (always called, also after an error)."""


class TrialRecorder(Protocol):
    """The narrow surface a :class:`Controller` records its trials through (implemented by
    the core's ledger of the study, :class:`hpo.ledger.StudyLedger`, its single writer). Every method is called in the driver."""

    @property
    def config(self) -> TuneConfig:
        """The validated study settings."""
        ...

    @property
    def study(self) -> StudyView:
        """The open study, to read (only the recorder writes it)."""
        ...

    def reserve_id(self) -> int:
        """A new trial id, unique in the study."""
        ...

    def missing(self) -> int:
        """Finished trials the study still lacks to reach ``config.iterations``."""
        ...

    def trial_spec(self, trial_id: int, params: dict[str, Any]) -> TrialSpec:
        """The :class:`hpo.TrialSpec` of a trial (train it with :func:`hpo.train_trial`)."""
        ...

    def trial_started(
        self, trial_id: int, params: dict[str, Any], *, worker: str | None = None, continued: TrialRecord | None = None
    ) -> TrialRecord:
        """Record a started trial (``running``; ``continued``: its earlier record, when it continues
        from a checkpoint); refuses a full volume (:class:`hpo.VolumeError`)."""
        ...

    def trial_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """Record one epoch's metrics of a running trial."""
        ...

    def trial_batch(self, record: TrialRecord, progress: dict[str, int]) -> None:
        """Show a running trial's batch progress (``{"epoch": n, "batch": i, "batches": nb}``; not recorded)."""
        ...

    def trial_finished(self, record: TrialRecord, outcome: TrialOutcome) -> TrialRecord:
        """Record a trial's outcome (a failure caused by the volume raises :class:`hpo.VolumeError`
        after recording the trial ``interrupted``)."""
        ...

    def trial_interrupted(self, record: TrialRecord, why: BaseException) -> None:
        """Record a trial the run stopped (``interrupted``: ``--resume`` re-runs it)."""
        ...

    def budget_spent(self) -> bool:
        """Whether the study's time budget is spent: start no new trial."""
        ...

    def stop_for_budget(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """Whether a running trial must stop after this epoch because the time budget is spent
        (it is then recorded ``pruned`` with that reason)."""
        ...


class Controller(BackendInfo, abc.ABC):
    """A backend whose library owns the loop (Ray Tune): it decides, trains and schedules itself,
    and records every trial through a :class:`TrialRecorder`.

    Its trials train with :func:`hpo.train_trial` on the recorder's :meth:`TrialRecorder.trial_spec`
    (the same trial code as the core's runner), and it honours the core's settings:
    ``config.iterations`` (stop when :meth:`TrialRecorder.missing` is 0), ``config.time_budget``
    (start no trial once :meth:`TrialRecorder.budget_spent`, stop running ones at the epoch where
    :meth:`TrialRecorder.stop_for_budget` says so), ``config.workers`` (trials at once),
    ``config.trial_timeout``, and ``KeyboardInterrupt`` (record the live trials with
    :meth:`TrialRecorder.trial_interrupted`, then re-raise).

    Args:
        config: the validated study settings.
        options: an instance of :attr:`Options`.
    """

    def __init__(self, *, config: TuneConfig, options: BackendOptions):
        self.config = config
        self.options = options

    @abc.abstractmethod
    def run(self, recorder: TrialRecorder) -> None:
        """Run the study until ``recorder.missing()`` is 0 (resuming the library's own state)."""

    def close(self) -> None:
        """Release resources at the end of the study (always called, also after an error)."""


def describe_options(backend_cls: type[BackendInfo]) -> dict[str, dict[str, Any]]:
    """``{option: {"type": ..., "default": ..., "help": ...}}`` of a backend, for ``hpo backends``."""
    out = {}
    for name, f in backend_cls.Options.model_fields.items():
        out[name] = {
            "type": getattr(f.annotation, "__name__", str(f.annotation)),
            "default": f.default,
            "help": f.description or "",
        }
    return out
