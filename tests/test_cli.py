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
    assert set(ultra["options"]) == {"parents", "sigma"}


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
        (["--sampler", "tpe"], "ultralytics option 'sampler'"),
        (["--model", "yolov8n-cls.pt"], "never downloads weights"),
        (["--trial-timeout", "-1"], "trial_timeout"),
        (["--keep-weights", "top-0"], "keep_weights: 'top-0' is not best, top-K (K >= 1) or all"),
        (["--join"], "join: backend 'ultralytics' cannot share a study between processes; use a backend that can (optuna)"),
        (["--backend", "optuna", "--join", "--resume"], "--join and --resume exclude each other"),
        (["--backend", "optuna", "--join"], "join: there is no study at"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, digits_cls, extra, message):
    out_dir = tmp_path / "out"
    args = ["tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output", str(out_dir),
            "--iterations", "2", "--epochs", "1", *kv(CLS_ARGS)]
    # later options win in click, so the bad value comes after the good defaults
    r = hpo_cli(*args, *extra)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), r.stderr
    assert message in lines[0]
    assert not out_dir.exists()


def test_missing_data_and_unwritable_output(tmp_path, digits_cls):
    r = hpo_cli("tune", "--model", "yolov8n.yaml", "--data", str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "data: " in r.stderr and "does not exist" in r.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = hpo_cli("tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output", str(blocker / "studies"),
                "--iterations", "1", "--epochs", "1", *kv(CLS_ARGS))
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


def test_tune_help_lists_the_backends_options_and_flags_take_no_value():
    r = hpo_cli("tune", "--backend", "optuna", "--help", env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    assert "--sampler {tpe,random,cmaes,gp,qmc}: Optuna sampler" in r.stdout and "(default hyperband)" in r.stdout
    assert "Other backends: " in r.stdout and "ray" in r.stdout.split("Other backends: ")[1]
    resume = next(x for x in r.stdout.splitlines() if "--resume " in x)
    assert "<bool>" not in resume and "--concurrent-trials" in r.stdout and "--workers" not in r.stdout
    r = hpo_cli("tune", "--help", "--backend", "ray", env={"COLUMNS": "120"})
    assert "--checkpoint/--no-checkpoint: " in r.stdout and "(default: on)" in r.stdout
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
        assert r.stderr.startswith("hpo: error: model: cannot fetch 'yolov8n-cls.pt' (download_weights is on): this machine is offline")
        assert not (tmp_path / "o").exists()
    # fetched once: a later study finds the file in the weights folder and needs no network
    folder = tmp_path / "o" / "pretrained"
    folder.mkdir(parents=True)
    torch.save({"train_args": {"task": "classify"}, "model": None}, folder / "yolov8n-cls.pt")
    monkeypatch.setenv("HPO_DOWNLOAD_WEIGHTS", "1")
    tuner = Tuner(model="yolov8n-cls.pt", data=digits_cls, output=tmp_path / "o", train_args={"imgsz": 32})
    assert tuner.config.model == str(folder / "yolov8n-cls.pt") and tuner.config.task == "classify"
