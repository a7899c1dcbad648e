"""What the KFP tuning component does inside its pod, as plain Python (testable without KFP).

:func:`run_tune_step` runs the pre-flight checks, then ``hpo tune`` through :class:`hpo.Tuner`,
resuming the study when ``<study>/study.json`` already exists (a KFP retry of a killed pod
continues the study instead of starting over), and returns the texts of the step's artifacts.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo import TuneSettings
from hpo.settings import from_kfp

__all__ = [
    "StepResult",
    "typed_json",
    "tuned_train_args",
    "POD_TRAIN_ARGS",
    "run_tune_step",
    "write_outputs",
    "run_train_step",
    "run_validate_step",
    "leaderboard_markdown",
    "whole_numbers",
    "resolve_on_mount",
]

#: The step's warnings and notices: ``hpo: warning: ...`` lines in the pod's log (the ``hpo`` logger, hpo.log)
_log = logging.getLogger("hpo.kfp")


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
        best: ``metric``, ``objective``, ``direction``, ``best_trial``, ``study_dir``, ``backend``,
            ``ultralytics_version`` (the Model artifact's metadata).
        final: the final stage's summary (:func:`hpo.final.read_final_summary`), ``{}`` without one.
        final_weights: ``<study>/weights/final.pt`` if written, else ``""``.
        tuned_train_args: the train args to train the tuned configuration with
            (:func:`tuned_train_args`): the study's fixed train args (with what hpo chose, e.g.
            the ``optimizer``) and the best hyperparameters over them; ``{}`` when no trial completed.
        ultralytics_version: the Ultralytics version the study ran with (``study.json``
            ``versions``), ``""`` when not recorded.
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
    final: dict[str, Any] = field(default_factory=dict)
    final_weights: str = ""
    tuned_train_args: dict[str, Any] = field(default_factory=dict)
    ultralytics_version: str = ""

    @property
    def best_params_json(self) -> str:
        """:attr:`best_params` as JSON text: whole numbers stay ints (``{"close_mosaic": 3}``),
        where KFP's ``dict`` outputs turn every number into a float."""
        return typed_json(self.best_params)

    @property
    def tuned_train_args_json(self) -> str:
        """:attr:`tuned_train_args` as JSON text (ints stay ints: ``{"imgsz": 640}``)."""
        return typed_json(self.tuned_train_args)


def typed_json(values: Mapping[str, Any]) -> str:
    """Train args or hyperparameters as JSON text whose numbers keep their type.

    KFP passes a ``dict`` parameter as a protobuf Struct, where every number is a double
    (``imgsz: 32.0``, refused by Ultralytics); a ``str`` output is passed as it is, and JSON keeps
    ``32`` an int and ``0.5`` a float (``json.loads`` in the consuming step; JSON is also YAML).

    Args:
        values: the args (JSON-able values; ``sort_keys``: the same text for the same args).
    """
    import json

    return json.dumps(dict(values), sort_keys=True)


#: Train args that describe the pod the study ran in, not the configuration: the tuned train args
#: keep the user's own value (the pre-flight may lower ``workers`` to fit ``/dev/shm``; several
#: GPUs set ``device``) or leave them out.
POD_TRAIN_ARGS = ("workers", "device")


def tuned_train_args(fixed: Mapping[str, Any], given: Mapping[str, Any], best_params: Mapping[str, Any]) -> dict[str, Any]:
    """The train args that train the tuned configuration: ``fixed`` (the study's, validated, with
    what hpo chose on the user's behalf, e.g. ``optimizer=SGD`` when the space tunes ``lr0``), the
    keys of :data:`POD_TRAIN_ARGS` as the user gave them (``given``), and ``best_params`` over them.
    ``{}`` without best params (no complete trial).

    Args:
        fixed: the study's fixed train args (:attr:`hpo.TuneConfig.train_args`).
        given: the train args the user gave the step (KFP's floats made whole).
        best_params: the best trial's hyperparameters.
    """
    if not best_params:
        return {}
    out = {k: v for k, v in fixed.items() if k not in POD_TRAIN_ARGS}
    out.update({k: given[k] for k in POD_TRAIN_ARGS if k in given})
    out.update(best_params)
    return out


def leaderboard_markdown(study_dir: str | Path, top: int = 50) -> str:
    """The Markdown leaderboard of a study (:func:`hpo.report.leaderboard_markdown`), by path.

    Raises:
        hpo.errors.StudyError: no study at ``study_dir``.
    """
    from hpo import Study
    from hpo.report import leaderboard_markdown as markdown

    return markdown(Study.open(study_dir), top=top)


def whole_numbers(d: Mapping[str, Any] | None) -> dict[str, Any]:
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


def run_tune_step(
    settings: TuneSettings | None = None,
    /,
    *,
    mount_path: str = "",
    gpus: int = 0,
    storage_env: str = "",
    lock_wait_s: float | None = None,
    join_wait_s: float = 900.0,
    **params: Any,
) -> StepResult:
    """Pre-flight, then tune (or resume) one study on the mounted volume.

    Args:
        settings: the study's settings (:class:`hpo.TuneSettings`; ``data`` and ``output``
            relative to ``mount_path``). Or give the tuning component's parameters as keywords
            (``params``), spelled as the component spells them (``output_dir``, ``study_name``,
            ``""``/``0``/``-1`` for "not given", the deprecated ``workers``): :func:`hpo.settings.from_kfp`.
        mount_path: where the PVC is mounted (``""``: not checked; relative paths then use the
            working directory).
        gpus: GPUs the task requested; pre-flight fails when torch sees fewer. With more than one
            and no ``device`` train arg, ``device`` lists them.
        storage_env: name of an environment variable holding the backend's ``storage`` URL
            (e.g. ``HPO_STORAGE`` from a Kubernetes Secret); ``""``: none. An unset or empty
            variable is an error.
        lock_wait_s: seconds to wait for the lock of a killed previous attempt to go stale
            (default: the lock's staleness limit plus one heartbeat).
        join_wait_s: seconds a joining task (``join``) waits for ``study.json`` (default 900).
        **params: the component's parameters (when ``settings`` is not given).

    The study is resumed when it already exists (a KFP retry of a killed pod, a re-run), with
    ``allow_changes`` as given; a joining task (``join``) waits up to ``join_wait_s`` for the study
    to be created. Train args are KFP's floats made whole again (:func:`whole_numbers`); a
    ``workers`` train arg (data-loader workers) may be lowered to fit ``/dev/shm``.

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
        TypeError: both ``settings`` and ``params``, or a parameter that is no setting.
    """
    import os

    import yaml

    from hpo import ConfigError, Study, StudyLockedError, Tuner, has_secret, mask_secrets
    from hpo.preflight import check_mount_path, run_preflight

    if settings is None:
        settings = from_kfp(params)
    elif params:
        raise TypeError(f"run_tune_step() takes the settings or the component's parameters, not both ({', '.join(params)})")
    if mount_path:
        check_mount_path(mount_path)
    settings = _fetch_pretrained(settings, mount_path)
    if has_secret(settings.backend_options):
        _log.warning(
            f"backend_options: {mask_secrets(settings.backend_options)} holds a credential, which KFP keeps "
            "in the run's parameters (its database and UI); put it in a Kubernetes Secret and pass storage_env "
            "(docs/kfp.md, section 6)"
        )
    args = whole_numbers(settings.train_args)
    loader_workers = args.get("workers", 8)  # Ultralytics' default data-loader workers
    report = run_preflight(
        mount=mount_path or None,
        output=str(settings.output),
        data=str(settings.data),
        model=settings.model,
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

    options = whole_numbers(settings.backend_options)
    if storage_env:
        url = os.environ.get(storage_env, "").strip()
        if not url:
            raise ConfigError(
                f"storage_env: the environment variable {storage_env} is not set or empty; "
                "expose it from a Secret (configure_tuning_task(secret_name=..., secret_keys=[...]))"
            )
        options["storage"] = url
    base = settings.replace(
        data=report.data,
        output=report.output,
        train_args=args,
        backend_options=options,
        resume=False,
        join=False,
        allow_changes=False,
    )
    probe = Tuner(base)
    if settings.join:
        join_deadline = time.monotonic() + join_wait_s
        while not Study.exists(probe.study_dir):
            if time.monotonic() >= join_deadline:
                raise ConfigError(
                    f"join: no study at {probe.study_dir} after {join_wait_s:.0f} s; start it with a task that has join=False"
                )
            time.sleep(2.0)
        resumed = False
        tuner = Tuner(base, join=True)
    else:
        resumed = Study.exists(probe.study_dir)
        tuner = Tuner(base, resume=True, allow_changes=settings.allow_changes) if resumed else probe
    notices += list(tuner.config.notices)  # the Tuner logged them (hpo logger) when it was built
    if resumed:
        _log.info(f"resuming study {tuner.study_dir} (it already exists: a retry or a re-run)")
    wait = Study.LOCK_STALE_AFTER_S + Study.LOCK_HEARTBEAT_S if lock_wait_s is None else lock_wait_s
    deadline = time.monotonic() + wait
    while True:
        try:
            result = tuner.run()
            break
        except StudyLockedError as e:  # heartbeat mode only: a killed attempt on another host, until its heartbeat is stale
            if time.monotonic() >= deadline:
                raise
            _log.info(f"{e}; waiting for it to go stale")
            time.sleep(min(Study.LOCK_HEARTBEAT_S, max(0.1, deadline - time.monotonic())))

    final = result.final.summary if result.final is not None else {}
    metrics: dict[str, float] = {k: float(result.counts.get(k, 0)) for k in ("complete", "failed", "pruned")}
    metrics.update(_final_metrics(final))
    metrics["trials"] = float(sum(result.counts.values()))
    if result.best_objective is not None and math.isfinite(result.best_objective):
        metrics["best_objective"] = float(result.best_objective)
    versions = Study.open(result.study_dir).settings.get("versions") or {}
    ultralytics_version = str(versions.get("ultralytics") or "")
    best_doc = {
        "backend": settings.backend,
        "metric": result.metric,
        "direction": result.direction,
        "best_trial": result.best_trial,
        "best_objective": result.best_objective,
        "best_params": result.best_params,
        "study_dir": str(result.study_dir),
        "ultralytics_version": ultralytics_version,
    }
    html = Path(result.study_dir) / "plots" / "report.html"
    return StepResult(
        study_dir=str(result.study_dir),
        best_weights=str(result.best_weights) if result.best_weights else "",
        metrics=metrics,
        leaderboard=leaderboard_markdown(result.study_dir),
        best_yaml=yaml.safe_dump(best_doc, sort_keys=False),
        resumed=resumed,
        notices=notices,
        report_html=str(html) if html.is_file() else "",
        best_params=dict(result.best_params or {}),
        best={
            k: best_doc[k]
            for k in ("backend", "metric", "direction", "best_trial", "best_objective", "study_dir", "ultralytics_version")
        },
        final=final,
        final_weights=str(result.final.weights) if result.final is not None and result.final.weights else "",
        tuned_train_args=tuned_train_args(tuner.config.train_args, whole_numbers(settings.train_args), result.best_params or {}),
        ultralytics_version=ultralytics_version,
    )


def _fetch_pretrained(settings: TuneSettings, mount_path: str) -> TuneSettings:
    """With the opt-in (``download_weights``, else ``HPO_DOWNLOAD_WEIGHTS``) and a ``model`` that
    names official weights (``yolov8n.pt``): fetch them once into ``<output>/pretrained`` on the
    volume (:func:`hpo.pretrained.fetch_pretrained`) and train from that file; else ``settings``.

    The image sets ``YOLO_OFFLINE=1`` (nothing is downloaded by accident); the opt-in lifts it for
    this fetch only. Done before the pre-flight, which checks that the model is a local file.

    Raises:
        hpo.errors.ConfigError: not one of Ultralytics' official names, no network, or the download
            failed (one line; nothing is left on the volume).
    """
    import os

    from hpo.pretrained import fetch_pretrained, is_official_name, wants_download

    if not (wants_download(settings.download_weights) and is_official_name(str(settings.model))):
        return settings
    output = Path(settings.output).expanduser()
    if mount_path and not output.is_absolute():
        output = Path(mount_path) / output
    folder = Path(settings.weights_dir) if settings.weights_dir else output / "pretrained"
    offline = os.environ.pop("YOLO_OFFLINE", None)
    try:
        path = fetch_pretrained(str(settings.model), folder)
    finally:
        if offline is not None:
            os.environ["YOLO_OFFLINE"] = offline
    _log.info(f"model: {settings.model} is {path} (fetched once with download_weights; a retry finds it there)")
    return settings.replace(model=path)


def _chosen_config(final: dict[str, Any]) -> dict[str, Any]:
    """The final stage's configuration that holds the final model's run (``{}`` without one)."""
    chosen = final.get("chosen") or {}
    for c in final.get("configurations") or []:
        if chosen and chosen.get("run") in [r.get("id") for r in c.get("runs") or []]:
            return dict(c)
    return {}


def _final_metrics(final: dict[str, Any]) -> dict[str, float]:
    """The step's ``final_*`` metrics of a final stage's summary: the final model's configuration's
    ``final_test_mean``, ``final_test_sd``, ``final_val_mean``, its run's ``final_objective_test``,
    and ``final_complete`` (complete final runs); ``{}`` without a stage."""
    if not final:
        return {}
    config = _chosen_config(final)
    chosen = final.get("chosen") or {}
    values = {
        "final_test_mean": config.get("test_mean"),
        "final_test_sd": config.get("test_sd"),
        "final_val_mean": config.get("val_mean"),
        "final_objective_test": chosen.get("objective_test"),
        "final_complete": (final.get("counts") or {}).get("complete", 0),
    }
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def write_outputs(
    r: StepResult, *, metrics: Any, leaderboard: Any, report: Any, best_model: Any, final_model: Any = None
) -> None:
    """Fill the tuning component's output artifacts from a :class:`StepResult`.

    ``best_model`` gets a copy of ``<study>/weights/best.pt`` and the metadata ``metric``,
    ``objective``, ``direction``, ``best_trial``, ``study_dir``, ``backend``, ``framework``,
    ``weights_on_volume``, ``ultralytics_version`` (the version the study ran with); ``report`` gets the self-contained HTML report (:mod:`hpo_kfp.report`);
    ``final_model`` (when given) a copy of ``<study>/weights/final.pt`` and the metadata ``final``
    (whether the step ran a final stage), ``metric``, ``split``, ``split_label``, ``objective_test``
    (its configuration's mean on the split), ``objective_test_sd``, ``objective_val`` (its
    configuration's validation mean), ``run_objective_test``, ``run``, ``source_trial``, ``seed``,
    ``seeds``, ``epochs``, ``n`` (complete runs of its configuration), ``study_dir``,
    ``weights_on_volume``, ``ultralytics_version``.
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
    best_model.metadata.update({k: v for k, v in meta.items() if v is not None and v != ""})
    if r.best_weights:
        Path(best_model.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r.best_weights, best_model.path)
    if final_model is None:
        return
    if not r.final:
        final_model.metadata.update({"final": False})
        return
    config, chosen = _chosen_config(r.final), r.final.get("chosen") or {}
    final_meta = {
        "final": True,
        "framework": "ultralytics",
        "metric": r.final.get("metric"),
        "split": r.final.get("split"),
        "split_label": r.final.get("split_label"),
        "objective_test": config.get("test_mean"),
        "objective_test_sd": config.get("test_sd"),
        "objective_val": config.get("val_mean"),
        "run_objective_test": chosen.get("objective_test"),
        "run": chosen.get("run"),
        "source_trial": chosen.get("source_trial"),
        "seed": chosen.get("seed"),
        "seeds": r.final.get("seeds"),
        "epochs": r.final.get("epochs"),
        "n": config.get("n"),
        "study_dir": r.study_dir,
        "weights_on_volume": r.final_weights,
        "ultralytics_version": r.ultralytics_version,
    }
    final_model.metadata.update({k: v for k, v in final_meta.items() if v is not None})
    if r.final_weights:
        Path(final_model.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r.final_weights, final_model.path)


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

    from hpo import ConfigError
    from hpo.data import resolve_data
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
