"""hpo.tune: the twin of Ultralytics' ``model.tune`` (same model object, same keyword names)."""

from __future__ import annotations

import json

import pytest

import hpo
from hpo.errors import ConfigError
from hpo.model_tune import tune_settings

SIM = {"trainer": "hpo.simulate:simulated_trainer", "plots": False}


def test_keywords_map_as_model_tune_reads_them(tmp_path):
    """model.tune's keywords: study settings, train args, ray options; its AdamW default; hpo's own settings."""
    s = tune_settings(
        "yolov8n.yaml",
        data="coco8.yaml",
        epochs=3,
        iterations=5,
        space={"lr0": (1e-5, 1e-1)},
        project=str(tmp_path),
        name="run",
        imgsz=32,
        seed=7,
        plots=False,
        verbose=False,
        time_budget="1h",
    )
    assert (s.backend, s.model, s.data, s.epochs, s.iterations, s.output, s.name) == (
        "ultralytics",
        "yolov8n.yaml",
        "coco8.yaml",
        3,
        5,
        str(tmp_path),
        "run",
    )
    # seed, plots and verbose are Ultralytics train args in model.tune: they stay train args
    assert dict(s.train_args) == {"imgsz": 32, "seed": 7, "plots": False, "verbose": False, "optimizer": "AdamW"}
    assert s.seed is None and s.time_budget == "1h" and s.verbose is True
    # model.tune's defaults: 300 iterations, Ultralytics' default epochs; no AdamW when the space tunes the optimizer
    d = tune_settings("yolov8n.yaml", data="d.yaml", space={"optimizer": ["SGD", "AdamW"]})
    assert (d.iterations, d.epochs, "optimizer" in dict(d.train_args)) == (300, 100, False)
    r = tune_settings("yolov8n.yaml", data="d.yaml", use_ray=True, gpu_per_trial=1, grace_period=2, settings={"seed": 3})
    assert (r.backend, dict(r.backend_options), r.seed) == ("ray", {"gpus_per_trial": 1, "grace_period": 2}, 3)


def test_yolo_object_gives_its_file_and_overrides():
    from ultralytics import YOLO

    model = YOLO("yolov8n-cls.yaml")
    model.overrides["imgsz"] = 48  # an override set on the object, as model.tune merges them
    s = tune_settings(model, data="digits", imgsz=32, batch=8)
    assert s.model == "yolov8n-cls.yaml"
    assert dict(s.train_args) == {"imgsz": 32, "batch": 8, "optimizer": "AdamW"}
    s = tune_settings(model, data="digits")
    assert dict(s.train_args)["imgsz"] == 48


def test_unknown_keyword_names_hpo_tune_and_the_closest():
    with pytest.raises(TypeError, match=r"hpo\.tune\(\) got an unexpected keyword argument 'imgsize' \(did you mean 'imgsz'\?\)"):
        tune_settings("yolov8n.yaml", data="d.yaml", imgsize=32)
    with pytest.raises(TypeError, match="'data'"):
        tune_settings("yolov8n.yaml", epochs=1)
    with pytest.raises(ConfigError, match="mongodb_uri"):
        tune_settings("yolov8n.yaml", data="d.yaml", mongodb_uri="mongodb://x")
    with pytest.raises(ConfigError, match="one dataset"):
        tune_settings("yolov8n.yaml", data=["a.yaml", "b.yaml"])


def test_tune_runs_a_study_simulated(tmp_path, digits_cls):
    result = hpo.tune(
        "yolov8n-cls.yaml", data=digits_cls, epochs=2, iterations=3, imgsz=32, project=tmp_path, name="sim", settings=SIM
    )
    assert result.counts == {"complete": 3, "failed": 0, "pruned": 0}
    assert result.study_dir == tmp_path / "sim"
    stored = json.loads((result.study_dir / "study.json").read_text())
    assert stored["train_args"]["optimizer"] == "AdamW" and stored["train_args"]["imgsz"] == 32


@pytest.mark.slow
def test_tune_yolo_object_on_coco8_real(tmp_path, coco8):
    """The one-line switch, real: model.tune(...) -> hpo.tune(model, ...) on COCO8, trained by Ultralytics."""
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    result = hpo.tune(
        model,
        data=str(coco8),
        epochs=1,
        iterations=2,
        space={"lr0": (1e-4, 1e-2)},
        imgsz=32,
        batch=4,
        workers=0,
        device="cpu",
        project=str(tmp_path),
        name="coco8",
        plots=False,
    )
    assert result.counts == {"complete": 2, "failed": 0, "pruned": 0}
    assert result.metric == "metrics/mAP50-95(B)" and result.best_objective is not None
    assert 1e-4 <= result.best_params["lr0"] <= 1e-2
    tune_dir = result.study_dir / "ultralytics"
    assert (tune_dir / "best_hyperparameters.yaml").is_file() and (tune_dir / "tune_results.ndjson").is_file()
    args = (result.study_dir / "trials" / "0" / "args.yaml").read_text()
    assert "optimizer: AdamW" in args and "imgsz: 32" in args
