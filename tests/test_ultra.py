"""The facts hpo reads from Ultralytics' files with ``ast`` equal the imported package's values."""

from hpo import ultra


def test_typed_keys_match_imported_ultralytics():
    from ultralytics import cfg

    assert ultra.int_keys() == cfg.CFG_INT_KEYS
    assert ultra.bool_keys() == cfg.CFG_BOOL_KEYS
    assert ultra.float_keys() == cfg.CFG_FLOAT_KEYS | cfg.CFG_FRACTION_KEYS
    assert ultra.train_defaults() == dict(cfg.DEFAULT_CFG_DICT)


def test_native_default_space_matches_a_real_native_tuner(tmp_path):
    from ultralytics.engine.tuner import Tuner

    native = Tuner(args={"model": "yolov8n.yaml", "data": "unused.yaml", "project": str(tmp_path), "name": "t"})
    assert ultra.native_default_space() == native.space


def test_task_metric_table_matches_ultralytics():
    from ultralytics.cfg import TASK2METRIC

    for task, metric in ultra.TASK_METRIC.items():
        assert TASK2METRIC[task] == metric
        assert metric in ultra.task_metrics(task)


def test_resolve_model(tmp_path):
    import pytest

    from hpo import ConfigError

    assert ultra.resolve_model("yolov8n-cls.yaml") == ("yolov8n-cls.yaml", "classify")
    assert ultra.resolve_model("yolo11n-seg.yaml")[1] == "segment"
    assert ultra.resolve_model("yolov8s.yaml")[1] == "detect"
    with pytest.raises(ConfigError, match="never downloads"):
        ultra.resolve_model("yolov8n.pt")
    with pytest.raises(ConfigError, match="neither a local file nor a model YAML"):
        ultra.resolve_model("yolov99q.yaml")
    local = tmp_path / "m.pt"
    local.write_bytes(b"x")
    assert ultra.resolve_model(str(local)) == (str(local.resolve()), "detect")


def test_checkpoint_task_is_read_from_the_file_not_its_name(tmp_path):
    import torch

    ckpt = tmp_path / "best.pt"  # how every Ultralytics run names its weights, whatever the task
    torch.save({"train_args": {"task": "classify"}, "model": None}, ckpt)
    assert ultra.resolve_model(str(ckpt)) == (str(ckpt), "classify")
    (tmp_path / "junk-cls.pt").write_bytes(b"not a checkpoint")
    assert ultra.resolve_model(str(tmp_path / "junk-cls.pt"))[1] == "classify"  # unreadable: the name decides


def test_checkpoint_task_is_read_without_torch_and_without_running_its_code(tmp_path):
    import subprocess
    import sys

    import torch

    ckpt = tmp_path / "best.pt"
    marker = tmp_path / "code-ran"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # real classes and tensors
    torch.save({"model": model, "optimizer": {"lr": torch.tensor(0.01)}, "payload": _MakesADirWhenUnpickled(marker),
                "train_args": {"task": "pose", "imgsz": 64}}, ckpt)
    code = (
        "import sys; from hpo import ultra; "
        f"print(ultra.resolve_model({str(ckpt)!r})[1], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pose", "False"]
    assert not marker.exists()  # torch.load(weights_only=False) would have run os.mkdir


class _MakesADirWhenUnpickled:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))
