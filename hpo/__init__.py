"""hpo: pluggable hyperparameter optimization for Ultralytics YOLO.

Public API::

    from hpo import Tuner, SearchSpace
    result = hpo.tune(YOLO("yolov8n.yaml"), data="coco8.yaml", epochs=10, iterations=20)  # model.tune's twin
    result = Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data="digits-cls/",
                   iterations=4, epochs=2, train_args={"imgsz": 32}).run()

``hpo.__all__`` is the public API: the Tuner and its settings and result, the search space, the
study and its records, and the contract that backends, controllers and observers receive
(:class:`Backend`, :class:`Controller`, :class:`TuneConfig`, :class:`StudyView`,
:class:`TrialRecorder`, :class:`TunerCallback`). These submodules are public too, each through its
own ``__all__`` (plugins, ``hpo_kfp`` and ``hpo_bench`` use nothing else of hpo; see
``tests/test_plugin_api.py``): :mod:`hpo.settings` (the settings' declarations: CLI and KFP
spellings), :mod:`hpo.plugins` (the plugin registry), :mod:`hpo.testing` (the
backend kits), :mod:`hpo.report` (study summaries), :mod:`hpo.show` (``hpo show``'s text),
:mod:`hpo.files` (atomic writes and volume errors, for a plugin's own files on the study's volume), :mod:`hpo.extras` (optional
dependencies), :mod:`hpo.preflight` (pod checks), :mod:`hpo.pretrained` (the opt-in download of official
weights), :mod:`hpo.data` and :mod:`hpo.ultra` (datasets
and models as Ultralytics reads them), :mod:`hpo.datasets` (the demo datasets),
:mod:`hpo.simulate` and :mod:`hpo.clock` (simulated trials and time). Everything else is internal.

Heavy libraries (torch, ultralytics, optuna, ray, mlflow) are imported only where used.
"""

from __future__ import annotations

from . import log as log  # first: the ``hpo`` logger's default handler (hpo.log)
from .backend import Backend, BackendOptions, Controller, StudyView, Suggestion, TrialRecorder
from .callbacks import TunerCallback
from .config import TuneConfig
from .errors import (
    BackendNotFoundError,
    ConfigError,
    DataError,
    EngineError,
    HpoError,
    HpoWarning,
    RunFailedError,
    SettingsChangedError,
    SpaceError,
    StudyError,
    StudyLockedError,
    TrialLostError,
    VolumeError,
)
from .final import FinalCandidate, FinalRecord, FinalResult, train_final
from .hookspecs import hookimpl
from .model_tune import tune
from .redact import has_secret, mask_secrets, mask_text
from .result import TuneResult
from .settings import TuneSettings
from .space import Kind, Param, SearchSpace
from .study import Study, TrialRecord, TrialStatus
from .trial import TrialOutcome, TrialSpec, train_trial
from .tuner import Tuner

__version__ = "0.1.0"

__all__ = [
    "Tuner",
    "tune",
    "TuneSettings",
    "TuneResult",
    "TunerCallback",
    "SearchSpace",
    "Param",
    "Kind",
    "Study",
    "StudyView",
    "TrialRecord",
    "TrialStatus",
    "TuneConfig",
    "Backend",
    "BackendOptions",
    "Suggestion",
    "Controller",
    "TrialRecorder",
    "TrialSpec",
    "TrialOutcome",
    "train_trial",
    "train_final",
    "FinalCandidate",
    "FinalRecord",
    "FinalResult",
    "hookimpl",
    "mask_text",
    "mask_secrets",
    "has_secret",
    "HpoError",
    "ConfigError",
    "SpaceError",
    "DataError",
    "BackendNotFoundError",
    "StudyError",
    "StudyLockedError",
    "SettingsChangedError",
    "RunFailedError",
    "VolumeError",
    "EngineError",
    "TrialLostError",
    "HpoWarning",
    "__version__",
]
