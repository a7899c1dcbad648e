"""A new user's findings (issue 30): Python errors in Python words, a misspelled Tuner keyword named
as the user wrote it, bad train args refused before Ultralytics is imported, "1 epoch", and
hpo backends fitting the terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from hpo import ConfigError, StudyError, Tuner, TuneSettings
from hpo.progress import ProgressDisplay

SIM = {"trainer": "hpo.simulate:simulated_trainer", "plots": False}


def _base(data, tmp_path, **kw):
    return dict(model="yolov8n-cls.yaml", data=data, output=tmp_path, train_args={"imgsz": 32}, **SIM, **kw)


def test_python_errors_name_keywords_not_flags(tmp_path, digits_cls):
    with pytest.raises(ConfigError) as e:
        Tuner(**_base(digits_cls, tmp_path), allow_changes=True)
    assert "allow_changes=True applies to resume=True only" in str(e.value) and "--" not in str(e.value)
    Tuner(**_base(digits_cls, tmp_path), name="s", iterations=1, epochs=1).run()
    with pytest.raises(StudyError) as e:
        Tuner(**_base(digits_cls, tmp_path), name="s", iterations=1, epochs=1).run()
    assert "already exists; pass resume=True to continue it or choose another name=..." in str(e.value)
    with pytest.raises(ConfigError, match=r"is more than epochs=2; .* backend_options=\{'grace_period': \.\.\.\}"):
        Tuner(**_base(digits_cls, tmp_path), backend="ray", epochs=2, backend_options={"grace_period": 5})


def test_the_command_line_keeps_its_flags(tmp_path, digits_cls):
    r = subprocess.run(
        [sys.executable, "-m", "hpo", "tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--allow-changes"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "--allow-changes applies to --resume only" in r.stderr, r.stderr


def test_a_misspelled_keyword_names_the_tuner_and_the_closest(tmp_path, digits_cls):
    settings = TuneSettings(**_base(digits_cls, tmp_path))
    with pytest.raises(
        TypeError, match=r"^Tuner\(\) got an unexpected keyword argument 'iteratons' \(did you mean 'iterations'\?\)$"
    ):
        Tuner(settings, iteratons=3)


def test_a_bad_train_arg_is_refused_before_ultralytics_is_imported(tmp_path, digits_cls):
    code = f"""
import json, sys, time
from hpo import Tuner, ConfigError
t = time.perf_counter()
try:
    Tuner(model="yolov8n-cls.yaml", data={str(digits_cls)!r}, output={str(tmp_path)!r}, train_args={{"imgsz": "abc"}})
except ConfigError as e:
    print(json.dumps({{"error": str(e), "torch": "torch" in sys.modules, "ultralytics": "ultralytics" in sys.modules}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["error"] == "train args: imgsz='abc' must be a whole number of pixels > 0 (imgsz=640) or [h, w]"
    assert not out["torch"] and not out["ultralytics"], out
    with pytest.raises(ConfigError, match=r"^train args: lr0='x' must be a number \(e\.g\. lr0=0\.5\)$"):
        Tuner(**{**_base(digits_cls, tmp_path), "train_args": {"lr0": "x"}})
    with pytest.raises(ConfigError, match=r"^train args: 'epochs' is set by hpo"):  # a reserved key keeps its own line
        Tuner(**{**_base(digits_cls, tmp_path), "train_args": {"epochs": "x"}})


def test_one_epoch_is_singular(tmp_path, digits_cls):
    stream = io.StringIO()
    Tuner(
        **_base(digits_cls, tmp_path), name="one", iterations=1, epochs=1, callbacks=[ProgressDisplay(stream=stream, live=False)]
    ).run()
    assert "(ultralytics, 1 trial x 1 epoch, metrics/accuracy_top1 maximize)" in stream.getvalue(), stream.getvalue()


def test_hpo_backends_fits_80_columns_without_breaking_a_word():
    env = {**os.environ, "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "hpo", "backends"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert max(len(x) for x in r.stdout.splitlines()) <= 80, [x for x in r.stdout.splitlines() if len(x) > 80]
    flat = " ".join(r.stdout.split())
    assert "--sampler {tpe,random,cmaes,gp,qmc}: Optuna sampler: tpe (TPESampler, multivariate)" in flat
