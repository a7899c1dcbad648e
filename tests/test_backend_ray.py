"""The ray backend: real local Ray (2 CPUs), real Ultralytics training on digits-det at 64 px.

Slow tests run ``hpo tune --backend ray`` as a subprocess (a fresh driver each time, as a user or
a pod would), with ``HOME`` set to an empty folder so that anything Ray or hpo would write under
``~`` (``~/ray_results``) is seen.

The objective in the training tests is ``val/cls_loss`` (minimised): on 3 epochs from scratch,
digits-det's mAP50-95 is 0.0 for every trial, and ASHA never stops a trial tied with the cutoff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo import ConfigError
from hpo.tuner import objective_of
from hpo.validate import build_config

SPACE = json.dumps({"lr0": [0.0005, 0.05], "hsv_v": [0.0, 0.9], "close_mosaic": [0, 3]})
TRAIN = ["imgsz=64", "batch=16", "workers=0", "optimizer=AdamW", "mosaic=0"]


@pytest.fixture(scope="module")
def digits_det(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpo.datasets import make_digits_det

    return make_digits_det(tmp_path_factory.mktemp("data") / "det", seed=0)


def _hpo(args: list[str], *, cwd: Path, home: Path, timeout: float = 400, **popen: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen
    )


def _tune_args(data: str, output: Path, *, iterations: int, epochs: int, name: str, quiet: bool = True) -> list[str]:
    return [
        "tune",
        "--backend",
        "ray",
        "--model",
        "yolov8n.yaml",
        "--data",
        data,
        "--iterations",
        str(iterations),
        "--epochs",
        str(epochs),
        "--output",
        str(output),
        "--name",
        name,
        "--space",
        SPACE,
        "--seed",
        "0",
        "--metric",
        "val/cls_loss",
        *(["--quiet"] if quiet else []),
        *TRAIN,
        "--num-cpus",
        "2",
    ]


def _show(study: Path, home: Path) -> dict:
    out = _hpo(["show", str(study), "--json"], cwd=study, home=home)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _records(study: Path) -> dict:
    from hpo.study import Study

    return Study.open(study).records()


# --- fast: conversion and refusals before Ray starts
def test_param_space_same_bounds_and_types() -> None:
    from hpo import SearchSpace
    from hpo_ray._driver import param_space

    space = SearchSpace.parse(
        {
            "lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-2},
            "hsv_v": (0.0, 0.9),
            "close_mosaic": (0, 2),
            "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]},
        }
    )
    ray_space = param_space(space)
    samples = {k: [dom.sample() for _ in range(300)] for k, dom in ray_space.items()}
    assert all(1e-4 <= v <= 1e-2 for v in samples["lr0"])
    assert all(0.0 <= v <= 0.9 for v in samples["hsv_v"])
    assert set(samples["close_mosaic"]) == {0, 1, 2}  # the space's upper bound is inclusive
    assert all(isinstance(v, int) for v in samples["close_mosaic"])
    assert set(samples["optimizer"]) == {"SGD", "AdamW"}
    for i in range(300):
        space.validate_params({k: samples[k][i] for k in space})  # every sample fits the space


def test_refused_before_ray_starts(digits_det: Path, tmp_path: Path) -> None:
    common = dict(
        backend="ray",
        model="yolov8n.yaml",
        data=digits_det,
        space=json.loads(SPACE),
        epochs=2,
        output=tmp_path,
        train_args={"imgsz": 64},
    )
    with pytest.raises(ConfigError, match=r"grace_period.*3 is more than --epochs 2"):
        build_config(**common, backend_options={"grace_period": 3})
    with pytest.raises(ConfigError, match=r"device=0: Ray assigns each trial its GPUs"):
        build_config(**{**common, "train_args": {"imgsz": 64, "device": 0}})
    with pytest.raises(ConfigError, match=r"device=cpu trains on the CPU while --gpus-per-trial 1"):
        build_config(**{**common, "train_args": {"imgsz": 64, "device": "cpu"}}, backend_options={"gpus_per_trial": 1})
    with pytest.raises(ConfigError, match=r"'lr0' is also in the search space"):
        build_config(**{**common, "train_args": {"imgsz": 64, "lr0": 0.01}})
    with pytest.raises(ConfigError, match=r"search_alg.*unknown 'tpe'"):
        build_config(**common, backend_options={"search_alg": "tpe"})
    with pytest.raises(ConfigError, match=r"scheduler"):
        build_config(**common, backend_options={"scheduler": "pbt"})
    assert not any(tmp_path.iterdir())  # nothing written


def test_impossible_gpu_request_fails_fast_with_exit_2(digits_det: Path, tmp_path: Path) -> None:
    args = _tune_args(str(digits_det), tmp_path / "studies", iterations=2, epochs=1, name="gpu")
    out = _hpo([*args, "--gpus-per-trial", "64"], cwd=tmp_path, home=tmp_path / "home", timeout=180)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("hpo: error: ray option 'gpus_per_trial': 64 per trial, but no node of the Ray cluster")
    assert not (tmp_path / "studies" / "gpu").exists()


# --- slow: real training
@pytest.mark.slow
def test_asha_stops_trials_relative_data_and_everything_under_the_study(digits_det: Path, tmp_path: Path) -> None:
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    home = tmp_path / "home"
    rel = os.path.relpath(digits_det, work)  # ../../../data0/det/data.yaml: relative to another folder
    assert not Path(rel).is_absolute()
    studies = tmp_path / "studies"
    out = _hpo(_tune_args(rel, studies, iterations=6, epochs=2, name="asha", quiet=False), cwd=work, home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    # the TunerCallback events (progress here, MLflow elsewhere) come from the Ray driver too
    for tid in range(6):
        assert f"trial {tid} started" in out.stderr and f"trial {tid} epoch 1/2" in out.stderr
    assert " complete objective=" in out.stderr
    study = studies / "asha"

    summary = _show(study, home)
    trials = summary["trials"]
    assert len(trials) == 6 and sorted(t["id"] for t in trials) == list(range(6))
    assert summary["counts"]["running"] == 0 and summary["counts"]["failed"] == 0
    pruned = [t for t in trials if t["status"] == "pruned"]
    complete = [t for t in trials if t["status"] == "complete"]
    # ASHA (reduction factor 2, grace 1) stops a trial that reaches epoch 1 strictly below the median of the
    # trials there before it; with 6 trials some do (unless they arrive in improving order: unlikely)
    assert pruned, "ASHA stopped no trial"
    assert f"trial {pruned[0]['id']} pruned objective=" in out.stderr
    assert all(t["epochs_completed"] < 2 for t in pruned) and all(t["epochs_completed"] == 2 for t in complete)
    assert complete and summary["best"]["trial"] in {t["id"] for t in complete}

    records = _records(study)
    for r in records.values():
        assert [row["epoch"] for row in r.epochs] == list(range(1, r.epochs_completed + 1))
        assert all("val/cls_loss" in row and "train/box_loss" in row for row in r.epochs)
        assert r.objective is not None and r.start and r.end and r.duration_s > 0
        assert r.applied == pytest.approx(r.params)  # read back from the trainer (args.yaml when stopped)
        assert json.loads((study / "trials" / str(r.id) / "params.json").read_text()) == pytest.approx(r.params)
        assert (study / "trials" / str(r.id) / "results.csv").is_file()
        assert (study / "ray" / "tune-1" / f"trial_{r.id}").is_dir()  # short Ray folder names
    for r in records.values():
        if r.status.value == "pruned":
            assert "stopped by Ray's asha scheduler" in r.error
        else:
            # the final validation of best.pt reports no losses: the objective is the last epoch's
            assert r.final_metrics and r.objective == pytest.approx(objective_of(r.epochs, r.final_metrics, "val/cls_loss"))
    assert (study / "weights" / "best.pt").is_file()
    assert all(Path(r.weights).is_relative_to(study) for r in records.values() if r.weights)
    # finished trials keep no epoch checkpoints (Ray's copies nor the trainable's): disk stays bounded
    assert [p for p in study.rglob("*checkpoint_*") if p.is_dir()] == []

    # nothing outside the study: the working directory, ~/ray_results
    assert list(work.iterdir()) == []
    assert not (home / "ray_results").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "studies", "work"]


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
def test_resume_reruns_a_trial_ray_saved_as_done_but_the_study_did_not_record(digits_det: Path, tmp_path: Path) -> None:
    """A kill can fall between Ray saving its experiment state (trial done) and hpo recording the
    trial: the study then holds a ``running`` record that Ray's restore will never finish. The
    resume must re-run that trial id, not stop one short of the total or take a new id."""
    home = tmp_path / "home"
    studies = tmp_path / "studies"
    study = studies / "unrecorded"
    args = _tune_args(str(digits_det), studies, iterations=2, epochs=1, name="unrecorded")
    first = _hpo(args, cwd=tmp_path, home=home)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = (study / "trials.jsonl").read_text().splitlines(keepends=True)
    last = max(i for i, ln in enumerate(lines) if json.loads(ln)["status"] != "running")
    lost = json.loads(lines[last])
    (study / "trials.jsonl").write_text("".join(lines[:last] + lines[last + 1 :]))  # as if killed before this write
    assert _records(study)[lost["id"]].status.value == "running"

    out = _hpo([*args, "--resume"], cwd=tmp_path, home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = _show(study, home)
    assert summary["counts"]["running"] == 0
    assert sorted(t["id"] for t in summary["trials"]) == [0, 1]
    assert all(t["status"] in ("complete", "pruned") for t in summary["trials"])
    rerun = _records(study)[lost["id"]]  # the lost trial run again: its id and params, its own start
    assert rerun.start != lost["start"] and rerun.status.finished
    assert rerun.params == pytest.approx(lost["params"])  # the follow-up experiment's searcher proposes them first


def test_batch_progress_of_ray_trials_reaches_the_observers(tmp_path, digits_cls):
    """Ray's results come once per epoch; the trials' batch progress still reaches the observers
    (the progress display) through the driver's poller, on simulated trials of 2 s epochs."""
    from hpo import Tuner, TunerCallback

    class Batches(TunerCallback):
        def __init__(self):
            self.seen = []

        def on_batch(self, record, progress):
            self.seen.append((record.id, dict(progress)))

    batches = Batches()
    result = Tuner(
        backend="ray",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        iterations=2,
        epochs=2,
        output=tmp_path,
        space={"lr0": [1e-4, 1e-2]},
        seed=0,
        backend_options={"num_cpus": 2, "scheduler": "fifo"},
        callbacks=[batches],
        trainer="hpo.simulate:simulated_trainer",
        trainer_options={"epoch_s": 2.0},
        plots=False,
    ).run()
    assert result.counts == {"complete": 2, "failed": 0, "pruned": 0}
    assert {tid for tid, _ in batches.seen} == {0, 1}, batches.seen
    for _, p in batches.seen:
        assert 1 <= p["epoch"] <= 2 and 1 <= p["batch"] <= p["batches"] == 4, p


def test_start_defaults_makes_the_first_trial_the_spaces_starting_configuration(tmp_path, digits_cls):
    """``start=defaults``: trial 0 of a new study is :meth:`SearchSpace.defaults` (Ultralytics' defaults,
    or the space's ``start``), the next ones are the searcher's own; with ``start=random`` (the
    default) trial 0 is the searcher's first draw."""
    from hpo import SearchSpace, Tuner

    space = {"lr0": {"low": 1e-4, "high": 1e-1, "log": True, "start": 0.003}, "momentum": [0.6, 0.98]}
    firsts = {}
    for start in ("defaults", "random"):
        result = Tuner(
            backend="ray",
            model="yolov8n-cls.yaml",
            data=digits_cls,
            iterations=3,
            epochs=1,
            output=tmp_path,
            name=start,
            space=space,
            seed=0,
            backend_options={"num_cpus": 2, "scheduler": "fifo", "start": start},
            trainer="hpo.simulate:simulated_trainer",
            trainer_options={"epoch_s": 0.2},
            plots=False,
            train_args={"optimizer": "SGD"},
        ).run()
        assert result.counts == {"complete": 3, "failed": 0, "pruned": 0}
        records = _records(result.study_dir)
        firsts[start] = [records[i].params for i in range(3)]
    defaults = SearchSpace.parse(space).defaults()
    assert defaults == {"lr0": 0.003, "momentum": 0.937}
    assert firsts["defaults"][0] == defaults
    assert all(p != defaults for p in firsts["defaults"][1:] + firsts["random"]), firsts


# --- bounded experiments (issue 28 item 3): Ray Tune's controller keeps every trial of its experiment
def test_later_experiments_optuna_searcher_is_told_the_study_history() -> None:
    """A new experiment's OptunaSearch goes on from every finished trial of the study (complete,
    pruned, failed), and proposes the re-run points first; Ray's random search takes none."""
    from types import SimpleNamespace

    from hpo import SearchSpace, TrialRecord, TrialStatus
    from hpo_ray import RayOptions
    from hpo_ray._driver import segment_searcher

    # the settings segment_searcher reads (a whole build_config would start a local Ray to check resources)
    cfg = SimpleNamespace(
        space=SearchSpace.parse(json.loads(SPACE)), seed=3, direction="minimize", metric="val/cls_loss", workers=2
    )
    opts = RayOptions(search_alg="optuna", num_cpus=1)
    row = lambda e, v: {"epoch": e, "val/cls_loss": v}
    p = {"lr0": 0.01, "hsv_v": 0.5, "close_mosaic": 1}
    history = [
        TrialRecord(id=0, params=p, status=TrialStatus.COMPLETE, objective=0.7, epochs=[row(1, 0.9), row(2, 0.7)]),
        TrialRecord(id=1, params={**p, "lr0": 0.02}, status=TrialStatus.PRUNED, objective=0.95, epochs=[row(1, 0.95)]),
        TrialRecord(id=2, params={**p, "lr0": 0.03}, status=TrialStatus.FAILED, error="boom"),
    ]
    again = {**p, "lr0": 0.04}
    searcher, holds_space = segment_searcher(cfg, opts, 2, points=[again], history=history)
    assert holds_space
    inner = searcher.searcher  # the ConcurrencyLimiter's
    trials = [t for t in inner._ot_study.get_trials(deepcopy=False) if t.state.name != "WAITING"]  # WAITING: the point
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert trials[0].value == pytest.approx(0.7) and trials[0].params == p
    assert trials[1].intermediate_values == {0: pytest.approx(0.95)}
    first = searcher.suggest("t0")
    assert first == pytest.approx(again)  # the trial to run again comes first, with its params
    assert set(searcher.suggest("t1")) == set(p)  # then TPE's own proposals over the same space
    random, holds = segment_searcher(cfg, opts.model_copy(update={"search_alg": "random"}), 2, points=None, history=history)
    assert not holds and type(random).__name__ == "BasicVariantGenerator"


@pytest.mark.slow
def test_study_runs_in_bounded_experiments_and_resumes_mid_experiment(digits_cls: Path, tmp_path: Path) -> None:
    """``--experiment-trials 3``: 7 trials in experiments tune-1 (3), tune-2 (3), tune-3 (1); the
    driver SIGKILLed mid tune-2, ``--resume`` opens only tune-2 (tune-1's state is made unreadable
    before it) and the study ends with exactly 7 trials, nothing finished before the kill changed."""
    import signal

    home, studies = tmp_path / "home", tmp_path / "studies"
    study = studies / "bounded"
    home.mkdir()
    args = [
        "tune",
        "--backend",
        "ray",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        "7",
        "--epochs",
        "2",
        "--output",
        str(studies),
        "--name",
        "bounded",
        "--space",
        json.dumps({"lr0": [1e-4, 1e-2], "momentum": [0.6, 0.98]}),
        "--seed",
        "0",
        "--scheduler",
        "fifo",
        "--search-alg",
        "optuna",
        "--experiment-trials",
        "3",
        "--num-cpus",
        "2",
        "--quiet",
        "--no-plots",
        "optimizer=SGD",
    ]
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "HPO_TRAINER": "hpo.simulate:simulated_trainer",
        "HPO_TRAINER_OPTIONS": json.dumps({"epoch_s": 0.5}),
    }
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def mid_second_experiment() -> bool:
        if not (study / "trials.jsonl").is_file():
            return False
        recs = _records(study).values()
        return sum(r.status.finished for r in recs) >= 3 and any(not r.status.finished and r.epochs for r in recs)

    try:
        assert _wait_for(lambda: mid_second_experiment() or proc.poll() is not None, 300), "not mid tune-2 within 300 s"
        assert proc.poll() is None, proc.communicate()[1][-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    before = _records(study)
    assert sorted(p.name for p in (study / "ray").iterdir()) == ["tune-1", "tune-2"]
    assert len(list((study / "ray" / "tune-1").glob("trial_*"))) == 3
    for state in (study / "ray" / "tune-1").glob("experiment_state-*.json"):  # resume must not need it
        state.unlink()
        state.mkdir()

    out = subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "restoring Ray's experiment" in out.stderr and "tune-2" in out.stderr
    after = _records(study)
    assert sorted(after) == list(range(7))
    assert all(r.status.value == "complete" for r in after.values()), {i: r.status for i, r in after.items()}
    for tid, r in before.items():
        if r.status.finished:
            assert after[tid].to_json() == r.to_json()
    per_experiment = {p.name: len(list(p.glob("trial_*"))) for p in (study / "ray").iterdir()}
    assert set(per_experiment) >= {"tune-1", "tune-2", "tune-3"} and all(n <= 3 for n in per_experiment.values())
    assert per_experiment["tune-1"] == 3
