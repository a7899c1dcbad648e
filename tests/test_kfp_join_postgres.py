"""Joined KFP workers under ``kfp.local``: a ``ParallelFor`` of ``hpo tune --join`` tasks on one
study whose Optuna storage is the session's real PostgreSQL server, its URL read from the
environment the way a pod gets it from a Secret (``HPO_OPTUNA_STORAGE``).

kfp.local 2.17 runs the iterations of a ParallelFor one after another (checked: two 3 s tasks
ran back to back), so here the first task to run creates the study and runs it to the total and
the second joins a finished study; that processes joined to one study on PostgreSQL run
trials together is tested in tests/test_scale_postgres.py. This test covers the pipeline's
wiring: the workers' join decision, the storage URL from the environment, one study at the end.
Budget: about 40 s alone on 2 cores (3 trials of digits-cls at 32 px, 1 epoch).
"""

# no `from __future__ import annotations`: KFP reads the component signature's real types

import json
from pathlib import Path

import pytest
from kfp import dsl

TRAIN = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "SGD", "fraction": 0.2}


@dsl.component(base_image="python:3.11")
def joined_optuna_worker(worker: int, output: str, name: str, data: str, iterations: int, train_args: str) -> str:
    """The first worker to start creates the study, every later one ``--join``s it (in a cluster
    the joiners start while it runs). The Optuna storage URL comes from env ``HPO_OPTUNA_STORAGE``
    (a Secret in a pod). ``worker`` only names the task."""
    import json
    import os
    import subprocess
    import sys

    join = os.path.isfile(os.path.join(output, name, "study.json"))
    cmd = [
        sys.executable,
        "-m",
        "hpo.cli",
        "tune",
        "--backend",
        "optuna",
        "--storage",
        os.environ["HPO_OPTUNA_STORAGE"],
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        data,
        "--iterations",
        str(iterations),
        "--epochs",
        "1",
        "--output",
        output,
        "--name",
        name,
        "--pruner",
        "none",
        "--seed",
        "0",
        "--quiet",
        "--json",
        "--no-mlflow",
        *(["--join"] if join else []),
        *[f"{k}={v}" for k, v in json.loads(train_args).items()],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"hpo tune exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def make_pipeline(storage: str):
    @dsl.pipeline(name="hpo-optuna-joined")
    def joined(output: str, name: str, data: str, iterations: int, train_args: str):
        with dsl.ParallelFor(items=[0, 1]) as worker:
            task = joined_optuna_worker(
                worker=worker, output=output, name=name, data=data, iterations=iterations, train_args=train_args
            )
            task.set_env_variable("HPO_OPTUNA_STORAGE", storage)  # kubernetes.use_secret_as_env in a cluster
            task.set_caching_options(False)

    return joined


@pytest.mark.slow
def test_parallel_for_of_joined_workers_on_postgres(tmp_path, postgres, digits_cls):
    from kfp import local

    from hpo import Study

    optuna = pytest.importorskip("optuna")
    url, name, n = postgres.database("kfp"), "kfp-joined", 3
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    out = tmp_path / "pvc" / "studies"
    make_pipeline(url)(
        output=str(out), name=name, data=str(digits_cls), iterations=n, train_args=json.dumps(TRAIN)
    )  # JSON: a KFP Struct makes ints floats

    study_dir = out / name
    records = Study.open(study_dir).records()
    assert sorted(records) == list(range(n)) and all(r.status.value == "complete" for r in records.values())
    files = sorted(p.name for p in study_dir.glob("trials*.jsonl"))
    assert files == ["trials.jsonl"], files  # the joined worker found the study finished: it ran no trial
    outs = [
        json.loads(json.loads(p.read_text())["parameterValues"]["Output"])
        for p in (tmp_path / "root").glob("hpo-optuna-joined-*/for-loop-*/joined-optuna-worker/executor_output.json")
    ]
    assert len(outs) == 2, outs  # both ParallelFor tasks ran and printed the study's result
    assert sorted(o["nothing_to_do"] for o in outs) == [False, True]
    assert all(o["study_dir"] == str(study_dir) and o["counts"]["complete"] == n for o in outs)
    ostudy = optuna.load_study(study_name=name, storage=url)
    assert sorted(t.state.name for t in ostudy.trials) == ["COMPLETE"] * n
    assert Path(study_dir / "best.yaml").is_file()
