"""``hpo final STUDY``, ``hpo show``'s final block, MLflow and the plots of the final model: on a
simulated study (milliseconds per run) and on a real Ultralytics study killed by SIGTERM mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CLS_ARGS, hpo_cli, kv

from hpo import TrialStatus, Tuner
from hpo.final import read_final_records

SIM = "hpo.simulate:simulated_trainer"
SPACE = {"lr0": (1e-4, 1e-2), "momentum": (0.7, 0.98)}


@pytest.fixture
def sim_study(digits_cls_test, tmp_path) -> Path:
    """A finished study of 6 simulated trials (weights of 2 KB each), no final stage yet."""
    Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls_test,
        space=SPACE,
        iterations=6,
        epochs=3,
        train_args={"optimizer": "AdamW"},
        output=tmp_path / "studies",
        name="sim",
        seed=0,
        backend_options={"pruner": "none"},
        trainer=SIM,
        trainer_options={"weights_bytes": 2048},
        plots=False,
    ).run()
    return tmp_path / "studies" / "sim"


def test_hpo_final_trains_the_top_k_shows_tracks_and_plots_them(sim_study, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    # no final stage yet and no --epochs: one line, exit 2, nothing written
    r = hpo_cli("final", str(sim_study), env={"HPO_PLOTS": "1"})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "hpo: error: epochs: the study has no final stage to continue; give --epochs N (epochs per final run)"
    ]
    assert not (sim_study / "final.jsonl").exists()
    r = hpo_cli(
        "final", str(sim_study), "--epochs", "4", "--seeds", "2", "--top", "2", "--mlflow", "--quiet", env={"HPO_PLOTS": "1"}
    )
    assert r.returncode == 0, r.stderr
    assert (
        "final model: 2 configurations x 2 seeds (1, 2) x 4 epochs, metrics/accuracy_top1 on test; runs: complete 4" in r.stdout
    )
    records = read_final_records(sim_study)
    assert [(x.id, x.seed, x.status) for x in records.values()] == [(i, 1 + i % 2, TrialStatus.COMPLETE) for i in range(4)]
    # the two best trials of the search, best first
    trials = [json.loads(x) for x in (sim_study / "trials.jsonl").read_text().splitlines()]
    done = {t["id"]: t for t in trials if t["status"] == "complete"}
    top2 = sorted(done, key=lambda i: (-done[i]["objective"], i))[:2]
    assert [records[0].source_trial, records[2].source_trial] == top2
    # the final model: the run with the best validation objective, its weights copied
    chosen = max(records.values(), key=lambda x: (x.objective_val, -x.id))
    assert (sim_study / "weights" / "final.pt").read_bytes() == Path(chosen.weights).read_bytes()
    # hpo show: the final block; --json: the key final
    show = hpo_cli("show", str(sim_study))
    assert show.returncode == 0 and "final model: 2 configurations x 2 seeds" in show.stdout
    assert f"final model: run {chosen.id} (trial {chosen.source_trial}, seed {chosen.seed}), chosen on val" in show.stdout
    summary = json.loads(hpo_cli("show", str(sim_study), "--json").stdout)["final"]
    assert summary["split_label"] == "test" and summary["chosen"]["run"] == chosen.id
    assert summary["chosen"]["weights"] == str(sim_study / "weights" / "final.pt")
    assert [c["source_trial"] for c in summary["configurations"]] == top2  # simulated: test = val - 0.02, same order
    # plots: final.png and the report's section
    assert (sim_study / "plots" / "final.png").stat().st_size > 1000
    assert "<h2>Final model</h2>" in (sim_study / "plots" / "report.html").read_text()
    # MLflow (the study's own SQLite store): a parent run for the study and one child run per final run
    client = MlflowClient(tracking_uri=f"sqlite:///{sim_study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sim")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [x for x in runs if x.data.tags.get("hpo.role") == "final"]
    (parent,) = [x for x in runs if x.data.tags.get("hpo.role") == "study"]
    assert sorted(x.data.tags["hpo.final_run"] for x in children) == ["0", "1", "2", "3"]
    for child in children:
        rec = records[int(child.data.tags["hpo.final_run"])]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert child.data.metrics["objective_test"] == pytest.approx(rec.objective_test)
        assert child.data.metrics["final.test/metrics/accuracy_top1"] == pytest.approx(rec.test_metrics["metrics/accuracy_top1"])
        assert child.data.params["seed"] == str(rec.seed) and child.data.tags["hpo.split"] == "test"
    config = next(c for c in summary["configurations"] if chosen.id in [x["id"] for x in c["runs"]])
    assert parent.data.metrics["final_test_mean"] == pytest.approx(config["test_mean"]) and parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "weights")
    }
    assert {"final.yaml", "weights/final.pt"} <= artifacts
    # the same command without --epochs continues the last stage: nothing to train, the same summary
    again = hpo_cli("final", str(sim_study), "--json", "--quiet")
    assert again.returncode == 0 and json.loads(again.stdout)["chosen"]["run"] == chosen.id
    assert len(read_final_records(sim_study)) == 4


def test_hpo_final_without_a_complete_run_exits_1_with_one_line(sim_study):
    r = hpo_cli("final", str(sim_study), "--epochs", "5", "--seeds", "3", "--time-budget", "0.001", "--quiet")
    assert r.returncode == 1
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("hpo: error:")]
    # 0.001 s may be spent before the first run starts (3 not started) or at its first epoch (2)
    assert re.fullmatch(
        r"hpo: error: final: the time budget ended the final stage before any final run completed \(0 failed, [23] not started\); "
        + re.escape(f"run 'hpo final {sim_study}' again with more time"),
        line,
    )
    assert not (sim_study / "weights" / "final.pt").exists()
    assert hpo_cli("final", "/nonexistent/study").returncode == 2


@pytest.mark.slow
def test_real_final_stage_killed_by_sigterm_is_continued_by_hpo_final(digits_cls_test, tmp_path):
    out = tmp_path / "studies"
    r = hpo_cli(
        "tune",
        "--backend",
        "ultralytics",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls_test),
        "--space",
        json.dumps({"lr0": [1e-3, 1e-2]}),
        "--iterations",
        "2",
        "--epochs",
        "1",
        "--output",
        str(out),
        "--name",
        "real",
        "--quiet",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 0, r.stderr
    study = out / "real"
    env = {**os.environ, "HPO_PLOTS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "final", str(study), "--epochs", "3"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        recs = read_final_records(study)
        if recs and recs[0].epochs_completed >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "the same hpo final command continues the stage" in err
    (rec,) = read_final_records(study).values()
    assert rec.status is TrialStatus.INTERRUPTED and rec.seed == 1 and rec.epochs_completed >= 1
    # continued: the same run id, trained again in full and scored on the test split
    r = hpo_cli("final", str(study), "--quiet")
    assert r.returncode == 0, r.stderr
    (rec,) = read_final_records(study).values()
    assert rec.id == 0 and rec.status is TrialStatus.COMPLETE and rec.epochs_completed == 3 and rec.split == "test"
    assert rec.objective_test == rec.test_metrics["metrics/accuracy_top1"] and 0 < rec.objective_test <= 1
    doc = yaml.safe_load((study / "final.yaml").read_text())
    assert doc["results"]["chosen"]["run"] == 0 and (study / "weights" / "final.pt").is_file()
