"""The optuna backend: Optuna's samplers and pruners over hpo's runner, study and records.

hpo's core runs the loop (``ask -> run -> tell``, ``workers`` trials at once in threads); this
backend maps it onto Optuna's ask-and-tell interface:

- ``ask`` calls ``optuna.Study.ask`` with the distributions of the hpo search space and returns
  the sampled params with the Optuna trial number as the hpo trial id (unique across every
  process that shares the Optuna storage, so ``--join`` needs no id coordination); the first
  trial of a new study evaluates Ultralytics' defaults (``SearchSpace.defaults()``, enqueued);
- ``should_prune`` reports each epoch's objective metric (step = epoch, 1-based) and asks the pruner;
- ``tell`` finishes the Optuna trial as ``COMPLETE`` (objective), ``PRUNED`` or ``FAIL`` (error text
  in the user attribute ``error``).

The sampler and the pruner are named options (``--sampler tpe``), or from Python Optuna objects
(``backend_options={"sampler": optuna.samplers.TPESampler(seed=1)}``), used as given; ``study.json``
keeps an object's class (:func:`describe_object`) and a resume needs an object of that class again
(``docs/optuna.md``).

Each Optuna trial carries the user attribute ``hpo_trial_id`` (the hpo trial id). A trial the core
re-ran after a kill (same id, same params: on ``--resume``, or taken over from a joined process that
died) was not asked of Optuna: it trains unpruned and is added to the Optuna study when it finishes
(``optuna.trial.create_trial``, user attribute ``retry``); the lost attempt's Optuna trial is
marked ``FAIL``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidatorFunctionWrapHandler, field_serializer, field_validator

from hpo import Backend, BackendOptions, ConfigError, SearchSpace, Suggestion, TrialRecord, TrialStatus, TuneConfig
from hpo.files import repair_jsonl

from ._storage import STORAGE_WAIT_S, _first_line, check_storage, display_url, open_storage

if TYPE_CHECKING:
    import optuna

__all__ = ["OptunaBackend", "OptunaOptions", "distributions", "resolve_storage", "JOURNAL"]

#: The default storage: Optuna journal file, relative to the study directory.
JOURNAL = "optuna/journal.log"
#: User attribute holding the hpo trial id on every Optuna trial.
HPO_ID = "hpo_trial_id"
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql", "mariadb", "cockroachdb")


class OptunaOptions(BackendOptions):
    """Options of the optuna backend (``hpo tune --backend optuna --sampler tpe --pruner hyperband``)."""

    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc"] = Field(
        "tpe",
        description="Optuna sampler: tpe (TPESampler, multivariate), random, cmaes, gp, qmc; seeded from --seed "
        "(from Python also an optuna.samplers.BaseSampler object, used as given)",
    )
    pruner: Literal["none", "median", "asha", "hyperband"] = Field(
        "hyperband",
        description="Optuna pruner on the per-epoch objective: none, median (MedianPruner), asha "
        "(SuccessiveHalvingPruner, min 1 epoch), hyperband (HyperbandPruner, 1..epochs) "
        "(from Python also an optuna.pruners.BasePruner object, used as given)",
    )
    reduction_factor: int = Field(3, ge=2, description="reduction factor of the asha and hyperband pruners (Optuna's eta)")
    startup_trials: int = Field(
        10,
        ge=1,
        description="finished trials (the first, Ultralytics' defaults, included) before the tpe and gp samplers "
        "model the results; until then they draw at random (Optuna's n_startup_trials, default 10); "
        "other samplers ignore it",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage: an RDB URL (postgresql://..., sqlite:///file.db) or a journal file path; "
        f"default <study>/{JOURNAL}",
    )
    storage_wait: float = Field(
        STORAGE_WAIT_S,
        gt=0,
        description="seconds a call to a database storage keeps retrying (with backoff) while the database is "
        "unreachable, e.g. restarting or failing over; past it the study stops (exit 1) and --resume continues it",
    )

    @field_validator("sampler", "pruner", mode="wrap")
    @classmethod
    def _object(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: Any) -> Any:
        """A name goes through the ``Literal``; an Optuna sampler/pruner object is kept as given."""
        if isinstance(value, str):
            return handler(value)
        import optuna

        base = optuna.samplers.BaseSampler if info.field_name == "sampler" else optuna.pruners.BasePruner
        if not isinstance(value, base):
            raise ValueError(f"{type(value).__name__} is neither a name nor an {base.__module__}.{base.__name__} object")
        return value

    @field_serializer("sampler", "pruner")
    def _describe(self, value: Any) -> str:
        """A name as it is; an object as ``"object:<class>"`` (study.json, MLflow), see :func:`describe_object`."""
        return value if isinstance(value, str) else describe_object(value)

    @field_validator("storage")
    @classmethod
    def _resolve(cls, value: str | None) -> str | None:
        return resolve_storage(value) if value else None

    def check(self, config: TuneConfig) -> None:
        """Refuse, before the study directory is created: SQLite storage shared by several workers
        (SQLite locks the whole file per write, so parallel Optuna writers fail with "database is
        locked"), and a database storage that cannot be opened (driver not installed, server
        unreachable, bad credentials): it is opened once here (:func:`check_storage`).

        Raises:
            hpo.ConfigError: the sampler's package is missing (``cmaes`` for CMA-ES); ``storage`` is SQLite
                and ``workers > 1`` or ``join``; or it cannot be opened.
        """
        import importlib.util

        _check_same_objects(self, config)
        needs = (
            {"cmaes": "cmaes", "gp": "scipy"}.get(self.sampler) if isinstance(self.sampler, str) else None
        )  # Optuna imports them on first use
        if needs and importlib.util.find_spec(needs) is None:
            raise ConfigError(
                f"optuna option 'sampler': {self.sampler} needs the Python package '{needs}', which is not installed; "
                f"pip install {needs}, or choose --sampler tpe"
            )
        storage = self.storage or ""
        if storage.startswith("sqlite") and (config.workers > 1 or config.join):
            raise ConfigError(
                f"optuna option 'storage': SQLite ({storage}) cannot be shared by {config.workers} workers"
                f"{' and joined processes' if config.join else ''}: it locks the whole database per write "
                "(Optuna fails with 'database is locked'); drop --storage to use the journal file in the "
                "study directory, or use postgresql://..."
            )
        if storage:
            check_storage(storage)


def describe_object(obj: Any) -> str:
    """``"object:optuna.samplers.TPESampler"``: what ``study.json`` keeps of a sampler or pruner
    object (an object is no JSON): its class, by its public Optuna path where it has one."""
    cls = type(obj)
    module = cls.__module__
    if module.startswith("optuna."):
        public = ".".join(module.split(".")[:2])  # optuna.samplers._tpe.sampler -> optuna.samplers
        import importlib

        if getattr(importlib.import_module(public), cls.__name__, None) is cls:
            module = public
    return f"object:{module}.{cls.__qualname__}"


#: The backend's record of what its sampler and pruner were, beside the Optuna journal:
#: ``{"sampler": "tpe" | "object:<class>", "pruner": ...}`` (written by every run that is not joined).
OBJECTS = "optuna/objects.json"


def _check_same_objects(options: OptunaOptions, config: TuneConfig) -> None:
    """A resumed study that ran with a sampler or pruner *object* (given from Python, kept in
    ``study.json`` only as its class) needs an object of that class again: a name would silently
    change the search. ``allow_changes`` lets a resume change it on purpose (recorded in ``resumes``).

    Raises:
        hpo.ConfigError: naming the option, the stored class and the fix.
    """
    import json

    path = config.study_dir / OBJECTS
    if not (config.resume or config.join) or config.settings is None or config.settings.allow_changes or not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for key in ("sampler", "pruner"):
        was, now = str(stored.get(key, "")), options.model_dump(mode="json")[key]
        if was.startswith("object:") and was != now:
            raise ConfigError(
                f"optuna option '{key}': this study ran with a {key} object ({was[len('object:') :]}) given from Python, "
                f"which study.json cannot hold; resume from Python with an object of that class again "
                f"(backend_options={{'{key}': ...}}), or pass --allow-changes to continue with {now!r}"
            )


def resolve_storage(value: str) -> str:
    """Make a storage setting absolute: ``sqlite:///rel.db`` and plain journal paths are resolved
    against the current directory; other URLs are returned unchanged.

    Raises:
        ValueError: an URL whose scheme is not an SQLAlchemy database Optuna supports.
    """
    value = value.strip()
    if "://" not in value:
        return str(Path(value).expanduser().resolve())
    scheme = value.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _RDB_SCHEMES:
        raise ValueError(
            f"'{value.split('://', 1)[0]}://' is not a database URL; give postgresql://..., mysql://..., "
            "sqlite:///file.db or a journal file path"
        )
    if scheme == "sqlite":
        head, _, path = value.partition(":///")
        if path and path != ":memory:" and not path.startswith("/"):
            return f"{head}:///{Path(path).expanduser().resolve()}"
    return value


def distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distribution of every key of ``space`` (:meth:`hpo.SearchSpace.to_optuna`)."""
    return space.to_optuna()


class OptunaBackend(Backend):
    """Optuna samplers (TPE default) with epoch-level pruning (Hyperband default) and shared storage.

    Args:
        config, study, options: see :class:`hpo.Backend`.

    Raises:
        hpo.ConfigError: the storage cannot be opened.
    """

    name = "optuna"
    description = "Optuna samplers (TPE, CMA-ES, GP, QMC, random) with epoch pruning; parallel and joinable workers"
    library = "optuna"
    Options = OptunaOptions
    options: OptunaOptions
    supports_join = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.dists = distributions(self.config.space)
        self.storage_url = self.options.storage or str(Path(self.study.path) / JOURNAL)
        self._repair_journal()
        try:
            storage = open_storage(self.storage_url, wait_s=self.options.storage_wait)
            self.ostudy = optuna.create_study(
                study_name=self.config.name,
                storage=storage,
                direction="maximize" if self.config.direction == "maximize" else "minimize",
                sampler=self._sampler(),
                pruner=self._pruner(),
                load_if_exists=True,
            )
        except (ImportError, OSError, ValueError, RuntimeError) as e:
            raise ConfigError(f"optuna option 'storage': cannot open {display_url(self.storage_url)}: {_first_line(e)}") from None
        self._trials: dict[int, optuna.Trial] = {}
        self._lock = threading.Lock()
        # Optuna's pruners are not thread-safe: HyperbandPruner builds its brackets lazily on the first
        # prune(), and two threads doing it at once double its allocation budget and then fail its
        # 'This line should be unreachable' assertion (optuna 5.1.0, pruners/_hyperband.py). Concurrent
        # trials ask it one at a time.
        self._prune_lock = threading.Lock()
        existing = len(self.ostudy.get_trials(deepcopy=False))
        if existing and not self.config.join:
            self.ostudy.sampler = self._sampler(existing)  # a resumed run must not repeat the first run's draws
        if not self.config.join:
            self._record_objects()
        if not self.config.join and not existing:
            # the reference point: Ultralytics' own defaults are the first trial of a new study
            self.ostudy.enqueue_trial(self.config.space.defaults(), user_attrs={"hpo_defaults": True})

    def _repair_journal(self) -> None:
        """Cut a torn last line off the journal file (a write cut short by a kill or a full volume),
        under Optuna's own journal lock, before Optuna appends after it (Optuna tolerates a torn
        last line on read, but not one followed by more). Writer only: joined processes may be
        mid-append."""
        if "://" in self.storage_url or self.config.join or not Path(self.storage_url).is_file():
            return
        from optuna.storages.journal import JournalFileSymlinkLock

        lock = JournalFileSymlinkLock(self.storage_url)
        lock.acquire()
        try:
            cut = repair_jsonl(self.storage_url)
        finally:
            lock.release()
        if cut:
            logging.getLogger("hpo.optuna").warning(
                f"optuna: '{self.storage_url}' ended in a torn line ({cut} bytes); removed it"
            )

    def _seed(self, existing: int) -> int | None:
        """The sampler's seed: ``--seed`` for a new study; ``seed + n`` for a study resumed with ``n``
        Optuna trials in storage (a sampler seeded as before would draw the first run's
        configurations again); per process for a joined one."""
        seed = self.config.seed
        if seed is None:
            return None
        if self.config.join:
            return seed + 1 + os.getpid() % 100_000  # a joined process must not repeat the first one's draws
        return seed + existing

    def _record_objects(self) -> None:
        """Write :data:`OBJECTS` (what the sampler and pruner are), for :func:`_check_same_objects`."""
        import json

        from hpo.files import atomic_write_text

        doc = {k: v for k, v in self.options.model_dump(mode="json").items() if k in ("sampler", "pruner")}
        atomic_write_text(Path(self.study.path) / OBJECTS, json.dumps(doc) + "\n")

    def _sampler(self, existing: int = 0) -> optuna.samplers.BaseSampler:
        s = self._optuna.samplers
        seed, kind = self._seed(existing), self.options.sampler
        if not isinstance(kind, str):  # the user's object, as given; reseeded where its seed would repeat draws
            if existing or self.config.join:
                kind.reseed_rng()
            return kind
        startup = self.options.startup_trials
        if kind == "tpe":
            return s.TPESampler(multivariate=True, seed=seed, constant_liar=True, n_startup_trials=startup)
        if kind == "random":
            return s.RandomSampler(seed=seed)
        if kind == "cmaes":
            return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if kind == "gp":
            return s.GPSampler(seed=seed, n_startup_trials=startup)
        return s.QMCSampler(seed=seed, warn_independent_sampling=False)

    def _pruner(self) -> optuna.pruners.BasePruner:
        p = self._optuna.pruners
        kind, eta = self.options.pruner, self.options.reduction_factor
        if not isinstance(kind, str):
            return kind
        if kind == "none":
            return p.NopPruner()
        if kind == "median":
            return p.MedianPruner()
        if kind == "asha":
            return p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)
        return p.HyperbandPruner(min_resource=1, max_resource=self.config.epochs, reduction_factor=eta)

    # --- ask / tell
    def ask(self) -> Suggestion:
        """Ask Optuna for a new trial: its params, and its number as the hpo trial id."""
        trial = self.ostudy.ask(self.dists)
        trial.set_user_attr(HPO_ID, trial.number)
        with self._lock:
            self._trials[trial.number] = trial
        return Suggestion(dict(trial.params), trial_id=trial.number)

    def should_prune(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """Report ``row[metric]`` at step ``row["epoch"]`` (1-based) and ask the pruner (never after
        the last epoch). A NaN/inf metric stops the trial at once (the core records it as failed).
        Called from several trials' threads at once: the pruner is asked under a lock of its own."""
        value = row.get(self.config.metric)
        if value is None:
            return False
        if not math.isfinite(value):
            return True
        with self._lock:
            trial = self._trials.get(record.id)
        if trial is None:
            return False
        epoch = int(row.get("epoch", record.epochs_completed))
        trial.report(float(value), step=epoch)
        # after the last epoch there is nothing left to save: the trial completes
        if epoch >= self.config.epochs:
            return False
        with self._prune_lock:
            return bool(trial.should_prune())

    def tell(self, record: TrialRecord) -> None:
        with self._lock:
            trial = self._trials.pop(record.id, None)
        if trial is None:  # a trial the core re-ran after a kill: Optuna never asked for it
            self._add(record)
            return
        self._finish(trial, record)

    def _add(self, record: TrialRecord) -> None:
        """Add a finished trial Optuna did not ask for (a retried one) to the Optuna study, with
        its per-epoch objective as intermediate values (step = epoch).

        The Optuna trial of the attempt that was lost (``RUNNING`` with the same hpo id: its process
        died, e.g. a joined process SIGKILLed mid-trial) is marked ``FAIL`` first, as
        :meth:`restore` does on ``--resume``: the core took the trial over only once that process
        was proven gone, so no live process holds it."""
        TrialState = self._optuna.trial.TrialState
        for frozen in self.ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.user_attrs.get(HPO_ID, frozen.number) == record.id:
                self.ostudy.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        state = {TrialStatus.COMPLETE: TrialState.COMPLETE, TrialStatus.PRUNED: TrialState.PRUNED}.get(
            record.status, TrialState.FAIL
        )
        if state is TrialState.COMPLETE and record.objective is None:
            state = TrialState.FAIL
        metric = self.config.metric
        steps = {
            int(r["epoch"]): float(r[metric]) for r in record.epochs if "epoch" in r and math.isfinite(r.get(metric, math.nan))
        }
        attrs: dict[str, Any] = {HPO_ID: record.id, "retry": True, "epochs_completed": record.epochs_completed}
        if state is TrialState.FAIL:
            attrs["error"] = (record.error or "failed")[:2000]
        self.ostudy.add_trial(
            self._optuna.trial.create_trial(
                state=state,
                value=float(record.objective or 0.0) if state is TrialState.COMPLETE else None,
                params=dict(record.params),
                distributions=self.dists,
                user_attrs=attrs,
                intermediate_values=steps,
            )
        )

    def _finish(self, trial: Any, record: TrialRecord) -> None:
        TrialState = self._optuna.trial.TrialState
        try:
            trial.set_user_attr("epochs_completed", record.epochs_completed)
            if record.status is TrialStatus.COMPLETE and record.objective is not None:
                self.ostudy.tell(trial, float(record.objective))
            elif record.status is TrialStatus.PRUNED:
                self.ostudy.tell(trial, state=TrialState.PRUNED)
            else:
                trial.set_user_attr("error", (record.error or "failed")[:2000])
                self.ostudy.tell(trial, state=TrialState.FAIL)
        except self._optuna.exceptions.UpdateFinishedTrialError:
            pass  # close() already failed it (an interrupted run); the hpo record is the truth

    # --- resume
    def restore(self, finished: list[TrialRecord]) -> None:
        """Reconcile Optuna with the hpo records after a kill (the records are the truth).

        An Optuna trial left ``RUNNING`` whose hpo trial did finish is told that result; one
        whose hpo trial was interrupted is marked ``FAIL`` (the core re-runs the hpo trial and
        :meth:`tell` adds it again). A joined process changes nothing here: ``RUNNING`` trials may
        be another process's live trials.
        """
        if self.config.join:
            return
        TrialState = self._optuna.trial.TrialState
        by_id = {r.id: r for r in finished}
        for frozen in self.ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            hpo_id = frozen.user_attrs.get(HPO_ID, frozen.number)
            record = by_id.get(hpo_id)
            # told by number (Study.tell accepts one): the hpo record is the truth
            if record is not None and record.status is TrialStatus.COMPLETE and record.objective is not None:
                self.ostudy.tell(frozen.number, float(record.objective), skip_if_finished=True)
            elif record is not None and record.status is TrialStatus.PRUNED:
                self.ostudy.tell(frozen.number, state=TrialState.PRUNED, skip_if_finished=True)
            else:  # failed, or interrupted (the core re-runs it; tell adds it again then)
                self.ostudy.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)

    def close(self) -> None:
        """Fail Optuna trials this process still holds (the run broke before they were told)."""
        with self._lock:
            left = list(self._trials.items())
            self._trials.clear()
        for _, trial in left:
            try:
                trial.set_user_attr("error", "the hpo run stopped before this trial finished")
                self.ostudy.tell(trial, state=self._optuna.trial.TrialState.FAIL)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
