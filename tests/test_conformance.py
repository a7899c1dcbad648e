"""Every built-in backend passes the shared conformance suite (hpo.testing.BackendConformance)."""

from hpo.testing import BackendConformance


class TestUltralyticsConformance(BackendConformance):
    backend = "ultralytics"


class TestOptunaConformance(BackendConformance):
    backend = "optuna"


class TestRayConformance(BackendConformance):
    backend = "ray"
    options = ("--num-cpus", "2")
