"""What the KFP tuning component does inside its pod, as plain Python (testable without KFP).

:func:`run_tune_step` runs the pre-flight checks, then ``hpo tune`` through :class:`hpo.Tuner`,
resuming the study when ``<study>/study.json`` already exists (a KFP retry of a killed pod
continues the study instead of starting over), and returns the texts of the step's artifacts.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "StepResult",
    "run_tune_step",
    "write_outputs",
    "run_train_step",
    "run_validate_step",
    "leaderboard_markdown",
    "whole_numbers",
    "resolve_on_mount",
]


@dataclass
class StepResult:
    """The outputs of one tuning step.

    Attributes:
        study_dir: the study directory on the volume (absolute).
        best_weights: ``<study>/weights/best.pt`` if written, else ``""``.
        metrics: KFP metrics: ``best_objective`` (absent when no trial completed), ``complete``,
            ``failed``, ``pruned`` (counts), ``trials`` (finished trials).
        leaderboard: Markdown table of the study's trials, best first.
        best_yaml: YAML of ``backend``, ``metric``, ``direction``, ``best_trial``, ``best_objective``
            and ``best_params`` (the best hyperparameters).
        resumed: the study existed and was continued.
        notices: pre-flight warnings and hpo notices.
        report_html: ``<study>/plots/report.html`` if drawn, else ``""``.
        best_params: the best trial's hyperparameters (``{}`` when no trial completed).
        best: ``metric``, ``objective``, ``direction``, ``best_trial``, ``study_dir``, ``backend``
            (the Model artifact's metadata).
    """

    study_dir: str
    best_weights: str
    metrics: dict[str, float]
    leaderboard: str
    best_yaml: str
    resumed: bool
    notices: list[str] = field(default_factory=list)
    report_html: str = ""
    best_params: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)


def leaderboard_markdown(study_dir: str | Path, top: int = 50) -> str:
    """The Markdown leaderboard of a study (:func:`hpo.report.leaderboard_markdown`), by path.

    Raises:
        hpo.errors.StudyError: no study at ``study_dir``.
    """
    from hpo.report import leaderboard_markdown as markdown
    from hpo.study import Study

    return markdown(Study.open(study_dir), top=top)


def whole_numbers(d: dict[str, Any] | None) -> dict[str, Any]:
    """KFP passes ``dict`` parameters through a protobuf Struct, where every number is a float:
    give whole floats back as ints (``imgsz=32.0`` is refused by Ultralytics; float settings accept ints)."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        elif isinstance(v, list):
            v = [int(x) if isinstance(x, float) and math.isfinite(x) and x.is_integer() else x for x in v]
        out[k] = v
    return out


def _parse_space(space: str) -> Any:
    return space if space.strip() else None


def run_tune_step(
    *,
    model: str,
    data: str,
    backend: str = "ultralytics",
    iterations: int = 10,
    epochs: int = 10,
    space: str = "",
    metric: str = "",
    mount_path: str = "",
    output_dir: str = "studies",
    study_name: str = "",
    train_args: dict[str, Any] | None = None,
    backend_options: dict[str, Any] | None = None,
    concurrent_trials: int = 1,
    gpus: int = 0,
    seed: int = -1,
    trial_timeout: float = 0.0,
    time_budget: str = "",
    join: bool = False,
    storage_env: str = "",
    lock_wait_s: float | None = None,
    keep_weights: str = "top-3",
    workers: int | None = None,
    join_wait_s: float = 900.0,
    allow_changes: bool = False,
) -> StepResult:
    """Pre-flight, then tune (or resume) one study on the mounted volume.

    Args:
        model: bundled model YAML or a ``.pt`` on the volume.
        data: data YAML or classification folder; relative paths are under ``mount_path``.
        backend: installed backend name (``hpo backends``).
        iterations: total finished trials of the study; ``0``: no cap (with ``time_budget``).
        epochs: training epochs per trial (the fidelity).
        space: search space as a YAML/JSON file path or inline JSON; ``""`` is Ultralytics' default.
        metric: objective metric; ``""`` is the task's default.
        mount_path: where the PVC is mounted (``""``: not checked; relative paths then use the
            working directory).
        output_dir: folder of studies; relative paths are under ``mount_path``.
        study_name: study name; ``""`` is hpo's default ``<data>-<backend>``.
        train_args: fixed Ultralytics train args (e.g. ``{"imgsz": 640, "batch": 16}``); a
            ``workers`` entry (data-loader workers) may be lowered to fit ``/dev/shm``.
        backend_options: the backend's options (``hpo backends`` lists them).
        concurrent_trials: trials trained at once (several GPUs: one each).
        keep_weights: trials that keep their ``weights/*.pt`` (``best``, ``top-K``, ``all``).
        workers: deprecated spelling of ``concurrent_trials`` (``None``/0: not given).
        gpus: GPUs the task requested; pre-flight fails when torch sees fewer.
        seed: the sampler's seed; ``-1`` is random.
        trial_timeout: seconds before a trial is killed; ``0`` is none.
        time_budget: wall-clock budget of the whole study (``"3600"``, ``"90m"``, ``"2h"``), kept
            across retries of the task; ``""`` is none (:class:`hpo.Tuner`'s ``time_budget``).
        join: add this task to a running study (``hpo tune --join``; e.g. ``ParallelFor`` workers
            of one optuna study); waits up to ``join_wait_s`` for the study to be created.
        storage_env: name of an environment variable holding the backend's ``storage`` URL
            (e.g. ``HPO_STORAGE`` from a Kubernetes Secret); ``""``: none. An unset or empty
            variable is an error.
        lock_wait_s: seconds to wait for the lock of a killed previous attempt to go stale
            (default: the lock's staleness limit plus one heartbeat).
        join_wait_s: seconds a joining task waits for ``study.json`` (default 900).
        allow_changes: when the study exists (a retry or a re-run), continue it even if its data or
            train args changed (``hpo tune --resume --allow-changes``); without it such a change is
            refused before anything trains. Ignored for a new study.

    Returns:
        :class:`StepResult`.

    A credential in ``backend_options`` (a storage URL with a password) works, but KFP keeps a
    run's parameters in its database and UI: a warning says to use ``storage_env`` and a Secret.
    hpo itself writes it masked (``postgresql://user:***@host/db``) wherever it writes it.

    Raises:
        hpo.errors.ConfigError: a pre-flight check failed, or bad settings (nothing trained), e.g.
            a ``mount_path`` that is no absolute folder of its own (:func:`hpo.preflight.check_mount_path`).
        hpo.errors.RunFailedError: the study has no complete trial when the step ends (every trial
            failed, or the time budget ended it first), also when a retry finds it finished: the
            task fails rather than hand on no result.
        hpo.errors.StudyLockedError: another live writer holds the study.
    """
    import os

    import yaml

    from hpo import Study, Tuner
    from hpo.errors import ConfigError, StudyLockedError
    from hpo.preflight import check_mount_path, run_preflight
    from hpo.redact import has_secret, mask_secrets
    from hpo.study import LOCK_HEARTBEAT_S, LOCK_STALE_AFTER_S

    if mount_path:
        check_mount_path(mount_path)
    if has_secret(backend_options):
        print(
            f"hpo: warning: backend_options: {mask_secrets(backend_options)} holds a credential, which KFP keeps "
            "in the run's parameters (its database and UI); put it in a Kubernetes Secret and pass storage_env "
            "(docs/kfp.md, section 6)",
            file=sys.stderr,
        )

    if workers:
        from hpo.tuner import DEPRECATED_WORKERS

        print(f"hpo: warning: workers: {DEPRECATED_WORKERS}", file=sys.stderr)
        concurrent_trials = workers
    args = whole_numbers(train_args)
    loader_workers = args.get("workers", 8)  # Ultralytics' default data-loader workers
    report = run_preflight(
        mount=mount_path or None,
        output=output_dir,
        data=data,
        model=model,
        gpus=gpus,
        workers=int(loader_workers),
    )
    for c in report.checks:
        print(f"hpo preflight: {c.status}: {c.message}", file=sys.stderr)
    if not report.ok:
        raise ConfigError("preflight: " + "; ".join(c.message for c in report.failures()))
    notices = [c.message for c in report.checks if c.status == "warn"]
    if report.workers is not None and report.workers != loader_workers:
        args["workers"] = report.workers
    if gpus > 1 and "device" not in args:
        args["device"] = ",".join(str(i) for i in range(gpus))

    options = whole_numbers(backend_options)
    if storage_env:
        url = os.environ.get(storage_env, "").strip()
        if not url:
            raise ConfigError(
                f"storage_env: the environment variable {storage_env} is not set or empty; "
                "expose it from a Secret (configure_tuning_task(secret_name=..., secret_keys=[...]))"
            )
        options["storage"] = url
    kwargs: dict[str, Any] = dict(
        backend=backend,
        model=model,
        data=report.data,
        space=_parse_space(space),
        iterations=iterations or None,
        epochs=epochs,
        metric=metric or None,
        train_args=args,
        output=report.output,
        name=study_name or None,
        trial_timeout=trial_timeout if trial_timeout and trial_timeout > 0 else None,
        concurrent_trials=concurrent_trials,
        time_budget=time_budget.strip() or None,
        seed=seed if seed is not None and seed >= 0 else None,
        backend_options=options,
        keep_weights=keep_weights,
        verbose=True,  # plain progress lines with heartbeats in the pod's log
    )
    probe = Tuner(**kwargs)
    if join:
        join_deadline = time.monotonic() + join_wait_s
        while not Study.exists(probe.study_dir):
            if time.monotonic() >= join_deadline:
                raise ConfigError(
                    f"join: no study at {probe.study_dir} after {join_wait_s:.0f} s; start it with a task that has join=False"
                )
            time.sleep(2.0)
        resumed = False
        tuner = Tuner(**kwargs, join=True)
    else:
        resumed = Study.exists(probe.study_dir)
        tuner = Tuner(**kwargs, resume=True, allow_changes=allow_changes) if resumed else probe
    notices += list(tuner.config.notices)
    for n in tuner.config.notices:
        print(f"hpo: notice: {n}", file=sys.stderr)
    if resumed:
        print(f"hpo: resuming study {tuner.study_dir} (it already exists: a retry or a re-run)", file=sys.stderr)
    wait = LOCK_STALE_AFTER_S + LOCK_HEARTBEAT_S if lock_wait_s is None else lock_wait_s
    deadline = time.monotonic() + wait
    while True:
        try:
            result = tuner.run()
            break
        except StudyLockedError as e:  # heartbeat mode only: a killed attempt on another host, until its heartbeat is stale
            if time.monotonic() >= deadline:
                raise
            print(f"hpo: {e}; waiting for it to go stale", file=sys.stderr)
            time.sleep(min(LOCK_HEARTBEAT_S, max(0.1, deadline - time.monotonic())))

    metrics: dict[str, float] = {k: float(result.counts.get(k, 0)) for k in ("complete", "failed", "pruned")}
    metrics["trials"] = float(sum(result.counts.values()))
    if result.best_objective is not None and math.isfinite(result.best_objective):
        metrics["best_objective"] = float(result.best_objective)
    best_doc = {
        "backend": backend,
        "metric": result.metric,
        "direction": result.direction,
        "best_trial": result.best_trial,
        "best_objective": result.best_objective,
        "best_params": result.best_params,
        "study_dir": str(result.study_dir),
    }
    return StepResult(
        study_dir=str(result.study_dir),
        best_weights=str(result.best_weights) if result.best_weights else "",
        metrics=metrics,
        leaderboard=leaderboard_markdown(result.study_dir),
        best_yaml=yaml.safe_dump(best_doc, sort_keys=False),
        resumed=resumed,
        notices=notices,
        report_html=str(report) if (report := Path(result.study_dir) / "plots" / "report.html").is_file() else "",
        best_params=dict(result.best_params or {}),
        best={k: best_doc[k] for k in ("backend", "metric", "direction", "best_trial", "best_objective", "study_dir")},
    )


def write_outputs(r: StepResult, *, metrics: Any, leaderboard: Any, report: Any, best_model: Any) -> None:
    """Fill the tuning component's output artifacts from a :class:`StepResult`.

    ``best_model`` gets a copy of ``<study>/weights/best.pt`` and the metadata ``metric``,
    ``objective``, ``direction``, ``best_trial``, ``study_dir``, ``backend``, ``framework``,
    ``weights_on_volume``; ``report`` gets the self-contained HTML report (:mod:`hpo_kfp.report`).
    """
    import shutil

    from hpo_kfp.report import study_report_html

    for key, value in r.metrics.items():
        metrics.log_metric(key, value)
    Path(leaderboard.path).parent.mkdir(parents=True, exist_ok=True)
    Path(leaderboard.path).write_text(r.leaderboard, encoding="utf-8")
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text(study_report_html(r.study_dir), encoding="utf-8")
    meta = {
        **r.best,
        "objective": r.best.get("best_objective"),
        "framework": "ultralytics",
        "weights_on_volume": r.best_weights,
        "resumed": r.resumed,
    }
    meta.pop("best_objective", None)
    best_model.metadata.update({k: v for k, v in meta.items() if v is not None})
    if r.best_weights:
        Path(best_model.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r.best_weights, best_model.path)


def resolve_on_mount(path: str, mount_path: str) -> Path:
    """``path`` if absolute, else under ``mount_path`` (where the PVC is mounted)."""
    return Path(path) if Path(path).is_absolute() else Path(mount_path) / path


def run_train_step(
    *,
    model: str,
    data: str,
    epochs: int = 10,
    mount_path: str = "/mnt/hpo",
    output_dir: str = "train",
    name: str = "baseline",
    train_args: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    weights_out: str | None = None,
) -> dict[str, Any]:
    """Train once with Ultralytics on the volume: the baseline or the final training.

    Args:
        model: bundled model YAML or a ``.pt`` on the volume.
        data: data YAML or classification folder; relative paths are under ``mount_path``.
        epochs: training epochs.
        mount_path: where the PVC is mounted.
        output_dir: folder of the run (``<output_dir>/<name>/``); relative: under ``mount_path``.
        name: the run's name.
        train_args: fixed Ultralytics train args.
        hyperparameters: applied over ``train_args`` (e.g. the tuning step's best hyperparameters).
        weights_out: where to copy ``best.pt`` (a Model artifact's path), or ``None``.

    Returns:
        ``{"weights": path on the volume or "", "metadata": {...}}``; the metadata holds
        ``metric``/``objective`` (the task's objective in the final validation) when available and
        ``hyperparameters`` (the train args applied).

    Raises:
        hpo.errors.ConfigError: model or data missing or unusable; a bad ``mount_path``
            (:func:`hpo.preflight.check_mount_path`).
    """
    import csv
    import os
    import shutil

    from hpo.data import resolve_data
    from hpo.preflight import check_mount_path
    from hpo.ultra import TASK_METRIC, resolve_model

    check_mount_path(mount_path)

    os.environ.setdefault("YOLO_OFFLINE", "1")
    data_p = resolve_on_mount(data, mount_path)
    out = resolve_on_mount(output_dir, mount_path)
    model_name, task = resolve_model(str(resolve_on_mount(model, mount_path)) if model.endswith(".pt") else model)
    resolved = resolve_data(data_p, task)
    out.mkdir(parents=True, exist_ok=True)
    data_arg = resolved.write(out) if resolved.kind == "yaml" else resolved.source
    args = {"plots": False, **whole_numbers(train_args), **whole_numbers(hyperparameters)}

    from ultralytics import YOLO

    YOLO(model_name).train(data=data_arg, epochs=epochs, project=str(out), name=name, exist_ok=True, **args)
    run = out / name
    weights = run / "weights" / "best.pt"
    meta: dict[str, Any] = {"hyperparameters": {k: v for k, v in args.items() if k != "plots"}, "framework": "ultralytics"}
    metric = TASK_METRIC[task]
    results = run / "results.csv"
    if results.is_file():
        rows = list(csv.DictReader(results.open()))
        values = [float(row[k]) for row in rows for k in row if k.strip() == metric and row[k].strip()]
        if values:
            meta.update(metric=metric, objective=max(values))
    if not weights.is_file():
        return {"weights": "", "metadata": meta}
    if weights_out:
        Path(weights_out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, weights_out)
    meta["weights_on_volume"] = str(weights)
    return {"weights": str(weights), "metadata": meta}


def run_validate_step(
    *, weights: str, data: str, mount_path: str = "/mnt/hpo", train_args: dict[str, Any] | None = None
) -> dict[str, float]:
    """Validate weights (a ``.pt``, e.g. a Model artifact's file) on the data's val split.

    Args:
        weights: the ``.pt`` file.
        data: data YAML or classification folder; relative paths are under ``mount_path``.
        mount_path: where the PVC is mounted.
        train_args: Ultralytics args that apply to validation (``imgsz``, ``batch``, ``device``,
            ``workers``; others are ignored).

    Returns:
        The validation metrics (Ultralytics' names) and ``objective`` (the task's default metric).

    Raises:
        hpo.errors.ConfigError: the weights file or the data is missing; a bad ``mount_path``
            (:func:`hpo.preflight.check_mount_path`).
    """
    import os
    import shutil
    import tempfile

    from hpo.data import resolve_data
    from hpo.errors import ConfigError
    from hpo.preflight import check_mount_path
    from hpo.ultra import TASK_METRIC, resolve_model

    check_mount_path(mount_path)

    os.environ.setdefault("YOLO_OFFLINE", "1")
    if not Path(weights).is_file():
        raise ConfigError(f"weights: '{weights}' does not exist; pass the tuning step's best_model")
    with tempfile.TemporaryDirectory() as tmp:
        pt = Path(tmp) / "model.pt"  # a Model artifact's file has no .pt suffix
        shutil.copyfile(weights, pt)
        model_name, task = resolve_model(str(pt))
        resolved = resolve_data(resolve_on_mount(data, mount_path), task)
        data_arg = resolved.write(Path(tmp)) if resolved.kind == "yaml" else resolved.source
        keep = {k: v for k, v in whole_numbers(train_args).items() if k in ("imgsz", "batch", "device", "workers", "half")}

        from ultralytics import YOLO

        res = YOLO(model_name).val(data=data_arg, project=tmp, name="val", plots=False, verbose=False, **keep)
        values = {k: float(v) for k, v in res.results_dict.items()}
    values["objective"] = values[TASK_METRIC[task]]
    return values
