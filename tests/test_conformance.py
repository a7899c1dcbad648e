"""Every backend passes the shared conformance suite (hpo.testing.BackendConformance): the three
built-in ones and the example third-party backend of docs/backends.md, installed through its
entry point (tests/plugins)."""

import os
from pathlib import Path

import pytest

from hpo.testing import LINEAR_SPACE, TRAIN_ARGS, BackendConformance

PLUGINS = Path(__file__).parent / "plugins"


class TestUltralyticsConformance(BackendConformance):
    backend = "ultralytics"
    space = LINEAR_SPACE  # the native mutation searches linear ranges only
    prunes = False  # early stopping (--pruner percentile) is off by default, as in the native tuner


class TestOptunaConformance(BackendConformance):
    backend = "optuna"
    no_pruning = ("--pruner", "none")
    joins = True


class TestRayConformance(BackendConformance):
    """On a Ray head of its own (token authentication, 2 CPUs; tests/engines.py) through
    ``--ray-address``, as on a cluster: each study connects in ~2 s where a local Ray starts in
    10-20 s on 2 cores (tests/test_backend_ray.py covers the local Ray)."""

    backend = "ray"
    train_args = TRAIN_ARGS  # Ray assigns the device
    no_pruning = ("--scheduler", "fifo")
    # connecting to the cluster and starting trial actors falls inside the budget (and again on resume:
    # 8 s left no time for a new trial on resume with two test workers on 2 cores); trials are 10 s
    budget_s = 22.0
    real_smoke = False  # tests/test_backend_ray.py trains real trials under ASHA (the smoke test)

    @pytest.fixture(scope="class")
    @classmethod
    def ray_head(cls):
        """A Ray head of this class alone (a shared one carried state into later tests' ASHA decisions)."""
        from engines import RayHead

        head = RayHead(num_cpus=2).start()
        try:
            yield head
        finally:
            head.stop()

    @pytest.fixture(autouse=True)
    def _on_the_head(self, ray_head, tmp_path: Path) -> None:
        self.options = ("--ray-address", ray_head.address)
        home = tmp_path / "home"  # nothing of this machine's ~/.ray
        home.mkdir()
        self.env = {"RAY_AUTH_TOKEN": ray_head.token, "HOME": str(home)}


class TestThirdPartyConformance(BackendConformance):
    backend = "median-random"
    env = {"PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
