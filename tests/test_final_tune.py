"""The final stage of a study: ``hpo tune --final-epochs`` for every backend, ``Tuner(final_epochs=...)``,
how the time budget is shared between the search and the final stage, the KFP step's parameters and
outputs, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import CLS_ARGS, hpo_cli, kv

from hpo import RunFailedError, TrialStatus, Tuner, clock
from hpo.final import read_final_records
from hpo.simulate import eval_value

SIM = "hpo.simulate:simulated_trainer"
SPACE = {"lr0": (1e-4, 1e-2), "momentum": (0.7, 0.98)}
#: backend options that keep every simulated trial complete
NO_PRUNING = {"ultralytics": [], "optuna": ["--pruner", "none"], "ray": ["--scheduler", "fifo"]}


@pytest.mark.parametrize("backend", list(NO_PRUNING))
def test_hpo_tune_final_epochs_runs_the_final_stage_for_every_backend(backend, digits_cls_test, tmp_path):
    r = hpo_cli(
        "tune",
        "--backend",
        backend,
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls_test),
        "--space",
        json.dumps({k: list(v) for k, v in SPACE.items()}),
        "--iterations",
        "4",
        "--epochs",
        "2",
        "--output",
        str(tmp_path),
        "--name",
        "s",
        "--seed",
        "0",
        "--final-epochs",
        "3",
        "--final-seeds",
        "2",
        "--final-top",
        "2",
        "--json",
        "--quiet",
        *NO_PRUNING[backend],
        "optimizer=AdamW",
        env={"HPO_TRAINER": SIM},
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    final = doc["final"]
    assert final["split_label"] == "test" and final["epochs"] == 3 and final["seeds"] == [1, 2]
    assert final["counts"]["complete"] == 4 and len(final["configurations"]) == 2
    study = tmp_path / "s"
    trials = {t["id"]: t for t in map(json.loads, (study / "trials.jsonl").read_text().splitlines()) if t["status"] == "complete"}
    top2 = sorted(trials, key=lambda i: (-trials[i]["objective"], i))[:2]
    assert sorted(c["source_trial"] for c in final["configurations"]) == sorted(top2)
    for c in final["configurations"]:
        params = trials[c["source_trial"]]["params"]
        from hpo.simulate import curve_value

        assert c["test_mean"] == pytest.approx(eval_value(curve_value(params, 3)))
        assert c["search_objective"] == trials[c["source_trial"]]["objective"]
    settings = json.loads((study / "study.json").read_text())
    assert (settings["final_epochs"], settings["final_seeds"], settings["final_top"]) == (3, 2, 2)


def _sim_tuner(digits: Path, out: Path, **kw) -> Tuner:
    args = dict(
        backend="ultralytics",
        model="yolov8n-cls.yaml",
        data=digits,
        space=SPACE,
        epochs=2,
        train_args={"optimizer": "AdamW"},
        output=out,
        name="budget",
        seed=0,
        trainer=SIM,
        trainer_options={"epoch_s": 2.0},
        plots=False,
    )
    return Tuner(**{**args, **kw})


def test_the_search_leaves_the_final_stage_its_estimated_cost_of_the_time_budget(digits_cls_test, tmp_path):
    # trials take 2 x 2 s = 4 s; the final stage 1 x 2 x 4 epochs x 2 s = 16 s: the search stops
    # starting trials at 60 - 16 = 44 s, and the two final runs (8 s each) end at 60 s
    with clock.simulated():
        result = _sim_tuner(digits_cls_test, tmp_path, time_budget=60, final_epochs=4, final_seeds=2).run()
    assert result.counts == {"complete": 11, "failed": 0, "pruned": 0} and result.stopped_by == "time_budget"
    assert [x.status for x in result.final.records] == [TrialStatus.COMPLETE] * 2
    assert result.final.records[0].source_trial == result.best_trial
    settings = json.loads((tmp_path / "budget" / "study.json").read_text())
    assert settings["elapsed_s"] == pytest.approx(60.0)  # the final stage's time is the study's
    assert (tmp_path / "budget" / "final.yaml").is_file()


def test_a_final_stage_the_budget_leaves_no_time_for_fails_and_hpo_final_continues_it(digits_cls_test, tmp_path):
    # the final stage would cost 2 x 20 epochs x 2 s = 80 s of a 10 s budget: the search stops after
    # its first trial (4 s) and the first final run is stopped at 6 s, after its 3rd epoch
    with clock.simulated(), pytest.raises(RunFailedError) as err:
        _sim_tuner(digits_cls_test, tmp_path, iterations=1, time_budget=10, final_epochs=20, final_seeds=2).run()
    study = tmp_path / "budget"
    assert str(err.value) == (
        "final: the time budget ended the final stage before any final run completed (0 failed, 1 not started); "
        f"run 'hpo final {study}' with more time"
    )
    (rec,) = read_final_records(study).values()
    assert rec.status is TrialStatus.INTERRUPTED and rec.epochs_completed == 3
    # resumed with a larger budget, the study's search is done (its one trial) and its final stage
    # continues with what is left: the interrupted run again with its id, then the other
    with clock.simulated():
        result = _sim_tuner(
            digits_cls_test, tmp_path, iterations=1, time_budget=200, final_epochs=20, final_seeds=2, resume=True
        ).run()
    assert [(x.id, x.status) for x in result.final.records] == [(0, TrialStatus.COMPLETE), (1, TrialStatus.COMPLETE)]


def test_a_finished_study_resumed_with_final_epochs_runs_only_its_final_stage(digits_cls_test, tmp_path):
    first = _sim_tuner(digits_cls_test, tmp_path, iterations=3, trainer_options={}).run()
    assert first.final is None and not (tmp_path / "budget" / "final.jsonl").exists()
    again = _sim_tuner(digits_cls_test, tmp_path, iterations=3, trainer_options={}, resume=True, final_epochs=5).run()
    assert again.nothing_to_do and again.counts == first.counts
    (rec,) = again.final.records
    assert rec.source_trial == first.best_trial and rec.epochs == 5 and rec.status is TrialStatus.COMPLETE
    resumes = json.loads((tmp_path / "budget" / "study.json").read_text())["resumes"]
    assert resumes[-1]["changed"]["final_epochs"] == 5


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--final-epochs", "-1"], "final_epochs: '-1' must be a whole number >= 1"),
        (["--final-epochs", "2", "--final-seeds", "0"], "final_seeds: '0' must be a whole number >= 1"),
        (["--final-epochs", "2", "--final-top", "x"], "final_top: 'x' must be a whole number >= 1"),
        (["--final-epochs", "2", "--metric", "val/loss"], "final_epochs: the objective 'val/loss' is a validation loss"),
    ],
)
def test_bad_final_settings_are_one_line_before_anything_runs(extra, message, digits_cls_test, tmp_path):
    r = hpo_cli(
        "tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls_test), "--output", str(tmp_path), "--name", "x", *extra
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"hpo: error: {message}"), r.stderr
    assert not (tmp_path / "x").exists()


def test_the_kfp_step_runs_the_final_stage_and_hands_on_the_final_model(digits_cls_test, tmp_path, monkeypatch):
    from hpo_kfp.step import run_tune_step, write_outputs

    monkeypatch.setenv("HPO_TRAINER", SIM)
    monkeypatch.setenv("HPO_TRAINER_OPTIONS", json.dumps({"weights_bytes": 1024}))
    r = run_tune_step(
        model="yolov8n-cls.yaml",
        data=str(digits_cls_test),
        iterations=3,
        epochs=2,
        space=json.dumps({k: list(v) for k, v in SPACE.items()}),
        output_dir=str(tmp_path / "studies"),
        study_name="k",
        train_args={"optimizer": "AdamW", "workers": 0.0},
        final_epochs=3,
        final_seeds=2,
    )
    chosen = r.final["chosen"]
    (config,) = r.final["configurations"]
    assert r.metrics["final_test_mean"] == pytest.approx(config["test_mean"]) and r.metrics["final_complete"] == 2
    assert r.metrics["final_test_sd"] == pytest.approx(0.0) and r.metrics["final_objective_test"] == chosen["objective_test"]

    def artifact(name: str) -> SimpleNamespace:
        return SimpleNamespace(path=str(tmp_path / "out" / name), metadata={}, log_metric=lambda k, v: None)

    final_model = artifact("final_model")
    write_outputs(
        r,
        metrics=artifact("m"),
        leaderboard=artifact("l"),
        report=artifact("r"),
        best_model=artifact("b"),
        final_model=final_model,
    )
    meta = final_model.metadata
    assert meta["final"] is True and meta["split"] == "test" and meta["split_label"] == "test" and meta["seeds"] == [1, 2]
    assert meta["objective_test"] == config["test_mean"] and meta["run"] == chosen["run"] and meta["n"] == 2
    assert Path(final_model.path).read_bytes() == (tmp_path / "studies" / "k" / "weights" / "final.pt").read_bytes()
    off = artifact("off")
    r0 = run_tune_step(
        model="yolov8n-cls.yaml",
        data=str(digits_cls_test),
        iterations=1,
        epochs=1,
        output_dir=str(tmp_path / "studies"),
        study_name="k0",
        space=json.dumps({"lr0": [1e-4, 1e-2]}),
    )
    write_outputs(
        r0, metrics=artifact("m0"), leaderboard=artifact("l0"), report=artifact("r0"), best_model=artifact("b0"), final_model=off
    )
    assert off.metadata == {"final": False} and not Path(off.path).exists() and "final_test_mean" not in r0.metrics


def test_the_compiled_component_has_the_final_parameters_and_output(tmp_path):
    from kfp import compiler

    from hpo_kfp import make_tune_component

    comp = make_tune_component("registry.example.com/team/hpo:0.1.0")
    compiler.Compiler().compile(comp, str(tmp_path / "c.yaml"))
    spec = yaml.safe_load((tmp_path / "c.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["final_epochs"]["defaultValue"] == 0 and params["final_seeds"]["defaultValue"] == 1
    assert params["final_top"]["defaultValue"] == 1
    artifacts = spec["root"]["outputDefinitions"]["artifacts"]
    assert artifacts["final_model"]["artifactType"]["schemaTitle"] == "system.Model"


@pytest.mark.slow
def test_real_hpo_tune_with_final_epochs_scores_the_incumbent_on_the_test_split(digits_cls_test, tmp_path):
    r = hpo_cli(
        "tune",
        "--backend",
        "optuna",
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
        str(tmp_path),
        "--name",
        "real",
        "--final-epochs",
        "2",
        "--final-seeds",
        "2",
        "--quiet",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 0, r.stderr
    assert "final model: 1 configuration x 2 seeds (1, 2) x 2 epochs, metrics/accuracy_top1 on test; runs: complete 2" in r.stdout
    study = tmp_path / "real"
    records = list(read_final_records(study).values())
    best = json.loads(hpo_cli("show", str(study), "--json").stdout)
    assert [x.source_trial for x in records] == [best["best"]["trial"]] * 2
    for x in records:
        assert x.split == "test" and x.epochs_completed == 2 and math.isfinite(x.objective_test)
        args = yaml.safe_load((study / "final" / str(x.id) / "args.yaml").read_text())
        assert args["seed"] == x.seed and args["lr0"] == best["best"]["params"]["lr0"] and args["imgsz"] == 32
    assert best["final"]["chosen"]["weights"] == str(study / "weights" / "final.pt")
