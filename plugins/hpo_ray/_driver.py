"""The Ray Tune driver of the ray backend (imports ray; loaded only when a study is checked or run).

Pieces:
    - :func:`connect` / :func:`check_resources`: join the Ray cluster (``ray_address``,
      ``RAY_ADDRESS``) or start a local one, and refuse CPUs/GPUs per trial that no node has;
    - :func:`param_space`: the study's :class:`hpo.SearchSpace` as a Ray Tune param space (same
      bounds and types per key as every other backend);
    - :func:`make_scheduler` / :func:`make_searcher`: Ray's schedulers and searchers from the options;
    - :class:`StudyCallback`: a ``ray.tune.Callback`` that records every trial in the study through
      the core's :class:`hpo.TrialRecorder` (the single writer) and so emits the :class:`hpo.TunerCallback` events;
    - :class:`TrialDirname`: names Ray trial folders ``trial_<hpo id>``, allocating the id;
    - :func:`run_study`: runs (or restores) the experiments under ``<study>/ray/``, each of at most
      ``experiment_trials`` trials (:func:`segment_searcher` tells a new one the study's history);
    - lost engines: a trial whose Ray worker or node went away is recorded ``interrupted`` and runs
      again under its id with its params (:class:`WorkerLostError`); a lost head of a joined cluster
      stops the study within seconds (:class:`_HeadWatch`, :class:`HeadLostError`).

The callback and the folder namer are pickled by Ray into ``tuner.pkl``; they hold only the
study path and look up the live driver state (:class:`_Context`) in a module registry, so a
restored experiment re-binds to the current run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune import Callback

from hpo import ConfigError, RunFailedError, TrialLostError, TrialOutcome, TrialRecord, TrialRecorder, TrialStatus, VolumeError
from hpo.files import WRITE_ERRNOS, volume_error

from ._trainable import OBJECTIVE, PROGRESS_FILE, TRIAL_PREFIX, ray_trainable, trial_id_of, tune_value

__all__ = [
    "connect",
    "shutdown",
    "check_resources",
    "check_search_alg",
    "experiment_state_problem",
    "param_space",
    "make_scheduler",
    "make_searcher",
    "experiment_searcher",
    "segment_searcher",
    "HeadLostError",
    "WorkerLostError",
    "tune_mode",
    "trial_params",
    "OBJECTIVE",
    "StudyCallback",
    "TrialDirname",
    "run_study",
]

#: ``<study>/ray/`` holds Ray's experiments ``tune-1``, ``tune-2``, ... (one per run that had to
#: start a new one: the first run, or a resume whose total outgrew the restored experiment).
RAY_DIR = "ray"
_EXP_RE = re.compile(r"^tune-(\d+)$")
_STARTED_LOCAL = {"on": False}
#: The driver's messages (the ``hpo`` logger: ``hpo: warning: ray: ...`` lines)
_log = logging.getLogger("hpo.ray")


# --- the cluster
def connect(options: Any) -> None:
    """Connect to ``options.address()`` or start a local Ray with ``options.num_cpus`` CPUs (default all).

    For an address, the auth token is found and the cluster probed first (:func:`hpo_ray._cluster.prepare`).

    Raises:
        ConfigError: the address cannot be reached, or refuses the (missing or wrong) auth token.
    """
    import ray

    if ray.is_initialized():
        return
    address = options.address()
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
    if address:
        from ._cluster import prepare

        prepare(address)  # token auth from RAY_AUTH_TOKEN / ~/.ray/auth_token; a quick probe of the GCS
    try:
        if address:
            ray.init(address=address, **kwargs)
            _STARTED_LOCAL["on"] = False
        else:
            ray.init(num_cpus=options.num_cpus or os.cpu_count() or 1, **kwargs)
            _STARTED_LOCAL["on"] = True
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
        where = f"the Ray cluster at '{address}'" if address else "a local Ray"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"ray option 'ray_address': cannot start or reach {where} ({msg}); check --ray-address / RAY_ADDRESS"
        ) from None


def shutdown() -> None:
    """Disconnect from Ray (stopping the local Ray if this process started it); nothing once the
    joined cluster's head is lost (``ray.shutdown`` would wait for it)."""
    import ray

    if ray.is_initialized() and not _HEAD_LOST["on"]:
        ray.shutdown()
    _STARTED_LOCAL["on"] = False


def check_resources(options: Any) -> None:
    """Connect (:func:`connect`) and check that some alive node offers ``cpus_per_trial`` CPUs and
    ``gpus_per_trial`` GPUs, so no trial can wait forever for resources.

    Raises:
        ConfigError: no node can hold one trial (the local Ray is stopped again).
    """
    import ray

    connect(options)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpu, gpu = options.cpus_per_trial, options.gpus_per_trial
    if any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
        return
    total = ray.cluster_resources()
    where = options.address() or "local Ray"
    biggest_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    field = "gpus_per_trial" if biggest_gpu < gpu else "cpus_per_trial"
    value = gpu if field == "gpus_per_trial" else cpu
    started_here = _STARTED_LOCAL["on"]
    shutdown()
    raise ConfigError(
        f"ray option '{field}': {value:g} per trial, but no node of the Ray cluster ({where}: "
        f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU in {len(nodes)} node(s)) has that many; "
        f"lower --{field.replace('_', '-')}"
        + (" (a local Ray has this machine's CPUs/GPUs only)" if started_here else "")
        + " or connect to a cluster that has them (--ray-address)"
    )


# --- options -> Ray objects
def check_search_alg(name: str) -> None:
    """Refuse a searcher name Ray does not know or whose library is not installed.

    Raises:
        ConfigError: naming the valid names or the package to install.
    """
    from ray.tune.search import SEARCH_ALG_IMPORT

    names = ["random", *[n for n in SEARCH_ALG_IMPORT if n not in ("random", "variant_generator")]]
    if name not in names:
        raise ConfigError(f"ray option 'search_alg': unknown '{name}'; choose one of {', '.join(names)}")
    if name == "random":
        return
    try:
        make_searcher(name, seed=None)
    except (ImportError, AssertionError, ModuleNotFoundError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"ray option 'search_alg': '{name}' is not usable here ({msg}); install its package or use random/optuna"
        ) from None


def param_space(space: Any) -> dict[str, Any]:
    """The search space as a Ray Tune param space.

    float -> ``tune.uniform`` (``loguniform`` if log); int -> ``tune.randint(low, high + 1)``
    (``lograndint`` if log; Ray's upper bound is exclusive, the space's inclusive); choice ->
    ``tune.choice``.
    """
    out: dict[str, Any] = {}
    for name, p in space.items():
        kind = p.kind.value
        if kind == "choice":
            out[name] = tune.choice(list(p.choices))
        elif kind == "int":
            out[name] = (tune.lograndint if p.log else tune.randint)(int(p.low), int(p.high) + 1)
        else:
            out[name] = (tune.loguniform if p.log else tune.uniform)(float(p.low), float(p.high))
    return out


def tune_mode(direction: str) -> str:
    """Tune's ``mode`` of a study direction: ``"max"`` for ``"maximize"``, else ``"min"``."""
    return "max" if direction == "maximize" else "min"


def experiment_searcher(config: Any, options: Any, k: int, *, points: list[dict[str, Any]] | None = None) -> Any:
    """The searcher of the study's Ray experiment ``tune-<k>`` (1-based): :func:`make_searcher` of
    ``options.search_alg`` seeded ``seed + k - 1`` (so a later experiment does not propose the first
    one's configurations), at most ``max_concurrent`` (default ``config.workers``) trials at once.

    Args:
        points: configurations the searcher proposes first, in this order (Ray's
            ``points_to_evaluate``): the params of trials that run again under their ids.
    """
    seed = None if config.seed is None else config.seed + k - 1
    return make_searcher(options.search_alg, seed=seed, max_concurrent=options.max_concurrent or config.workers, points=points)


def segment_searcher(
    config: Any, options: Any, k: int, *, points: list[dict[str, Any]] | None, history: list[TrialRecord]
) -> tuple[Any, bool]:
    """The searcher of experiment ``tune-<k>`` of a study that already holds ``history`` (its
    finished trials): :func:`experiment_searcher`, told the history where Ray's searcher takes it.

    Ray Tune's ``OptunaSearch`` takes it (``add_evaluated_point``: complete trials with their
    objective, pruned ones with their epochs' objectives, failed ones as failed), so TPE goes on
    from every trial of the study, not only those of this experiment; it is then built with the
    search space itself (Ray's own form of ``OptunaSearch(space, metric, mode)``). Ray's random
    search needs none (each experiment has its own seed); other searchers start afresh.

    Returns:
        the searcher, and whether it holds the search space (the ``Tuner`` then gets no
        ``param_space``).
    """
    if options.search_alg != "optuna" or not history:
        return experiment_searcher(config, options, k, points=points), False
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    seed = None if config.seed is None else config.seed + k - 1
    searcher = OptunaSearch(
        space=OptunaSearch.convert_search_space(param_space(config.space)),
        metric=OBJECTIVE,
        mode=tune_mode(config.direction),
        seed=seed,
        points_to_evaluate=[dict(p) for p in points] if points else None,
    )
    metric = config.metric
    for r in history:
        values = [v for row in r.epochs if math.isfinite(v := tune_value(row.get(metric)))]
        try:
            if r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective):
                searcher.add_evaluated_point(dict(r.params), float(r.objective), intermediate_values=values or None)
            elif r.status is TrialStatus.PRUNED and values:
                searcher.add_evaluated_point(dict(r.params), values[-1], pruned=True, intermediate_values=values)
            else:
                searcher.add_evaluated_point(dict(r.params), float("nan"), error=True)
        except ValueError:  # params outside today's space (a resume with another --space): not history of it
            continue
    limit = options.max_concurrent or config.workers
    return (ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher), True


def trial_params(trial: Any, space: Any) -> dict[str, Any]:
    """The study's params of a Ray trial: its config's values of the space's keys as Python values
    (Ray samples numpy numbers), validated against the space.

    Raises:
        hpo.SpaceError: a value outside the space.
    """
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in trial.config.items() if k in space}
    return dict(space.validate_params(params))


def grace_period(options: Any, epochs: int) -> int:
    """``min(options.grace_period or 1, epochs)`` (1 is Ray's ASHA default)."""
    return min(options.grace_period or 1, epochs)


def make_scheduler(options: Any, epochs: int) -> Any:
    """The Ray scheduler named by ``options.scheduler``; its time is ``epoch`` (1-based), ``max_t`` = ``epochs``."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    if options.scheduler == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=grace_period(options, epochs),
            reduction_factor=options.reduction_factor,
        )
    if options.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=epochs, reduction_factor=options.reduction_factor)
    if options.scheduler == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=grace_period(options, epochs), min_samples_required=3)
    return FIFOScheduler()


def make_searcher(
    name: str, *, seed: int | None, max_concurrent: int | None = None, points: list[dict[str, Any]] | None = None
) -> Any:
    """Ray's searcher ``name``, seeded where Ray lets us (random, optuna), running at most
    ``max_concurrent`` trials at once (``None``: as many as the cluster holds), proposing
    ``points`` first (Ray's ``points_to_evaluate``; a searcher that takes none proposes its own).

    Ray's ``TuneConfig(max_concurrent_trials=...)`` is ignored for its random search
    (``BasicVariantGenerator``), which takes the limit itself; other searchers are wrapped in a
    ``ConcurrencyLimiter``.
    """
    first = [dict(p) for p in points] if points else None
    if name == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0, points_to_evaluate=first)
    searcher: Any
    if name == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(seed=seed, points_to_evaluate=first)
    else:
        from ray.tune.search import create_searcher

        try:
            searcher = create_searcher(name, **({"points_to_evaluate": first} if first else {}))
        except TypeError:  # a searcher without points_to_evaluate
            searcher = create_searcher(name)
    if max_concurrent:
        from ray.tune.search import ConcurrencyLimiter

        searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    return searcher


class _QuietVolumeErrors(logging.Filter):
    """Drops Ray's tracebacks of writes the study's volume refused: hpo stops the study and says so
    in one line (:class:`hpo.VolumeError`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _VOLUME_TEXT.search(str(record.msg)) or str(record.msg).startswith("Trials did not complete"):
            return False  # the study's records say which trials did not complete, and why
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if _LOST_TEXT.search(type(exc).__name__):  # a lost Ray worker: hpo says so in one line
                return False
            if isinstance(exc, OSError) and (exc.errno in WRITE_ERRNOS or "No space left" in str(exc)):
                return False
            if _VOLUME_TEXT.search(str(exc)):  # a trial's error that the volume caused (RayTaskError text)
                return False
            exc = exc.__cause__ or exc.__context__
        return True


_QUIET = _QuietVolumeErrors()
_VOLUME_TEXT = re.compile(r"No space left on device|\[Errno (28|30|122)\]|Read-only file system|Disk quota exceeded")
#: Ray's errors of a trial whose worker process or node went away (not of its training):
#: ``RayActorError`` and its subclasses ``ActorDiedError``, ``ActorUnavailableError``, and
#: ``NodeDiedError``, ``WorkerCrashedError`` (Ray 2.60, ``ray/exceptions.py``).
_LOST_TEXT = re.compile(r"\b(RayActorError|ActorDiedError|ActorUnavailableError|NodeDiedError|WorkerCrashedError)\b")
#: The messages of those errors (Ray's ``error.txt`` holds the message without the class).
_LOST_MESSAGE = re.compile(r"The actor \S+ (is unavailable|died unexpectedly)|The node .* (died|was terminated)")
#: Times a trial whose Ray worker was lost runs again (under its id, with its params) before it is recorded failed.
LOST_RERUNS = 3
#: Ray's loggers that print tracebacks of failed writes to the experiment's storage or of lost workers.
_RAY_STORAGE_LOGGERS = (
    "ray.tune.execution.experiment_state",
    "ray.tune.execution.tune_controller",
    "ray.train._internal.storage",
    "ray.train._internal.syncer",
    "ray.tune.tune",
)


# --- Ray's experiment state on the volume
def experiments(study_dir: Path) -> list[Path]:
    """``<study>/ray/tune-<k>`` folders, oldest first."""
    root = Path(study_dir) / RAY_DIR
    found = [(int(m.group(1)), p) for p in root.glob("tune-*") if (m := _EXP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _state_files(exp: Path) -> list[Path]:
    return sorted(exp.glob("experiment_state-*.json"))


def experiment_state_problem(exp: Path) -> str | None:
    """Why Ray's saved state of experiment ``exp`` cannot be restored (its newest
    ``experiment_state-*.json`` is not a JSON object with ``trial_data``, or ``tuner.pkl`` is missing
    or empty: e.g. written on a full volume, or cut by a kill), or ``None`` when it can."""
    files = _state_files(exp)
    if not files:
        return "no experiment state saved"
    newest = files[-1]
    try:
        doc = json.loads(newest.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "trial_data" not in doc:
            raise ValueError("no trial_data")
    except (OSError, ValueError) as e:
        return f"'{newest.name}' is " + (
            "empty" if newest.is_file() and newest.stat().st_size == 0 else f"corrupt ({str(e).splitlines()[0][:120]})"
        )
    pkl = exp / "tuner.pkl"
    if not pkl.is_file() or pkl.stat().st_size == 0:
        return "'tuner.pkl' is missing or empty"
    return None


def _ids_in_state(exp: Path) -> set[int]:
    files = _state_files(exp)
    if not files:
        return set()
    text = files[-1].read_text(encoding="utf-8", errors="replace")
    return {int(x) for x in re.findall(re.escape(TRIAL_PREFIX) + r"(\d+)", text)}


def _restorable(exp: Path) -> bool:
    return bool(_state_files(exp)) and (exp / "tuner.pkl").is_file()


# --- the driver state and the Ray callbacks
_CONTEXTS: dict[str, _Context] = {}


class _Live:
    def __init__(self, record: TrialRecord, ray_id: str = ""):
        self.record = record
        self.ray_id = ray_id
        self.outcome: dict[str, Any] | None = None


class _Context:
    """Driver state of one running study: id allocation and the live trials (thread-safe)."""

    def __init__(self, backend: Any, recorder: TrialRecorder):
        self.loop = recorder
        self.config = backend.config
        self.options = backend.options
        self.study = recorder.study
        self.lock = threading.RLock()
        self.live: dict[int, _Live] = {}
        self.reuse: list[int] = []  # ids of interrupted trials Ray does not know: given to Ray's next trials
        self.known_max = -1  # highest id Ray's saved states hold
        self.stop_error: BaseException | None = None  # set when the study must stop (a volume failure)
        self.late: set[str] = set()  # Ray trials started after the time budget was spent: stopped, not recorded
        self.lost: dict[int, int] = {}  # trial id -> times its Ray worker was lost (it runs again, up to LOST_RERUNS)
        self.lost_in_fit = 0  # trials lost (recorded interrupted, to run again) in the current experiment

    # stopping
    def stop(self, error: BaseException) -> None:
        """Stop the study: Ray's experiment ends at its next step (:class:`StopOnError`), the live
        trials are recorded ``interrupted`` (resumable), and ``run_study`` raises ``error``."""
        with self.lock:
            if self.stop_error is None:
                self.stop_error = error
            self.interrupt_all(error)

    def interrupt_all(self, why: BaseException) -> None:
        """Record every live trial as ``interrupted`` (``--resume`` re-runs it)."""
        with self.lock:
            live, self.live = list(self.live.values()), {}
        for item in live:
            self.loop.trial_interrupted(item.record, why)

    def guarded(self, event: Any, *args: Any) -> None:
        """Run a recording ``event``; a volume failure stops the study instead of escaping into Ray."""
        if self.stop_error is not None:
            return
        try:
            event(*args)
        except VolumeError as e:
            self.stop(e)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            self.stop(volume_error(e, self.study.path))

    # ids
    def next_id(self) -> int:
        with self.lock:
            if self.reuse:
                return self.reuse.pop(0)
            while True:
                tid = self.loop.reserve_id()
                if tid > self.known_max:
                    return tid

    def rescan(self, known: set[int], *, fit_done: bool = False) -> None:
        """Queue for reuse the ids of running records that no Ray trial will finish.

        Args:
            known: trial ids that Ray's saved experiment states hold.
            fit_done: an experiment just ended, so no Ray trial will finish any record still
                ``running`` (e.g. one Ray saved as done just before the kill, unrecorded here):
                all of them are reused, known or not.
        """
        with self.lock:
            self.known_max = max([self.known_max, *known])
            running = [r.id for r in self.study.records().values() if not r.status.finished]
            self.reuse = sorted(i for i in running if (fit_done or i not in known) and i not in self.live)

    def rerun_points(self) -> list[dict[str, Any]]:
        """The params of the trials whose ids the next experiment's first trials take
        (:attr:`reuse`, in that order), so they run again with their params: the searcher proposes
        them first (:func:`experiment_searcher` ``points``). Empty if any of them has none."""
        with self.lock:
            params = [(r.params if (r := self.study.record(i)) is not None else None) for i in self.reuse]
        return [dict(p) for p in params if p] if all(params) else []

    # events
    def _tid(self, trial: Any) -> int:
        name = getattr(trial, "custom_dirname", None) or trial.storage.trial_dir_name
        return trial_id_of(name)

    def started(self, trial: Any) -> None:
        tid = self._tid(trial)
        with self.lock:
            if tid in self.live:  # continued after a pause or a retry
                return
            old = self.study.record(tid)
            if old is not None and old.status.finished:
                return  # replayed by the trainable; the study keeps its record
            if self.loop.budget_spent():  # Ray started it in the step that spent the budget
                self.late.add(trial.trial_id)
                return
            params = trial_params(trial, self.config.space)
            worker = f"ray trial {trial.trial_id}"
            # Ray continues this trial from its checkpoint: keep its start and epochs so far
            continued = old if old is not None and old.worker == worker and old.params == params and old.epochs else None
            record = self.loop.trial_started(tid, params, worker=worker, continued=continued)  # VolumeError on a full volume
            self.live[tid] = _Live(record, trial.trial_id)

    def result(self, trial: Any, result: dict[str, Any]) -> None:
        tid = self._tid(trial)
        with self.lock:
            live = self.live.get(tid)
        if live is None:
            return
        if "hpo_row" in result:
            self.loop.trial_epoch(live.record, json.loads(result["hpo_row"]))
        if "hpo_outcome" in result:
            live.outcome = json.loads(result["hpo_outcome"])

    def _pop(self, trial: Any) -> tuple[int, _Live | None]:
        tid = self._tid(trial)
        with self.lock:
            return tid, self.live.pop(tid, None)

    def _duration(self, record: TrialRecord) -> float:
        try:
            start = datetime.fromisoformat(record.start or "")
        except ValueError:
            return 0.0
        return (datetime.now(timezone.utc) - start).total_seconds()

    def _applied(self, tid: int) -> dict[str, Any]:
        args = self.study.trial_dir(tid) / "args.yaml"
        try:
            doc = yaml.safe_load(args.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}
        return {k: doc.get(k) for k in self.config.space}

    def _drop_checkpoints(self, trial: Any, tid: int) -> None:
        """Delete a finished trial's epoch checkpoints (Ray's ``checkpoint_*`` copies and the
        trainable's ``.tune_checkpoint_*``): only unfinished trials continue from one, and the
        trial's own weights stay under ``trials/<id>/weights`` (bounded by ``--keep-weights``)."""
        import shutil

        folders = list(self.study.trial_dir(tid).glob(".tune_checkpoint_*"))
        ray_dir = getattr(trial, "path", None)
        if ray_dir and Path(ray_dir).is_dir():
            folders += [p for p in Path(ray_dir).glob("checkpoint_*") if p.is_dir()]
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    def complete(self, trial: Any) -> None:
        tid, live = self._pop(trial)
        self._drop_checkpoints(trial, tid)
        if live is None:
            return
        rec, out = live.record, live.outcome
        if out is not None:
            outcome = TrialOutcome(
                TrialStatus.COMPLETE,
                final_metrics=out.get("final_metrics", {}),
                applied=out.get("applied", {}),
                train_s=out.get("train_s"),
                weights=out.get("weights"),
                duration_s=self._duration(rec),
            )
        else:
            outcome = TrialOutcome(
                TrialStatus.PRUNED,
                applied=self._applied(tid),
                duration_s=self._duration(rec),
                error=f"stopped by Ray's {self.options.scheduler} scheduler after epoch {rec.epochs_completed}",
            )
        self.loop.trial_finished(rec, outcome)

    def error(self, trial: Any) -> None:
        tid, live = self._pop(trial)
        if live is None:
            return
        text = None
        f = self.study.trial_dir(tid) / "hpo_error.json"  # the trainable's: a training failure or the trial timeout
        if f.is_file():
            try:
                text = json.loads(f.read_text()).get("error")
            except (OSError, ValueError):
                text = None
        if not text:
            err = _trial_error(trial)
            lost = _lost_worker(trial, err)
            if lost:  # its worker process or node went away: not a result of the trial
                self.lost[tid] = n = self.lost.get(tid, 0) + 1
                if n <= LOST_RERUNS:
                    _log.warning(
                        f"ray: trial {tid} lost its Ray worker after epoch {live.record.epochs_completed} ({lost}: "
                        "its node or worker process went away); recorded interrupted, it runs again under its id with its params"
                    )
                    with self.lock:
                        self.lost_in_fit += 1
                    self.loop.trial_interrupted(live.record, WorkerLostError(f"Ray: {lost}"))
                    return
                text = f"its Ray worker was lost {n} times ({lost}: its node or worker process went away)"
            else:
                text = (err.strip().splitlines() or ["Ray trial errored"])[-1][:2000]
        outcome = TrialOutcome(TrialStatus.FAILED, applied=self._applied(tid), duration_s=self._duration(live.record), error=text)
        # a failure of the volume is not a result: trial_finished records it interrupted and raises
        # VolumeError, which guarded() turns into stopping the study
        self.loop.trial_finished(live.record, outcome)


def _trial_error(trial: Any) -> str:
    """The text of a Ray trial's latest error: Ray's ``error.txt`` in the trial's driver staging
    folder (written before ``on_trial_error``), else the copy in the experiment's storage; ``""``."""
    try:
        local = getattr(trial, "error_file", None)
        if local and Path(local).is_file():
            return Path(local).read_text(encoding="utf-8", errors="replace")
        err = trial.get_error()
        return str(err) if err else ""
    except Exception:  # noqa: BLE001 - no error text is still an error
        return ""


def _lost_worker(trial: Any, text: str) -> str:
    """The name of the Ray error when a trial errored because its worker process or node went
    away (:data:`_LOST_TEXT`: Ray's pickled exception of the trial, else its error text), else ``""``."""
    try:
        import cloudpickle

        pickled = getattr(trial, "pickled_error_file", None)
        if pickled and Path(pickled).is_file():
            with open(pickled, "rb") as f:
                exc = cloudpickle.load(f)
            names = [c.__name__ for c in type(exc).__mro__]
            cause = getattr(exc, "cause", None)  # a RayTaskError wrapping the actor's death
            names += [c.__name__ for c in type(cause).__mro__] if isinstance(cause, BaseException) else []
            return next((n for n in names if _LOST_TEXT.fullmatch(n)), "")
    except Exception:  # noqa: BLE001 - an unreadable pickle: the text decides
        pass
    m = _LOST_TEXT.search(text) or _LOST_MESSAGE.search(text)
    return m.group(1) if m and m.re is _LOST_TEXT else ("RayActorError" if m else "")


class WorkerLostError(TrialLostError):
    """The Ray worker process or node of a trial went away (the trial is recorded ``interrupted``
    with this reason and runs again)."""


class _ProgressPoller(threading.Thread):
    """Passes the live trials' batch progress (``trials/<id>/progress.json``, written by the
    trainable in the Ray worker) to the recorder once a second, for the progress display: Ray's
    own results come only once per epoch."""

    def __init__(self, ctx: _Context, period_s: float = 1.0):
        super().__init__(name="hpo-ray-progress", daemon=True)
        self.ctx, self.period_s = ctx, period_s
        self._stop_event = threading.Event()
        self._seen: dict[int, float] = {}

    def run(self) -> None:
        while not self._stop_event.wait(self.period_s):
            with self.ctx.lock:
                live = list(self.ctx.live.items())
            for tid, item in live:
                f = self.ctx.study.trial_dir(tid) / PROGRESS_FILE
                try:
                    mtime = f.stat().st_mtime
                    if self._seen.get(tid) == mtime:
                        continue
                    self._seen[tid] = mtime
                    self.ctx.loop.trial_batch(item.record, json.loads(f.read_text()))
                except (OSError, ValueError):
                    continue
                except Exception:  # noqa: BLE001 - a display error never stops a study
                    continue

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


#: Seconds without a connection to the Ray head's GCS after which the driver stops the study.
HEAD_LOST_S = 5.0
#: Seconds the driver then gives Ray's loop to end before it exits on its own (exit code 1).
HEAD_LOST_GRACE_S = 5.0


class HeadLostError(RunFailedError):
    """The Ray cluster's head stopped answering mid-study (exit code 1; ``--resume`` continues)."""


class _HeadWatch(threading.Thread):
    """Watches the Ray head of a cluster the driver joined: a TCP connect to its GCS every second.

    Without a connection for :data:`HEAD_LOST_S` seconds, the study stops: the live trials are
    recorded ``interrupted`` (``--resume`` continues them), Ray's loop is told to end
    (:class:`StopOnError`) and ``run_study`` raises :class:`HeadLostError`, one line, exit code 1.
    Ray's own client would wait 60 s for the GCS and then end the process with its C++ log line;
    when Ray's loop does not end within :data:`HEAD_LOST_GRACE_S` seconds (it blocks on the dead
    head), this thread writes the line and ends the process itself (``os._exit(1)``).
    """

    def __init__(self, ctx: _Context, gcs: str, address: str):
        super().__init__(name="hpo-ray-head", daemon=True)
        self.ctx, self.gcs, self.address = ctx, gcs, address
        self._stop_event = threading.Event()
        self.done = threading.Event()  # run_study returned or raised

    def _reachable(self) -> bool:
        import socket

        host, _, port = self.gcs.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2.0).close()
            return True
        except (OSError, ValueError):
            return False

    def run(self) -> None:
        import sys
        import time

        last_ok = time.monotonic()
        while not self._stop_event.wait(1.0):
            if self._reachable():
                last_ok = time.monotonic()
                continue
            if time.monotonic() - last_ok < HEAD_LOST_S:
                continue
            with self.ctx.lock:
                n = len(self.ctx.live)
            running = f"{n} running trial{'s' if n != 1 else ''} recorded interrupted, " if n else "no trial was running, "
            error = HeadLostError(
                f"ray: the Ray cluster's head at {self.address} stopped answering (no connection to {self.gcs} for "
                f"{HEAD_LOST_S:g} s); {running}every finished trial is kept: "
                "restart the head (KubeRay restarts it) and run the same command with --resume"
            )
            _HEAD_LOST["on"] = True
            self.ctx.stop(error)
            if self.done.wait(HEAD_LOST_GRACE_S):  # Ray's loop ended: run_study raises the error
                if not self._stop_event.wait(HEAD_LOST_GRACE_S):  # and the process did not exit: Ray blocks it
                    os._exit(1)
                return
            print(f"hpo: error: {error}", file=sys.stderr, flush=True)
            os._exit(1)

    def stop(self) -> None:
        self._stop_event.set()


#: Set once the head of the joined cluster is lost: :func:`shutdown` then leaves Ray alone (it would block).
_HEAD_LOST = {"on": False}


class StudyCallback(Callback):
    """Ray Tune callback recording every trial in the study (driver side; pickled by study path only).

    Args:
        key: the study directory (absolute, str): the registry key of the live :class:`_Context`.
    """

    def __init__(self, key: str):
        self.key = key

    def __getstate__(self) -> dict[str, Any]:
        return {"key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.key = state["key"]

    @property
    def ctx(self) -> _Context:
        return _CONTEXTS[self.key]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ctx.guarded(self.ctx.started, trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.ctx.guarded(self.ctx.result, trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ctx.guarded(self.ctx.complete, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ctx.guarded(self.ctx.error, trial)


class StopOnError(tune.Stopper):
    """Ends the experiment once the study must stop (``_Context.stop_error``); pickled by study path only."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, trial_id: str, result: dict) -> bool:
        """Stop one trial: the study must stop, or the time budget is spent (at this epoch
        boundary, never after the last epoch: :meth:`hpo.TrialRecorder.stop_for_budget`)."""
        ctx = _CONTEXTS.get(self.key)
        if ctx is None:
            return False
        if ctx.stop_error is not None or trial_id in ctx.late:
            return True
        if "hpo_row" not in result or "hpo_outcome" in result:
            return False
        with ctx.lock:
            live = next((x for x in ctx.live.values() if x.ray_id == trial_id), None)
        return live is not None and ctx.loop.stop_for_budget(live.record, json.loads(result["hpo_row"]))

    def stop_all(self) -> bool:
        """End the experiment: the study must stop, or the time budget is spent and no recorded
        trial is still running (those stop at their next epoch boundary first)."""
        ctx = _CONTEXTS.get(self.key)
        if ctx is None:
            return False
        return ctx.stop_error is not None or (ctx.loop.budget_spent() and not ctx.live)


class TrialDirname:
    """``trial_dirname_creator``: allocates the hpo trial id and names the Ray trial folder ``trial_<id>``."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, trial: Any) -> str:
        return f"{TRIAL_PREFIX}{_CONTEXTS[self.key].next_id()}"


# --- the run
def run_study(backend: Any, recorder: TrialRecorder) -> None:
    """Run the study to ``config.iterations`` finished trials with Ray Tune.

    The study runs in Ray experiments ``tune-1``, ``tune-2``, ... of at most
    ``options.experiment_trials`` trials each (Ray Tune's controller keeps and scans every trial of
    its experiment, so one experiment of the whole study costs the driver more per trial as it
    grows); each new experiment's searcher is seeded with ``seed + k - 1`` (so that it does not
    propose an earlier experiment's configurations again) and told the study's finished trials
    where it takes them (:func:`segment_searcher`).

    On resume, only the newest experiment is opened and restored (``Tuner.restore``: its
    searcher and scheduler state; unfinished trials continue from their last checkpoint, errored
    ones stay failed); then new experiments run while the study still lacks trials.

    Interrupted trials are not re-run by the core here (``recorder.missing()`` counts only
    finished ones): Ray's restore continues those it knows; the ids of those it does not know, and
    of trials whose Ray worker was lost, go to the next experiment's first trials, with their
    params (``_Context.rescan``, ``_Context.rerun_points``).

    Raises:
        RunFailedError: Ray ran an experiment that finished no trial (to avoid looping forever).
    """
    cfg, opts = backend.config, backend.options
    loop = recorder
    study = recorder.study
    key = str(study.path)
    # Ray's driver settings (read when the Tuner runs): save the experiment state often, since the
    # study on the volume is what a killed pod resumes from (a snapshot per trial checkpoint is
    # what we want, so Ray's warning about frequent snapshots is off). Ray's own loggers write
    # result.json/progress.csv into its trial folders, which are under <study>/ray/.
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(opts.state_period_s)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C/SIGTERM must stop the study as on every backend (exit 130, resumable, nothing new
    # started), not end Ray's experiment quietly so that the loop below starts the next one
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for name in _RAY_STORAGE_LOGGERS:
        logging.getLogger(name).addFilter(_QUIET)
    connect(opts)
    if opts.address():
        from ._cluster import probe_study_dir

        probe_study_dir(study.path)  # every node must read and write the study directory
    ctx = _Context(backend, loop)
    _CONTEXTS[key] = ctx
    poller = _ProgressPoller(ctx)
    poller.start()
    watch = _head_watch(ctx, opts.address())
    template = recorder.trial_spec(0, {})
    setup = {
        "study": key,
        "keys": list(cfg.space),
        "spec": template,  # the core's trial spec; each trial sets its id, params and folder
        "checkpoint": opts.checkpoint,
        "trial_timeout": cfg.trial_timeout,
    }
    resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(ray_trainable, setup=setup), resources)
    mode = tune_mode(cfg.direction)
    root = study.path / RAY_DIR
    try:
        exps = experiments(study.path)
        # only the newest experiment is opened: the earlier ones ended (each ran its trials to the
        # end before the next began) and their ids are below the newest one's
        known: set[int] = _ids_in_state(exps[-1]) if exps else set()
        ctx.rescan(known)
        problem = experiment_state_problem(exps[-1]) if exps and _state_files(exps[-1]) else None
        if problem is not None:  # the study's records are the truth: run what is missing in a new experiment
            _log.warning(
                f"ray: cannot continue Ray's experiment {exps[-1]} ({problem}); every finished trial "
                "is kept in the study, the missing ones run in a new experiment"
            )
        if exps and problem is None and _restorable(exps[-1]) and loop.missing() > 0:
            _log.info(f"ray: restoring Ray's experiment {exps[-1]}")
            tuner = tune.Tuner.restore(
                str(exps[-1]),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
            try:
                _fit(tuner, ctx)
            except VolumeError:
                raise
            except Exception as e:  # noqa: BLE001 - Ray's state was damaged (e.g. written on a full volume)
                # the study's records are the truth: keep them, run what is missing in a new experiment
                msg = (str(e).strip().splitlines() or [""])[0][:200]
                _log.warning(
                    f"ray: cannot continue Ray's experiment {exps[-1]} ({type(e).__name__}: {msg}); "
                    "every finished trial is kept in the study, the missing ones run in a new experiment"
                )
                ctx.interrupt_all(e)
            ctx.rescan(known | _ids_in_state(exps[-1]), fit_done=True)
        last = _EXP_RE.match(exps[-1].name) if exps else None
        k = int(last.group(1)) if last else 0
        # --start defaults: a study with no trial yet proposes the space's starting configuration first
        start = [cfg.space.defaults()] if opts.start == "defaults" and not study.records() else []
        while loop.missing() > 0:
            before, done = loop.missing(), study.finished_count()
            # bounded experiments: Ray Tune's controller keeps every trial of its experiment (its state
            # file, its scans), so the study runs in experiments of at most experiment_trials trials
            n = min(before, opts.experiment_trials)
            k += 1
            ctx.lost_in_fit = 0
            points = ctx.rerun_points()  # interrupted or lost trials run again first, under their ids
            points, start = start + points, []
            searcher, holds_space = segment_searcher(cfg, opts, k, points=points, history=study.finished())
            tuner = tune.Tuner(
                trainable,
                param_space={} if holds_space else param_space(cfg.space),
                tune_config=tune.TuneConfig(
                    metric=OBJECTIVE,
                    mode=mode,
                    num_samples=n,  # a time budget alone: experiment after experiment until it is spent
                    search_alg=searcher,
                    scheduler=make_scheduler(opts, cfg.epochs),
                    # a fresh process per trial (Ultralytics and CUDA keep global state), except for a
                    # trainer without any (a simulation): one actor then runs trial after trial
                    reuse_actors=template.in_process,
                    trial_dirname_creator=TrialDirname(key),
                ),
                run_config=tune.RunConfig(
                    name=f"tune-{k}",
                    storage_path=str(root),
                    callbacks=[StudyCallback(key)],
                    verbose=0,
                    stop=StopOnError(key),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                    log_to_file=False,
                ),
            )
            _fit(tuner, ctx)
            ctx.rescan(known | _ids_in_state(root / f"tune-{k}"), fit_done=True)
            if loop.missing() > 0 and study.finished_count() == done and not ctx.lost_in_fit:
                raise RunFailedError(
                    f"ray: experiment {root / f'tune-{k}'} finished no trial; see its folder and the trials' train.log"
                )
    except KeyboardInterrupt as e:  # Ctrl-C/SIGTERM: the live trials are resumable, no new experiment
        ctx.interrupt_all(e)
        raise
    finally:
        poller.stop()
        if watch is not None:
            watch.done.set()
            if not _HEAD_LOST["on"]:
                watch.stop()
        _CONTEXTS.pop(key, None)


def _head_watch(ctx: _Context, address: str | None) -> _HeadWatch | None:
    """Start a :class:`_HeadWatch` on the GCS of the joined cluster (none for a local Ray, or a
    Ray Client ``ray://`` address, whose server ends the session itself)."""
    if not address or address.startswith("ray://"):
        return None
    import ray

    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - an older Ray: the address as given
        gcs = address
    if not gcs or ":" not in gcs:
        return None
    watch = _HeadWatch(ctx, gcs, address)
    watch.start()
    return watch


def _fit(tuner: Any, ctx: _Context) -> None:
    """``tuner.fit()``, then raise the error that stopped the study (a volume failure), if any."""
    try:
        tuner.fit()
    except Exception:
        if ctx.stop_error is not None:  # e.g. Ray reading an error file the full volume left empty
            raise ctx.stop_error from None
        raise
    if ctx.stop_error is not None:
        raise ctx.stop_error
