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


def test_image_formats_match_imported_ultralytics():
    from ultralytics.data.utils import IMG_FORMATS

    assert ultra.image_formats() == IMG_FORMATS


def test_arg_limits_are_the_ranges_check_cfg_accepts():
    import pytest
    from ultralytics.cfg import CFG_FRACTION_KEYS, CFG_INT_MIN, check_cfg

    limits = ultra.arg_limits()
    assert set(limits) == set(CFG_FRACTION_KEYS) | set(CFG_INT_MIN) | {"scale"}
    for key, (low, high, low_inclusive) in limits.items():
        integer = key in CFG_INT_MIN
        step = 1 if integer else 1e-6
        if low_inclusive:
            check_cfg({key: low})  # the bound itself is accepted
        else:
            check_cfg({key: low + step})
        with pytest.raises(ValueError):
            check_cfg({key: low - step if low_inclusive else low})
        if high is None:
            check_cfg({key: 10**6})
        else:
            check_cfg({key: high})
            if key != "fraction":  # fraction also takes image counts > 1
                with pytest.raises(ValueError):
                    check_cfg({key: high + step})


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
    import torch

    local = tmp_path / "m.pt"  # an Ultralytics checkpoint without train_args: the name decides
    torch.save({"model": torch.nn.Conv2d(3, 4, 3)}, local)
    assert ultra.resolve_model(str(local)) == (str(local.resolve()), "detect")


def test_a_corrupt_or_foreign_pt_is_refused_naming_the_model_file(tmp_path):
    import pytest
    import torch

    from hpo import ConfigError

    junk = tmp_path / "junk-cls.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"^model: '.*junk-cls\.pt' is not a readable checkpoint \(") as e:
        ultra.resolve_model(str(junk))
    assert "data" not in str(e.value).split(";")[0]
    good = tmp_path / "good.pt"
    torch.save({"model": torch.nn.Conv2d(3, 4, 3), "train_args": {"task": "classify"}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ConfigError, match=r"^model: '.*truncated\.pt' is not a readable checkpoint"):
        ultra.resolve_model(str(truncated))
    weights = tmp_path / "state_dict.pt"  # a plain PyTorch state dict, not an Ultralytics checkpoint
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), weights)
    with pytest.raises(
        ConfigError, match=r"^model: '.*state_dict\.pt' is not an Ultralytics checkpoint \(it holds a OrderedDict"
    ):
        ultra.resolve_model(str(weights))
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ConfigError, match="is not an Ultralytics checkpoint"):
        ultra.resolve_model(str(tensor))


def test_checkpoint_task_is_read_from_the_file_not_its_name(tmp_path):
    import torch

    ckpt = tmp_path / "best.pt"  # how every Ultralytics run names its weights, whatever the task
    torch.save({"train_args": {"task": "classify"}, "model": torch.nn.Conv2d(3, 4, 3)}, ckpt)
    assert ultra.resolve_model(str(ckpt)) == (str(ckpt), "classify")


def test_checkpoint_task_is_read_without_torch_and_without_running_its_code(tmp_path):
    import subprocess
    import sys

    import torch

    ckpt = tmp_path / "best.pt"
    marker = tmp_path / "code-ran"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # real classes and tensors
    torch.save(
        {
            "model": model,
            "optimizer": {"lr": torch.tensor(0.01)},
            "payload": _MakesADirWhenUnpickled(marker),
            "train_args": {"task": "pose", "imgsz": 64},
        },
        ckpt,
    )
    code = f"import sys; from hpo import ultra; print(ultra.resolve_model({str(ckpt)!r})[1], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pose", "False"]
    assert not marker.exists()  # torch.load(weights_only=False) would have run os.mkdir


class _MakesADirWhenUnpickled:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_trials_on_cpu_train_without_amp_as_yolo_train_does():
    """hpo's worker skips Ultralytics' AMP check only where it would download (CUDA); on CPU the
    check still says no AMP (bfloat16 autocast on a CPU without AVX-512 trained 10x slower)."""
    import subprocess
    import sys

    code = (
        "import hpo._worker as w\nw._skip_amp_download()\nfrom ultralytics.engine import trainer as t\n"
        "from ultralytics.nn.tasks import ClassificationModel\n"
        "print('AMP', t.check_amp(ClassificationModel('yolov8n-cls.yaml', nc=2, verbose=False)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "AMP False" in out.stdout


def test_integer_and_text_args_match_ultralytics():
    """batch and imgsz take whole numbers (cfg/default.yaml declares them int first) though
    CFG_INT_KEYS misses them; the data loader refuses batch=16.0."""
    import re

    from ultralytics.cfg import CFG_INT_KEYS, CFG_STR_KEYS, DEFAULT_CFG_PATH

    declared = set(re.findall(r"(?m)^(\w+):[^#\n]*#\s*\(int\b", DEFAULT_CFG_PATH.read_text()))
    assert {"batch", "imgsz"} <= declared
    assert ultra.integer_args() == CFG_INT_KEYS | declared
    assert ultra.str_keys() == CFG_STR_KEYS


def test_text_arg_values_are_the_ones_the_trainer_accepts():
    import pytest
    from ultralytics.data.augment import CopyPaste, classify_augmentations
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import ClassificationModel

    values = ultra.str_arg_values()
    assert set(values) == {"optimizer", "copy_paste_mode", "auto_augment"}
    optimizers, any_case = values["optimizer"]
    assert any_case and {"auto", "SGD", "AdamW"} <= optimizers
    model = ClassificationModel("yolov8n-cls.yaml", nc=2, verbose=False)
    for name in optimizers - {"auto"}:  # 'auto' picks one of the others from the trainer's state
        BaseTrainer.build_optimizer(None, model, name=name.lower())
    with pytest.raises(NotImplementedError) as e:
        BaseTrainer.build_optimizer(None, model, name="Lion9000")
    assert all(repr(n) in str(e.value) for n in optimizers)  # the trainer's own list, printed in its error
    for mode in values["copy_paste_mode"][0]:
        CopyPaste(mode=mode)
    with pytest.raises(ValueError):
        CopyPaste(mode="paste")
    for policy in values["auto_augment"][0]:
        classify_augmentations(size=32, auto_augment=policy)
    with pytest.raises(ValueError):
        classify_augmentations(size=32, auto_augment="foo")
    assert ultra.str_arg_problem("optimizer", "adamw") is None and ultra.str_arg_problem("lr0", "x") is None
    assert ultra.str_arg_problem("auto_augment", None) is None
    assert "accepts for optimizer" in (ultra.str_arg_problem("optimizer", "Lion9000") or "")


def test_dataset_cache_version_matches_ultralytics():
    from ultralytics.data.dataset import DATASET_CACHE_VERSION

    assert ultra.dataset_cache_version() == DATASET_CACHE_VERSION
