"""A call shaped like Ultralytics' ``model.tune``: :func:`tune`.

Ultralytics users tune with ``model.tune(data=..., epochs=..., iterations=..., space=...)`` on a
``YOLO`` object (``ultralytics/engine/model.py`` ``Model.tune`` and ``ultralytics/engine/tuner.py``
``Tuner``). :func:`tune` takes the same object (or a model name) and the same keyword names, so
switching is one line::

    model.tune(data="coco8.yaml", epochs=30, iterations=300, optimizer="AdamW", imgsz=640)
    hpo.tune(model, data="coco8.yaml", epochs=30, iterations=300, optimizer="AdamW", imgsz=640)

How the keywords of ``model.tune`` map to hpo (:func:`tune_settings`):

- ``iterations`` (default 300, as ``model.tune``), ``data``, ``epochs`` (default: Ultralytics'
  ``default.yaml``, 100), ``space`` (Ultralytics' ``{key: (low, high[, gain])}`` form, or any form
  :meth:`hpo.SearchSpace.parse` reads) and ``resume`` are the study's;
- ``project`` and ``name`` (the folder ``model.tune`` writes to, ``project/name``) are the study's
  ``output`` and ``name``;
- ``use_ray=True`` picks hpo's ``ray`` backend (default: ``ultralytics``, the same genetic
  mutation as ``model.tune``); ``gpu_per_trial``, ``grace_period`` and ``search_alg`` (a name; Ultralytics' ``run_ray_tune``)
  are the ray backend's ``gpus_per_trial``, ``grace_period`` and ``search_alg`` options;
- ``optimizer`` defaults to ``AdamW`` unless the space tunes it, as ``model.tune`` does;
- every other Ultralytics train argument (``imgsz``, ``batch``, ``device``, ``seed``, ``plots``,
  ``verbose``...) is a fixed train arg of every trial, with the ``YOLO`` object's own
  ``overrides`` under them (as ``model.tune`` merges them);
- hpo's own settings that no train argument spells the same (``backend``, ``time_budget``,
  ``concurrent_trials``, ``backend_options``, ``metric``, ``trial_timeout``, ``final_epochs``...)
  are taken as keywords too; ``settings={...}`` gives any of them, also those spelled like a train
  argument (``settings={"seed": 1}`` seeds the sampler; ``seed=1`` is the train arg).

What differs, on purpose: without ``space`` the search space is hpo's default for the model's task
(the keys of Ultralytics' tuner space its trainer reads; ``space="ultralytics"`` for all 26); the
study is hpo's study directory (``output/name``, default ``runs/hpo/<data>-<backend>``, resumable,
one record per trial) rather than ``runs/<task>/tune``; trials train from the model's file (its
``.pt`` or its YAML), not from weights changed in memory and never saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, closest
from .result import TuneResult
from .settings import TuneSettings, specs
from .tuner import Tuner

__all__ = ["tune", "tune_settings", "TUNE_DEFAULT_ITERATIONS"]

#: ``model.tune``'s default number of iterations (``Model.tune(iterations=300)``).
TUNE_DEFAULT_ITERATIONS = 300
#: Keywords of ``model.tune`` / Ultralytics' ``Tuner`` that are not train arguments.
_TUNE_ONLY = ("use_ray", "iterations", "space", "grace_period", "gpu_per_trial", "search_alg")
#: Train-argument spellings that ``model.tune`` reads for the tuning run itself.
_STUDY_ARGS = {"data": "data", "epochs": "epochs", "name": "name", "project": "output", "resume": "resume"}
#: Train arguments hpo sets itself (the task from the model; the mode is always train).
_DROPPED = ("model", "task", "mode")
#: ``model.tune``'s MongoDB sharing; hpo shares a study between processes with ``join``.
_MONGODB = ("mongodb_uri", "mongodb_db", "mongodb_collection")


def _model_path(model: Any) -> tuple[str, dict[str, Any]]:
    """``(model name or path, the YOLO object's overrides)`` of a model name or an Ultralytics ``Model``."""
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        return str(model), {}
    overrides = getattr(model, "overrides", None)
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"model: {type(model).__name__} is neither a model name nor an Ultralytics YOLO object; "
            'give YOLO("yolov8n.yaml"), a model YAML or a local .pt'
        )
    source = getattr(model, "ckpt_path", None) or getattr(model, "cfg", None) or overrides.get("model")
    if not source:
        raise ConfigError(
            "model: this YOLO object has no file (no .pt it was loaded from, no YAML it was built from), "
            "and hpo trains every trial from a file; save it with model.save('model.pt') and pass that"
        )
    return str(source), dict(overrides)


def tune_settings(
    model: Any,
    *,
    use_ray: bool = False,
    iterations: int = TUNE_DEFAULT_ITERATIONS,
    settings: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> TuneSettings:
    """The :class:`hpo.TuneSettings` that :func:`tune` runs with (the mapping in the module docstring).

    Args and Raises: as :func:`tune`.
    """
    from . import ultra

    path, overrides = _model_path(model)
    for key in _MONGODB:
        if key in kwargs:
            raise ConfigError(
                f"{key}: hpo.tune() keeps the study on a volume, not in MongoDB; to tune from several processes "
                "use backend='optuna' and start the others with join=True on the same output and name"
            )
    train_keys = set(ultra.train_defaults())
    setting_names = {s.name for s in specs()}
    values: dict[str, Any] = {"backend": "ray" if use_ray else "ultralytics", "iterations": iterations, "verbose": True}
    train_args: dict[str, Any] = {k: v for k, v in overrides.items() if k not in _DROPPED and k not in _STUDY_ARGS}
    options: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _STUDY_ARGS:
            values[_STUDY_ARGS[key]] = value
        elif key == "space":
            values["space"] = value
        elif key in ("gpu_per_trial", "grace_period", "search_alg"):  # run_ray_tune's: the ray backend's options
            options["gpus_per_trial" if key == "gpu_per_trial" else key] = value
        elif key in _DROPPED:
            continue
        elif key in train_keys:
            train_args[key] = value
        elif key in setting_names and key not in ("model", "train_args", "trainer_options"):
            values[key] = value
        else:
            names = sorted(train_keys | setting_names | set(_TUNE_ONLY) | {"project", "settings"})
            raise TypeError(f"hpo.tune() got an unexpected keyword argument {key!r}{closest(key, names)}")
    if "data" not in values and "data" in overrides:
        values["data"] = overrides["data"]
    if "data" not in values:
        raise TypeError("hpo.tune() missing required keyword argument: 'data' (as model.tune needs it)")
    if isinstance(values["data"], (list, tuple)):
        raise ConfigError(f"data: {values['data']!r}: hpo tunes on one dataset per study; give one data YAML or folder")
    values.setdefault("epochs", ultra.train_defaults()["epochs"])
    space = values.get("space")
    if "optimizer" not in train_args and not (isinstance(space, Mapping) and "optimizer" in space):
        train_args["optimizer"] = "AdamW"  # as Model.tune: kwargs.setdefault("optimizer", "AdamW")
    if options:
        values["backend_options"] = {**options, **dict(values.get("backend_options") or {})}
    given = dict(settings or {})
    bad = [k for k in given if k not in setting_names]
    if bad:
        raise TypeError(f"hpo.tune() settings: {bad[0]!r} is no setting of hpo.Tuner{closest(bad[0], setting_names)}")
    if "train_args" in given:
        train_args.update(given.pop("train_args") or {})
    return TuneSettings(model=path, train_args=train_args, **{**values, **given})


def tune(
    model: Any,
    *,
    use_ray: bool = False,
    iterations: int = TUNE_DEFAULT_ITERATIONS,
    settings: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> TuneResult:
    """Tune like ``model.tune(...)``, with hpo's study: the same model and keyword names.

    Example:
        >>> from ultralytics import YOLO
        >>> import hpo
        >>> model = YOLO("yolov8n.yaml")
        >>> # model.tune(data="coco8.yaml", epochs=10, iterations=20, imgsz=320) becomes
        >>> result = hpo.tune(model, data="coco8.yaml", epochs=10, iterations=20, imgsz=320)
        >>> result.best_params, result.best_objective, result.study_dir

    Args:
        model: an Ultralytics ``YOLO`` (``Model``) object, built from a YAML or loaded from a local
            ``.pt`` (hpo trains every trial from that file), or a model name/path as
            :class:`hpo.Tuner` takes it.
        use_ray: ``model.tune``'s switch to Ray Tune: hpo's ``ray`` backend (default: the
            ``ultralytics`` backend, ``model.tune``'s genetic mutation).
        iterations: total finished trials of the study (``model.tune``'s default, 300).
        settings: any :class:`hpo.TuneSettings` fields, applied last (also those spelled like a
            train argument, e.g. ``{"seed": 1}`` for the sampler's seed).
        **kwargs: ``model.tune``'s keywords: ``data`` (required), ``epochs``, ``space``, ``project``,
            ``name``, ``resume``, ``gpu_per_trial``, ``grace_period``, ``search_alg`` and any Ultralytics train argument (fixed for
            every trial); hpo's settings that no train argument spells (``backend``,
            ``time_budget``, ``concurrent_trials``, ``backend_options``...).

    Returns:
        :class:`hpo.TuneResult`: what ``model.tune`` gives (the best hyperparameters, in
        ``best_params``; the best weights, ``best_weights``; the folder, ``study_dir``; with the
        ``ultralytics`` backend also ``<study>/ultralytics/best_hyperparameters.yaml`` and
        ``tune_results.ndjson``) plus hpo's study: every trial (``trials``), its objective and
        counts. ``model.tune`` itself returns ``None`` (or Ray's ``ResultGrid`` with ``use_ray``).

    Raises:
        TypeError: a keyword that is neither a ``model.tune`` keyword, a train argument nor an hpo
            setting (naming the closest one), or no ``data``.
        hpo.errors.ConfigError: bad input, before any trial (as :class:`hpo.Tuner`); MongoDB keywords, several datasets.
        hpo.errors.RunFailedError: no trial completed (as :meth:`hpo.Tuner.run`).
    """
    return Tuner(tune_settings(model, use_ray=use_ray, iterations=iterations, settings=settings, **kwargs)).run()
