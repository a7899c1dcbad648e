"""The final model: train the chosen configuration(s) for a full schedule with fresh seeds and score
them on data that no trial was selected on.

A search picks its incumbent on the validation split, so the incumbent's validation score is
biased upwards (the winner's curse: the more configurations tried, the more the maximum holds
luck). :func:`train_final` trains each configuration again, once per seed, for ``epochs`` epochs in
hpo's isolated trial worker (:mod:`hpo.runner`, the same code that trains trials), then validates
the run's ``best.pt`` (the epoch Ultralytics chose on the validation split: the test split never
chooses anything) on the dataset's **test split** (:func:`hpo.data.test_split`: a data YAML's
``test:``, a classification folder's ``test/`` beside its ``val/``). Without a test split the
score is the validation score, and every place that shows it says ``val (no test split)``.

It needs no study: the benchmark calls it for Ultralytics' ``model.tune`` incumbent too. In a
study (:func:`run_final_stage`: ``hpo tune --final-epochs``, ``hpo final STUDY``,
``Tuner(final_epochs=...)``) ``output`` is the study directory. Files under ``output``::

    final.jsonl         one JSON snapshot of a final run per line, append-only, fsync'd (the source of truth)
    final.yaml          the last final stage: its settings, its runs per configuration and the summary
    final/<id>/         the run's Ultralytics folder (args.yaml, results.csv, weights/, train.log, test/)
    final/data.yaml     the data YAML with absolute paths (YAML datasets)
    final.lock          the final stage's single-writer lock
    weights/final.pt    the final model: the complete run with the best VALIDATION objective

Seeds: Ultralytics' ``seed`` train arg. ``seeds=R`` (a count) means ``R`` seeds that no trial used:
trials train with the train arg ``seed`` (Ultralytics' default 0), so the final runs take
``seed+1 .. seed+R``; a list gives them explicitly.

Runs train one at a time, each in its own worker process; with several GPUs in ``device`` a run
trains on the first of them (as a trial does on its own GPU: Ultralytics' multi-GPU DDP would
train outside the worker).

Resumable: a run whose configuration, seed, epochs, model, data, train args, metric and trainer
match a complete run in ``final.jsonl`` is not trained again; a ``running`` one (its process was
killed) or an ``interrupted`` one is trained again with its id (its folder cleared); a ``failed``
one is trained again under a new id (the failed run's record and folder stay). Ctrl-C and SIGTERM
record the run ``interrupted`` (never a result) and re-raise. With ``time_budget_s`` no run starts
once it is spent, and a run still training stops at its next epoch and is recorded
``interrupted``.

The reported quality of a configuration is the mean (± sample standard deviation) of its runs'
test objectives: the honest estimate, shown beside the search's own best validation value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import clock, ultra
from .errors import ConfigError, RunFailedError
from .events import Observers
from .files import append_line, atomic_copy, atomic_write_text, repair_jsonl, volume_errors
from .fmt import count_of, format_counts, format_value
from .study import TrialStatus, utcnow

#: The final stage's warnings and progress lines (the ``hpo`` logger, :mod:`hpo.log`).
_log = logging.getLogger("hpo.final")
__all__ = [
    "FinalCandidate",
    "FinalRecord",
    "FinalResult",
    "train_final",
    "run_final_stage",
    "study_candidates",
    "read_final_records",
    "read_final_summary",
    "fresh_seeds",
    "split_label",
    "render_final",
    "require_complete",
    "FINAL_RECORDS",
    "FINAL_SUMMARY",
    "FINAL_DIR",
    "FINAL_WEIGHTS",
]

#: ``<output>/final.jsonl``: the final runs' records.
FINAL_RECORDS = "final.jsonl"
#: ``<output>/final.yaml``: the last final stage and its summary.
FINAL_SUMMARY = "final.yaml"
#: ``<output>/final/``: one Ultralytics run folder per final run.
FINAL_DIR = "final"
#: ``<output>/weights/final.pt``: the final model.
FINAL_WEIGHTS = Path("weights") / "final.pt"
#: Train args a final run does not measure by (where and how fast it trains, what it prints).
_SILENT = frozenset({"workers", "device", "cache", "verbose", "plots"})


def split_label(split: str) -> str:
    """How a score's split is shown: ``"test"``, or ``"val (no test split)"``."""
    return "test" if split == "test" else "val (no test split)"


@dataclass(frozen=True)
class FinalCandidate:
    """A configuration to train for the final model.

    Attributes:
        params: the hyperparameters, ``{train arg: value}`` (applied over the fixed train args).
        source_trial: the study's trial it comes from (``None``: from elsewhere, e.g. ``model.tune``).
        search_objective: the search's own (validation) value of it, shown beside the final scores.
    """

    params: dict[str, Any]
    source_trial: int | None = None
    search_objective: float | None = None


@dataclass
class FinalRecord:
    """One final run, as stored in ``final.jsonl``.

    Attributes:
        id: run id (int, unique in ``output``, from 0); its folder is ``final/<id>/``.
        params: the configuration's hyperparameters.
        seed: Ultralytics' ``seed`` train arg of this run.
        epochs: epochs it trains (the full schedule).
        source_trial: the study's trial the configuration comes from, or ``None``.
        status: :class:`hpo.TrialStatus`: ``running``, ``interrupted`` (stopped by Ctrl-C, SIGTERM,
            a volume failure or the time budget: not a result, trained again when the stage
            continues), ``complete`` or ``failed``.
        split: where ``objective_test`` was measured: ``"test"``, or ``"val"`` when the data has no
            test split (shown as ``val (no test split)``).
        val_metrics: the final validation of ``best.pt`` on the validation split (Ultralytics' names).
        test_metrics: the validation of ``best.pt`` on the test split (``{}`` when ``split`` is ``"val"``).
        objective_val: the objective on the validation split (``None`` unless complete).
        objective_test: the objective on ``split`` (the test split; the validation value when ``split`` is ``"val"``).
        curve: per-epoch metric rows, ``[{"epoch": 1, ...}, ...]``.
        epochs_completed: training epochs finished.
        weights: the run's ``best.pt``.
        start, end: UTC ISO 8601 timestamps; duration_s: seconds from the driver's view.
        train_s: seconds inside the trainer (training and the test validation).
        error: why it failed or was interrupted, one line.
        worker: ``host:pid`` of the process that ran it.
        key: a digest of what the run measures (model, data, params, train args, epochs, seed,
            metric, trainer): a later stage reuses a complete run with the same key.
    """

    id: int
    params: dict[str, Any]
    seed: int
    epochs: int
    source_trial: int | None = None
    status: TrialStatus = TrialStatus.RUNNING
    split: str = "test"
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    objective_val: float | None = None
    objective_test: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    epochs_completed: int = 0
    weights: str | None = None
    start: str | None = None
    end: str | None = None
    duration_s: float | None = None
    train_s: float | None = None
    error: str | None = None
    worker: str | None = None
    key: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (``status`` as its value)."""
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FinalRecord:
        """A record from :meth:`to_json`'s object (unknown keys ignored)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["status"] = TrialStatus(known.get("status", "running"))
        return cls(**known)


@dataclass
class FinalResult:
    """What :func:`train_final` returns.

    Attributes:
        records: the stage's runs that have a record (complete ones reused or trained, failed and
            interrupted ones), in plan order (configuration, then seed).
        summary: the contents of ``final.yaml`` (:func:`summarize`): settings, per-configuration
            means and standard deviations, the chosen run.
        weights: ``<output>/weights/final.pt`` (the complete run with the best validation
            objective), or ``None`` when no run completed.
        split: ``"test"`` or ``"val"`` (no test split).
        metric, direction: the objective and whether it is maximised.
        stopped_by: ``"time_budget"`` when the budget left runs unstarted or stopped, else ``None``.
        pending: planned runs that did not start (the time budget was spent).
    """

    records: list[FinalRecord]
    summary: dict[str, Any]
    weights: Path | None
    split: str
    metric: str
    direction: str
    stopped_by: str | None = None
    pending: int = 0

    @property
    def complete(self) -> list[FinalRecord]:
        """The complete runs."""
        return [r for r in self.records if r.status is TrialStatus.COMPLETE]


def fresh_seeds(seeds: int | Sequence[int], train_args: Mapping[str, Any] | None = None) -> list[int]:
    """The final runs' seeds: a list as given, or for a count ``R`` the ``R`` seeds after the one the
    trials used (the train arg ``seed``, Ultralytics' default 0): ``seed+1 .. seed+R``.

    Raises:
        ConfigError: a count < 1, an empty list, a seed that is not a whole number >= 0, or a repeated seed.
    """
    if isinstance(seeds, bool):
        raise ConfigError(f"final_seeds: {seeds!r} must be a count >= 1 or a list of seeds")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"final_seeds: {seeds} must be a count >= 1 (seeds that no trial used) or a list of seeds")
        base = (train_args or {}).get("seed", 0)
        base = int(base) if isinstance(base, int) and not isinstance(base, bool) else 0
        return [base + k for k in range(1, seeds + 1)]
    out = list(seeds)
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in out):
        raise ConfigError(f"final_seeds: {out!r} must be whole numbers >= 0 (Ultralytics' seed train arg)")
    if len(set(out)) != len(out):
        raise ConfigError(f"final_seeds: {out!r} repeats a seed; give each seed once")
    return out


def _candidates(params: Mapping[str, Any] | Sequence[FinalCandidate]) -> list[FinalCandidate]:
    if isinstance(params, Mapping):
        return [FinalCandidate(params=dict(params))]
    out = list(params)
    if not out or not all(isinstance(c, FinalCandidate) for c in out):
        raise ConfigError("params: give one configuration (a dict) or a list of hpo.FinalCandidate")
    return out


def _check_args(train_args: dict[str, Any], candidates: list[FinalCandidate]) -> None:
    """Every key is an Ultralytics train argument hpo does not set itself, ``seed`` is not a
    hyperparameter (the final stage sets it), and Ultralytics' ``check_cfg`` accepts every run's args."""
    from .errors import closest
    from .values import _RESERVED_FIX, RESERVED_TRAIN_ARGS

    valid = ultra.train_defaults()
    for where, keys in [("train args", train_args), *(("params", c.params) for c in candidates)]:
        for key in keys:
            if key in RESERVED_TRAIN_ARGS:
                fix = _RESERVED_FIX.get(key, f"the final stage sets it ({RESERVED_TRAIN_ARGS[key]})")
                raise ConfigError(f"{where}: '{key}' is set by hpo; {fix}")
            if key not in valid:
                raise ConfigError(
                    f"{where}: '{key}' is not an Ultralytics train argument{closest(key, valid, ultra.ARG_ALIASES)}"
                )
    for c in candidates:
        if "seed" in c.params:
            raise ConfigError("params: 'seed' is set per final run (seeds=...); remove it from the configuration")
    from ultralytics.cfg import check_cfg

    for c in candidates:
        try:
            check_cfg({**train_args, **c.params})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"params: {str(e).splitlines()[0]}") from None


def _key(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def read_final_records(output: str | os.PathLike) -> dict[int, FinalRecord]:
    """The final runs recorded in ``<output>/final.jsonl``, by id (the last snapshot of an id wins,
    except that a finished one is never replaced by an unfinished one). A torn or damaged line is
    skipped (a torn last line is what a killed writer leaves); a missing file is no runs."""
    path = Path(output) / FINAL_RECORDS
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return {}
    except OSError as e:
        _log.warning(f"cannot read '{path}' ({e.strerror}); its final runs are not shown")
        return {}
    out: dict[int, FinalRecord] = {}
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = FinalRecord.from_json(json.loads(line))
        except (ValueError, TypeError, KeyError):
            if n < len(lines) - 2:
                _log.warning(f"'{path}' line {n + 1} is damaged and was skipped")
            continue
        prev = out.get(rec.id)
        if prev is None or not (prev.status.finished and not rec.status.finished):
            out[rec.id] = rec
    return dict(sorted(out.items()))


def read_final_summary(output: str | os.PathLike) -> dict[str, Any] | None:
    """The last final stage of ``output`` (``final.yaml``), its summary recomputed from the records
    as they are now (a stage still running, or interrupted, shows its runs' current status):
    :func:`summarize`'s keys plus ``stopped_by`` and ``ended`` of the last run of the stage.
    ``None`` when there is none (or it is unreadable)."""
    path = Path(output) / FINAL_SUMMARY
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("configurations"), list):
        return None
    summary = summarize(doc, read_final_records(output), Path(output))
    stored = (doc.get("results") or {}).get("chosen") or {}
    if summary["chosen"] is not None and stored.get("run") == summary["chosen"]["run"]:
        summary["chosen"]["weights"] = stored.get("weights")
    return summary


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(stage: dict[str, Any], records: Mapping[int, FinalRecord], output: Path) -> dict[str, Any]:
    """The summary of a final stage from its plan (``stage``: ``final.yaml``'s settings and
    ``configurations[].runs[]`` ids) and the records: per configuration the complete runs' count,
    validation mean, objective mean and sample standard deviation on the stage's split, and the
    search's value; the run with the best validation objective (``chosen``); counts per status.
    Ranked by the mean objective on the split (the estimate a user should read), in the stage's direction.

    Args:
        stage: ``final.yaml``'s contents (at least ``configurations``; ``direction``, ``split``).
        records: the final runs by id (:func:`read_final_records`).
        output: the stage's folder.

    Returns:
        The stage's settings (``metric``, ``direction``, ``split``, ``epochs``, ``seeds``, ``model``,
        ``data``, ``train_args``, ...), ``split_label`` (:func:`split_label`), ``counts`` (runs per
        status, ``pending``: not started), ``configurations`` (best first: ``source_trial``,
        ``params``, ``search_objective``, ``n`` complete runs, ``val_mean``, ``val_sd``,
        ``test_mean``, ``test_sd`` (the objective on ``split``; sd ``None`` below 2 runs),
        ``test`` (the values), ``runs`` (``id``, ``seed``, ``status``)) and ``chosen`` (``run``,
        ``source_trial``, ``seed``, ``objective_val``, ``objective_test``, ``weights``: the final
        model's file once written, ``run_weights``), or ``None`` without a complete run.
    """
    sign = 1.0 if stage.get("direction", "maximize") == "maximize" else -1.0
    counts = {"complete": 0, "failed": 0, "interrupted": 0, "running": 0, "pending": 0}
    configs = []
    best: FinalRecord | None = None
    for c in stage["configurations"]:
        runs = []
        for run in c.get("runs") or []:
            rec = records.get(run.get("id")) if run.get("id") is not None else None
            status = rec.status.value if rec is not None else "pending"
            counts[status] = counts.get(status, 0) + 1
            runs.append({"id": run.get("id"), "seed": run.get("seed"), "status": status})
            if rec is not None and rec.status is TrialStatus.COMPLETE and rec.objective_val is not None:
                if best is None or (sign * rec.objective_val, -rec.id) > (sign * (best.objective_val or 0.0), -best.id):
                    best = rec
        done = [records[r["id"]] for r in runs if r["status"] == "complete"]
        val_mean, val_sd = _mean_sd([r.objective_val for r in done if r.objective_val is not None])
        test_values = [r.objective_test for r in done if r.objective_test is not None]
        test_mean, test_sd = _mean_sd(test_values)
        configs.append(
            {
                "source_trial": c.get("source_trial"),
                "params": c.get("params"),
                "search_objective": c.get("search_objective"),
                "n": len(done),
                "val_mean": val_mean,
                "val_sd": val_sd,
                "test_mean": test_mean,
                "test_sd": test_sd,
                "test": test_values,
                "runs": runs,
            }
        )
    configs.sort(key=lambda c: (c["test_mean"] is None, -sign * (c["test_mean"] or 0.0)))
    chosen = None
    if best is not None:
        chosen = {
            "run": best.id,
            "source_trial": best.source_trial,
            "seed": best.seed,
            "objective_val": best.objective_val,
            "objective_test": best.objective_test,
            "weights": None,  # set when the stage copies it to weights/final.pt
            "run_weights": best.weights,
        }
    split = stage.get("split", "val")
    return {
        **{k: v for k, v in stage.items() if k not in ("configurations", "results")},
        "split": split,
        "split_label": split_label(split),
        "counts": counts,
        "configurations": configs,
        "chosen": chosen,
    }


def _stage_doc(stage: dict[str, Any], plan: list[tuple[int, FinalCandidate, list[tuple[int, int]]]]) -> dict[str, Any]:
    return {
        **stage,
        "configurations": [
            {
                "source_trial": c.source_trial,
                "params": c.params,
                "search_objective": c.search_objective,
                "runs": [{"id": rid, "seed": seed} for seed, rid in runs],
            }
            for _, c, runs in plan
        ],
    }


class _Writer:
    """Appends final records (one JSON line, fsync'd, all or nothing) and writes ``final.yaml``."""

    def __init__(self, output: Path):
        self.output = output
        self.file = output / FINAL_RECORDS

    def append(self, record: FinalRecord) -> None:
        from .redact import mask_text

        if record.error:
            record.error = mask_text(record.error)
        line = json.dumps(_finite(record.to_json()), default=str, allow_nan=False, separators=(",", ":"))
        with volume_errors(self.file):
            append_line(self.file, line)

    def write_summary(self, doc: dict[str, Any]) -> None:
        with volume_errors(self.output):
            atomic_write_text(self.output / FINAL_SUMMARY, yaml.safe_dump(_finite(doc), sort_keys=False))


def train_final(
    *,
    model: str,
    data: str | os.PathLike,
    params: Mapping[str, Any] | Sequence[FinalCandidate],
    epochs: int,
    output: str | os.PathLike,
    train_args: Mapping[str, Any] | None = None,
    seeds: int | Sequence[int] = 1,
    metric: str | None = None,
    trainer: str | None = None,
    trainer_options: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    time_budget_s: float | None = None,
    observers: Sequence[Any] = (),
    verbose: bool = False,
) -> FinalResult:
    """Train configurations for the final model and score them on the test split (see the module docstring).

    Example:
        >>> from hpo import train_final
        >>> r = train_final(model="yolov8n-cls.yaml", data="digits-cls", params={"lr0": 0.002},
        ...                 train_args={"imgsz": 32, "optimizer": "AdamW"}, epochs=30, seeds=2, output="runs/final")
        >>> r.summary["configurations"][0]["test_mean"], r.weights

    Args:
        model: bundled model YAML or local ``.pt`` (:func:`hpo.ultra.resolve_model`; never downloaded).
        data: data YAML or classification folder (:func:`hpo.data.resolve_data`).
        params: one configuration (``{train arg: value}``) or several :class:`FinalCandidate`
            (e.g. a study's top K), each trained once per seed.
        epochs: training epochs per run (>= 1), the full schedule.
        output: the folder of the records (``final.jsonl``, ``final.yaml``, ``final/<id>/``,
            ``weights/final.pt``): a study directory, or any folder.
        train_args: fixed Ultralytics train args (``imgsz``, ``batch``, ``optimizer``, ...); the
            configuration's ``params`` apply over them, the run's ``seed`` over both.
        seeds: a count ``R`` (the ``R`` seeds after the train arg ``seed``, :func:`fresh_seeds`) or a list.
        metric: the objective (default: the task's, :data:`hpo.ultra.TASK_METRIC`); losses are minimised.
        trainer: ``"module:function"`` that trains a run (default: ``HPO_TRAINER``, else Ultralytics).
        trainer_options: its JSON-able options (default: ``HPO_TRAINER_OPTIONS``).
        timeout_s: seconds before a run is killed and recorded ``failed`` (``None``: no limit).
        time_budget_s: seconds this call may take (``None``: no limit; 0: no run starts, complete
            ones are reused): no run starts once they are spent (nor one that the median duration
            of this stage's complete runs says cannot finish in what is left), and a run still
            training stops at its next epoch and is recorded ``interrupted``.
        observers: objects with any of the methods ``on_final_start(record)``,
            ``on_final_epoch(record, row)``, ``on_final_batch(record, progress)``,
            ``on_final_end(record)``, ``on_final_stage_end(result)`` (MLflow tracking, progress).
        verbose: print one line per run start, epoch and end on stderr.

    Returns:
        :class:`FinalResult`. It never raises for a failed run: check :attr:`FinalResult.complete`
        (:func:`require_complete` raises the one-line error the command line prints).

    Raises:
        ConfigError: bad input (model, data, an empty test split, params, train args, epochs,
            seeds, metric, a loss metric with a test split), before anything is written.
        StudyLockedError: another live process runs a final stage in ``output``.
        VolumeError: the volume refused a write (the run being trained is recorded ``interrupted``).
        KeyboardInterrupt: Ctrl-C or SIGTERM (as ``KeyboardInterrupt``): the run being trained is
            recorded ``interrupted``, the summary written, then it is re-raised.
    """
    from .data import resolve_data, test_split
    from .lock import StudyLock
    from .runner import TrialInterrupted, TrialRunner, start_workers
    from .trial import TrialSpec, trainer_in_process
    from .values import _count, _trainer

    epochs = _count("final_epochs", epochs)
    model_name, task = ultra.resolve_model(str(model))
    fixed = dict(train_args or {})
    seed_list = fresh_seeds(seeds, fixed)
    candidates = _candidates(params)
    resolved = resolve_data(os.fspath(data), task, single_cls=fixed.get("single_cls") is True)
    split = test_split(resolved) or "val"
    metric = metric or ultra.TASK_METRIC[task]
    reported = ultra.task_metrics(task)
    if metric not in reported:
        raise ConfigError(f"metric: '{metric}' is not reported for task {task}; choose one of {', '.join(reported)}")
    if split == "test" and metric.startswith("val/"):
        raise ConfigError(
            f"metric: '{metric}' is a validation loss, which Ultralytics' val() does not report on a test split; "
            f"score the final model on a metric (e.g. {ultra.TASK_METRIC[task]})"
        )
    direction = ultra.metric_direction(metric)
    trainer_name, options = _trainer(trainer, dict(trainer_options) if trainer_options is not None else None)
    if timeout_s is not None and (not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or timeout_s <= 0):
        raise ConfigError(f"trial_timeout: {timeout_s!r} must be a number of seconds > 0")
    if time_budget_s is not None and (
        isinstance(time_budget_s, bool)
        or not isinstance(time_budget_s, (int, float))
        or not math.isfinite(time_budget_s)
        or time_budget_s < 0
    ):
        raise ConfigError(f"final time budget: {time_budget_s!r} must be a number of seconds >= 0")
    _check_args(fixed, candidates)
    out = Path(output).expanduser().resolve()
    if not trainer_in_process(trainer_name):
        start_workers()
    try:
        (out / FINAL_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output: cannot create '{out / FINAL_DIR}': {e.strerror}; choose a writable folder") from None

    lock = StudyLock(out / "final.lock")
    lock.acquire()
    try:
        with volume_errors(out):
            repair_jsonl(out / FINAL_RECORDS)  # a torn last line of a killed writer
            data_arg = resolved.write(out / FINAL_DIR) if resolved.kind == "yaml" else resolved.source
        return _run_stage(
            out=out,
            model=model_name,
            task=task,
            data=resolved,
            data_arg=data_arg,
            candidates=candidates,
            fixed=fixed,
            seeds=seed_list,
            epochs=epochs,
            split=split,
            metric=metric,
            direction=direction,
            trainer=trainer_name,
            trainer_options=options,
            runner=TrialRunner(timeout_s=timeout_s),
            time_budget_s=time_budget_s,
            observers=observers,
            verbose=verbose,
            spec_cls=TrialSpec,
            interrupted_cls=TrialInterrupted,
        )
    finally:
        lock.release()


def _run_stage(
    *,
    out: Path,
    model: str,
    task: str,
    data: Any,
    data_arg: str,
    candidates: list[FinalCandidate],
    fixed: dict[str, Any],
    seeds: list[int],
    epochs: int,
    split: str,
    metric: str,
    direction: str,
    trainer: str,
    trainer_options: dict[str, Any],
    runner: Any,
    time_budget_s: float | None,
    observers: Sequence[Any],
    verbose: bool,
    spec_cls: Any,
    interrupted_cls: type[BaseException],
) -> FinalResult:
    from .trial import ULTRALYTICS_TRAINER
    from .values import format_duration, gpu_indices

    events = Observers(observers)  # an observer that raises never fails the stage (hpo.events)
    gpus = gpu_indices(fixed.get("device"))
    t0 = clock.monotonic()
    writer = _Writer(out)
    records = read_final_records(out)
    measured = {k: v for k, v in fixed.items() if k not in _SILENT and k != "seed"}
    base = {
        "model": model,
        "data": data.content or data.source,
        "train_args": measured,
        "epochs": epochs,
        "metric": metric,
        "trainer": trainer,
    }
    next_id = max(records, default=-1) + 1
    latest: dict[str, FinalRecord] = {}
    for r in records.values():  # ids grow with time: the last run of a key wins
        latest[r.key] = r
    # the plan: (index, candidate, [(seed, id)]), and the runs to train
    plan: list[tuple[int, FinalCandidate, list[tuple[int, int]]]] = []
    todo: list[tuple[FinalCandidate, int, int, str]] = []
    for i, c in enumerate(candidates):
        runs = []
        for seed in seeds:
            key = _key({**base, "params": c.params, "seed": seed})
            prev = latest.get(key)
            if prev is not None and prev.status is TrialStatus.COMPLETE:
                rid = prev.id
            elif prev is not None and not prev.status.finished:  # killed or interrupted: train again, same id
                rid = prev.id
                todo.append((c, seed, rid, key))
            else:  # new, or failed before: a new id (the failed run's record and folder stay)
                rid = next_id
                next_id += 1
                todo.append((c, seed, rid, key))
            runs.append((seed, rid))
        plan.append((i, c, runs))
    stage = {
        "metric": metric,
        "direction": direction,
        "split": split,
        "epochs": epochs,
        "seeds": seeds,
        "model": model,
        "data": data.source,
        "train_args": fixed,
        **({"trainer": trainer} if trainer != ULTRALYTICS_TRAINER else {}),
        "time_budget_s": time_budget_s,
        "output": str(out),
        "started": utcnow(),
    }
    doc = _stage_doc(stage, plan)
    writer.write_summary({**doc, "results": None})  # the plan first: a killed stage still shows its runs
    stopped_by: str | None = None
    pending = 0
    host = f"{socket.gethostname()}:{os.getpid()}"

    def left() -> float | None:
        return None if time_budget_s is None else max(0.0, time_budget_s - (clock.monotonic() - t0))

    def say(text: str) -> None:
        if verbose:
            _log.info(f"final: {text}")

    durations = [
        r.duration_s for r in records.values() if r.status is TrialStatus.COMPLETE and r.epochs == epochs and r.duration_s
    ]
    try:
        for c, seed, rid, key in todo:
            remaining = left()
            typical = statistics.median(durations) if durations else None
            if remaining is not None and (remaining <= 0 or (typical is not None and typical > remaining)):
                stopped_by = "time_budget"
                pending += 1
                continue
            rec = FinalRecord(
                id=rid,
                params=dict(c.params),
                seed=seed,
                epochs=epochs,
                source_trial=c.source_trial,
                split=split,
                start=utcnow(),
                worker=host,
                key=key,
            )
            run_dir = out / FINAL_DIR / str(rid)
            if run_dir.exists():  # an unfinished earlier attempt of this run: start it afresh
                shutil.rmtree(run_dir, ignore_errors=True)
            records[rid] = rec
            writer.append(rec)
            events.emit("on_final_start", rec)
            origin = f"trial {c.source_trial}" if c.source_trial is not None else "the given configuration"
            say(f"run {rid} ({origin}, seed {seed}, {count_of(epochs, 'epoch')}) started")
            run_args: dict[str, Any] = {**fixed, "seed": seed}
            env: dict[str, str] = {}
            if len(gpus) > 1:  # as trials do: one GPU per run (Ultralytics' DDP would train outside the worker)
                env["CUDA_VISIBLE_DEVICES"], run_args["device"] = str(gpus[0]), "0"
            spec = spec_cls(
                trial_id=rid,
                model=model,
                task=task,
                data=data_arg,
                params=dict(c.params),
                train_args=run_args,
                env=env,
                epochs=epochs,
                run_dir=str(run_dir),
                metric=metric,
                trainer=trainer,
                trainer_options=dict(trainer_options),
                eval_split="test" if split == "test" else None,
            )
            budget_stop = {"hit": False}

            def on_epoch(row: dict[str, float], rec: FinalRecord = rec, stop: dict[str, bool] = budget_stop) -> bool:
                rec.curve.append(row)
                rec.epochs_completed = len(rec.curve)
                writer.append(rec)
                events.emit("on_final_epoch", rec, row)
                value = row.get(metric)
                say(
                    f"run {rec.id} epoch {int(row.get('epoch', 0))}/{epochs}"
                    + (f" {metric} {_fmt(value)}" if value is not None else "")
                )
                remaining = left()
                if remaining is not None and remaining <= 0 and int(row.get("epoch", 0)) < epochs:
                    stop["hit"] = True
                    return True
                return False

            def on_batch(p: dict[str, int], rec: FinalRecord = rec) -> None:
                events.emit("on_final_batch", rec, p)

            began = clock.monotonic()
            try:
                outcome = runner.run(spec, on_epoch, on_batch)
            except BaseException as e:
                rec.status = TrialStatus.INTERRUPTED
                rec.end = utcnow()
                why = "the volume failed" if type(e).__name__ == "VolumeError" else "the run was interrupted (Ctrl-C or SIGTERM)"
                rec.error = f"{why} after epoch {rec.epochs_completed}; it is trained again when the final stage continues"
                with contextlib.suppress(Exception):
                    writer.append(rec)
                with contextlib.suppress(Exception):
                    events.emit("on_final_end", rec)
                if isinstance(e, interrupted_cls):
                    raise KeyboardInterrupt(str(e)) from None
                raise
            _finish(rec, outcome, metric, split)
            if budget_stop["hit"] and rec.status is not TrialStatus.FAILED:
                rec.status = TrialStatus.INTERRUPTED
                rec.error = (
                    f"the final stage's time budget ({format_duration(time_budget_s or 0)}) ran out after epoch "
                    f"{rec.epochs_completed} of {epochs}; not a result: it is trained again when the stage continues "
                    "with more time"
                )
                stopped_by = "time_budget"
            writer.append(rec)
            if rec.status is TrialStatus.COMPLETE:
                durations.append(clock.monotonic() - began)  # the stage's clock (a simulation's too)
            events.emit("on_final_end", rec)
            score = "" if rec.objective_test is None else f": {metric} {split_label(split)} {_fmt(rec.objective_test)}"
            say(f"run {rid} {rec.status.value}{score}{' (' + rec.error + ')' if rec.error else ''}")
    finally:
        summary = summarize(doc, records, out)
        chosen = summary["chosen"]
        weights: Path | None = None
        if chosen is not None and chosen.get("run_weights") and Path(chosen["run_weights"]).is_file():
            with volume_errors(out):
                atomic_copy(chosen["run_weights"], out / FINAL_WEIGHTS)
            weights = out / FINAL_WEIGHTS
            chosen["weights"] = str(weights)
        elif chosen is None:  # no complete run: an earlier stage's final model is not this stage's
            with contextlib.suppress(OSError):
                (out / FINAL_WEIGHTS).unlink()
        summary.update(stopped_by=stopped_by, ended=utcnow())
        results = {k: summary[k] for k in ("counts", "configurations", "chosen")}
        writer.write_summary({**doc, "stopped_by": stopped_by, "ended": summary["ended"], "results": results})
    ids = [rid for _, _, runs in plan for _, rid in runs]
    result = FinalResult(
        records=[records[i] for i in ids if i in records],
        summary=summary,
        weights=weights,
        split=split,
        metric=metric,
        direction=direction,
        stopped_by=stopped_by,
        pending=pending,
    )
    events.emit("on_final_stage_end", result)
    return result


def _finish(rec: FinalRecord, outcome: Any, metric: str, split: str) -> None:
    """A run's record from its outcome: status, metrics, objectives (a missing or non-finite
    objective makes it ``failed``)."""
    rec.end = utcnow()
    rec.curve = list(outcome.epochs or rec.curve)
    rec.epochs_completed = len(rec.curve)
    rec.duration_s = outcome.duration_s
    rec.train_s = outcome.train_s
    rec.weights = outcome.weights
    rec.error = outcome.error
    rec.val_metrics = dict(outcome.final_metrics or {})
    if outcome.status is TrialStatus.FAILED:
        rec.status = TrialStatus.FAILED
        return
    rec.status = TrialStatus.COMPLETE if outcome.status is TrialStatus.COMPLETE else TrialStatus.INTERRUPTED
    if rec.status is not TrialStatus.COMPLETE:
        return
    value = rec.val_metrics.get(metric)  # the final validation of best.pt, else the last epoch that reported it
    if value is None:
        value = next((row[metric] for row in reversed(rec.curve) if metric in row), None)
    if value is None or not math.isfinite(value):
        rec.status = TrialStatus.FAILED
        rec.error = f"objective {metric} is {value} on the validation split (diverged or not reported); the run counts as failed"
        return
    rec.objective_val = value
    if split != "test":
        rec.objective_test = value
        return
    rec.test_metrics = dict(outcome.eval_metrics or {})
    test = rec.test_metrics.get(metric)
    if test is None or not math.isfinite(float(test)):
        rec.status = TrialStatus.FAILED
        rec.error = f"objective {metric} is {test} on the test split (not reported); the run counts as failed"
        return
    rec.objective_test = float(test)


def require_complete(result: FinalResult, *, resume_hint: str = "run the final stage again") -> None:
    """Raise the one-line error of a final stage without a complete run (exit 1).

    Raises:
        RunFailedError: no run of the stage completed: why (the time budget, every run failed with
            the first error and its log, or runs were interrupted) and how to continue.
    """
    if result.complete:
        return
    failed = [r for r in result.records if r.status is TrialStatus.FAILED]
    first = ""
    if failed:
        log = Path(result.summary.get("output", "")) / FINAL_DIR / str(failed[0].id) / "train.log"
        error = ((failed[0].error or "").strip().splitlines() or ["unknown"])[0]
        first = f"; first error (run {failed[0].id}): {error}"
        if log.is_file():
            first += f" (log: {log})"
    if result.stopped_by == "time_budget":
        raise RunFailedError(
            f"final: the time budget ended the final stage before any final run completed ({len(failed)} failed, "
            f"{result.pending} not started); {resume_hint} with more time{first}"
        )
    if failed and len(failed) == len(result.records):
        raise RunFailedError(f"final: every final run failed{first}")
    raise RunFailedError(f"final: no final run completed ({len(failed)} failed){first}; {resume_hint}")


def study_candidates(study: Any, top: int = 1) -> list[FinalCandidate]:
    """The ``top`` best complete trials of a study as :class:`FinalCandidate` (best first; a
    configuration that several trials share counts once, with its best trial).

    Args:
        study: an open :class:`hpo.Study`.
        top: how many configurations (>= 1).

    Raises:
        ConfigError: ``top`` is not a whole number >= 1.
        RunFailedError: the study has no complete trial (nothing to train).
    """
    from .values import _count

    top = _count("final_top", top)
    out: list[FinalCandidate] = []
    seen: list[dict[str, Any]] = []
    for r in study.ranked(study.finished()):
        if r.status is not TrialStatus.COMPLETE or r.objective is None or not math.isfinite(r.objective):
            break  # ranked: complete trials with an objective come first
        if r.params in seen:
            continue
        seen.append(r.params)
        out.append(FinalCandidate(params=dict(r.params), source_trial=r.id, search_objective=r.objective))
        if len(out) == top:
            break
    if not out:
        raise RunFailedError(
            f"final: the study '{study.path}' has no complete trial, so there is no configuration to train; "
            "continue the search first (hpo tune ... --resume)"
        )
    return out


def run_final_stage(
    study: Any,
    *,
    epochs: int,
    seeds: int | Sequence[int] = 1,
    top: int = 1,
    time_budget_s: float | None = None,
    observers: Sequence[Any] = (),
    verbose: bool = False,
) -> FinalResult:
    """The final stage of a study: its ``top`` best configurations trained with :func:`train_final`
    into the study directory, with the study's model, data, train args, metric, trainer and
    trial timeout (``hpo tune --final-epochs``, ``hpo final STUDY``, ``Tuner(final_epochs=...)``).

    Args:
        study: the open :class:`hpo.Study`; the caller holds its lock (the Tuner's run, or ``hpo final``).
        epochs: epochs per final run (>= 1).
        seeds: a count (fresh seeds after the trials' ``seed``, :func:`fresh_seeds`) or a list.
        top: how many of the best configurations (>= 1).
        time_budget_s: seconds the stage may take (``None``: no limit).
        observers, verbose: as :func:`train_final`.

    Returns:
        :class:`FinalResult` (``output`` is the study directory).

    Raises:
        RunFailedError: the study has no complete trial.
        ConfigError, StudyLockedError, VolumeError, KeyboardInterrupt: as :func:`train_final`.
    """
    from .trial import ULTRALYTICS_TRAINER

    candidates = study_candidates(study, top)
    s = study.settings
    data = study.path / "data.yaml"
    return train_final(
        model=s["model"],
        data=data if data.is_file() else s["data"],
        params=candidates,
        epochs=epochs,
        output=study.path,
        train_args=dict(s.get("train_args") or {}),
        seeds=seeds,
        metric=s.get("metric"),
        trainer=s.get("trainer") or ULTRALYTICS_TRAINER,
        trainer_options=dict(s.get("trainer_options") or {}),
        timeout_s=s.get("trial_timeout"),
        time_budget_s=time_budget_s,
        observers=observers,
        verbose=verbose,
    )


#: Objectives as every view shows them (:func:`hpo.fmt.format_value`).
_fmt = format_value


def _wrap(text: str, width: int | None, indent: int = 0) -> list[str]:
    import textwrap

    pad = " " * indent
    if width is None:
        return [pad + text]
    return textwrap.wrap(
        text, width, initial_indent=pad, subsequent_indent=pad + "  ", break_on_hyphens=False, break_long_words=False
    ) or [""]


def render_final(summary: dict[str, Any], *, width: int | None = None) -> list[str]:
    """The "final model" block of ``hpo show`` and ``hpo final`` (lines, no trailing newline).

    One header (configurations x seeds x epochs, the split, the runs per status), then one row per
    configuration, best first: its trial, the search's validation value, the final runs' mean
    validation value, the mean ± sd on the split (``test``, or ``val (no test split)``) and the
    complete runs; then the final model (the run chosen on validation) and its weights.

    Args:
        summary: :func:`hpo.final.read_final_summary`'s (or :attr:`hpo.FinalResult.summary`).
        width: columns to fit (``None``: no folding).
    """
    label = summary.get("split_label") or "test"
    counts = summary.get("counts") or {}
    configs = summary.get("configurations") or []
    seeds = summary.get("seeds") or []
    head = (
        f"final model: {len(configs)} configuration{'s' if len(configs) != 1 else ''} x {len(seeds)} seed"
        f"{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}) x {count_of(summary.get('epochs'), 'epoch')}, "
        f"{summary.get('metric')} on {label}; runs: " + format_counts(counts)
    )
    if summary.get("stopped_by") == "time_budget":
        head += " (the time budget ended the stage: hpo final STUDY continues it)"
    out = _wrap(head, width)

    def pm(mean: Any, sd: Any) -> str:
        if mean is None:
            return "-"
        return _fmt(mean) + (f" ± {sd:.2g}" if sd is not None else "")

    header = ["trial", "search val", "final val", f"{label} (mean ± sd)", "runs"]
    rows = [
        [
            "-" if c.get("source_trial") is None else str(c["source_trial"]),
            _fmt(c.get("search_objective")),
            pm(c.get("val_mean"), None),
            pm(c.get("test_mean"), c.get("test_sd")),
            f"{c.get('n', 0)}/{len(c.get('runs') or [])}",
        ]
        for c in configs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        out.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    chosen = summary.get("chosen")
    if chosen:
        origin = f"trial {chosen['source_trial']}, " if chosen.get("source_trial") is not None else ""
        out += _wrap(
            f"final model: run {chosen['run']} ({origin}seed {chosen['seed']}), chosen on val {_fmt(chosen.get('objective_val'))}; "
            f"{label} {_fmt(chosen.get('objective_test'))}",
            width,
            2,
        )
        if chosen.get("weights"):
            out += _wrap(f"weights {chosen['weights']}", width, 2)
    else:
        out += _wrap("no final run completed yet", width, 2)
    return out
