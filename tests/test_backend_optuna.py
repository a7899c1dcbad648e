"""The optuna backend (plugins/hpo_optuna): real Ultralytics training on the digits datasets.

Budget: about 3 minutes alone on 2 cores (digits-cls at 32 px on 20% of the train images,
digits-det at 64 px, 2-3 epochs, 2-5 trials per study).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo import Kind, SearchSpace, Study, TrialStatus, Tuner
from hpo.datasets import make_dataset

optuna = pytest.importorskip("optuna")

from hpo_optuna import JOURNAL, distributions  # noqa: E402

CLS_ARGS = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "SGD", "fraction": 0.2}
CLS_SPACE = {
    "lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-1},
    "momentum": (0.6, 0.98),
    "warmup_epochs": (0.0, 1.0),
}
CLI_TRAIN = [f"{k}={v}" for k, v in CLS_ARGS.items()]


@pytest.fixture(scope="module")
def digits_cls(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_dataset("digits-cls", tmp_path_factory.mktemp("data") / "digits-cls", seed=0))


@pytest.fixture(scope="module")
def digits_det(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_dataset("digits-det", tmp_path_factory.mktemp("data") / "digits-det", seed=0))


def hpo_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", *args]


def load_ostudy(study_dir: Path, name: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(study_dir / JOURNAL))))


def csv_rows(study_dir: Path, trial_id: int) -> int:
    lines = (study_dir / "trials" / str(trial_id) / "results.csv").read_text().strip().splitlines()
    return len(lines) - 1


def dashboard_trials(journal: Path) -> dict[str, int]:
    """``{study name: trial count}`` as optuna-dashboard's HTTP API serves them for ``journal``."""
    from wsgiref.util import setup_testing_defaults

    dashboard = pytest.importorskip("optuna_dashboard")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    app = dashboard.wsgi(JournalStorage(JournalFileBackend(str(journal))))

    def get(path: str) -> dict:
        env: dict = {}
        setup_testing_defaults(env)
        env.update(PATH_INFO=path, REQUEST_METHOD="GET")
        status = []
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        assert status == ["200 OK"], (path, status)
        return json.loads(body)

    out = {}
    for s in get("/api/studies")["study_summaries"]:
        out[s["study_name"]] = len(get(f"/api/studies/{s['study_id']}")["trials"])
    return out


# --- fast


def test_distributions_equal_space_key_by_key():
    space = SearchSpace.default()
    dists = distributions(space)
    native = space.to_ultralytics()  # what the ultralytics backend mutates within
    assert list(dists) == list(space) == list(native)
    for key, p in space.items():
        d = dists[key]
        assert (d.low, d.high) == (p.low, p.high) == native[key][:2], key
        assert d.log is p.log is False, key
        if p.kind is Kind.INT:
            assert isinstance(d, optuna.distributions.IntDistribution), key
            assert isinstance(native[key][0], int) and isinstance(native[key][1], int), key
        else:
            assert isinstance(d, optuna.distributions.FloatDistribution), key
    assert isinstance(dists["close_mosaic"], optuna.distributions.IntDistribution)
    custom = distributions(
        SearchSpace.parse(
            {"lr0": {"type": "logfloat", "low": 1e-5, "high": 1e-1}, "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]}}
        )
    )
    assert custom["lr0"] == optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    assert custom["optimizer"] == optuna.distributions.CategoricalDistribution(["SGD", "AdamW"])


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--sampler", "annealing"], ["sampler", "tpe"]),
        (["--pruner", "patient"], ["pruner", "hyperband"]),
        (["--reduction-factor", "1"], ["option 'reduction_factor' (--reduction-factor): "]),
        (["--startup-trials", "0"], ["option 'startup_trials' (--startup-trials): "]),
        (["--storage", "redis://db/0"], ["storage", "database URL"]),
        (["--storage", "sqlite:///opt.db", "--concurrent-trials", "2"], ["storage", "SQLite", "2 workers"]),
        (["--join"], ["join", "no study"]),
        (["--join", "--resume"], ["join", "--resume"]),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, monkeypatch, digits_cls, extra, words):
    from typer.testing import CliRunner

    from hpo.cli import app

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "studies"
    res = CliRunner().invoke(
        app,
        [
            "tune",
            "--backend",
            "optuna",
            "--model",
            "yolov8n-cls.yaml",
            "--data",
            digits_cls,
            "--iterations",
            "2",
            "--epochs",
            "1",
            "--output",
            str(out),
            "--name",
            "bad",
            *extra,
            *CLI_TRAIN,
        ],
    )
    assert res.exit_code == 2, (res.output, res.exception)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert not (out / "bad").exists()
    assert not (tmp_path / "opt.db").exists()


def test_relative_sqlite_storage_is_resolved(tmp_path, monkeypatch):
    from hpo_optuna import resolve_storage

    monkeypatch.chdir(tmp_path)
    assert resolve_storage("sqlite:///sub/opt.db") == f"sqlite:///{tmp_path / 'sub' / 'opt.db'}"
    assert resolve_storage("journal.log") == str(tmp_path / "journal.log")
    assert resolve_storage("postgresql://db-host/optuna") == "postgresql://db-host/optuna"


def test_startup_trials_is_when_tpe_starts_modelling(tmp_path, digits_cls):
    """``startup_trials``: the first N finished trials (trial 0, the defaults, included) are TPE's random
    draws, the same for N = 3 and the default 10 on one seed; trial 3 is TPE's model's with N = 3 and
    a further random draw with N = 10 (simulated trials: the sampler is the point)."""
    params = {}
    for startup in (3, 10):
        result = Tuner(
            backend="optuna",
            model="yolov8n-cls.yaml",
            data=digits_cls,
            space=CLS_SPACE,
            iterations=5,
            epochs=1,
            train_args=CLS_ARGS,
            output=tmp_path,
            name=f"startup{startup}",
            seed=0,
            backend_options={"startup_trials": startup, "pruner": "none"},
            trainer="hpo.simulate:simulated_trainer",
            trainer_options={"epoch_s": 0.0},
            plots=False,
        ).run()
        assert result.counts == {"complete": 5, "failed": 0, "pruned": 0}
        records = Study.open(result.study_dir).records()
        params[startup] = [records[i].params for i in range(5)]
        settings = json.loads((result.study_dir / "study.json").read_text())
        assert settings["options"]["startup_trials"] == startup
    assert params[3][:3] == params[10][:3]
    assert params[3][0] == {"lr0": 0.01, "momentum": 0.937, "warmup_epochs": 1.0}  # Ultralytics' defaults, clipped
    assert params[3][3] != params[10][3]


# --- real training


@pytest.mark.slow
def test_pruning_with_two_workers_on_one_journal(tmp_path, digits_cls):
    # val/loss (minimised) differs between trials from the first epoch on (top-1 accuracy can tie at
    # chance level for a few epochs, and a tie is never pruned)
    result = Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space=CLS_SPACE,
        iterations=5,
        epochs=3,
        metric="val/loss",
        train_args=CLS_ARGS,
        output=tmp_path,
        name="prune",
        concurrent_trials=2,
        seed=0,
        backend_options={"pruner": "asha", "reduction_factor": 3},
    ).run()
    study = Study.open(result.study_dir)
    records = study.records()
    assert sorted(records) == [0, 1, 2, 3, 4]  # ids = Optuna trial numbers, no duplicates
    lines = [json.loads(x) for x in (result.study_dir / "trials.jsonl").read_text().splitlines()]
    assert {x["id"] for x in lines} == set(records)
    assert all(r.status.finished for r in records.values())
    assert sum(result.counts.values()) == 5
    # the first trial is Ultralytics' defaults (clipped into the space: warmup_epochs 3.0 -> 1.0)
    assert records[0].params == {"lr0": 0.01, "momentum": 0.937, "warmup_epochs": 1.0}
    pruned = [r for r in records.values() if r.status is TrialStatus.PRUNED]
    assert pruned, {r.id: (r.status, r.epochs_completed) for r in records.values()}
    for r in pruned:
        assert 1 <= r.epochs_completed < 3
        assert csv_rows(result.study_dir, r.id) == r.epochs_completed  # no epoch computed after the prune
    for r in records.values():
        if r.status is TrialStatus.COMPLETE:
            assert r.epochs_completed == 3 == csv_rows(result.study_dir, r.id)
    # Optuna holds the same trials, in the same states, with the same values
    ostudy = load_ostudy(result.study_dir, "prune")
    by_id = {t.user_attrs["hpo_trial_id"]: t for t in ostudy.trials}
    assert sorted(by_id) == sorted(records) and len(ostudy.trials) == 5
    state = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}
    for tid, r in records.items():
        t = by_id[tid]
        assert t.number == tid and t.state.name == state[r.status.value]
        assert t.params == pytest.approx(r.params)
        assert sorted(t.intermediate_values) == list(range(1, r.epochs_completed + 1))
        if r.status is TrialStatus.COMPLETE:
            assert t.value == pytest.approx(r.objective)
    assert result.best_trial is not None and records[result.best_trial].status is TrialStatus.COMPLETE
    # optuna-dashboard opens the stored journal (its WSGI app, as `optuna-dashboard <journal>` serves it)
    assert dashboard_trials(result.study_dir / JOURNAL) == {"prune": 5}


@pytest.mark.slow
def test_join_second_process(tmp_path, digits_cls):
    out, name = tmp_path / "studies", "joined"
    common = [
        "tune",
        "--backend",
        "optuna",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        digits_cls,
        "--iterations",
        "4",
        "--epochs",
        "1",
        "--output",
        str(out),
        "--name",
        name,
        "--pruner",
        "none",
        "--space",
        json.dumps(CLS_SPACE),
        "--quiet",
        "--json",
        *CLI_TRAIN,
    ]
    first = subprocess.Popen(
        hpo_cli(*common, "--seed", "0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    deadline = time.time() + 120
    while not (out / name / "study.json").is_file():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.2)
    second = subprocess.Popen(hpo_cli(*common, "--join"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    study_dir = out / name
    files = sorted(p.name for p in study_dir.glob("trials*.jsonl"))
    assert len(files) == 2 and "trials.jsonl" in files, files
    owners = {}
    for f in files:
        for line in (study_dir / f).read_text().splitlines():
            owners.setdefault(json.loads(line)["id"], set()).add(f)
    assert all(len(v) == 1 for v in owners.values()), owners  # no id written by both processes
    joined_ids = {i for i, v in owners.items() if v != {"trials.jsonl"}}
    assert joined_ids, owners  # the joined process ran trials
    records = Study.open(study_dir).records()
    assert sorted(records) == [0, 1, 2, 3]
    assert all(r.status is TrialStatus.COMPLETE for r in records.values())
    # each process reports the study as it saw it when it ran out of trials to start: the other may
    # still have been training its last one
    assert len(joined_ids) <= json.loads(out2)["counts"]["complete"] <= 4
    assert len(load_ostudy(study_dir, name).trials) == 4


@pytest.mark.slow
def test_nan_objective_is_failed_never_best(tmp_path, digits_det):
    # trial 0: Ultralytics' default box gain; trial 1 (RandomSampler seed 0 draws it): a box gain
    # of 1e38 overflows the float32 loss, every metric of the epoch is NaN
    result = Tuner(
        backend="optuna",
        model="yolov8n.yaml",
        data=digits_det,
        metric="val/box_loss",
        space={"box": {"type": "choice", "choices": [7.5, 1.0e38]}},
        iterations=2,
        epochs=2,
        train_args={"imgsz": 64, "batch": 16, "workers": 0, "device": "cpu"},
        output=tmp_path,
        name="nan",
        seed=0,
        backend_options={"sampler": "random", "pruner": "none"},
    ).run()
    records = Study.open(result.study_dir).records()
    assert records[1].params == {"box": 1.0e38}, "precondition: the seeded sampler drew the diverging value"
    assert records[1].status is TrialStatus.FAILED and records[1].objective is None
    assert "nan" in records[1].error
    assert records[1].epochs_completed == 1  # stopped at the first NaN epoch
    assert records[0].status is TrialStatus.COMPLETE and math.isfinite(records[0].objective)
    assert result.best_trial == 0 and result.counts == {"complete": 1, "failed": 1, "pruned": 0}
    t1 = load_ostudy(result.study_dir, "nan").trials[1]
    assert t1.state.name == "FAIL" and t1.value is None and "nan" in t1.user_attrs["error"]


def test_a_sampler_whose_package_is_missing_is_refused_before_anything_runs(tmp_path, digits_cls):
    """Optuna imports cmaes only when its CMA-ES sampler first samples: without the package, the
    pre-flight says so in one line (exit 2, nothing written) instead of a failure mid-study."""
    import importlib.util

    if importlib.util.find_spec("cmaes") is not None:
        pytest.skip("cmaes is installed here")
    from conftest import hpo_cli as run_hpo

    r = run_hpo(
        "tune",
        "--backend",
        "optuna",
        "--sampler",
        "cmaes",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(tmp_path / "out"),
        "imgsz=32",
    )
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .endswith("needs the Python package 'cmaes', which is not installed; pip install cmaes, or choose --sampler tpe")
    )
    assert not (tmp_path / "out").exists()
