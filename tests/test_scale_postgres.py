"""Optuna on a real PostgreSQL server (the session's ``postgres`` fixture, tests/engines.py).

Three joined processes on one study, one of them SIGKILLed mid-trial: the survivors re-run its
trial, no ``--resume``. Their trials are hpo's simulated trainer (``HPO_TRAINER``: 2 epochs of 4 s,
the real trial workers, records, storage and MLflow runs; only the training is simulated): what is
tested is the processes, PostgreSQL and the study; joined processes training for real on
PostgreSQL are tests/test_kfp_join_postgres.py's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from engines import kill_groups, record_lines, start_hpo, tune_argv, wait_until

from hpo import Study, TrialStatus

optuna = pytest.importorskip("optuna")

TRAIN = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "SGD", "fraction": 0.2}
SPACE = {"lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-1}, "momentum": (0.6, 0.98)}


def tune_args(
    data: Path, out: Path, name: str, storage: str, iterations: int, epochs: int = 1, mlflow: bool = False
) -> list[str]:
    return tune_argv(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=data,
        iterations=iterations,
        epochs=epochs,
        output=out,
        name=name,
        pruner="none",
        storage=storage,
        space=SPACE,
        quiet=True,
        json=True,
        mlflow=mlflow,
        train=TRAIN,
    )


# --- fast: a storage that cannot be opened is refused before the study directory exists


@pytest.mark.parametrize("case", ["no-driver", "refused", "no-database"])
def test_unopenable_storage_exit_2_before_the_study_dir(tmp_path, monkeypatch, postgres, digits_cls, case):
    from typer.testing import CliRunner

    from hpo.cli import app

    base = postgres.url.rsplit("/", 1)[0]
    fake = "pw" + "9" * 6  # made at run time: nothing credential-shaped is committed
    url, words = {
        "no-driver": (f"{base}/x", ["postgresql://", "'psycopg'", "not installed", "pip install 'hpo-yolo[postgres]'"]),
        "refused": ("postgresql://postgres:" + fake + "@127.0.0.1:1/x", ["cannot open", "Connection refused", "***"]),
        "no-database": (f"{base}/nosuchdb", ["cannot open", 'database "nosuchdb" does not exist']),
    }[case]
    if case == "no-driver":
        monkeypatch.setitem(sys.modules, "psycopg", None)  # this interpreter as one without the postgres extra
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "studies"
    res = CliRunner().invoke(app, tune_args(digits_cls, out, "bad", url, 2))
    assert res.exit_code == 2, (res.output, res.exception)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert fake not in err  # the password is masked
    assert not out.exists()


# --- real training


@pytest.mark.slow
def test_three_joined_processes_one_killed_its_trial_rerun_without_resume(tmp_path, postgres, digits_cls, monkeypatch, request):
    from test_tracking import MlflowServer

    url, n, name = postgres.database("join3"), 6, "pg3"
    out = tmp_path / "studies"
    study_dir = out / name
    mlflow_server = MlflowServer(tmp_path / "mlflow").start()  # every process tracks to one real server
    request.addfinalizer(mlflow_server.stop)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    # 2 epochs of 4 s per trial: a trial outlasts a joining process's start-up (imports, checks: ~8 s here)
    args = tune_args(digits_cls, out, name, url, n, epochs=2, mlflow=True)
    sim = {"HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_TRAINER_OPTIONS": json.dumps({"epoch_s": 4.0})}
    first = start_hpo([*args, "--seed", "0"], cwd=tmp_path, env=sim)
    procs = [first]
    try:
        wait_until(lambda: (study_dir / "study.json").is_file(), procs, "the study to be created", timeout=300, poll=0.3)
        second = start_hpo([*args, "--join"], cwd=tmp_path, env=sim)  # started at once
        procs.append(second)
        # the third joins later: once the first process's first trial has started
        wait_until(lambda: bool(record_lines(study_dir / "trials.jsonl")), procs, "the first trial", timeout=300, poll=0.3)
        third = start_hpo([*args, "--join"], cwd=tmp_path, env=sim)
        procs.append(third)
        own = study_dir / f"trials.{os.uname().nodename}-{third.pid}.jsonl"

        def third_running() -> bool:  # a trial of the third process one epoch in (its MLflow run made)
            state: dict[int, dict] = {}
            for r in record_lines(own):
                state[r["id"]] = r
            return any(r["status"] == "running" and r.get("epochs") for r in state.values())

        wait_until(third_running, procs, "a trial of the third process", timeout=300, poll=0.3)
        before_kill = {r.id: r for r in Study.open(study_dir).records().values() if r.status.finished}
        os.killpg(third.pid, signal.SIGKILL)  # the process and its trial worker: a preempted pod
        third.wait()
        lost = record_lines(own)
        killed_ids = {r["id"] for r in lost if r["status"] == "running"} - {r["id"] for r in lost if r["status"] != "running"}
        assert len(killed_ids) == 1, lost
        res1, res2 = first.communicate(timeout=600), second.communicate(timeout=600)
        assert first.returncode == 0, res1[1]
        assert second.returncode == 0, res2[1]
    finally:
        kill_groups(procs)

    # no --resume: a survivor re-ran the killed process's trial (same id, same params), once, and
    # the writer stayed until the study had its total
    (killed,) = killed_ids
    params = next(r["params"] for r in lost if r["id"] == killed)
    records = Study.open(study_dir).records()
    assert len(records) == n
    assert all(r.status is TrialStatus.COMPLETE for r in records.values()), {i: r.status for i, r in records.items()}
    assert records[killed].params == params
    assert json.loads(res1[0])["counts"]["complete"] == n
    assert f"trial {killed}: the process that ran it" in res1[1] + res2[1]
    for tid, r in before_kill.items():  # nothing completed is lost
        assert records[tid].status is r.status and records[tid].objective == r.objective
    files = sorted(p.name for p in study_dir.glob("trials*.jsonl"))
    assert len(files) == 3, files  # one record file per process
    assert record_lines(own) == lost  # the dead process's file is as it left it
    finished_in: dict[int, list[str]] = {}
    for f in files:
        for r in record_lines(study_dir / f):
            if r["status"] == "complete":
                finished_in.setdefault(r["id"], []).append(f)
    assert sorted(finished_in) == sorted(records) and all(len(v) == 1 for v in finished_in.values()), finished_in
    assert finished_in[killed] != [own.name]
    best = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert len(list(study_dir.glob("best*.yaml"))) == 1
    top = max(records.values(), key=lambda r: r.objective)  # accuracy_top1: maximised
    assert best["objective"] == pytest.approx(top.objective)

    # MLflow: one parent run for the study, every trial's run nested under it, each finished trial once
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(exp_ids, run_view_type=ViewType.ALL, max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpo.role") == "study"]
    assert len(parents) == 1, [r.data.tags for r in parents]
    children = [r for r in runs if r.data.tags.get("hpo.role") == "trial"]
    assert len(children) + 1 == len(runs)
    assert all(c.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for c in children)
    finished = [int(c.data.tags["hpo.trial_id"]) for c in children if c.info.status == "FINISHED"]
    assert sorted(finished) == sorted(records), [(c.data.tags.get("hpo.trial_id"), c.info.status) for c in children]
    # the killed process's run of its trial was ended when a survivor ran the trial again: nothing RUNNING
    others = sorted((c.info.status, c.data.tags["hpo.status"]) for c in children if c.info.status != "FINISHED")
    assert others == [("KILLED", "interrupted")], others
    assert [c.data.tags["hpo.trial_id"] for c in children if c.info.status == "KILLED"] == [str(killed)]

    # the Optuna study in PostgreSQL agrees: n COMPLETE trials (one per hpo id), the killed one's
    # first attempt FAIL, nothing left RUNNING
    ostudy = optuna.load_study(study_name=name, storage=url)
    states = {}
    for t in ostudy.trials:
        states.setdefault(t.user_attrs["hpo_trial_id"], []).append(t.state.name)
    assert sorted(states) == sorted(records)
    assert states[killed] == ["FAIL", "COMPLETE"], states[killed]
    assert all(v == ["COMPLETE"] for k, v in states.items() if k != killed), states
    assert not [t for t in ostudy.trials if t.state.name == "RUNNING"]
