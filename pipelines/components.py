"""KFP v2 components of hpo: the reusable tuning step and the small steps of the example pipelines.

Each is a lightweight Python component whose code runs in the hpo image (see ``Dockerfile``),
where hpo, kfp and Ultralytics are installed, so nothing is installed or downloaded at run time.
The image is a parameter: ``make_tune_component(image=...)`` builds the tuning component for
your own image; :data:`hpo_tune` uses :data:`DEFAULT_IMAGE` (overridable with the ``HPO_IMAGE``
environment variable when this module is imported, e.g. before ``hpo pipelines compile``).

Example::

    from pipelines import hpo_tune, configure_tuning_task

    tune = hpo_tune(model="yolov8n.yaml", data="datasets/coco8/data.yaml", iterations=20, epochs=10,
                    mount_path="/mnt/hpo", output_dir="studies", train_args={"imgsz": 640})
    configure_tuning_task(tune, pvc_name=pvc_name, mount_path="/mnt/hpo", accelerator_count=1)
"""


import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output
from kfp.dsl.python_component import PythonComponent

__all__ = [
    "DEFAULT_IMAGE",
    "PUBLISHED_IMAGE",
    "hpo_tune",
    "make_tune_component",
    "make_components",
    "check_environment",
    "train_baseline",
    "compare_studies",
]

#: The component image. Build it from the repository's ``Dockerfile`` and push it to your registry;
#: set ``HPO_IMAGE`` (or call :func:`make_tune_component`) to use yours.
PUBLISHED_IMAGE = "ghcr.io/hpo-project/hpo:0.1.0"
DEFAULT_IMAGE = os.environ.get("HPO_IMAGE", PUBLISHED_IMAGE)


def hpo_tune(
    metrics: Output[Metrics],
    leaderboard: Output[Markdown],
    best_hyperparameters: Output[Artifact],
    report: Output[HTML],
    model: str,
    data: str,
    backend: str = "ultralytics",
    iterations: int = 10,
    epochs: int = 10,
    space: str = "",
    metric: str = "",
    mount_path: str = "/mnt/hpo",
    output_dir: str = "studies",
    study_name: str = "",
    train_args: dict = {},
    backend_options: dict = {},
    concurrent_trials: int = 1,
    gpus: int = 0,
    seed: int = -1,
    trial_timeout: float = 0.0,
    keep_weights: str = "top-3",
    workers: int = 0,
) -> NamedTuple("TuneOutputs", [("study_dir", str), ("best_weights", str)]):
    """Tune an Ultralytics YOLO model with hpo (``hpo tune``) on the mounted volume.

    Runs ``hpo preflight`` first (mount, writable output, data, GPUs, /dev/shm), then the study,
    resuming it when it already exists (a retry continues where the killed pod stopped).
    Relative ``data`` and ``output_dir`` are under ``mount_path`` (where the PVC is mounted).
    ``space`` is a YAML/JSON file or inline JSON (``""``: Ultralytics' default space); ``metric``
    ``""`` is the task's default; ``study_name`` ``""`` is ``<data>-<backend>``; ``concurrent_trials``
    is trials at once (``workers``: its deprecated spelling, 0 unset); ``keep_weights`` which
    trials keep their weights (``best``, ``top-K``, ``all``); ``gpus`` the GPUs requested (checked); ``seed`` -1 random;
    ``trial_timeout`` seconds (0: none). Outputs: ``metrics`` (best_objective, complete, failed,
    pruned, trials), ``leaderboard`` (Markdown), ``best_hyperparameters`` (YAML),
    ``report`` (the study's plots, one self-contained HTML page), ``study_dir`` and
    ``best_weights`` (paths on the volume).
    """
    from collections import namedtuple

    from pipelines.step import run_tune_step

    r = run_tune_step(
        model=model, data=data, backend=backend, iterations=iterations, epochs=epochs, space=space,
        metric=metric, mount_path=mount_path, output_dir=output_dir, study_name=study_name,
        train_args=train_args, backend_options=backend_options, concurrent_trials=concurrent_trials, gpus=gpus,
        seed=seed, trial_timeout=trial_timeout, keep_weights=keep_weights, workers=workers or None,
    )
    for key, value in r.metrics.items():
        metrics.log_metric(key, value)
    with open(leaderboard.path, "w", encoding="utf-8") as f:
        f.write(r.leaderboard)
    with open(best_hyperparameters.path, "w", encoding="utf-8") as f:
        f.write(r.best_yaml)
    best_hyperparameters.metadata["study_dir"] = r.study_dir
    best_hyperparameters.metadata["resumed"] = r.resumed
    if r.report_html:
        import shutil

        shutil.copyfile(r.report_html, report.path)
    else:
        with open(report.path, "w", encoding="utf-8") as f:
            f.write("<html><body>no plots: no trial finished</body></html>")
    outputs = namedtuple("TuneOutputs", ["study_dir", "best_weights"])
    return outputs(r.study_dir, r.best_weights)


def check_environment(
    mount_path: str = "/mnt/hpo",
    output_dir: str = "studies",
    data: str = "",
    model: str = "",
    gpus: int = 0,
    workers: int = 0,
) -> str:
    """``hpo preflight`` as a step: fail the pipeline early when the mount, data or GPUs are missing."""
    import json

    from hpo.preflight import run_preflight

    report = run_preflight(mount=mount_path, output=output_dir, data=data or None, model=model or None,
                           gpus=gpus, workers=workers)
    for c in report.checks:
        print(f"{c.status}: {c.message}")
    if not report.ok:
        raise RuntimeError("preflight failed: " + "; ".join(c.message for c in report.failures()))
    return json.dumps(report.to_json())


def train_baseline(
    model: str,
    data: str,
    epochs: int = 10,
    mount_path: str = "/mnt/hpo",
    output_dir: str = "train",
    name: str = "baseline",
    train_args: dict = {},
) -> str:
    """Train the model once with Ultralytics' defaults (the tutorial's train step); returns the weights path."""
    import os
    from pathlib import Path

    from hpo.data import resolve_data
    from hpo.ultra import resolve_model
    from pipelines.step import whole_numbers

    os.environ.setdefault("YOLO_OFFLINE", "1")
    mount = Path(mount_path)
    data_p = Path(data) if os.path.isabs(data) else mount / data
    out = Path(output_dir) if os.path.isabs(output_dir) else mount / output_dir
    model_name, task = resolve_model(model)
    resolved = resolve_data(data_p, task)
    out.mkdir(parents=True, exist_ok=True)
    data_arg = resolved.write(out) if resolved.kind == "yaml" else resolved.source

    from ultralytics import YOLO

    args = {"plots": False, **whole_numbers(train_args)}
    YOLO(model_name).train(data=data_arg, epochs=epochs, project=str(out), name=name, exist_ok=True, **args)
    weights = out / name / "weights" / "best.pt"
    return str(weights) if weights.is_file() else ""


def compare_studies(study_dirs: list, report: Output[Markdown], metrics: Output[Metrics]) -> str:
    """Compare studies (one per backend) written on the same volume; returns the best study dir."""
    from hpo.cli import study_summary

    rows = []
    for d in study_dirs:
        s = study_summary(d)
        best = s["best"]
        rows.append((s["backend"], d, s["metric"], s["direction"], best["objective"] if best else None, s["counts"]))
    maximize = bool(rows) and rows[0][3] == "maximize"
    ranked = sorted(rows, key=lambda r: (r[4] is None, -(r[4] or 0) if maximize else (r[4] or 0)))
    lines = ["# hpo: backends compared", "", "| rank | backend | best objective | complete | failed | pruned | study |",
             "|---|---|---|---|---|---|---|"]
    for i, (b, d, m, _, obj, c) in enumerate(ranked, 1):
        lines.append(f"| {i} | {b} | {'-' if obj is None else f'{obj:.5g}'} | {c['complete']} | {c['failed']} | {c['pruned']} | `{d}` |")
        if obj is not None:
            metrics.log_metric(f"best_objective.{b}", float(obj))
    with open(report.path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return ranked[0][1] if ranked else ""


# the plain functions (their source is the components' code); the module names are rebound below
_FUNCS = {"hpo_tune": hpo_tune, "check_environment": check_environment,
          "train_baseline": train_baseline, "compare_studies": compare_studies}


def make_tune_component(image: str = DEFAULT_IMAGE) -> "PythonComponent":
    """The tuning component for a given image.

    Args:
        image: the container image with hpo installed (built from the ``Dockerfile``).

    Returns:
        A KFP v2 component; call it inside a ``@dsl.pipeline`` function.
    """
    return dsl.component(base_image=image, install_kfp_package=False)(_FUNCS["hpo_tune"])


def make_components(image: str = DEFAULT_IMAGE) -> "dict[str, PythonComponent]":
    """All hpo components for a given image: ``hpo_tune``, ``check_environment``,
    ``train_baseline``, ``compare_studies``."""
    build = dsl.component(base_image=image, install_kfp_package=False)
    return {name: build(fn) for name, fn in _FUNCS.items()}


_default = make_components(DEFAULT_IMAGE)
#: The tuning component (image :data:`DEFAULT_IMAGE`).
hpo_tune = _default["hpo_tune"]
check_environment = _default["check_environment"]
train_baseline = _default["train_baseline"]
compare_studies = _default["compare_studies"]
