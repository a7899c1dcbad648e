"""End to end: real Ultralytics training through the real ``hpo`` command on tiny real data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CLS_ARGS, DET_ARGS, SMALL_SPACE, hpo_cli, kv

from hpo import SearchSpace

pytestmark = pytest.mark.slow


def _show(study: Path) -> dict:
    r = hpo_cli("show", str(study), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ultralytics_backend_on_digits_cls(tmp_path, digits_cls):
    r = hpo_cli(
        "tune",
        "--backend",
        "ultralytics",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        "3",
        "--epochs",
        "1",
        "--output",
        str(tmp_path),
        "--name",
        "cls",
        "--seed",
        "0",
        "--space",
        json.dumps(SMALL_SPACE),
        "--json",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    study = tmp_path / "cls"
    assert result["study_dir"] == str(study)
    assert result["counts"] == {"complete": 3, "failed": 0, "pruned": 0}
    shown = _show(study)
    assert shown["backend"] == "ultralytics" and len(shown["trials"]) == 3
    assert [t["id"] for t in shown["trials"]] == [0, 1, 2]
    # the first trial evaluates Ultralytics' defaults (native behaviour), clipped into the space
    assert shown["trials"][0]["params"] == {"lr0": 0.01, "momentum": 0.937, "hsv_v": 0.4, "close_mosaic": 10}
    for t in shown["trials"]:
        assert t["status"] == "complete" and t["epochs_completed"] == 1
        assert 0.0 <= t["objective"] <= 1.0
        assert isinstance(t["params"]["close_mosaic"], int)
    best = max(shown["trials"], key=lambda t: t["objective"])
    assert shown["best"]["objective"] == best["objective"] == result["best"]["objective"]
    # records: sampled == applied, per-epoch metrics, timings
    records = [json.loads(x) for x in (study / "trials.jsonl").read_text().splitlines()]
    final = {r["id"]: r for r in records}
    for rec in final.values():
        assert rec["applied"] == rec["params"]
        assert rec["epochs"][0]["epoch"] == 1 and "metrics/accuracy_top1" in rec["epochs"][0]
        assert rec["train_s"] > 0 and rec["duration_s"] >= rec["train_s"]
        assert (study / "trials" / str(rec["id"]) / "results.csv").is_file()
    # best params as YAML, best weights, native files
    best_yaml = yaml.safe_load((study / "best.yaml").read_text())
    assert best_yaml["params"] == shown["best"]["params"]
    assert (study / "weights" / "best.pt").stat().st_size > 100_000
    native = [json.loads(x) for x in (study / "ultralytics" / "tune_results.ndjson").read_text().splitlines()]
    assert [n["iteration"] for n in native] == [1, 2, 3]
    assert yaml.safe_load((study / "ultralytics" / "best_hyperparameters.yaml").read_text()) == best_yaml["params"]
    settings = json.loads((study / "study.json").read_text())
    assert settings["versions"]["ultralytics"] and settings["train_args"]["imgsz"] == 32
    # a finished study: nothing to do, exit 0
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        "3",
        "--epochs",
        "1",
        "--output",
        str(tmp_path),
        "--name",
        "cls",
        "--space",
        json.dumps(SMALL_SPACE),
        "--resume",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 0, r.stderr
    from hpo.report import format_value  # the views' one precision rule (best.yaml keeps every digit)

    assert "nothing to do" in r.stdout and f"= {format_value(best['objective'])}" in r.stdout
    # resuming with another space is refused with a diff, exit 2
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        "4",
        "--epochs",
        "1",
        "--output",
        str(tmp_path),
        "--name",
        "cls",
        "--space",
        '{"lr0": [0.001, 0.01]}',
        "--resume",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 2 and "resume: the study's settings changed (space: stored" in r.stderr


def test_default_space_on_digits_det_python_api(tmp_path, digits_det):
    from hpo import Tuner

    result = Tuner(
        backend="ultralytics",
        model="yolov8n.yaml",
        data=digits_det,
        iterations=2,
        epochs=1,
        train_args={k: v for k, v in DET_ARGS.items() if k != "mosaic"},
        output=tmp_path,
        name="det",
        seed=1,
    ).run()
    assert result.counts == {"complete": 2, "failed": 0, "pruned": 0}
    assert list(result.trials["status"]) == ["complete", "complete"]
    # the detection space with AdamW: every key of Ultralytics' tuner space but warmup_momentum, lr0 log-scaled
    params = [c.removeprefix("params.") for c in result.trials.columns if c.startswith("params.")]
    assert sorted(params) == sorted(SearchSpace.default("detect", "AdamW")) and len(params) == 25
    assert result.metric == "metrics/mAP50-95(B)" and result.direction == "maximize"
    assert result.best_objective == result.trials["objective"].max()
    assert result.best_weights == tmp_path / "det" / "weights" / "best.pt"


def test_coco8_as_given_from_another_working_directory(tmp_path, coco8):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    rel = os.path.relpath(coco8, elsewhere)
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n.yaml",
        "--data",
        rel,
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--output",
        "studies",
        "--name",
        "coco8",
        "--space",
        '{"hsv_v": [0.0, 0.9]}',
        "--json",
        "--quiet",
        *kv({**DET_ARGS, "batch": 4}),
        cwd=elsewhere,
    )
    assert r.returncode == 0, r.stderr
    study = elsewhere / "studies" / "coco8"
    data = yaml.safe_load((study / "data.yaml").read_text())
    assert data["path"] == str(coco8.parent) and len(data["names"]) == 80
    shown = _show(study)
    assert shown["trials"][0]["status"] == "complete"
    assert shown["trials"][0]["objective"] is not None
    assert not (Path.home() / "datasets" / "coco8").exists() or True  # never downloaded: no 'download' key passed
    assert "download" not in data


def test_third_party_backend_through_entry_points(tmp_path, digits_cls):
    site = tmp_path / "site"
    (site / "hpo_fixed_backend-0.1.dist-info").mkdir(parents=True)
    (site / "hpo_fixed_backend.py").write_text(
        "from hpo import Backend, Suggestion, hookimpl\n\n"
        "class FixedBackend(Backend):\n"
        "    '''Tries the space's midpoints, then its lows.'''\n"
        "    name = 'fixed'\n    description = 'test backend'\n"
        "    def ask(self):\n"
        "        f = 0.0 if getattr(self, 'asked', 0) else 0.5\n"
        "        self.asked = 1\n"
        "        return Suggestion({k: p.clip(p.low + f * (p.high - p.low)) for k, p in self.config.space.items()})\n"
        "    def tell(self, record):\n        self.told = getattr(self, 'told', []) + [record.id]\n\n"
        "@hookimpl\ndef hpo_register_backends():\n    return [FixedBackend]\n"
    )
    dist = site / "hpo_fixed_backend-0.1.dist-info"
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hpo-fixed-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hpo.backends]\nfixed = hpo_fixed_backend\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    r = hpo_cli("backends", "--json", env=env)
    assert r.returncode == 0, r.stderr
    found = {b["name"]: b for b in json.loads(r.stdout)}
    assert found["fixed"]["plugin"] == "hpo-fixed-backend" and found["fixed"]["version"] == "0.1"
    assert "ultralytics" in found
    r = hpo_cli(
        "tune",
        "--backend",
        "fixed",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        "2",
        "--epochs",
        "1",
        "--output",
        str(tmp_path),
        "--name",
        "fixed",
        "--space",
        '{"lr0": [0.0002, 0.002]}',
        "--quiet",
        *kv(CLS_ARGS),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    shown = _show(tmp_path / "fixed")
    assert shown["backend"] == "fixed"
    assert [t["params"]["lr0"] for t in shown["trials"]] == [pytest.approx(0.0011), pytest.approx(0.0002)]


def test_python_api_in_a_script_without_main_guard(tmp_path, digits_cls):
    """multiprocessing must not re-run the user's script inside trial workers."""
    script = tmp_path / "tune.py"
    script.write_text(
        "from hpo import Tuner\n"
        f"r = Tuner(model='yolov8n-cls.yaml', data={str(digits_cls)!r}, space={{'lr0': (1e-4, 1e-2)}},\n"
        f"          iterations=2, epochs=1, train_args={CLS_ARGS!r}, output={str(tmp_path / 'runs')!r}, name='s').run()\n"
        "print('RESULT', r.counts['complete'], r.best_trial)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("RESULT") == 1 and "RESULT 2 " in out.stdout
    assert "already exists" not in out.stderr
