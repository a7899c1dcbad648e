"""hpo: pluggable hyperparameter optimization for Ultralytics YOLO.

Public API::

    from hpo import Tuner, SearchSpace
    result = Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data="digits-cls/",
                   iterations=4, epochs=2, train_args={"imgsz": 32}).run()

Heavy libraries (torch, ultralytics, optuna, ray, mlflow) are imported only where used.
"""

from __future__ import annotations

from .backend import Backend, BackendOptions
from .callbacks import TunerCallback
from .errors import (
    BackendNotFound,  # deprecated alias of BackendNotFoundError
    BackendNotFoundError,
    ConfigError,
    DataError,
    HpoError,
    HpoWarning,
    RunFailed,  # deprecated alias of RunFailedError
    RunFailedError,
    SpaceError,
    StudyError,
    StudyLocked,  # deprecated alias of StudyLockedError
    StudyLockedError,
    VolumeError,
)
from .files import repair_jsonl
from .hookspecs import hookimpl
from .space import Kind, Param, SearchSpace
from .study import Study, TrialRecord, TrialStatus
from .tuner import StudyLoop, TuneResult, Tuner

__version__ = "0.1.0"

__all__ = [
    "Tuner",
    "TuneResult",
    "TunerCallback",
    "StudyLoop",
    "SearchSpace",
    "Param",
    "Kind",
    "Study",
    "TrialRecord",
    "TrialStatus",
    "Backend",
    "BackendOptions",
    "hookimpl",
    "HpoError",
    "ConfigError",
    "SpaceError",
    "DataError",
    "BackendNotFoundError",
    "StudyError",
    "StudyLockedError",
    "RunFailedError",
    "VolumeError",
    "BackendNotFound",
    "StudyLocked",
    "RunFailed",
    "repair_jsonl",
    "HpoWarning",
    "__version__",
]
