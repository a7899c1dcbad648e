"""Shared fixtures: real demo datasets (built once per session) and the real COCO8, vendored in tests/data/coco8."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Studies in tests draw no plots (about 5 s each) unless a test asks for them (tests/test_plots.py).
os.environ.setdefault("HPO_PLOTS", "0")

ROOT = Path(__file__).resolve().parents[1]
#: Ultralytics' COCO8 (the first 8 COCO train2017 images: 4 train, 4 val, 80 classes), vendored with its
#: README and LICENSE; its data.yaml says ``path: .``. The tests read only this copy (never a folder
#: beside the checkout: tests/test_fresh_clone.py).
COCO8 = ROOT / "tests" / "data" / "coco8" / "data.yaml"

#: Fixed train args that keep a trial to a few seconds on a 2-core CPU.
CLS_ARGS = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"}
DET_ARGS = {"imgsz": 64, "batch": 16, "workers": 0, "device": "cpu", "optimizer": "AdamW", "mosaic": 0.0}
#: A small space (the default one is tested on its own); lr0/momentum need an explicit optimizer.
SMALL_SPACE = {"lr0": (1e-4, 1e-2), "momentum": (0.7, 0.98, 0.3), "hsv_v": (0.0, 0.9), "close_mosaic": (0, 10)}


@pytest.fixture(scope="session")
def digits_cls(tmp_path_factory) -> Path:
    """digits-cls as it was before ``hpo datasets make`` wrote a test split (1,402 train / 395 val,
    no test/), so the values the suite measures on it stay as they were."""
    from hpo.datasets import make_digits_cls

    return make_digits_cls(tmp_path_factory.mktemp("data") / "digits-cls", seed=0, val_fraction=0.22, test_fraction=0.0)


@pytest.fixture(scope="session")
def digits_cls_test(tmp_path_factory) -> Path:
    """digits-cls as ``hpo datasets make digits-cls`` writes it: 1,079 train / 359 val / 359 test."""
    from hpo.datasets import make_digits_cls

    return make_digits_cls(tmp_path_factory.mktemp("data") / "digits-cls-test", seed=0)


@pytest.fixture(scope="session")
def digits_det(tmp_path_factory) -> Path:
    from hpo.datasets import make_digits_det

    return make_digits_det(tmp_path_factory.mktemp("data") / "digits-det", seed=0, n_train=32, n_val=8)


@pytest.fixture(scope="session")
def coco8(tmp_path_factory) -> Path:
    """The data.yaml of a copy of :data:`COCO8` in a temporary folder (made once per session), so
    that Ultralytics' label caches (``labels/*.cache``) never land in the checkout."""
    if not COCO8.is_file():
        pytest.fail(f"the vendored COCO8 dataset is missing at {COCO8}; restore tests/data/coco8 from git")
    copy = tmp_path_factory.mktemp("data") / "coco8"
    shutil.copytree(COCO8.parent, copy)
    return (copy / "data.yaml").resolve()  # tmp may be reached through a symlink


@pytest.fixture
def read_only(tmp_path):
    """``(src, ro)``: a folder and a read-only bind mount of it (as a read-only PVC or NFS export is); needs root."""
    src, dst = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    dst.mkdir()
    if os.geteuid() != 0:
        pytest.fail("a read-only bind mount needs root (CI runs as root)")
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
        yield src, dst
    finally:
        subprocess.run(["umount", str(dst)], check=True)


def hpo_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``hpo`` command (``python -m hpo.cli``) and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def kv(args: dict) -> list[str]:
    """``{"imgsz": 32}`` -> ``["imgsz=32"]``."""
    return [f"{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server of the session (tests/engines.py), stopped by pid at the end;
    ``postgres.database()`` gives a fresh database's ``postgresql://`` URL."""
    from engines import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head (``ray start --head``, token authentication, 2 CPUs) of the session
    (tests/engines.py), stopped by the pids of its processes at the end."""
    from engines import RayHead

    head = RayHead(num_cpus=2).start()
    try:
        yield head
    finally:
        head.stop()
