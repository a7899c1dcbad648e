"""Every built-in backend passes the shared conformance suite (hpo.testing.BackendConformance)."""

from hpo.testing import TRAIN_ARGS, BackendConformance


class TestUltralyticsConformance(BackendConformance):
    backend = "ultralytics"


class TestOptunaConformance(BackendConformance):
    backend = "optuna"
    no_pruning = ("--pruner", "none")


class TestRayConformance(BackendConformance):
    backend = "ray"
    options = ("--num-cpus", "2")
    train_args = TRAIN_ARGS  # Ray assigns the device
    no_pruning = ("--scheduler", "fifo")
