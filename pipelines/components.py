"""KFP v2 components of hpo: the reusable tuning step and the small steps of the example pipelines.

Each is a lightweight Python component whose code runs in *your* hpo image (built from the
repository's ``Dockerfile``), where hpo, kfp and Ultralytics are installed, so nothing is installed
or downloaded at run time. There is no default image: :func:`make_components` and
:func:`make_tune_component` take it, and ``hpo_kfp.hpo_tune`` (and the other module-level names)
use ``$HPO_IMAGE``, failing with :class:`hpo.errors.ConfigError` when it is not set.

Example::

    from hpo_kfp import make_tune_component, configure_tuning_task

    hpo_tune = make_tune_component(image="registry.example.com/team/hpo:0.1.0")
    tune = hpo_tune(model="yolov8n.yaml", data="datasets/coco8/data.yaml", iterations=20, epochs=10,
                    mount_path="/mnt/hpo", output_dir="studies", train_args={"imgsz": 640})
    configure_tuning_task(tune, pvc_name=pvc_name, mount_path="/mnt/hpo", accelerator_count=1)
    train = my_train(hyperparameters=tune.outputs["best_hyperparameters"], weights=tune.outputs["best_model"])
"""

import os
import re
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Input, Markdown, Metrics, Model, Output

__all__ = [
    "IMAGE_ENV",
    "image_from_env",
    "check_image",
    "make_tune_component",
    "make_components",
    "hpo_tune",
    "check_environment",
    "train_model",
    "validate_model",
    "compare_studies",
]

#: The environment variable naming the component image when no ``image`` argument is given.
IMAGE_ENV = "HPO_IMAGE"

# registry/name[:tag][@digest]: lower-case path components, an optional host[:port] first
_IMAGE_RE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


def check_image(image: "str | None") -> str:
    """The component image, checked: ``REGISTRY/NAME:TAG`` (or ``@sha256:...``).

    Raises:
        hpo.errors.ConfigError: no image (``None``/empty) or not an image reference.
    """
    from hpo import ConfigError

    if not image or not str(image).strip():
        raise ConfigError(
            f"image: no component image set; build the Dockerfile, push it and pass it "
            f"(hpo pipelines compile --image REGISTRY/NAME:TAG, make_components(image=...) or ${IMAGE_ENV})"
        )
    image = str(image).strip()
    if not _IMAGE_RE.match(image) or ("/" not in image and ":" not in image):
        raise ConfigError(
            f"image: '{image}' is not an image reference; use REGISTRY/NAME:TAG, e.g. registry.example.com/team/hpo:0.1.0"
        )
    return image


def image_from_env() -> str:
    """The image named by ``$HPO_IMAGE`` (checked with :func:`check_image`)."""
    return check_image(os.environ.get(IMAGE_ENV))


def hpo_tune(
    metrics: Output[Metrics],
    leaderboard: Output[Markdown],
    report: Output[HTML],
    best_model: Output[Model],
    final_model: Output[Model],
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
    time_budget: str = "",
    keep_weights: str = "top-3",
    workers: int = 0,
    join: bool = False,
    storage_env: str = "",
    allow_changes: bool = False,
    final_epochs: int = 0,
    final_seeds: int = 1,
    final_top: int = 1,
    download_weights: bool = False,
) -> NamedTuple(  # type: ignore[valid-type]  # KFP's form of named outputs
    "TuneOutputs",
    [
        ("study_dir", str),
        ("best_weights", str),
        ("best_hyperparameters", dict),
        ("best_hyperparameters_json", str),
        ("tuned_train_args_json", str),
        ("ultralytics_version", str),
    ],
):
    """Tune an Ultralytics YOLO model with hpo (``hpo tune``) on the mounted volume.

    Runs ``hpo preflight`` first (mount, writable output, data, GPUs, /dev/shm), then the study,
    resuming it when it already exists (a retry continues where the killed pod stopped).
    Relative ``data`` and ``output_dir`` are under ``mount_path`` (where the PVC is mounted).
    ``space`` is a YAML/JSON file, inline JSON or ``"ultralytics"`` (``model.tune``'s 26 keys; ``""``: the task's default space); ``metric``
    ``""`` is the task's default; ``study_name`` ``""`` is ``<data>-<backend>``; ``concurrent_trials``
    is trials at once (``workers``: its deprecated spelling, 0 unset); ``keep_weights`` which
    trials keep their weights (``best``, ``top-K``, ``all``); ``gpus`` the GPUs requested (checked);
    ``seed`` -1 random; ``trial_timeout`` seconds (0: none); ``time_budget`` the study's wall-clock
    budget (``"2h"``, ``"90m"``, ``"3600"``; ``""``: none; kept across retries; ``iterations`` 0: no
    cap, the budget alone ends the study); ``join`` adds this task to a running
    study (several pods, one study: backends that support it, e.g. optuna); ``storage_env`` names an
    environment variable (e.g. from a Kubernetes Secret) holding the backend's ``storage`` URL;
    ``allow_changes`` lets a re-run continue an existing study whose data or train args changed
    (``hpo tune --resume --allow-changes``; without it the task fails naming the change);
    ``final_epochs`` (0: off) trains the best ``final_top`` configurations for that many epochs,
    ``final_seeds`` runs each with seeds no trial used, after the search, and scores them on the
    data's test split (``hpo tune --final-epochs``; the final model; a retry continues the stage);
    ``download_weights`` lets Ultralytics fetch the official weights ``model`` names (``yolov8n.pt``,
    ``yolov8n-cls.pt``) once, into ``<output_dir>/pretrained`` on the volume, before the pre-flight
    (``hpo tune --download-weights``; the pod needs network access; a retry or a later study finds
    them there); ``False`` leaves it to ``HPO_DOWNLOAD_WEIGHTS`` in the pod's environment, else hpo
    never downloads and the trials train from scratch unless ``model`` is a ``.pt`` on the volume.

    Outputs: ``best_hyperparameters`` (dict: the best params, ready to merge into a training
    step's train args; KFP makes every number of a dict a float: ``close_mosaic: 3.0``),
    ``best_hyperparameters_json`` (the same as JSON text, whose ints stay ints),
    ``tuned_train_args_json`` (JSON text: the study's fixed train args, with what hpo chose such as
    the ``optimizer``, and the best params over them: ``model.train(**json.loads(text))`` trains the
    tuned configuration; read it with :func:`hpo_kfp.make_pick_component` into a component's own
    inputs), ``ultralytics_version`` (the Ultralytics version the study ran with: tuned values may
    not carry over to another version), ``best_model`` (Model: the best weights, with metadata ``metric``,
    ``objective``, ``direction``, ``best_trial``, ``study_dir``, ``backend``, ``ultralytics_version``), ``leaderboard``
    (Markdown), ``metrics`` (best_objective, complete, failed, pruned, trials), ``report``
    (HTML: leaderboard and best-so-far plot), ``study_dir`` and ``best_weights`` (paths on the volume).
    With ``final_epochs``: ``final_model`` (Model: ``<study>/weights/final.pt``, the final run with
    the best validation objective, with metadata ``metric``, ``split`` (``test``, or ``val`` when
    the data has no test split), ``split_label``, ``objective_test`` (the mean over the seeds of
    its configuration on the split), ``objective_test_sd``, ``objective_val``, ``seeds``,
    ``epochs``, ``source_trial``, ``run``, ``study_dir``) and in ``metrics`` ``final_test_mean``,
    ``final_test_sd``, ``final_val_mean``, ``final_objective_test``, ``final_complete``; without it,
    ``final_model`` holds no file and the metadata ``final: false``.
    """
    params = dict(locals())  # first: every parameter, and nothing else (KFP passes them by name)
    from collections import namedtuple

    from hpo_kfp.step import run_tune_step, write_outputs

    for artifact in ("metrics", "leaderboard", "report", "best_model", "final_model"):
        del params[artifact]
    # the settings (hpo.settings.from_kfp reads their KFP spellings) and the step's own parameters
    r = run_tune_step(**params)
    write_outputs(r, metrics=metrics, leaderboard=leaderboard, report=report, best_model=best_model, final_model=final_model)
    TuneOutputs = namedtuple(
        "TuneOutputs",
        [
            "study_dir",
            "best_weights",
            "best_hyperparameters",
            "best_hyperparameters_json",
            "tuned_train_args_json",
            "ultralytics_version",
        ],
    )
    return TuneOutputs(
        r.study_dir, r.best_weights, r.best_params, r.best_params_json, r.tuned_train_args_json, r.ultralytics_version
    )


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

    report = run_preflight(
        mount=mount_path, output=output_dir, data=data or None, model=model or None, gpus=gpus, workers=workers
    )
    for c in report.checks:
        print(f"{c.status}: {c.message}")
    if not report.ok:
        raise RuntimeError("preflight failed: " + "; ".join(c.message for c in report.failures()))
    return json.dumps(report.to_json())


def train_model(
    weights: Output[Model],
    model: str,
    data: str,
    epochs: int = 10,
    mount_path: str = "/mnt/hpo",
    output_dir: str = "train",
    name: str = "baseline",
    train_args: dict = {},
    hyperparameters: dict = {},
) -> str:
    """Train the model once (the tutorial's train step); returns the weights path on the volume.

    ``hyperparameters`` (e.g. ``hpo_tune``'s ``best_hyperparameters``) are applied over
    ``train_args``; ``{}`` trains with Ultralytics' defaults (a baseline). ``weights`` (Model) is a
    copy of ``best.pt`` with metadata ``metric``/``objective`` of its final validation.
    """
    from hpo_kfp.step import run_train_step

    r = run_train_step(
        model=model,
        data=data,
        epochs=epochs,
        mount_path=mount_path,
        output_dir=output_dir,
        name=name,
        train_args=train_args,
        hyperparameters=hyperparameters,
        weights_out=weights.path,
    )
    weights.metadata.update(r["metadata"])
    return r["weights"]


def validate_model(
    weights: Input[Model],
    metrics: Output[Metrics],
    data: str,
    mount_path: str = "/mnt/hpo",
    train_args: dict = {},
) -> float:
    """Validate a Model artifact (e.g. ``hpo_tune``'s ``best_model``) on the data's val split;
    returns the task's objective metric (also in ``metrics``)."""
    from hpo_kfp.step import run_validate_step

    values = run_validate_step(weights=weights.path, data=data, mount_path=mount_path, train_args=train_args)
    for key, value in values.items():
        metrics.log_metric(key, value)
    return values["objective"]


def compare_studies(study_dirs: list, report: Output[Markdown], metrics: Output[Metrics]) -> str:
    """Compare studies (one per backend) written on the same volume; returns the best study dir."""
    from hpo.report import study_summary

    rows = []
    for d in study_dirs:
        s = study_summary(d)
        best = s["best"]
        rows.append((s["backend"], d, s["metric"], s["direction"], best["objective"] if best else None, s["counts"]))
    maximize = bool(rows) and rows[0][3] == "maximize"
    ranked = sorted(rows, key=lambda r: (r[4] is None, -(r[4] or 0) if maximize else (r[4] or 0)))
    lines = [
        "# hpo: backends compared",
        "",
        "| rank | backend | best objective | complete | failed | pruned | study |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (b, d, _m, _, obj, c) in enumerate(ranked, 1):
        lines.append(
            f"| {i} | {b} | {'-' if obj is None else f'{obj:.5g}'} | {c['complete']} | {c['failed']} | {c['pruned']} | `{d}` |"
        )
        if obj is not None:
            metrics.log_metric(f"best_objective.{b}", float(obj))
    with open(report.path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return ranked[0][1] if ranked else ""


# the plain functions: their source is the components' code
_FUNCS = {
    "hpo_tune": hpo_tune,
    "check_environment": check_environment,
    "train_model": train_model,
    "validate_model": validate_model,
    "compare_studies": compare_studies,
}


def make_tune_component(image: str) -> "dsl.PythonComponent":
    """The tuning component for your image.

    Args:
        image: the container image with hpo installed (built from the ``Dockerfile`` and pushed to
            your registry), ``REGISTRY/NAME:TAG``.

    Returns:
        A KFP v2 component; call it inside a ``@dsl.pipeline`` function.

    Raises:
        hpo.errors.ConfigError: no image, or not an image reference.
    """
    return make_components(image)["hpo_tune"]


def make_components(image: str) -> "dict[str, dsl.PythonComponent]":
    """All hpo components for your image: ``hpo_tune``, ``check_environment``, ``train_model``,
    ``validate_model``, ``compare_studies``.

    Args:
        image: the container image with hpo installed, ``REGISTRY/NAME:TAG``.

    Raises:
        hpo.errors.ConfigError: no image, or not an image reference.
    """
    build = dsl.component(base_image=check_image(image), install_kfp_package=False)
    return {name: build(fn) for name, fn in _FUNCS.items()}
