"""The benchmark suite (benchmarks/): a real --quick run produces a well-formed report.

No timing assertions: only that the report, the raw data and the plots exist and parse, with
values that a real run produces (objectives in [0, 1], statuses, counts per contender).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ray is left out: its start-up alone (~12 s here) passes the quick budget (model.tune's 2 one-epoch
# iterations), so it would add ~35 s and no row of the equal-wall-clock table; tests/test_backend_ray.py
# trains it for real
QUICK_CONTENDERS = ["ultralytics", "optuna", "random", "ultralytics-native"]


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "hpo_bench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real quick run: digits-cls at equal wall clock, model.tune's 2 iterations of 1 epoch set the
    time budget of every contender (each hpo study also stops at 2 trials)."""
    out = tmp_path_factory.mktemp("bench") / "report"
    proc = _bench("run", "--quick", "--contenders", ",".join(QUICK_CONTENDERS), "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("report.md")
    return out


def _table_rows(report: str, header_start: str) -> list[list[str]]:
    lines = report.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(header_start))
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    assert set(lines[i + 1].replace("|", "").replace("-", "")) == set(), lines[i + 1]
    rows = []
    for ln in lines[i + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(header), ln
        rows.append(dict(zip(header, cells, strict=False)))
    return rows


@pytest.mark.slow
def test_quick_report_table_has_a_row_per_contender(quick_report: Path) -> None:
    report = (quick_report / "report.md").read_text()
    assert "Reproduce: `python -m hpo_bench run --quick" in report
    assert "## digits-cls" in report
    # only trials that ended within model.tune's wall time count (ray's start-up alone may pass it)
    budget = json.loads((quick_report / "results.json").read_text())["problems"]["digits-cls"]["budgets_s"]["0"]
    with (quick_report / "trials.csv").open() as f:
        ends = [(t["contender"], float(t["end_s"])) for t in csv.DictReader(f) if t["status"] == "complete"]
    rows = _table_rows(report, "| contender | seeds | best objective")
    assert [r["contender"] for r in rows] == QUICK_CONTENDERS
    for r in rows:
        assert r["seeds"] == "1"
        within = any(end <= budget for c, end in ends if c == r["contender"])
        if r["best objective (mean ± sd [min, max])"] == "-":
            assert not within and r["retrain, new seed"] == "-" and r["contender"] != "ultralytics-native"
        else:
            assert within and 0.0 <= float(r["best objective (mean ± sd [min, max])"]) <= 1.0
            assert 0.0 <= float(r["retrain, new seed"]) <= 1.0
        assert 0.0 <= float(r["default-hparams reference"]) <= 1.0
        complete, pruned, failed = (int(x) for x in r["trials complete/pruned/failed"].split("/"))
        # model.tune runs its 2 iterations; an hpo study stops at 2 trials or at model.tune's wall time
        assert (complete + pruned + failed == 2) if r["contender"] == "ultralytics-native" else (complete + pruned + failed <= 2)
        assert failed == 0 and complete >= 1
        assert float(r["epochs used per study"]) == complete + pruned + failed  # 1 epoch each (pruned at its end)
        assert float(r["study wall s"]) > 0
        assert r["capped"] == "0"
        float(r["overhead s/trial"])  # a number
    per_study = _table_rows(report, "| contender | seed | best |")
    assert len(per_study) == len(QUICK_CONTENDERS)
    b2b = _table_rows(report, "| contender | seed | trainings |")
    assert [(r["contender"], r["epochs"]) for r in b2b] == [("ultralytics", r["trainings"]) for r in b2b]
    assert [r["contender"] for r in b2b] == ["ultralytics"] and 1 <= int(b2b[0]["trainings"]) <= 2
    # the equal-wall-clock table: model.tune first, then every other contender against it
    wall = _table_rows(report, "| contender | seeds | best at budget")
    assert [r["contender"] for r in wall] == [
        "ultralytics-native (model.tune)",
        *[c for c in QUICK_CONTENDERS if c != "ultralytics-native"],
    ]
    for r in wall:
        assert r["seeds"] == "1"
        assert float(r["trials per study"]) >= 1
        name = r["contender"].split(" ")[0]
        if r["best at budget, mean ± 95% CI"] == "-":  # no trial ended within model.tune's wall time
            assert all(end > budget for c, end in ends if c == name) and name != "ultralytics-native"
            continue
        mean, ci = r["best at budget, mean ± 95% CI"].split(" ± ")
        assert 0.0 <= float(mean) <= 1.0 and ci == "0.0000"  # one seed: no interval (0 by definition)
        assert any(end <= budget for c, end in ends if c == name)
    assert wall[0]["vs model.tune: better / tie / worse"] == "-" and wall[0]["Wilcoxon p"] == "-"
    for r in wall[1:]:  # the one seed is compared when the contender has a best within the budget
        compared = sum(int(x) for x in r["vs model.tune: better / tie / worse"].split(" / "))
        assert compared == (0 if r["best at budget, mean ± 95% CI"] == "-" else 1)
    # every image the report shows exists
    for name in (
        "digits-cls-equal-wall-clock.png",
        "digits-cls-best-vs-time.png",
        "digits-cls-best-vs-epochs.png",
        "overhead.png",
    ):
        assert f"]({name})" in report


@pytest.mark.slow
def test_quick_report_raw_trials_csv(quick_report: Path) -> None:
    from hpo_bench.report import TRIAL_COLUMNS
    from hpo_bench.suite import SPACE_CLS

    with open(quick_report / "trials.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == TRIAL_COLUMNS
        rows = list(reader)
    assert sorted({r["contender"] for r in rows}) == sorted(QUICK_CONTENDERS)
    for c in QUICK_CONTENDERS:
        mine = [r for r in rows if r["contender"] == c]
        assert sorted(int(r["trial"]) for r in mine) in ([0], [0, 1])
    assert len([r for r in rows if r["contender"] == "ultralytics-native"]) == 2
    for r in rows:
        assert r["problem"] == "digits-cls" and r["seed"] == "0"
        assert r["status"] in ("complete", "pruned", "failed")
        if r["status"] == "complete":
            assert 0.0 <= float(r["objective"]) <= 1.0
        assert int(r["epochs"]) == 1
        assert float(r["end_s"]) > 0 and float(r["duration_s"]) > 0 and float(r["train_s"]) > 0
        assert math.isclose(float(r["overhead_s"]), float(r["duration_s"]) - float(r["train_s"]), rel_tol=1e-6, abs_tol=1e-6)
        params = json.loads(r["params"])
        assert set(params) == set(SPACE_CLS)
        for k, v in params.items():
            assert SPACE_CLS[k][0] <= v <= SPACE_CLS[k][1]
    # Ultralytics' native tuner starts from the defaults, as does hpo's ultralytics backend
    first = {
        c: json.loads(next(r["params"] for r in rows if r["contender"] == c and r["trial"] == "0"))
        for c in ("ultralytics", "ultralytics-native")
    }
    assert first["ultralytics"]["lr0"] == pytest.approx(first["ultralytics-native"]["lr0"]) == 0.01


@pytest.mark.slow
def test_quick_report_plots_and_machine(quick_report: Path) -> None:
    import matplotlib.image as mpimg

    pngs = sorted(quick_report.glob("*.png"))
    assert {p.name for p in pngs} == {
        "digits-cls-equal-wall-clock.png",
        "digits-cls-best-vs-time.png",
        "digits-cls-best-vs-epochs.png",
        "overhead.png",
    }
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.shape[0] > 100 and img.shape[1] > 100
    machine = json.loads((quick_report / "machine.json").read_text())
    assert machine["cpu"] and machine["cores"] >= 1 and machine["ram_bytes"] > 0
    assert isinstance(machine["gpus"], list)
    assert machine["versions"]["hpo"] and machine["versions"]["ultralytics"] and machine["versions"]["torch"]
    results = json.loads((quick_report / "results.json").read_text())
    pres = results["problems"]["digits-cls"]
    ref = pres["reference"]["0"]["objective"]
    assert 0.0 <= ref <= 1.0
    # model.tune's wall time is the seed's budget; every hpo study got it as its --time-budget
    budget = pres["budgets_s"]["0"]
    assert budget > 0
    native = next(s for s in pres["studies"] if s["contender"] == "ultralytics-native")
    assert native["wall_s"] == budget
    for st in pres["studies"]:
        if st["contender"] == "ultralytics-native":
            continue
        assert st["budget_s"] == budget
        settings = json.loads(
            (quick_report / "runs" / "digits-cls" / "studies" / f"{st['contender']}-s0" / "study.json").read_text()
        )
        assert settings["time_budget"] == pytest.approx(budget) and settings["iterations"] == 2


@pytest.mark.slow
def test_report_rebuilds_from_results_json(quick_report: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(quick_report / "results.json", copy / "results.json")
    proc = _bench("report", str(copy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "report.md").read_text().split("## Machine")[1] == (quick_report / "report.md").read_text().split(
        "## Machine"
    )[1]
    assert len(list(copy.glob("*.png"))) == 4


@pytest.mark.slow
def test_quick_run_starts_every_training_of_a_seed_from_one_initialisation(quick_report: Path) -> None:
    """shared_init: model.tune's iterations and every hpo study of seed 0 load the same untrained .pt."""
    import torch

    results = json.loads((quick_report / "results.json").read_text())
    studies = results["problems"]["digits-cls"]["studies"]
    models = {st["model"] for st in studies}
    assert len(models) == 1 and {st["contender"] for st in studies} == set(QUICK_CONTENDERS)
    weights = Path(models.pop())
    assert weights.name == "yolov8n-cls-seed0.pt" and weights.is_file()
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    assert ckpt["train_args"] == {"task": "classify"}
    # the seed, not chance, makes these weights: the same build under seed 0 gives the same tensors
    torch.manual_seed(0)
    from ultralytics import YOLO

    fresh = YOLO("yolov8n-cls.yaml", task="classify").model.state_dict()
    saved = ckpt["model"].state_dict()
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[k], fresh[k].half()) for k in saved)


@pytest.mark.slow
def test_resume_reruns_only_what_is_missing(quick_report: Path, tmp_path: Path) -> None:
    """--resume keeps recorded studies (model.tune's budget with them) and runs a study cut off by a stop."""
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    results = json.loads((quick_report / "results.json").read_text())
    pres = results["problems"]["digits-cls"]
    kept = {st["contender"]: st for st in pres["studies"]}
    pres["studies"] = [st for st in pres["studies"] if st["contender"] != "random"]  # as if stopped in it
    (copy / "results.json").write_text(json.dumps(results))
    shutil.copytree(quick_report / "data", copy / "data")
    proc = _bench("run", "--quick", "--contenders", ",".join(QUICK_CONTENDERS), "--out", str(copy), "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((copy / "results.json").read_text())
    pafter = after["problems"]["digits-cls"]
    by = {st["contender"]: st for st in pafter["studies"]}
    assert set(by) == set(QUICK_CONTENDERS) and len(pafter["studies"]) == len(QUICK_CONTENDERS)
    for name in ("ultralytics", "optuna", "ultralytics-native"):
        assert by[name] == kept[name]  # recorded: not run again
    assert pafter["budgets_s"] == pres["budgets_s"] and pafter["reference"] == pres["reference"]
    assert by["random"]["rc"] == 0 and by["random"]["budget_s"] == pres["budgets_s"]["0"]
    assert by["random"]["trials"] and by["random"]["trials"][0]["end_s"] is not None
    assert Path(by["random"]["model"]).parent == copy / "runs" / "digits-cls" / "init"
    assert after["resumed"][0]["command"].endswith("--resume") and after["command"] == results["command"]
    assert proc.stderr.count("recorded, kept") == 3
    # a problem whose settings changed cannot be continued: exit 2, nothing written
    before = (copy / "results.json").read_bytes()
    proc = _bench("run", "--quick", "--out", str(copy), "--resume", "--set", "epochs=2", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("benchmarks: error: --resume: digits-cls's epochs differ")
    assert (copy / "results.json").read_bytes() == before


def test_seeds_option() -> None:
    from hpo_bench.__main__ import parse_seeds

    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("2-4") == [2, 3, 4] and parse_seeds("4-4") == [4]
    assert parse_seeds("0,3,2-3") == [0, 2, 3]
    for bad in ("0", "-1", "a", "3-1", "1,", "", "2-x"):
        with pytest.raises(ValueError, match="^--seeds: "):
            parse_seeds(bad)


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    for args, word in (
        (["--seeds", "2-x"], "--seeds"),
        (["--seeds", "3-1"], "write 1-3"),
        (["--contenders", "ultralytics,optuna"], "add ultralytics-native"),
        (["--resume", "--set", "shared_init=maybe"], "--set"),
        (["--contenders", "ultralytics,nosuch"], "--contenders"),
        (["--set", "digits-cls.epochs"], "--set"),
        (["--set", "nosuch.epochs=2"], "--set"),
        (["--problems", "digits-seg"], "--problems"),
    ):
        out = tmp_path / "out"
        proc = _bench("run", "--quick", "--out", str(out), *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("benchmarks: error: ") and word in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_missing_backend_is_skipped_with_a_reason() -> None:
    from hpo_bench.suite import CONTENDERS, Contender

    ok, why = Contender("nosuch", "hpo", "nosuch").available()
    assert not ok and "'nosuch' is not installed" in why and "ultralytics" in why
    assert CONTENDERS["ultralytics"].available() == (True, "")
    assert CONTENDERS["random"].available() == (True, "")
    assert {c.backend for c in CONTENDERS.values() if c.kind == "hpo"} >= {"ultralytics", "optuna", "ray"}


def test_overrides_scale_problems() -> None:
    from hpo_bench.suite import apply_overrides, suite

    problems = apply_overrides(suite("cpu-small")["problems"], ["epochs=5", "digits-det.imgsz=320", "digits-det.amp=false"])
    by = {p.name: p for p in problems}
    assert by["digits-cls"].epochs == by["digits-det"].epochs == 5
    assert by["digits-det"].imgsz == 320 and by["digits-cls"].imgsz == 32
    assert by["digits-det"].train_args == {"amp": False} and by["digits-cls"].train_args == {}
    assert by["digits-det"].fixed_args(3, "0")["seed"] == 3
    wall = apply_overrides(suite("cpu-small")["problems"], ["budget=wallclock", "max_trials=7"])
    assert {(p.budget, p.max_trials) for p in wall} == {("wallclock", 7)}
    with pytest.raises(ValueError, match=r"^--set: budget: 'hours' is not 'trials' or 'wallclock' in 'budget=hours'$"):
        apply_overrides(suite("cpu-small")["problems"], ["budget=hours"])


def test_random_backend_samples_the_space(tmp_path: Path) -> None:
    """The baseline's proposals: inside the bounds, log-uniform for log params, same seed -> same params."""
    from hpo.datasets import make_digits_cls
    from hpo.plugins import get_backend
    from hpo.validate import build_config
    from hpo_bench.random_search import NAME, register

    register()
    data = make_digits_cls(tmp_path / "d", imgsz=8)
    space = {
        "lr0": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "close_mosaic": (0, 10),
        "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]},
    }
    cfg = build_config(backend=NAME, model="yolov8n-cls.yaml", data=data, space=space, seed=7, output=tmp_path)
    b = get_backend(cfg.backend)(config=cfg, study=None, options=cfg.options)
    samples = [b.ask().params for _ in range(400)]
    fresh = get_backend(cfg.backend)(config=cfg, study=None, options=cfg.options)
    assert samples[:5] == [fresh.ask().params for _ in range(5)]
    for s in samples:
        cfg.space.validate_params(s)
    lr = sorted(s["lr0"] for s in samples)
    assert 1e-5 <= lr[0] and lr[-1] <= 1e-1
    # log-uniform over 4 decades: about a quarter of the samples per decade; uniform would put ~90% in the top one
    assert 0.15 < sum(v < 1e-4 for v in lr) / len(lr) < 0.35
    assert {s["optimizer"] for s in samples} == {"SGD", "AdamW"}
    assert {type(s["close_mosaic"]) for s in samples} == {int}


RECORDING = ROOT / "benchmarks" / "results" / "recording" / "digits-cls"


def test_recording_table_and_its_surrogate() -> None:
    """The committed recording (python -m hpo_bench record): K >= 100 real configurations of full
    digits-cls, every epoch's metric and seconds; the surrogate fitted on it reproduces a recorded
    curve's neighbourhood and states its held-out error."""
    from hpo_bench.recording import read_table
    from hpo_bench.simulation import Surrogate

    rows, info = read_table(RECORDING)
    configs = {int(r["config"]) for r in rows}
    assert len(configs) >= 100 and info["epochs"] == 3
    for r in rows:
        assert 0.0 <= r["objective"] <= 1.0 and r["time_s"] > 0 and r["duration_s"] > r["time_s"]
    s = Surrogate(rows, info)
    for kind, cv in s.cv.items():
        assert 0 <= cv["mae_final"] < cv["sd_final"], (kind, cv)  # better than predicting the mean
    curve, per_epoch, beside = s.predict({k: r for k, r in rows[0].items() if k in info["space"]})
    assert len(curve) == len(per_epoch) == 3 and beside > 0 and all(t > 0 for t in per_epoch)
    assert info["model_tune"]["iterations"] >= 1


def test_surrogate_trial_noise_is_a_recorded_residual_curve() -> None:
    """noise: the mean curve plus one recorded configuration's held-out residual curve, drawn per trial."""
    import numpy as np

    from hpo_bench.recording import read_table
    from hpo_bench.simulation import Surrogate

    rows, info = read_table(RECORDING)
    s = Surrogate(rows, info)
    assert s.residuals.shape == (len(s.configs), 3)
    # the residuals are the out-of-fold errors the report states: their final-epoch sd and MAE agree
    assert float(np.std(s.residuals[:, -1])) == pytest.approx(s.cv[s.kind]["residual_sd_final"])
    assert float(np.mean(np.abs(s.residuals[:, -1]))) == pytest.approx(s.cv[s.kind]["mae_final"])
    params = {k: r for k, r in rows[0].items() if k in info["space"]}
    mean, _, _ = s.predict(params)
    one, _, _ = s.predict(params, np.random.default_rng([3, 7]))
    assert one == s.predict(params, np.random.default_rng([3, 7]))[0]  # same study seed and trial: same draw
    draws = [s.predict(params, np.random.default_rng([3, t]))[0] for t in range(40)]
    assert len({tuple(d) for d in draws}) > 20  # trials differ
    for d in draws:  # each is the mean curve plus one recorded residual curve (clipped into [0, 1])
        shifted = np.clip(np.array(mean) + s.residuals, 0.0, 1.0)
        assert np.isclose(shifted, np.array(d)).all(axis=1).any()


def test_simulate_runs_real_backends_at_model_tunes_budget(tmp_path: Path) -> None:
    """python -m hpo_bench simulate, two seeds: every contender stops at model.tune's simulated wall
    time of its seed, trials are the surrogate's curves, and the report has a row per contender."""
    proc = _bench(
        "simulate",
        "--recording",
        str(RECORDING),
        "--seeds",
        "2",
        "--contenders",
        "ultralytics,optuna",
        "--processes",
        "1",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "simulated.json").read_text())
    assert set(res["contenders"]) == {"model.tune", "ultralytics", "optuna"}
    natives = [s for s in res["studies"] if s["contender"] == "model.tune"]
    assert len(natives) == 2 and all(len(s["trials"]) == 12 for s in natives)
    for s in res["studies"]:
        budget = res["budgets_s"][str(s["seed"])]
        assert s["trials"] and all(t["status"] in ("complete", "pruned") for t in s["trials"])
        if s["contender"] != "model.tune":  # stopped by the budget, at an epoch boundary past it
            assert budget <= s["elapsed_s"] < budget + 60
            assert all(t["end_s"] <= s["elapsed_s"] for t in s["trials"])
    ultra = [s for s in res["studies"] if s["contender"] == "ultralytics"]
    assert all(len(s["trials"]) > 12 for s in ultra)  # cheaper trials than model.tune: more of them
    md = (tmp_path / "simulated.md").read_text()
    for name in res["contenders"]:
        assert f"| {name} | 2 |" in md
    assert (tmp_path / "simulated-best-vs-time.png").read_bytes()[:8] == PNG_MAGIC
    # the primary score: the chosen configuration's noise-free quality, a study's best trial within its budget
    for s in res["studies"]:
        c, budget = s["chosen"], res["budgets_s"][str(s["seed"])]
        done = [t for t in s["trials"] if t["status"] == "complete" and t["end_s"] <= budget]
        assert c["noisy"] == max(t["objective"] for t in done) and 0.0 <= c["true"] <= 1.0
        assert set(c["params"]) == set(json.loads((RECORDING / "recording.json").read_text())["space"])
    assert "Primary score: the noise-free quality" in md and "over 5 fold assignments" in md
    # reproducible from the seed: the same command again gives the same studies, trial by trial
    again = tmp_path / "again"
    proc = _bench(
        "simulate", "--recording", str(RECORDING), "--seeds", "2", "--contenders", "ultralytics,optuna",
        "--processes", "1", "--out", str(again), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((again / "simulated.json").read_text())["studies"] == res["studies"]


def test_wallclock_detection_problem_builds_its_canvases(tmp_path: Path) -> None:
    """cpu-wallclock's digits-det: 64 px canvases with 1-2 digits of at most 30 px (the measured problem)."""
    import dataclasses

    from hpo_bench.suite import build_data, suite

    det = next(p for p in suite("cpu-wallclock")["problems"] if p.name == "digits-det")
    assert (det.imgsz, det.digit_size, det.digits_per_image, det.warm_start_epochs) == (64, (20, 30), (1, 2), 10)
    data = Path(build_data(dataclasses.replace(det, images=8, val_images=3), tmp_path / "det"))
    labels = sorted((data.parent / "labels" / "train").glob("*.txt"))
    assert len(labels) == 8 and len(list((data.parent / "labels" / "val").glob("*.txt"))) == 3
    for f in labels:
        rows = [ln.split() for ln in f.read_text().splitlines()]
        assert 1 <= len(rows) <= 2
        assert all(0 < float(w) * 64 <= 30 and 0 < float(h) * 64 <= 30 for _, _, _, w, h in rows)


def test_scale_benchmark_at_a_tiny_size(tmp_path: Path) -> None:
    """``python -m hpo_bench scale`` end to end at 30 trials (the committed measurement runs 10,000):
    the per-trial rows, the windows, RSS, show and resume times, and the report."""
    from hpo_bench.trial_cost import windows_for

    out = tmp_path / "scale"
    proc = _bench("scale", "--trials", "30", "--backends", "ultralytics", "--out", str(out), "--note", "a test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["cores"] >= 1 and results["note"] == "a test"
    (run,) = results["runs"]
    assert run["backend"] == "ultralytics" and run["trials"] == 30 and run["split"] == 3
    assert [(w["lo"], w["hi"]) for w in run["windows"]] == windows_for(30) == [(1, 2), (2, 3), (29, 30)]
    for w in run["windows"]:
        assert 0 < w["backend"] < w["driver"] < 5 and 0 < w["record"] < w["driver"], w  # CPU seconds per trial
        assert abs(w["driver_less_backend"] - (w["driver"] - w["backend"])) < 1e-9
    assert run["ratio"] > 0 and run["meets_target"] == (run["ratio"] <= 1.5) and run["ratio_wide"] > 0
    assert [(w["lo"], w["hi"]) for w in run["wide_windows"]] == [(1, 3), (27, 30)]
    assert all(0 <= w["gc_in_backend"] <= w["gc"] < w["driver"] for w in run["wide_windows"])
    assert [p["exit_code"] for p in run["runs"]] == [0, 0, 0] and [p["trials_run"] for p in run["runs"]] == [3, 27, 1]
    assert set(run["show"]) == {"3", "30"} and set(run["resume"]) == {"3", "30"}
    assert all(0 < s["render_cpu_s"] < s["command_cpu_s"] for s in run["show"].values())
    assert run["show"]["30"]["importance_note"].startswith("importance: fANOVA over 30 complete trials")
    assert all(0 < r["open_s"] < r["process_start_to_first_trial_s"] for r in run["resume"].values())
    assert run["rss"]["end"] > 50 << 20 and run["rss"]["trials_in_last_run"] == 26
    rows = list(csv.DictReader((out / "ultralytics.2.csv").open()))
    assert [int(r["finished"]) for r in rows] == list(range(4, 31))
    report = (out / "report.md").read_text()
    assert "| ultralytics | 30 | 29-30 |" in report and "Command (wall time" in report and "a test" in report
