"""CLI: bad input is one line, exit 2, before any trial, with nothing written; fast start-up."""

import json
import subprocess
import sys

import pytest
from conftest import CLS_ARGS, hpo_cli, kv


def test_help_and_backends_do_not_import_heavy_libraries():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom hpo.cli import app\n"
        "r = CliRunner().invoke(app, ['backends', '--json']); assert r.exit_code == 0, r.output\n"
        "r2 = CliRunner().invoke(app, ['--help']); assert r2.exit_code == 0\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'ray', 'optuna', 'mlflow', 'kfp') if m in sys.modules]\n"
        "print(r.output); print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    backends = json.loads(out.stdout.split("HEAVY")[0])
    ultra = next(b for b in backends if b["name"] == "ultralytics")
    import ultralytics

    assert ultra["version"] == ultralytics.__version__
    assert set(ultra["options"]) == {
        "parents",
        "sigma",
        "initial_random",
        "pruner",
        "prune_percentile",
        "prune_startup_trials",
        "prune_min_epoch",
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "nope"], "backend: unknown 'nope'; installed: "),
        (["--iterations", "0"], "iterations: '0' must be a whole number >= 1"),
        (["--iterations", "-3"], "iterations: '-3' must be a whole number >= 1"),
        (["--epochs", "1.5"], "epochs: '1.5' must be a whole number >= 1"),
        (["--epochs", "two"], "epochs: 'two' must be a whole number >= 1"),
        (["lr_0=0.1"], "'lr_0' is not an Ultralytics train argument (did you mean 'lr0'?)"),
        (["batch_size=16"], "'batch_size' is not an Ultralytics train argument (did you mean 'batch'?)"),
        (["imgsz=32", "epochs=3"], "'epochs' is set by hpo; use --epochs"),
        (["batch=sixteen"], "train args: "),
        (["imgsz=abc"], "train args: imgsz='abc' must be a whole number of pixels"),
        (["device=99"], "train args: device=99 names GPU 99 but torch sees"),
        (["device=cuda:99"], "names GPU 99"),
        (["--space", '{"lr0": [0.1, 0.01]}'], "inverted bounds"),
        (["--space", '{"lr0 ": [0.001, 0.01]}'], "stray whitespace"),
        (["--space", '{"lr0": [0.001, 0.01]}', "lr0=0.01"], "also in the search space"),
        (["--metric", "metrics/mAP50(B)"], "metric: 'metrics/mAP50(B)' is not reported for task classify"),
        (["--sigma", "3"], "ultralytics option 'sigma' (--sigma): "),
        (["--initial-random", "-1"], "ultralytics option 'initial_random' (--initial-random): "),
        (["--sigma"], "ultralytics option --sigma needs a value (float, default 0.2): write --sigma VALUE"),
        (["--sigma", "--parents", "3"], "option --sigma needs a value"),
        (["--parents", "workers=0"], "option --parents needs a value (int, default 9)"),
        (["--backend", "optuna", "--sampler"], "optuna option --sampler needs a value"),
        (["--sigma", "false"], "ultralytics option --sigma: false is not a float (default 0.2); write --sigma VALUE"),
        (["--space", '{"lr0": [0.01, 0.01]}'], "space: 'lr0' has equal bounds low=high=0.01, nothing to search"),
        (["--space", '{"lr0": [1e-5, 2]}'], "space: 'lr0' high=2.0 is outside [0.0, 1.0], which Ultralytics"),
        (["--space", '{"nbs": [0, 64]}'], "space: 'nbs' low=0 is below 1"),
        (
            ["--space", '{"close_mosaic": [0, 1]}', "--iterations", "3"],
            "space: the ultralytics backend tries each configuration once (Tuner._mutate refuses duplicates) but this space "
            "holds only 2 distinct configurations (close_mosaic: 2 values) for --iterations 3; widen an integer range",
        ),
        (["--space", '{"close_mosaic": [0, 1], "nbs": [60, 64]}', "--iterations", "11"], "only 10 distinct configurations"),
        (
            ["--space", '{"hsv_v": [0, 0.9]}', "lr0=1E-5", "--sigma", "1e-1", "--metric", "nope"],
            "metric: 'nope' is not reported",
        ),  # lr0 and --sigma passed as numbers
        (["--backend", "ray", "--checkpoint", "--grace-period", "5"], "ray option 'grace_period': 5 is more than --epochs 1"),
        (["--sampler", "tpe"], "ultralytics option 'sampler'"),
        (["--model", "yolov8n-cls.pt"], "never downloads weights"),
        (["--trial-timeout", "-1"], "trial_timeout"),
        (["--keep-weights", "top-0"], "keep_weights: 'top-0' is not best, top-K (K >= 1) or all"),
        (["--join"], "join: backend 'ultralytics' cannot share a study between processes; use a backend that can (optuna)"),
        (["--backend", "optuna", "--join", "--resume"], "--join and --resume exclude each other"),
        (["--backend", "optuna", "--join"], "join: there is no study at"),
        (
            ["--backend", "optuna", "--space", '{"optimizer": {"type": "choice", "choices": ["SGD", "Lion9000"]}}'],
            "space: 'optimizer' choice \"Lion9000\" is not a value Ultralytics",
        ),
        (
            ["--backend", "optuna", "--space", '{"cos_lr": {"type": "choice", "choices": [true, "x", 1, null]}}'],
            "space: 'cos_lr' choice \"x\" is a str; 'cos_lr' takes true or false only",
        ),
        (
            ["--backend", "optuna", "--space", '{"amp": {"type": "choice", "choices": [true, "x"]}}'],
            "space: 'amp' choice 'x' is refused by Ultralytics",  # Ultralytics' own check_cfg, value by value
        ),
        (["optimizer=Lion9000"], "train args: optimizer=Lion9000 is not a value Ultralytics"),
        (
            ["--space", '{"batch": [-1, 16]}'],
            "space: 'batch' low=-1: values below 1 are not batch sizes: -1 is Ultralytics' AutoBatch",
        ),
        (["--space", '{"lr0": [0.001, 0.01], "lr0": [0.01, 0.1]}'], "space: inline JSON repeats the key 'lr0'"),
        (
            ["--space", '{"device": {"type": "choice", "choices": ["0", "1"]}}'],
            "space: 'device' cannot be tuned, it is a setting of the study: give it as a fixed train arg (device=0,",
        ),
        (
            ["--", "--resume"],
            "ultralytics option 'resume' (--resume): --resume is an option of hpo tune itself, not of backend ultralytics; "
            "give it among hpo tune's options, before '--'",
        ),
        (
            ["--name=études"],
            "name: 'études' must be 1-128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (["--name=-rf"], "name: '-rf' must be 1-128 ASCII letters"),
        (["--name=.."], "name: '..' must be 1-128 ASCII letters"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, digits_cls, extra, message):
    out_dir = tmp_path / "out"
    args = [
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(out_dir),
        "--iterations",
        "2",
        "--epochs",
        "1",
        *kv(CLS_ARGS),
    ]
    # later options win in click, so the bad value comes after the good defaults
    r = hpo_cli(*args, *extra)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), r.stderr
    assert message in lines[0]
    assert not out_dir.exists()


def test_a_name_derived_from_the_data_says_so_and_suggests_name(tmp_path, digits_det):
    import shutil

    data = tmp_path / "coco8 sp" / "my data.yaml"
    shutil.copytree(digits_det.parent, data.parent, ignore=shutil.ignore_patterns("*.cache"))
    shutil.move(data.parent / digits_det.name, data)
    base = ["tune", "--model", "yolov8n.yaml", "--data", str(data), "--output", str(tmp_path / "o"), "imgsz=32"]
    r = hpo_cli(*base)
    assert r.returncode == 2 and r.stderr == (
        f"hpo: error: name: 'my data-ultralytics' was derived from the data '{data}' (<data>-<backend>) and is not a study "
        "name: a name is 1-128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit (it is a folder "
        "name); give one with --name\n"
    )
    r = hpo_cli(*base, "--name", "my-data", "--metric", "nope")  # the name passes; the next check speaks
    assert r.returncode == 2 and "metric: 'nope' is not reported" in r.stderr
    assert not (tmp_path / "o").exists()


def test_python_dash_m_hpo_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "hpo", "backends", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {"ultralytics", "optuna", "ray"} <= {b["name"] for b in json.loads(r.stdout)}
    r = subprocess.run([sys.executable, "-m", "hpo", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage: hpo " in r.stdout


def test_more_concurrent_trials_than_cpus_or_gpus_warn_and_start_only_what_is_needed(tmp_path, digits_cls):
    """--concurrent-trials 100000 on a small machine: one warning line with the rule and the fix; the
    study still runs, starting no more threads than trials (it took 2.7 min and 1.3 GB for 3 simulated
    trials when every slot got a thread)."""
    from hpo.validate import _concurrency_warning, usable_cpus

    cpus = usable_cpus()
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(tmp_path / "o"),
        "--iterations",
        "3",
        "--epochs",
        "2",
        "--concurrent-trials",
        "100000",
        "--space",
        '{"lr0": [0.001, 0.01]}',
        "--quiet",
        *kv(CLS_ARGS),
        env={"HPO_TRAINER": "hpo.simulate:simulated_trainer"},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("hpo: warning: ")]
    assert warnings == [
        f"hpo: warning: concurrent_trials: 100000 trials at once on the CPU exceed the {cpus} CPUs this process may use: "
        "they compete for them (each trial slower, each with its own model and data in memory); use --concurrent-trials "
        f"{cpus} or fewer"
    ]
    assert _concurrency_warning(cpus, "cpu") is None and _concurrency_warning(1, None) is None
    assert _concurrency_warning(2, "0,1") is None  # one trial per listed GPU: the rule
    assert _concurrency_warning(5, "0,1") == (
        "concurrent_trials: 5 trials at once on 2 GPUs (device=0,1) put up to 3 on each GPU, sharing its memory and "
        "time; use --concurrent-trials 2 (one trial per GPU) unless a trial needs only part of one"
    )


def test_resume_of_a_study_json_edited_to_another_backend_is_refused_leaving_nothing(tmp_path, digits_cls):
    """study.json hand-edited to another backend: resuming with it failed mid-run (optuna handed out a
    trial id the study holds: 'unexpected RuntimeError', an optuna/ folder left)."""
    base = ["tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output", str(tmp_path / "o")]
    base += ["--name", "s", "--epochs", "2", "--space", '{"lr0": [0.001, 0.01]}', "--quiet", *kv(CLS_ARGS)]
    env = {"HPO_TRAINER": "hpo.simulate:simulated_trainer"}
    assert hpo_cli(*base, "--iterations", "2", env=env).returncode == 0
    study = tmp_path / "o" / "s"
    r = hpo_cli(*base, "--backend", "optuna", "--iterations", "4", "--resume", env=env)  # not edited: the diff
    assert r.returncode == 2 and 'settings changed (backend: stored "ultralytics" != given "optuna")' in r.stderr
    settings = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**settings, "backend": "optuna"}))
    before = {p.name: p.read_bytes() for p in study.iterdir() if p.is_file()}
    r = hpo_cli(*base, "--backend", "optuna", "--iterations", "4", "--resume", env=env)
    assert r.returncode == 2 and r.stderr.startswith(
        "hpo: error: resume: study.json names backend 'optuna', but its stored options (initial_random, parents, "
        "prune_min_epoch, prune_percentile, prune_startup_trials, pruner, sigma) are the options of backend 'ultralytics' "
        "(was study.json edited?); put back the backend that ran the study and resume with it, or start a new --name"
    ), r.stderr
    settings["options"] = {}  # the options edited away too: the state folders still tell
    (study / "study.json").write_text(json.dumps({**settings, "backend": "optuna"}))
    before["study.json"] = (study / "study.json").read_bytes()
    r = hpo_cli(*base, "--backend", "optuna", "--iterations", "4", "--resume", env=env)
    assert (
        r.returncode == 2
        and (f"but '{study / 'ultralytics'}' holds the state of backend 'ultralytics' and there is no '{study / 'optuna'}'")
        in r.stderr
    )
    assert not (study / "optuna").exists() and {p.name: p.read_bytes() for p in study.iterdir() if p.is_file()} == before


def test_missing_data_and_unwritable_output(tmp_path, digits_cls):
    r = hpo_cli("tune", "--model", "yolov8n.yaml", "--data", str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "data: " in r.stderr and "does not exist" in r.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(blocker / "studies"),
        "--iterations",
        "1",
        "--epochs",
        "1",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 2, r.stderr
    assert "output: " in r.stderr and "is not a writable folder" in r.stderr


def test_datasets_make_cli(tmp_path):
    r = hpo_cli("datasets", "make", "digits-det", str(tmp_path / "det"), "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "det" / "data.yaml")
    r = hpo_cli("datasets", "make", "digits-xyz", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown 'digits-xyz'; choose one of digits-cls, digits-det" in r.stderr


def test_show_missing_study(tmp_path):
    r = hpo_cli("show", str(tmp_path / "none"), "--json")
    assert r.returncode == 2 and "no study at" in r.stderr


def _refused(r, out_dir, message):
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), r.stderr
    assert message in lines[0], lines[0]
    assert not out_dir.exists()


@pytest.mark.parametrize("env", [{"RANK": "0", "WORLD_SIZE": "2"}, {"LOCAL_RANK": "1"}, {"WORLD_SIZE": "1"}])
def test_distributed_launcher_environment_is_refused_with_the_fix(tmp_path, digits_cls, env):
    out_dir = tmp_path / "out"
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(out_dir),
        "--iterations",
        "2",
        "--epochs",
        "1",
        *kv(CLS_ARGS),
        env=env,
    )
    shown = " ".join(f"{k}={env[k]}" for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in env)
    _refused(r, out_dir, f"environment: {shown} is set by a distributed launcher")
    assert "unset RANK WORLD_SIZE LOCAL_RANK" in r.stderr and "--concurrent-trials N" in r.stderr


def test_corrupt_or_foreign_checkpoint_is_refused_naming_the_model_file(tmp_path, digits_cls):
    import torch

    out_dir = tmp_path / "out"
    junk = tmp_path / "best.pt"
    junk.write_bytes(b"\x00" * 64)
    common = ["--data", str(digits_cls), "--output", str(out_dir), "--iterations", "2", "--epochs", "1", *kv(CLS_ARGS)]
    _refused(hpo_cli("tune", "--model", str(junk), *common), out_dir, f"model: '{junk}' is not a readable checkpoint")
    foreign = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    _refused(hpo_cli("tune", "--model", str(foreign), *common), out_dir, f"model: '{foreign}' is not an Ultralytics checkpoint")


def test_a_split_without_images_is_refused(tmp_path, digits_cls, coco8):
    import shutil

    data = tmp_path / "cls"
    shutil.copytree(digits_cls / "train", data / "train")
    for cls in (digits_cls / "val").iterdir():
        (data / "val" / cls.name).mkdir(parents=True)  # the class folders, none of the images
    out_dir = tmp_path / "out"
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(data),
        "--output",
        str(out_dir),
        "--iterations",
        "2",
        "--epochs",
        "1",
        *kv(CLS_ARGS),
    )
    _refused(r, out_dir, f"data: classification split '{data / 'val'}' has no images in its 10 class folders")
    (tmp_path / "empty").mkdir()
    det = tmp_path / "det.yaml"
    det.write_text(f"path: {coco8.parent}\ntrain: images/train\nval: {tmp_path / 'empty'}\nnames: {{0: person}}\n")
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n.yaml",
        "--data",
        str(det),
        "--output",
        str(out_dir),
        "--iterations",
        "2",
        "--epochs",
        "1",
        "imgsz=32",
        "device=cpu",
    )
    _refused(r, out_dir, f"data: val '{tmp_path / 'empty'}' in '{det}' holds no images")


def test_numbers_in_the_yolo_cli_forms_are_numbers(tmp_path):
    from hpo.cli import split_extra_args
    from hpo.space import SearchSpace
    from hpo.validate import parse_train_args

    train, options = split_extra_args(["lr0=1e-5", "--sigma", "1E-1", "--parents=5e0", "--checkpoint", "imgsz=32"])
    assert parse_train_args(train) == {"lr0": 1e-5, "imgsz": 32}
    assert options == {"sigma": 0.1, "parents": 5.0, "checkpoint": True}
    assert parse_train_args(["lrf=1E-2", "scale=-1.5e+0", "name=1e5x"]) == {"lrf": 0.01, "scale": -1.5, "name": "1e5x"}
    f = tmp_path / "space.yml"
    f.write_text("lr0: [1e-5, 1e-2]\nmomentum: [7e-1, 9.8E-1, 3e-1]\n")
    assert SearchSpace.parse(f).to_ultralytics() == {"lr0": (1e-5, 1e-2, 1.0), "momentum": (0.7, 0.98, 0.3)}


@pytest.mark.slow  # one real 2-epoch training
def test_risky_input_warns_in_the_terminal_and_the_study_runs(tmp_path, digits_cls, read_only):
    import shutil

    src, ro = read_only
    shutil.copytree(digits_cls, src / "digits-cls", ignore=shutil.ignore_patterns("*.cache"))
    out_dir = tmp_path / "out"
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(ro / "digits-cls"),
        "--output",
        str(out_dir),
        "--iterations",
        "1",
        "--epochs",
        "2",
        "--space",
        '{"hsv_v": [0.0, 0.9]}',
        "val=False",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("hpo: warning: ")]
    assert warnings == [
        f"hpo: warning: data: '{ro / 'digits-cls'}' is read-only, so Ultralytics cannot save train.cache and val.cache "
        "and rescans the train and val labels in every trial; mount the dataset read-write once to let the cache be "
        "written, or copy it to a writable volume",
        "hpo: warning: train args: val=False validates only after the last epoch, so trials record no per-epoch objective "
        "and a pruner or scheduler (optuna --pruner, ray --scheduler) has nothing to compare; drop val=False to prune",
    ]
    assert "HpoWarning" not in r.stderr  # the CLI prints them once, as its own lines
    study = out_dir / "digits-cls-ultralytics"
    assert json.loads((study / "study.json").read_text())["train_args"]["val"] is False
    # no validation after epoch 1: no metric recorded or shown for it (Ultralytics leaves zeros there)
    record = [json.loads(ln) for ln in (study / "trials.jsonl").read_text().splitlines()][-1]
    first, last = record["epochs"]
    assert "train/loss" in first and not any(k.startswith(("metrics/", "val/")) for k in first)
    assert last["metrics/accuracy_top1"] > 0 and record["objective"] == record["final_metrics"]["metrics/accuracy_top1"]
    assert "  trial 0 epoch 1/2 metrics/accuracy_top1=- (" in r.stderr
    assert f"  trial 0 epoch 2/2 metrics/accuracy_top1={last['metrics/accuracy_top1']:.5g} (" in r.stderr


@pytest.mark.slow  # one real 1-epoch training
def test_integer_train_args_in_a_space_train_as_integers(tmp_path, digits_cls):
    """batch and imgsz ranges are integer parameters (CFG_INT_KEYS lacks them): a float batch failed
    every trial ("batch_size should be a positive integer value, but got batch_size=16.0")."""
    args = {k: v for k, v in CLS_ARGS.items() if k not in ("batch", "imgsz")}
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(tmp_path / "o"),
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--space",
        '{"batch": [16, 64], "imgsz": [32, 48]}',
        "--quiet",
        *kv(args),
    )
    assert r.returncode == 0, r.stderr
    (record,) = [json.loads(ln) for ln in (tmp_path / "o" / "digits-cls-ultralytics" / "trials.jsonl").read_text().splitlines()][
        -1:
    ]
    assert record["status"] == "complete" and record["objective"] is not None
    assert record["params"] == record["applied"] == {"batch": 16, "imgsz": 48}  # Ultralytics' defaults, clipped
    assert all(type(v) is int for v in (*record["params"].values(), *record["applied"].values()))


def test_tune_help_lists_the_backends_options_and_flags_take_no_value():
    r = hpo_cli("tune", "--backend", "optuna", "--help", env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    assert "--sampler {tpe,random,cmaes,gp,qmc}: Optuna sampler" in r.stdout and "(default hyperband)" in r.stdout
    assert "Other backends: " in r.stdout and "ray" in r.stdout.split("Other backends: ")[1]
    resume = next(x for x in r.stdout.splitlines() if "--resume " in x)
    assert "<bool>" not in resume and "--concurrent-trials" in r.stdout and "--workers" not in r.stdout
    assert "<bool>" not in r.stdout  # no flag renders a value, --help included
    assert "--time-budget" in r.stdout
    r = hpo_cli("tune", "--help", "--backend", "ray", env={"COLUMNS": "120"})
    assert "--checkpoint/--no-checkpoint: " in r.stdout and "(default: on)" in r.stdout
    assert "--max-concurrent INT: trials run at once (default: --concurrent-trials," in r.stdout and "--workers" not in r.stdout
    r = hpo_cli("backends")
    assert r.returncode == 0 and "sequential" not in r.stdout and "--concurrent-trials N" in r.stdout


def test_misspelled_backend_option_deprecated_workers_and_debug_anywhere(tmp_path, digits_cls):
    base = ["tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output", str(tmp_path / "o")]
    r = hpo_cli(*base, "--backend", "optuna", "--samplr", "tpe")
    assert r.returncode == 2 and r.stderr.startswith("hpo: error: optuna option 'samplr' (--samplr): ")
    assert "did you mean --sampler?" in r.stderr and r.stderr.count("\n") == 1
    r = hpo_cli(*base, "--workers", "0")  # the old spelling still works, with a deprecation line
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 2
    assert lines[0].startswith("hpo: warning: --workers: ") and "use concurrent_trials= (CLI: --concurrent-trials N)" in lines[0]
    assert lines[1] == "hpo: error: concurrent_trials: '0' must be a whole number >= 1"
    r = hpo_cli(*base, "--concurrent-trials", "0", "--debug")  # --debug after the subcommand
    assert r.returncode == 2 and "Traceback" in r.stderr and r.stderr.rstrip().endswith("must be a whole number >= 1")
    assert not (tmp_path / "o").exists()
    from hpo import Tuner
    from hpo.errors import ConfigError

    with pytest.warns(FutureWarning, match="concurrent_trials="), pytest.raises(ConfigError, match="concurrent_trials: '0'"):
        Tuner(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path / "o", workers="0")


def test_pretrained_weights_only_by_choice(tmp_path, digits_cls, monkeypatch):
    import torch

    from hpo import Tuner

    base = ["tune", "--model", "yolov8n-cls.pt", "--data", str(digits_cls), "--output", str(tmp_path / "o"), "imgsz=32"]
    r = hpo_cli(*base)  # no opt-in: the refusal names it
    assert r.returncode == 2 and "--download-weights (HPO_DOWNLOAD_WEIGHTS=1)" in r.stderr
    for extra, env in ((["--download-weights"], {}), ([], {"HPO_DOWNLOAD_WEIGHTS": "1"})):
        r = hpo_cli(*base, *extra, env=env)  # this machine reaches no GitHub: one line, before anything is written
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(
            "hpo: error: model: cannot fetch 'yolov8n-cls.pt' (download_weights is on): this machine is offline"
        )
        assert not (tmp_path / "o").exists()
    # fetched once: a later study finds the file in the weights folder and needs no network
    folder = tmp_path / "o" / "pretrained"
    folder.mkdir(parents=True)
    from ultralytics import YOLO

    # what a fetched official checkpoint holds: the model and its train args (built offline from the YAML)
    torch.save({"train_args": {"task": "classify"}, "model": YOLO("yolov8n-cls.yaml").model}, folder / "yolov8n-cls.pt")
    monkeypatch.setenv("HPO_DOWNLOAD_WEIGHTS", "1")
    tuner = Tuner(model="yolov8n-cls.pt", data=digits_cls, output=tmp_path / "o", train_args={"imgsz": 32})
    assert tuner.config.model == str(folder / "yolov8n-cls.pt") and tuner.config.task == "classify"


def test_output_that_is_a_file_is_one_line_and_leaves_nothing(tmp_path, digits_cls):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(blocker),
        "--iterations",
        "2",
        "--epochs",
        "1",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo: error: output: ") and str(blocker) in lines[0]
    assert blocker.read_text().startswith("a file")


def test_show_and_resume_of_a_damaged_study_json_are_one_line_exit_2(tmp_path, digits_cls):
    from hpo import Study

    study = tmp_path / "studies" / "s"
    Study.create(study, {"backend": "ultralytics"}).close()
    (study / "study.json").write_text("[]")
    r = hpo_cli("show", str(study))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "holds a JSON list, not the study's settings object" in r.stderr and "Traceback" not in r.stderr
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(tmp_path / "studies"),
        "--name",
        "s",
        "--resume",
        "--iterations",
        "2",
        "--epochs",
        "1",
        *kv(CLS_ARGS),
    )
    assert r.returncode == 2 and "holds a JSON list" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (study / "lock").exists()  # a run that failed to start leaves no lock


def test_json_stdout_is_the_document_alone_on_a_first_run(tmp_path, digits_cls):
    """A fresh HOME makes Ultralytics print its first-run settings message to stdout at import;
    with --json that (and any other output of the run) goes to stderr: stdout parses as JSON."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_PLOTS": "0"}
    args = ["--backend", "optuna", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--iterations", "2"]
    args += ["--epochs", "2", "--output", str(tmp_path / "out"), "--name", "demo", "--json", "imgsz=32"]
    r = hpo_cli("tune", *args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert sum(doc["counts"].values()) == 2 and doc["study_dir"] == str(tmp_path / "out" / "demo")
    assert (home / ".config" / "Ultralytics" / "settings.json").is_file()  # the message was printed, to stderr
    assert "Ultralytics Settings" in r.stderr


def test_demo_over_a_demo_study_with_other_settings_names_out(tmp_path):
    """`hpo demo` resumes its study in --out; one made with other settings (here other --epochs; an
    older hpo's demo) is refused in one line naming the difference and --out (the demo has no
    --name), exit 2, the study as it was (simulated trials: the refusal is the point)."""
    env = {"HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_PLOTS": "0"}
    out = tmp_path / "demo"
    first = hpo_cli("demo", "--out", str(out), "--iterations", "1", "--epochs", "1", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    trials = (out / "studies" / "demo-ultralytics" / "trials.jsonl").read_text()
    again = hpo_cli("demo", "--out", str(out), "--iterations", "1", "--epochs", "2", env=env)
    assert again.returncode == 2, again.stderr[-2000:]
    errors = [x for x in again.stderr.splitlines() if not x.startswith("hpo: notice: ")]  # the optimizer notice
    assert len(errors) == 1, again.stderr
    line = errors[0]
    assert line.startswith("hpo: error: demo: "), line
    assert "epochs: stored 1 != given 2" in line and f"delete {out}, or pass another --out" in line, line
    assert "--name" not in line
    assert (out / "studies" / "demo-ultralytics" / "trials.jsonl").read_text() == trials
