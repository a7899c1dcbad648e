"""The ray backend accepts device=cpu (and an empty device), so one command moves between backends."""

from __future__ import annotations

import json

import pytest
import yaml

from hpo import Study, Tuner


@pytest.mark.slow
def test_device_cpu_trains_on_ray_and_on_optuna_unchanged(tmp_path, digits_cls):
    common = dict(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        iterations=1,
        epochs=1,
        output=tmp_path,
        space={"lr0": [1e-4, 1e-2]},
        seed=0,
        train_args={"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"},
        plots=False,
    )
    # real Ultralytics training in a Ray worker: the trainer applied device=cpu
    result = Tuner(backend="ray", name="ray", backend_options={"num_cpus": 2, "scheduler": "fifo"}, **common).run()
    assert result.counts == {"complete": 1, "failed": 0, "pruned": 0}
    (record,) = Study.open(result.study_dir).records().values()
    (args,) = result.study_dir.glob(f"trials/{record.id}/args.yaml")  # what Ultralytics' trainer ran with
    assert yaml.safe_load(args.read_text())["device"] == "cpu" and record.objective is not None
    assert json.loads((result.study_dir / "study.json").read_text())["train_args"]["device"] == "cpu"
    # the same settings run on another backend unchanged
    other = Tuner(backend="optuna", name="optuna", trainer="hpo.simulate:simulated_trainer", **common).run()
    assert other.counts["complete"] == 1
