"""Every backend passes the shared conformance suite (hpo.testing.BackendConformance): the three
built-in ones and the example third-party backend of docs/backends.md, installed through its
entry point (tests/plugins)."""

import os
from pathlib import Path

from hpo.testing import LINEAR_SPACE, TRAIN_ARGS, BackendConformance

PLUGINS = Path(__file__).parent / "plugins"


class TestUltralyticsConformance(BackendConformance):
    backend = "ultralytics"
    space = LINEAR_SPACE  # the native mutation searches linear ranges only
    prunes = False  # the native tuner has no early stopping


class TestOptunaConformance(BackendConformance):
    backend = "optuna"
    no_pruning = ("--pruner", "none")
    joins = True


class TestRayConformance(BackendConformance):
    backend = "ray"
    options = ("--num-cpus", "2")
    train_args = TRAIN_ARGS  # Ray assigns the device
    no_pruning = ("--scheduler", "fifo")
    budget_s = 30.0  # a local Ray takes 10-20 s to start on 2 cores, inside the budget
    real_smoke = False  # tests/test_backend_ray.py trains real trials under ASHA (the smoke test)


class TestThirdPartyConformance(BackendConformance):
    backend = "median-random"
    env = {"PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
