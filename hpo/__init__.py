"""hpo: pluggable hyperparameter optimization for Ultralytics YOLO.

Public API::

    from hpo import Tuner, SearchSpace
    result = Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data="digits-cls/",
                   iterations=4, epochs=2, train_args={"imgsz": 32}).run()

Heavy libraries (torch, ultralytics, optuna, ray, mlflow) are imported only where used.
"""

from __future__ import annotations

from .backend import Backend, BackendOptions, Controller, Suggestion, TrialRecorder
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
from .files import WRITE_ERRNOS, atomic_write_text, repair_jsonl, volume_error
from .hookspecs import hookimpl
from .redact import mask_secrets, mask_text
from .space import Kind, Param, SearchSpace
from .study import Study, TrialRecord, TrialStatus
from .trial import TrialOutcome, TrialSpec, train_trial
from .tuner import StudyLoop, Tuner, TuneResult

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
    "Suggestion",
    "Controller",
    "TrialRecorder",
    "TrialSpec",
    "TrialOutcome",
    "train_trial",
    "hookimpl",
    "mask_text",
    "mask_secrets",
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
    "atomic_write_text",
    "volume_error",
    "WRITE_ERRNOS",
    "HpoWarning",
    "__version__",
]
