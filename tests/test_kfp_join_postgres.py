"""Joined KFP workers under ``kfp.local``: a ``ParallelFor`` of ``hpo tune --join`` tasks on one
study whose Optuna storage is the session's real PostgreSQL server, its URL read from the
environment the way a pod gets it from a Secret (``HPO_OPTUNA_STORAGE``).

kfp.local runs the iterations of a ParallelFor in parallel threads (2 at most), each task a
subprocess. Budget: about 1 minute alone on 2 cores (4 trials of digits-cls at 32 px, 1 epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfp import dsl

TRAIN = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "SGD", "fraction": 0.2}


@dsl.component
def joined_optuna_worker(worker: int, output: str, name: str, data: str, iterations: int, train_args: dict) -> str:
    """Worker 0 creates the study; the others wait for its study.json, then ``--join``. The
    Optuna storage URL comes from env ``HPO_OPTUNA_STORAGE`` (a Secret in a pod)."""
    import os
    import subprocess
    import sys
    import time

    join = worker > 0
    if join:
        deadline = time.time() + 600
        while not os.path.isfile(os.path.join(output, name, "study.json")):
            if time.time() > deadline:
                raise RuntimeError("the study was not created within 600 s")
            time.sleep(0.5)
    cmd = [sys.executable, "-m", "hpo.cli", "tune", "--backend", "optuna", "--storage", os.environ["HPO_OPTUNA_STORAGE"],
           "--model", "yolov8n-cls.yaml", "--data", data, "--iterations", str(iterations), "--epochs", "1",
           "--output", output, "--name", name, "--pruner", "none", "--seed", "0", "--quiet", "--json", "--no-mlflow",
           *(["--join"] if join else []), *[f"{k}={v}" for k, v in train_args.items()]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"hpo tune exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def make_pipeline(storage: str):
    @dsl.pipeline(name="hpo-optuna-joined")
    def joined(output: str, name: str, data: str, iterations: int, train_args: dict):
        with dsl.ParallelFor(items=[0, 1]) as worker:
            task = joined_optuna_worker(worker=worker, output=output, name=name, data=data, iterations=iterations,
                                        train_args=train_args)
            task.set_env_variable("HPO_OPTUNA_STORAGE", storage)  # kubernetes.use_secret_as_env in a cluster
            task.set_caching_options(False)

    return joined


@pytest.mark.slow
def test_parallel_for_of_joined_workers_on_postgres(tmp_path, postgres, digits_cls):
    from kfp import local

    from hpo import Study

    optuna = pytest.importorskip("optuna")
    url, name, n = postgres.database("kfp"), "kfp-joined", 4
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    out = tmp_path / "pvc" / "studies"
    make_pipeline(url)(output=str(out), name=name, data=str(digits_cls), iterations=n, train_args=TRAIN)

    study_dir = out / name
    records = Study.open(study_dir).records()
    assert sorted(records) == list(range(n)) and all(r.status.value == "complete" for r in records.values())
    files = sorted(p.name for p in study_dir.glob("trials*.jsonl"))
    assert "trials.jsonl" in files and len(files) == 2, files  # both workers wrote records: they ran together
    owners: dict[int, set[str]] = {}
    for f in files:
        for line in (study_dir / f).read_text().splitlines():
            owners.setdefault(json.loads(line)["id"], set()).add(f)
    assert all(len(v) == 1 for v in owners.values()), owners
    ostudy = optuna.load_study(study_name=name, storage=url)
    assert sorted(t.state.name for t in ostudy.trials) == ["COMPLETE"] * n
    assert Path(study_dir / "best.yaml").is_file()
