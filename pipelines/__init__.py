"""hpo's Kubeflow Pipelines (v2) step, platform helper and example pipelines (import name ``hpo_kfp``).

Installed with ``pip install "hpo-yolo[kfp]"`` (no torch, Ultralytics, Ray or MLflow needed to
compile a pipeline). Add the tuning step to an existing pipeline::

    from hpo_kfp import make_tune_component, configure_tuning_task

    hpo_tune = make_tune_component(image="registry.example.com/team/hpo:0.1.0")   # your image
    tune = hpo_tune(model="yolov8n.yaml", data="datasets/coco8/data.yaml", iterations=20, epochs=10)
    configure_tuning_task(tune, pvc_name=pvc_name, accelerator_count=1)

``hpo_kfp.make_pick_component`` hands the tuned values to an existing training component's own
typed inputs (docs/kfp.md, "Handing the tuned values on").

``hpo_kfp.hpo_tune`` (and ``check_environment``, ``train_model``, ``validate_model``,
``compare_studies``) are the components for the image in ``$HPO_IMAGE``; without it they raise
:class:`hpo.errors.ConfigError`. See docs/kfp.md.
"""

import importlib
from typing import Any

# Names are resolved lazily: the component code imports ``hpo_kfp.step`` inside a running KFP
# executor, where importing the kfp DSL again (through .components) must not happen.
_LAZY = {
    "IMAGE_ENV": "components",
    "check_image": "components",
    "make_tune_component": "components",
    "make_components": "components",
    "make_pick_component": "pick",
    "configure_tuning_task": "platform",
    "ACCELERATOR_COUNTS": "platform",
    "SECRET_ENV_KEYS": "platform",
    "GPU_TOLERATION": "platform",
    "make_pipelines": "examples",
    "compile_all": "examples",
}
#: Components built for the image in ``$HPO_IMAGE`` when first used.
_FROM_ENV = ("hpo_tune", "check_environment", "train_model", "validate_model", "compare_studies")

# the components built from $HPO_IMAGE are left out, so that ``from hpo_kfp import *`` needs no image
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _FROM_ENV:
        components = importlib.import_module(".components", __name__)
        return components.make_components(components.image_from_env())[name]
    raise AttributeError(f"module 'hpo_kfp' has no attribute '{name}'")
