"""hpo's Kubeflow Pipelines (v2) step, platform helper and example pipelines.

Add the tuning step to an existing pipeline::

    from pipelines import hpo_tune, configure_tuning_task

    tune = hpo_tune(model="yolov8n.yaml", data="datasets/coco8/data.yaml", iterations=20, epochs=10)
    configure_tuning_task(tune, pvc_name=pvc_name, accelerator_count=1)

The component YAML ``pipelines/hpo_tune_component.yaml`` is the same component for
``kfp.components.load_component_from_file``. See docs/kfp.md.
"""

import importlib
from typing import Any

# Names are resolved lazily: the component code imports ``pipelines.step`` inside a running
# KFP executor, where importing the kfp DSL again (through .components) must not happen.
_LAZY = {
    "DEFAULT_IMAGE": "components",
    "PUBLISHED_IMAGE": "components",
    "hpo_tune": "components",
    "make_tune_component": "components",
    "make_components": "components",
    "check_environment": "components",
    "train_baseline": "components",
    "compare_studies": "components",
    "configure_tuning_task": "platform",
    "ACCELERATOR_COUNTS": "platform",
    "SECRET_ENV_KEYS": "platform",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pipelines' has no attribute '{name}'")
