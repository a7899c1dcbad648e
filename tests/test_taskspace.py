"""The default space of each task (hpo.taskspace) and what hpo does when no optimizer is given
(hpo.optimizer_policy): the shipped table derived again from the installed Ultralytics by real
trainings, the optimizer ``auto`` would pick checked against Ultralytics' own ``build_optimizer``,
and the policies shown by what a real trial's trainer logged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import hpo_cli, kv

from hpo import ConfigError, SearchSpace, taskspace, ultra
from hpo._derive import DERIVE_COMMAND, derive_table
from hpo.optimizer_policy import POLICY_ENV, OptimizerPolicy, optimizer_policy, study_space, train_images
from hpo.validate import build_config

#: Fixed train args of the policy trainings: 140 of digits-cls' 1,402 train images, a few seconds a trial.
ARGS = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "fraction": 0.1}
#: Ultralytics' log line of the optimizer it built (BaseTrainer.build_optimizer).
OPTIMIZER_LINE = re.compile(r"optimizer: (\w+)\(lr=([0-9.e-]+), momentum=([0-9.]+)\)")


@pytest.fixture(scope="module")
def derived():
    """The table derived from the installed Ultralytics: two real 2-epoch trainings per task on tiny
    data (4 train images at 32 px), all five tasks in one child process (hpo._derive)."""
    return derive_table()


@pytest.mark.parametrize("task", list(taskspace.table()["tasks"]))
def test_the_shipped_table_is_what_the_installed_ultralytics_reads(task, derived):
    """The task's entry of the shipped table, what its trainer read, equals the derived one."""
    shipped = taskspace.table()
    hint = f"hpo/taskspaces.yaml is stale for Ultralytics {ultra.version()}: regenerate it with `{DERIVE_COMMAND}`"
    assert derived["tasks"][task] == shipped["tasks"][task], hint
    assert derived["auto"] == shipped["auto"], hint
    assert derived["families"] == shipped["families"], hint
    assert derived["seconds"][task] < 30  # two trainings of 4 images at 32 px
    print(f"{task}: derived in {derived['seconds'][task]} s of training")


def test_default_spaces_hold_the_tuner_keys_each_task_reads():
    native = ultra.native_default_space()
    for task in taskspace.table()["tasks"]:
        for optimizer, family in (("SGD", "sgd"), ("AdamW", "adam"), ("MuSGD", "sgd"), ("NAdam", "adam")):
            space = SearchSpace.default(task, optimizer)
            entry = taskspace.table()["tasks"][task]
            expected = [k for k in native if k in entry["read"][family] and k not in entry["inert"]]
            assert list(space) == expected
            for key, p in space.items():
                assert (p.low, p.high) == native[key][:2] and p.gain == (native[key][2] if len(native[key]) == 3 else 1.0)
                assert p.log is (key == "lr0" and family == "adam")
    classify = SearchSpace.default("classify")
    assert set(classify).isdisjoint({"box", "cls", "dfl", "mosaic", "mixup", "copy_paste", "translate", "shear", "close_mosaic"})
    assert "warmup_momentum" in classify and "warmup_momentum" not in SearchSpace.default("classify", "AdamW")
    assert "copy_paste" not in SearchSpace.default("pose") and "copy_paste" in SearchSpace.default("segment")
    assert list(SearchSpace.parse("ultralytics")) == list(native) == list(SearchSpace.parse(None))
    assert SearchSpace.parse("default", task="classify") == classify == SearchSpace.parse(None, task="classify")
    with pytest.raises(ConfigError, match="'auto' picks its optimizer per training"):
        SearchSpace.default("classify", "auto")


@pytest.mark.parametrize("nc", [1, 2, 10, 80, 1000])
def test_resolve_auto_is_what_build_optimizer_builds(nc):
    """hpo's rule against Ultralytics' own BaseTrainer.build_optimizer, on both sides of 10,000 iterations."""
    from types import SimpleNamespace

    import torch.nn as nn
    from ultralytics.engine.trainer import BaseTrainer

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))

    for images, batch, nbs, epochs in (
        (64 * 10000, 16, 64, 1),
        (64 * 10000 + 1, 16, 64, 1),
        (1402, 128, 64, 3),
        (5000, 16, 64, 200),
    ):
        auto = taskspace.resolve_auto(images=images, nc=nc, batch=batch, nbs=nbs, epochs=epochs)
        fake = SimpleNamespace(args=SimpleNamespace(lr0=0.0123, warmup_bias_lr=0.1), data={"nc": nc})
        built = BaseTrainer.build_optimizer(
            fake, Tiny(), name="auto", lr=0.0123, momentum=0.8, decay=0.0, iterations=auto.iterations
        )
        group = built.param_groups[0]
        assert (type(built).__name__, fake.args.lr0) == (auto.optimizer, auto.lr0)
        assert group.get("momentum", (group.get("betas") or (None,))[0]) == auto.momentum
        assert fake.args.warmup_bias_lr == taskspace.auto_sets()["warmup_bias_lr"]
    assert taskspace.resolve_auto(images=64 * 10000, nc=nc, batch=16, nbs=64, epochs=1).optimizer == "AdamW"  # 10000: not above
    assert taskspace.resolve_auto(images=64 * 10000 + 1, nc=nc, batch=16, nbs=64, epochs=1).optimizer == "MuSGD"


def _config(data, monkeypatch, policy, space=None, backend="ultralytics", **args):
    monkeypatch.setenv(POLICY_ENV, policy)
    return build_config(
        model="yolov8n-cls.yaml",
        data=data,
        space=space,
        epochs=3,
        train_args={**ARGS, **args},
        output="/tmp/unused",
        backend=backend,
    )


def test_policies_without_a_training(digits_cls, monkeypatch, tmp_path):
    assert train_images(build_config(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path).data) == 1402
    sgd = _config(digits_cls, monkeypatch, "sgd")
    assert sgd.train_args["optimizer"] == "SGD" and list(sgd.space) == list(SearchSpace.default("classify", "SGD"))
    assert any("hpo trains with optimizer=SGD" in n for n in sgd.notices)
    keep = _config(digits_cls, monkeypatch, "keep")
    assert "optimizer" not in keep.train_args
    assert list(keep.space) == [k for k in SearchSpace.default("classify", "AdamW") if k not in ("lr0", "momentum")]
    assert any("keeps Ultralytics' optimizer=auto" in n and "140 train images" in n for n in keep.notices)
    resolve = _config(digits_cls, monkeypatch, "RESOLVE ")
    assert {k: resolve.train_args[k] for k in ("optimizer", "warmup_bias_lr")} == {"optimizer": "AdamW", "warmup_bias_lr": 0.0}
    assert resolve.space["lr0"].log and resolve.space.defaults()["lr0"] == round(0.01 / 14, 6) == 0.000714
    assert resolve.space.defaults()["momentum"] == 0.9
    assert SearchSpace.parse(json.loads(json.dumps(resolve.space.to_spec()))) == resolve.space  # study.json round trip
    # a user's own space: sgd as before; keep resolves when it tunes what auto ignores; a given optimizer stays
    own = {"lr0": [1e-4, 1e-2], "hsv_v": [0.0, 0.9]}
    assert _config(digits_cls, monkeypatch, "sgd", own).train_args["optimizer"] == "SGD"
    kept = _config(digits_cls, monkeypatch, "keep", own)
    assert kept.train_args["optimizer"] == "AdamW" and kept.train_args["momentum"] == 0.9
    assert kept.space.defaults()["lr0"] == 0.000714 and not kept.space["lr0"].log  # the user's scale
    assert "optimizer" not in _config(digits_cls, monkeypatch, "keep", {"hsv_v": [0.0, 0.9]}).train_args
    # a space that chooses the optimizer itself: no policy sets one in the fixed train args (they would clash)
    chooses = {"lr0": [1e-4, 1e-2], "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]}}
    for policy in ("sgd", "keep", "resolve"):
        cfg = _config(digits_cls, monkeypatch, policy, chooses, backend="optuna")
        assert "optimizer" not in cfg.train_args and cfg.space["optimizer"].choices == ("SGD", "AdamW"), policy
    narrow = _config(digits_cls, monkeypatch, "resolve", {"lr0": [1e-3, 1e-2]}, warmup_bias_lr=0.05)
    assert narrow.space.defaults()["lr0"] == 1e-3 and narrow.train_args["warmup_bias_lr"] == 0.05
    assert narrow.notices[-1].endswith(
        "the first trial is not quite Ultralytics' default training: lr0 clipped to 0.001 by the space, warmup_bias_lr=0.05 given"
    )
    for policy in ("sgd", "keep", "resolve"):
        given = _config(digits_cls, monkeypatch, policy, optimizer="SGD", lr0=0.02)
        assert given.train_args["optimizer"] == "SGD" and given.train_args["lr0"] == 0.02
        assert "lr0" not in given.space and "warmup_momentum" in given.space  # a fixed train arg leaves the default space
    # a batch AutoBatch picks at run time is counted as nbs; more epochs than 10,000 iterations: MuSGD
    far = _config(digits_cls, monkeypatch, "resolve", batch=-1, fraction=1.0)
    assert far.train_args["optimizer"] == "AdamW"
    chosen = study_space(None, task="classify", data=far.data, train_args={"fraction": 1.0}, epochs=455, policy="resolve")
    assert chosen.auto is not None and chosen.auto.iterations == 22 * 455 and chosen.train_args["optimizer"] == "MuSGD"
    assert "warmup_momentum" in chosen.space and not chosen.space["lr0"].log and chosen.space.defaults()["lr0"] == 0.01
    monkeypatch.setenv(POLICY_ENV, "adam")
    with pytest.raises(ConfigError, match=rf"^{POLICY_ENV}: 'adam' is not a policy; use sgd \("):
        build_config(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path)
    # the setting auto_optimizer (TuneSettings, --auto-optimizer) wins over the environment
    given = build_config(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path, auto_optimizer="keep", train_args=ARGS)
    assert "optimizer" not in given.train_args and "lr0" not in given.space
    assert any("keeps Ultralytics' optimizer=auto" in n for n in given.notices)
    with pytest.raises(ConfigError, match=r"^auto_optimizer: 'adamw' is not a policy; use sgd \("):
        build_config(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path, auto_optimizer="AdamW")


def _trained_optimizer(study: Path, trial: int = 0) -> tuple[str, float, float]:
    """The optimizer, lr and momentum a trial's trainer logged (Ultralytics' "optimizer: AdamW(lr=..., momentum=...)")."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", (study / "trials" / str(trial) / "train.log").read_text())
    found = OPTIMIZER_LINE.findall(text)
    assert len(found) == 1, text[-2000:]
    name, lr, momentum = found[0]
    return name, float(lr), float(momentum)


def _tune_cli(tmp_path, digits_cls, name, *extra, env=None, backend="optuna", iterations=1):
    r = hpo_cli(
        "tune",
        "--backend",
        backend,
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        str(iterations),
        "--epochs",
        "1",
        "--output",
        str(tmp_path),
        "--name",
        name,
        "--quiet",
        *extra,
        *kv(ARGS),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return r, tmp_path / name


def _records(study: Path) -> list[dict]:
    return [json.loads(line) for line in (study / "trials.jsonl").read_text().splitlines() if line.strip()]


def test_the_default_policy_is_keep(tmp_path, digits_cls, monkeypatch):
    """No auto_optimizer, no HPO_AUTO_OPTIMIZER: the policy issue 27's development run chose."""
    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert optimizer_policy() is OptimizerPolicy.KEEP
    cfg = build_config(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path, train_args=ARGS)
    assert any("auto_optimizer=keep" in n for n in cfg.notices), cfg.notices


def test_policy_sgd_trains_sgd_with_the_per_task_space(tmp_path, digits_cls, monkeypatch):
    """Python API, no optimizer, no space, HPO_AUTO_OPTIMIZER=sgd: SGD at Ultralytics' lr0 and momentum,
    and the classification space holds only what its trainer reads."""
    from hpo import Tuner

    monkeypatch.setenv(POLICY_ENV, "sgd")
    result = Tuner(
        model="yolov8n-cls.yaml", data=digits_cls, iterations=1, epochs=1, train_args=ARGS, output=tmp_path, name="sgd"
    ).run()
    study = result.study_dir
    settings = json.loads((study / "study.json").read_text())
    assert settings["train_args"]["optimizer"] == "SGD"
    assert list(settings["space"]) == list(SearchSpace.default("classify", "SGD"))
    assert _trained_optimizer(study, 0) == ("SGD", 0.01, 0.937)


def test_show_and_plots_rank_only_the_keys_the_task_reads(tmp_path, digits_cls):
    """A classification study in its default space (simulated trials): importance and hpo show over its 12 keys."""
    r, study = _tune_cli(
        tmp_path, digits_cls, "rank", iterations=6, env={"HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_PLOTS": "1"}
    )
    # the default policy (keep): the classify space under auto's AdamW, without what auto ignores
    keys = set(SearchSpace.default("classify", "AdamW")) - {"lr0", "momentum"}
    assert set(json.loads((study / "study.json").read_text())["space"]) == keys and len(keys) == 9
    assert set(json.loads((study / "plots" / "importance.json").read_text())) == keys
    shown = json.loads(hpo_cli("show", str(study), "--json").stdout)
    assert set(shown["best"]["params"]) == keys and not keys & {"box", "mosaic", "close_mosaic"}


def test_policy_keep_trains_ultralytics_default(tmp_path, digits_cls):
    """CLI, --auto-optimizer keep (the setting; the environment says sgd): the first trial is Ultralytics'
    default training, optimizer=auto's AdamW."""
    r, study = _tune_cli(tmp_path, digits_cls, "keep", "--auto-optimizer", "keep", env={POLICY_ENV: "sgd"})
    assert "hpo: notice: optimizer: none given: hpo keeps Ultralytics' optimizer=auto" in r.stderr
    assert "optimizer" not in json.loads((study / "study.json").read_text())["train_args"]
    assert "'optimizer=auto' found" in (study / "trials" / "0" / "train.log").read_text()
    assert _trained_optimizer(study, 0) == ("AdamW", 0.000714, 0.9)
    params = _records(study)[-1]["params"]
    assert "lr0" not in params and "momentum" not in params and params["hsv_v"] == 0.4  # Ultralytics' defaults


def test_policy_resolve_starts_where_auto_does_on_the_ultralytics_backend(tmp_path, digits_cls):
    """CLI, HPO_AUTO_OPTIMIZER=resolve, ultralytics backend (lr0 log-scaled, mutated in log10): the first
    trial sets AdamW at auto's lr0 and momentum and trains exactly as keep's auto training does."""
    r, study = _tune_cli(tmp_path, digits_cls, "resolve", env={POLICY_ENV: "resolve"}, backend="ultralytics", iterations=2)
    assert "auto_optimizer=resolve: hpo sets what Ultralytics' optimizer=auto picks" in r.stderr
    settings = json.loads((study / "study.json").read_text())
    assert settings["train_args"]["optimizer"] == "AdamW" and settings["train_args"]["warmup_bias_lr"] == 0.0
    assert settings["space"]["lr0"]["log"] is True and settings["space"]["lr0"]["start"] == 0.000714
    records = {r["id"]: r for r in _records(study) if r["status"] == "complete"}
    assert records[0]["params"]["lr0"] == 0.000714 and records[0]["params"]["momentum"] == 0.9
    assert records[0]["applied"]["lr0"] == 0.000714
    log = (study / "trials" / "0" / "train.log").read_text()
    assert "'optimizer=auto' found" not in log and _trained_optimizer(study, 0) == ("AdamW", 0.000714, 0.9)
    assert 1e-5 <= records[1]["params"]["lr0"] <= 1e-2 and _trained_optimizer(study, 1)[1] == records[1]["params"]["lr0"]
    # the same training as Ultralytics' own default (keep's first trial): the same validation top-1
    _, kept = _tune_cli(tmp_path, digits_cls, "keep", env={POLICY_ENV: "keep"}, backend="ultralytics")
    assert records[0]["objective"] == _records(kept)[-1]["objective"]


def test_the_named_ultralytics_space_is_model_tunes_26_keys(tmp_path, digits_cls):
    """CLI --space ultralytics: model.tune's whole space, whatever the task, for a benchmark's baseline."""
    r, study = _tune_cli(tmp_path, digits_cls, "named", "--space", "ultralytics", "optimizer=AdamW")
    assert "space:" not in r.stderr  # a named space is the user's choice: no notice
    space = json.loads((study / "study.json").read_text())["space"]
    assert SearchSpace.parse(space) == SearchSpace.parse(ultra.native_default_space())
    assert len(_records(study)[-1]["params"]) == 26
