"""The final model (hpo.final.train_final): real Ultralytics trainings scored on the test split,
records, resume, interrupts, the time budget and bad input (simulated trainings where training is
not the point)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from hpo import ConfigError, FinalCandidate, RunFailedError, TrialStatus, clock, train_final
from hpo.datasets import make_digits_cls
from hpo.final import read_final_records, read_final_summary, require_complete

SIM = "hpo.simulate:simulated_trainer"
CLS_ARGS = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW", "lr0": 0.002}


@pytest.fixture(scope="module")
def digits_cls_no_test(tmp_path_factory) -> Path:
    return make_digits_cls(tmp_path_factory.mktemp("data") / "digits-cls-val-only", seed=0, imgsz=8, test_fraction=0.0)


def test_real_runs_are_scored_on_the_test_split_and_the_best_val_run_is_the_final_model(digits_cls_test, tmp_path):
    from ultralytics import YOLO

    out = tmp_path / "final"
    args = {k: v for k, v in CLS_ARGS.items() if k != "lr0"}
    r = train_final(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.002}, train_args=args, epochs=1, seeds=2, output=out
    )
    assert r.split == "test" and r.metric == "metrics/accuracy_top1" and r.direction == "maximize"
    assert [(x.id, x.seed, x.status) for x in r.records] == [(0, 1, TrialStatus.COMPLETE), (1, 2, TrialStatus.COMPLETE)]
    top1 = "metrics/accuracy_top1"
    for x in r.records:
        assert x.split == "test" and x.epochs_completed == 1 and x.curve[0]["epoch"] == 1
        assert x.objective_val == x.val_metrics[top1] and x.objective_test == x.test_metrics[top1]
        assert 0.0 < x.objective_test <= 1.0 and x.weights == str(out / "final" / str(x.id) / "weights" / "best.pt")
        applied = yaml.safe_load((out / "final" / str(x.id) / "args.yaml").read_text())
        assert applied["seed"] == x.seed and applied["lr0"] == 0.002 and applied["epochs"] == 1
    # the test score is the test split's: the weights validated on test/ by Ultralytics here give it
    best = max(r.records, key=lambda x: (x.objective_val, -x.id))
    assert r.weights == out / "weights" / "final.pt" and r.weights.read_bytes() == Path(best.weights).read_bytes()
    on_test = YOLO(str(r.weights)).val(
        data=str(digits_cls_test), split="test", imgsz=32, batch=128, workers=0, device="cpu", plots=False
    )
    on_val = YOLO(str(r.weights)).val(
        data=str(digits_cls_test), split="val", imgsz=32, batch=128, workers=0, device="cpu", plots=False
    )
    assert on_test.results_dict[top1] == pytest.approx(best.objective_test, abs=1e-6)
    assert on_val.results_dict[top1] == pytest.approx(best.objective_val, abs=1e-6)
    assert best.objective_test != best.objective_val  # 359 other images
    # records on the volume, and the summary
    assert read_final_records(out) == {x.id: x for x in r.records}
    summary = read_final_summary(out)
    assert summary is not None and summary["split_label"] == "test" and summary["counts"]["complete"] == 2
    (config,) = summary["configurations"]
    values = [x.objective_test for x in r.records]
    assert config["n"] == 2 and config["test"] == values and config["params"] == {"lr0": 0.002}
    assert config["test_mean"] == pytest.approx(sum(values) / 2)
    assert config["test_sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert summary["chosen"]["run"] == best.id and summary["chosen"]["weights"] == str(r.weights)
    # run again: nothing is trained again (the records are the same snapshots)
    t0 = time.monotonic()
    again = train_final(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.002}, train_args=args, epochs=1, seeds=2, output=out
    )
    assert time.monotonic() - t0 < 8 and again.records == r.records
    assert len((out / "final.jsonl").read_text().splitlines()) == len(r.records) * 3  # start, epoch, end: none added


def test_a_real_detection_run_is_validated_on_the_yaml_test_split(digits_det, tmp_path):
    from conftest import DET_ARGS

    r = train_final(
        model="yolov8n.yaml", data=digits_det, params={"lr0": 0.003}, train_args=DET_ARGS, epochs=1, seeds=[3], output=tmp_path
    )
    (rec,) = r.records
    assert rec.status is TrialStatus.COMPLETE and r.split == "test" and rec.seed == 3
    key = "metrics/mAP50-95(B)"
    assert rec.objective_test == rec.test_metrics[key] and rec.objective_val == rec.val_metrics[key]
    assert {"metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)"} <= set(rec.test_metrics)
    log = (tmp_path / "final" / "0" / "train.log").read_text()
    assert f"hpo: validating {rec.weights} on the test split" in log
    # Ultralytics' validator read the 16 test canvases (its label cache beside labels/test)
    assert (digits_det.parent / "labels" / "test.cache").is_file()
    data = yaml.safe_load((tmp_path / "final" / "data.yaml").read_text())
    assert data["test"] == str(digits_det.parent / "images" / "test")


def test_without_a_test_split_the_score_is_the_validation_score_and_says_so(digits_cls_no_test, tmp_path):
    r = train_final(
        model="yolov8n-cls.yaml", data=digits_cls_no_test, params={"lr0": 0.01}, epochs=3, seeds=[5], output=tmp_path, trainer=SIM
    )
    (rec,) = r.records
    assert r.split == "val" and rec.split == "val" and rec.test_metrics == {}
    assert rec.objective_test == rec.objective_val and rec.seed == 5
    summary = read_final_summary(tmp_path)
    assert summary["split"] == "val" and summary["split_label"] == "val (no test split)"


def test_fresh_seeds_follow_the_trials_seed_and_top_k_configurations_are_ranked(digits_cls_test, tmp_path):
    good, bad = {"lr0": 0.002, "momentum": 0.9}, {"lr0": 0.5, "momentum": 0.1}
    from hpo.simulate import curve_value, eval_value

    r = train_final(
        model="yolov8n-cls.yaml",
        data=digits_cls_test,
        params=[
            FinalCandidate(bad, source_trial=3, search_objective=0.5),
            FinalCandidate(good, source_trial=7, search_objective=0.4),
        ],
        train_args={"seed": 10},
        epochs=4,
        seeds=2,
        output=tmp_path,
        trainer=SIM,
    )
    assert [(x.source_trial, x.seed) for x in r.records] == [(3, 11), (3, 12), (7, 11), (7, 12)]
    rank = [c["source_trial"] for c in r.summary["configurations"]]
    q = {3: curve_value(bad, 4), 7: curve_value(good, 4)}
    assert rank == sorted(q, key=lambda t: -q[t])
    first = r.summary["configurations"][0]
    assert first["test_mean"] == pytest.approx(eval_value(q[rank[0]])) and first["test_sd"] == pytest.approx(0.0)
    assert first["search_objective"] == {3: 0.5, 7: 0.4}[rank[0]]
    assert r.summary["chosen"]["source_trial"] == rank[0]


def test_a_failed_run_is_trained_again_under_a_new_id_and_its_record_stays(digits_cls_test, tmp_path):
    kw = dict(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.01}, epochs=2, seeds=[1, 2], output=tmp_path, trainer=SIM
    )
    r = train_final(**kw, trainer_options={"fail": [1]})
    assert [x.status for x in r.records] == [TrialStatus.COMPLETE, TrialStatus.FAILED]
    assert "simulated training error of trial 1" in r.records[1].error
    with pytest.raises(RunFailedError):
        require_complete(dataclasses.replace(r, records=r.records[1:]))
    with open(tmp_path / "final.jsonl", "a") as f:
        f.write('{"id": 9, "par')  # a torn last line, as a killed writer leaves it
    r = train_final(**kw)
    assert [(x.id, x.seed, x.status) for x in r.records] == [(0, 1, TrialStatus.COMPLETE), (2, 2, TrialStatus.COMPLETE)]
    records = read_final_records(tmp_path)
    assert sorted(records) == [0, 1, 2] and records[1].status is TrialStatus.FAILED
    assert (tmp_path / "final.jsonl").read_text().endswith("}\n")  # the torn line was cut before appending


def test_the_time_budget_stops_a_run_at_an_epoch_and_starts_no_more(digits_cls_test, tmp_path):
    kw = dict(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.01}, epochs=4, seeds=2, output=tmp_path, trainer=SIM
    )
    with clock.simulated():
        r = train_final(**kw, trainer_options={"epoch_s": 0.4}, time_budget_s=1.0)
    (rec,) = r.records
    assert rec.status is TrialStatus.INTERRUPTED and rec.epochs_completed == 3  # 1.2 s > 1.0 s after epoch 3
    assert "time budget (1s) ran out after epoch 3 of 4" in rec.error
    assert r.stopped_by == "time_budget" and r.pending == 1 and r.weights is None
    assert r.summary["counts"] == {"complete": 0, "failed": 0, "interrupted": 1, "running": 0, "pending": 1}
    with pytest.raises(
        RunFailedError,
        match=r"^final: the time budget ended the final stage before any final run completed \(0 failed, 1 not started\)",
    ):
        require_complete(r)
    with clock.simulated():  # with more time it continues: the interrupted run again (same id), then the other
        r = train_final(**kw, trainer_options={"epoch_s": 0.4}, time_budget_s=10.0)
    assert [(x.id, x.status) for x in r.records] == [(0, TrialStatus.COMPLETE), (1, TrialStatus.COMPLETE)]
    require_complete(r)


def test_a_run_that_cannot_finish_within_the_budget_left_is_not_started(digits_cls_test, tmp_path):
    kw = dict(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.01}, epochs=2, seeds=3, output=tmp_path, trainer=SIM
    )
    with clock.simulated():
        r = train_final(**kw, trainer_options={"epoch_s": 1.0}, time_budget_s=5.0)
    # each run takes 2 s: after two, 1 s is left, less than a run needs
    assert [x.status for x in r.records] == [TrialStatus.COMPLETE, TrialStatus.COMPLETE] and r.pending == 1
    assert r.stopped_by == "time_budget"


STAGE_SCRIPT = """
import sys
from hpo import train_final
try:
    train_final(model="yolov8n-cls.yaml", data=sys.argv[1], params={"lr0": 0.01}, epochs=20, seeds=1,
                output=sys.argv[2], trainer="hpo.simulate:simulated_trainer", trainer_options={"epoch_s": 0.5})
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_stopped_run_is_no_result_and_the_next_stage_trains_it_again_with_its_id(digits_cls_test, tmp_path, sig):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(STAGE_SCRIPT))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(digits_cls_test), str(out)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recs = read_final_records(out)
        if recs and recs[0].epochs_completed >= 1:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=60)
    rec = read_final_records(out)[0]
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in stdout
        assert rec.status is TrialStatus.INTERRUPTED and "interrupted (Ctrl-C or SIGTERM) after epoch" in rec.error
    else:
        assert proc.returncode == -signal.SIGKILL and rec.status is TrialStatus.RUNNING
    assert not read_final_summary(out)["configurations"][0]["n"]
    (out / "final" / "0" / "stale.txt").write_text("from the stopped run")
    # the same stage again (trainer options are no setting of a run: here, no sleeping)
    r = train_final(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.01}, epochs=20, seeds=1, output=out, trainer=SIM
    )
    assert [(x.id, x.status, x.epochs_completed) for x in r.records] == [(0, TrialStatus.COMPLETE, 20)]
    assert not (out / "final" / "0" / "stale.txt").exists()  # its folder was cleared


def test_bad_input_is_one_line_before_anything_is_written(digits_cls_test, digits_det, tmp_path):
    out = tmp_path / "out"
    kw = dict(model="yolov8n-cls.yaml", data=digits_cls_test, epochs=1, output=out, trainer=SIM)
    cases = [
        (dict(kw, params={"seed": 3}), r"^params: 'seed' is set per final run"),
        (dict(kw, params={"lr00": 0.1}), r"^params: 'lr00' is not an Ultralytics train argument"),
        (dict(kw, params={}, train_args={"epochs": 3}), r"^train args: 'epochs' is set by hpo"),
        (dict(kw, params={}, seeds=0), r"^final_seeds: 0 must be a count >= 1"),
        (dict(kw, params={}, seeds=[1, 1]), r"^final_seeds: \[1, 1\] repeats a seed"),
        (dict(kw, params={}, epochs=0), r"^final_epochs: 0 must be a whole number >= 1"),
        (dict(kw, params={"lr0": -1.0}), r"^params: .*lr0"),
        (
            dict(kw, model="yolov8n.yaml", data=digits_det, params={}, metric="val/box_loss"),
            r"^metric: 'val/box_loss' is a validation loss",
        ),
    ]
    for args, message in cases:
        with pytest.raises(ConfigError, match=message):
            train_final(**args)
    assert not out.exists()


def test_final_records_survive_in_plain_json(digits_cls_test, tmp_path):
    r = train_final(
        model="yolov8n-cls.yaml", data=digits_cls_test, params={"lr0": 0.01}, epochs=1, seeds=1, output=tmp_path, trainer=SIM
    )
    lines = [json.loads(x) for x in (tmp_path / "final.jsonl").read_text().splitlines()]
    assert lines[-1]["status"] == "complete" and lines[-1]["objective_test"] == r.records[0].objective_test
    doc = yaml.safe_load((tmp_path / "final.yaml").read_text())
    assert doc["split"] == "test" and doc["results"]["chosen"]["weights"] is None  # a simulated run writes no weights
    assert os.path.isdir(tmp_path / "final" / "0")
