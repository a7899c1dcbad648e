"""MLflow tracking against a real local MLflow tracking server, with real Ultralytics training.

The server is ``python -m mlflow server`` with a SQLite backend store and artifacts in a
temporary folder, on a free loopback port. Test names start with ``test_mlflow`` on purpose:
Ultralytics' own MLflow callback skips logging under pytest unless the current test's name
contains ``test_mlflow``, so these tests prove that hpo (not that guard) keeps it from logging.

The ``backend`` fixture lists the backends the tracker is checked with; add "optuna" and
"ray" there once their plugins are merged.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hpo import Tuner
from hpo.errors import ConfigError
from hpo.plugins import study_observers
from hpo.study import Study
from hpo.tracking import RUN_FILE, MlflowTracker
from hpo.tuner import TunerCallback

SPACE = {"lr0": (1e-4, 1e-2), "momentum": (0.7, 0.95)}
TRAIN_ARGS = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"}
MODEL = "yolov8n-cls.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` process (its own process group, killed as a whole)."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--default-artifact-root",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health within 120 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn/gunicorn workers
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    from hpo.datasets import make_digits_cls

    return make_digits_cls(tmp_path_factory.mktemp("data") / "digits-cls", seed=0)


#: Backends the parent/child test runs with, and options that keep every trial 'complete' there.
BACKEND_OPTIONS = {"ultralytics": {}, "optuna": {"pruner": "none"}, "ray": {"scheduler": "fifo"}}


@pytest.fixture(params=list(BACKEND_OPTIONS))
def backend(request) -> str:
    """Every backend: one parent and one child per trial, whichever backend proposes the trials."""
    return request.param


@pytest.fixture
def tracked_env(server, monkeypatch, tmp_path):
    """MLFLOW_TRACKING_URI points at the real server; cwd is a temp dir (nothing may land there)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.chdir(tmp_path)
    return server


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _all_runs(client, exclude: frozenset = frozenset()) -> list:
    from mlflow.entities import ViewType

    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL) if e.experiment_id not in exclude]
    return client.search_runs(exp_ids, run_view_type=ViewType.ALL, max_results=1000)


@pytest.mark.slow
def test_mlflow_parent_and_child_runs_then_resume(tracked_env, digits, backend, tmp_path, capfd):
    out = tmp_path / "studies"
    name = f"track-{backend}"
    # Ray assigns devices itself (device= is refused there)
    train_args = {k: v for k, v in TRAIN_ARGS.items() if not (backend == "ray" and k == "device")}
    common = dict(
        backend=backend,
        model=MODEL,
        data=digits,
        space=SPACE,
        epochs=2,
        train_args=train_args,
        output=out,
        name=name,
        seed=0,
        backend_options=BACKEND_OPTIONS[backend],
    )
    tuner = Tuner(iterations=2, **common)  # mlflow=None: on because MLFLOW_TRACKING_URI is set
    assert tuner.tracker is None  # the MLflow plugin contributes its observer when run() starts
    result = tuner.run()
    assert isinstance(tuner.tracker, MlflowTracker) and tuner.tracker in tuner.observers
    assert result.counts["complete"] == 2
    out_err = capfd.readouterr()
    assert "View run" not in out_err.out  # stdout stays clean for `hpo tune --json`
    assert "created parent run" in out_err.err

    client = _client(tracked_env.uri)
    exps = {e.name: e for e in client.search_experiments()}
    # the server is shared by the backends' parametrized runs: leave out their own studies' experiments
    others = {f"track-{b}" for b in BACKEND_OPTIONS if b != backend}
    other_ids = frozenset(e.experiment_id for n, e in exps.items() if n in others)
    assert set(exps) - others == {"Default", name}  # nothing from Ultralytics' callback, no stray experiment
    exp_id = exps[name].experiment_id
    runs = _all_runs(client, other_ids)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2, [r.info.run_name for r in runs]
    parent = parents[0]
    assert parent.info.experiment_id == exp_id and parent.info.status == "FINISHED"
    # the tracker keeps the parent's ids in its own file; it never writes study.json
    stored = json.loads((out / name / RUN_FILE).read_text())
    assert stored == {
        "tracking_uri": tracked_env.uri,
        "experiment": name,
        "experiment_id": exp_id,
        "parent_run_id": parent.info.run_id,
    }
    assert "mlflow" not in json.loads((out / name / "study.json").read_text())

    # parent: settings as params, versions as tags, best + leaderboard + weights as artifacts
    p = parent.data.params
    assert p["backend"] == backend and p["model"] == MODEL and p["epochs"] == "2" and p["iterations"] == "2"
    assert p["metric"] == "metrics/accuracy_top1" and p["train_args.imgsz"] == "32"
    assert "space.lr0" in p and "space.momentum" in p
    assert parent.data.tags["hpo.version.ultralytics"]
    assert parent.data.tags["hpo.best_trial"] == str(result.best_trial)
    assert parent.data.metrics["best_objective"] == pytest.approx(result.best_objective)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "best.yaml", "study.json", "space.json", "weights"} <= arts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "weights")] == ["weights/best.pt"]
    board = Path(client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path)))
    assert board.read_text().splitlines()[1].split(",")[0] == str(result.best_trial)  # best first

    # children: sampled params, per-epoch histories with step = epoch, objective, status, tags
    records = Study.open(out / name).records()
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["hpo.backend"] == backend and tags["hpo.status"] == "complete"
        rec = records[int(tags["hpo.trial_id"])]
        assert child.info.status == "FINISHED"
        assert child.data.params == {k: str(v) for k, v in rec.params.items()}
        assert child.data.metrics["objective"] == pytest.approx(rec.objective)
        acc = client.get_metric_history(child.info.run_id, "metrics/accuracy_top1")
        assert [m.step for m in sorted(acc, key=lambda m: m.step)] == [1, 2]
        assert [m.value for m in sorted(acc, key=lambda m: m.step)] == pytest.approx(
            [row["metrics/accuracy_top1"] for row in rec.epochs]
        )
        loss = client.get_metric_history(child.info.run_id, "train/loss")
        assert sorted(m.step for m in loss) == [1, 2]
    assert {c.data.tags["hpo.trial_id"] for c in children} == {"0", "1"}

    # a study made by an earlier hpo holds the ids in study.json's "mlflow" key: still re-attached
    legacy = json.loads((out / name / "study.json").read_text())
    legacy["mlflow"] = stored
    (out / name / "study.json").write_text(json.dumps(legacy))
    (out / name / RUN_FILE).unlink()
    # resume to 3 trials with one changed setting: same parent, one more child, change as a tag
    resumed = Tuner(iterations=3, resume=True, **common).run()
    assert json.loads((out / name / RUN_FILE).read_text()) == stored
    assert resumed.counts["complete"] == 3
    runs = _all_runs(client, other_ids)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [r.info.run_id for r in parents] == [parent.info.run_id]
    assert sorted(c.data.tags["hpo.trial_id"] for c in children) == ["0", "1", "2"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    again = client.get_run(parent.info.run_id)
    assert again.data.params["iterations"] == "2"  # logged params are never overwritten
    assert again.data.tags["hpo.resume.1.iterations"] == "3"  # the change is a new tag
    assert again.info.status == "FINISHED"
    assert {e.name for e in client.search_experiments()} - others == {"Default", name}
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    assert "re-attached to parent run" in capfd.readouterr().err


class KillServerAfterTrial0(TunerCallback):
    """Stops the tracking server when trial 0 ends (before the tracker logs that end)."""

    def __init__(self, server: MlflowServer):
        self.server = server

    def on_trial_end(self, record) -> None:
        if record.id == 0:
            self.server.stop()


@pytest.mark.slow
def test_mlflow_server_dies_mid_study(digits, tmp_path, monkeypatch, capfd):
    backend = "ultralytics"
    srv = MlflowServer(tmp_path / "dying-server").start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.uri)
        monkeypatch.chdir(tmp_path)
        out = tmp_path / "studies"
        tuner = Tuner(
            backend=backend,
            model=MODEL,
            data=digits,
            space=SPACE,
            iterations=2,
            epochs=1,
            train_args=TRAIN_ARGS,
            output=out,
            name="dies",
            seed=0,
            mlflow=True,
            callbacks=[KillServerAfterTrial0(srv)],
        )
        result = tuner.run()
    finally:
        srv.stop()
    assert result.counts["complete"] == 2
    records = Study.open(out / "dies").records()
    assert sorted(records) == [0, 1] and all(r.status.value == "complete" for r in records.values())
    assert (out / "dies" / "best.yaml").is_file() and (out / "dies" / "weights" / "best.pt").is_file()
    assert tuner.tracker.error is not None and not tuner.tracker.active
    err = capfd.readouterr().err
    assert err.count("tracking stopped") == 1  # warned once


def test_mlflow_deleted_experiment_is_refused_before_anything_is_written(tracked_env, digits, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hpo.cli import app

    client = _client(tracked_env.uri)
    exp_id = client.create_experiment("gone")
    client.delete_experiment(exp_id)
    with pytest.raises(ConfigError, match="deleted state.*restore it"):
        Tuner(model=MODEL, data=digits, iterations=1, epochs=1, output=tmp_path / "o", name="x", experiment="gone").run()
    res = CliRunner().invoke(
        app,
        [
            "tune",
            "-m",
            MODEL,
            "-d",
            str(digits),
            "-n",
            "1",
            "-e",
            "1",
            "-o",
            str(tmp_path / "o"),
            "--name",
            "x",
            "--experiment",
            "gone",
            "imgsz=32",
        ],
    )
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "o").exists()
    # an unreachable server is refused the same way (exit 2, nothing written)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    res = CliRunner().invoke(
        app, ["tune", "-m", MODEL, "-d", str(digits), "-n", "1", "-e", "1", "-o", str(tmp_path / "o"), "--name", "x", "imgsz=32"]
    )
    assert res.exit_code == 2 and not (tmp_path / "o").exists()
    # --no-mlflow turns tracking off even with MLFLOW_TRACKING_URI set: the plugin contributes no observer
    tuner = Tuner(model=MODEL, data=digits, iterations=1, epochs=1, output=tmp_path / "o", mlflow=False)
    assert [o for o in study_observers(tuner.config, tuner.observer_settings) if getattr(o, "name", None) == "mlflow"] == []
    on = Tuner(model=MODEL, data=digits, iterations=1, epochs=1, output=tmp_path / "o")
    with pytest.raises(ConfigError, match="could not be reached"):  # the plugin's hook runs the pre-flight check
        study_observers(on.config, on.observer_settings)
    with pytest.raises(ConfigError, match="experiment: given with mlflow=False"):
        Tuner(model=MODEL, data=digits, iterations=1, epochs=1, output=tmp_path / "o", mlflow=False, experiment="e").run()
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_mlflow_default_store_is_in_the_study_dir(digits, tmp_path, monkeypatch):
    backend = "ultralytics"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "studies"
    tuner = Tuner(
        backend=backend,
        model=MODEL,
        data=digits,
        space=SPACE,
        iterations=2,
        epochs=1,
        concurrent_trials=2,
        train_args=TRAIN_ARGS,
        output=out,
        name="local",
        seed=0,
        mlflow=True,
    )
    tuner.run()  # two trials in two threads log into one SQLite store
    study = out / "local"
    assert tuner.tracker.uri == f"sqlite:///{study / 'mlflow.db'}"
    client = _client(tuner.tracker.uri)
    runs = _all_runs(client)
    assert len(runs) == 3 and sum("mlflow.parentRunId" in r.data.tags for r in runs) == 2
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["hpo.trial_id"] for r in children) == ["0", "1"]
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "metrics/accuracy_top1")] == [1]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert Path(parent.info.artifact_uri.removeprefix("file://")).is_relative_to(study / "mlartifacts")
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
