"""What a resume may change, and a run with no result never exits 0 (README "Resume", "Exit codes").

Simulated trials (``hpo.simulate``) where the rule, not training, is the point; the data change
trains for real on a copy of COCO8, and checks from the trials' own checkpoints which class names
they trained on.
"""

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import DET_ARGS, hpo_cli, kv

from hpo.testing import SIMULATED

SIM = {"HPO_TRAINER": SIMULATED, "HPO_TRAINER_OPTIONS": "{}", "HPO_PLOTS": "0"}
SPACE = json.dumps({"lr0": [1e-4, 1e-2]})


def _tune(data: Path, out: Path, *extra: str, env: dict | None = None, model: str = "yolov8n-cls.yaml"):
    return hpo_cli(
        "tune",
        "--model",
        model,
        "--data",
        str(data),
        "--epochs",
        "2",
        "--output",
        str(out),
        "--name",
        "s",
        "--space",
        SPACE,
        "--seed",
        "0",
        "--quiet",
        *extra,
        env=SIM if env is None else env,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _last(r) -> str:
    return r.stderr.strip().splitlines()[-1]


def test_iterations_below_the_finished_trials_do_nothing_and_keep_the_stored_total(tmp_path, digits_cls):
    """Bug 3: ``--iterations 1 --resume`` of a finished 3/3 study rewrote ``iterations`` to 1."""
    r = _tune(digits_cls, tmp_path, "--iterations", "3", "imgsz=32", "optimizer=SGD")
    assert r.returncode == 0, r.stderr
    r = _tune(digits_cls, tmp_path, "--iterations", "1", "--resume", "imgsz=32", "optimizer=SGD")
    assert r.returncode == 0, r.stderr
    assert "nothing to do: the study already has 3 finished trials (>= --iterations 1)" in r.stdout, r.stdout
    settings = json.loads((tmp_path / "s" / "study.json").read_text())
    assert settings["iterations"] == 3 and "iterations" not in settings["resumes"][-1]["changed"]
    shown = json.loads(hpo_cli("show", "--json", str(tmp_path / "s")).stdout)
    assert shown["iterations"] == 3 and shown["counts"]["complete"] == 3
    # a total at or above the finished trials is the study's new total, as before
    r = _tune(digits_cls, tmp_path, "--iterations", "4", "--resume", "--json", "imgsz=32", "optimizer=SGD")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["complete"] == 4 and json.loads(r.stdout)["iterations"] == 4
    assert json.loads((tmp_path / "s" / "study.json").read_text())["iterations"] == 4


def test_a_changed_train_arg_is_refused_unless_allowed_and_show_marks_the_trials(tmp_path, digits_cls):
    """imgsz=32 then imgsz=48 was silently accepted and ranked together; now it is refused with the
    diff and the fix, nothing written; --allow-changes takes it as settings version 1."""
    study = tmp_path / "s"
    base = ("optimizer=SGD", "workers=0")
    assert _tune(digits_cls, tmp_path, "--iterations", "2", "imgsz=32", *base).returncode == 0
    before = _files(study)
    r = _tune(digits_cls, tmp_path, "--iterations", "3", "--resume", "imgsz=48", *base)
    assert r.returncode == 2, r.stderr
    assert _last(r) == (
        "hpo: error: resume: settings that change what a trial measures differ from the study's (train arg imgsz: "
        "stored 32 != given 48); start a new study (another --name), or pass --allow-changes to continue this one "
        "with them (hpo show then marks each trial's settings)"
    )
    assert _files(study) == before  # nothing written
    r = _tune(digits_cls, tmp_path, "--iterations", "3", "--allow-changes", "imgsz=48", *base)
    assert r.returncode == 2 and "--allow-changes applies to --resume only" in _last(r), r.stderr
    # the documented silent train args: accepted without a word (recorded), no new settings version
    r = _tune(digits_cls, tmp_path, "--iterations", "3", "--resume", "imgsz=32", "optimizer=SGD", "workers=1", "cache=True")
    assert r.returncode == 0, r.stderr
    settings = json.loads((study / "study.json").read_text())
    assert settings["resumes"][-1]["changed"]["train_args"]["workers"] == 1 and "settings" not in settings["resumes"][-1]
    # allowed: a new settings version, recorded per trial and shown
    r = _tune(digits_cls, tmp_path, "--iterations", "5", "--resume", "--allow-changes", "imgsz=48", *base)
    assert r.returncode == 0, r.stderr
    settings = json.loads((study / "study.json").read_text())
    assert settings["train_args"]["imgsz"] == 48
    assert settings["resumes"][-1]["settings"] == 1
    assert settings["resumes"][-1]["allowed_changes"] == "train arg imgsz: stored 32 != given 48"
    shown = json.loads(hpo_cli("show", "--json", str(study)).stdout)
    assert {t["id"]: t["settings"] for t in shown["trials"]} == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1}
    assert shown["settings_changes"] == [
        {"settings": 1, "at": settings["resumes"][-1]["at"], "changes": "train arg imgsz: stored 32 != given 48"}
    ]
    records = [json.loads(x) for x in (study / "trials.jsonl").read_text().splitlines()]
    assert {r["id"] for r in records if r.get("settings") == 1} == {3, 4}
    text = hpo_cli("show", "--all", str(study)).stdout
    header = next(line for line in text.splitlines() if line.startswith("trial"))
    assert "settings" in header.split()
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isdigit()}
    col = header.split().index("settings")
    assert {k: v[col] for k, v in rows.items()} == {"0": "0", "1": "0", "2": "0", "3": "1", "4": "1"}
    assert "settings 0: as the study was created" in text
    assert "with --allow-changes: train arg imgsz: stored 32 != given 48" in " ".join(text.split())  # folded to the width


@pytest.mark.slow
def test_an_edited_data_yaml_is_refused_unless_allowed_and_then_trials_train_on_it(tmp_path, coco8):
    """Bug 2: class names edited between runs were recorded in study.json while <study>/data.yaml,
    which every trial trains on, kept the old ones. Real Ultralytics trials on a COCO8 copy."""
    import shutil

    import torch

    data = tmp_path / "coco8"
    shutil.copytree(coco8.parent, data)
    real = {"HPO_PLOTS": "0"}  # real training: no simulated trainer
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_TRAINER", "HPO_TRAINER_OPTIONS")}
    os_env = {**env, **real}
    args = ("--model", "yolov8n.yaml", "--data", str(data / "data.yaml"), "--epochs", "1", "--output", str(tmp_path))
    common = (*args, "--name", "s", "--space", '{"hsv_v": [0.0, 0.9]}', "--seed", "0", "--quiet", *kv({**DET_ARGS, "batch": 4}))

    def tune(*extra: str):
        return hpo_cli("tune", *common, *extra, env=os_env)

    r = tune("--iterations", "1")
    assert r.returncode == 0, r.stderr
    study = tmp_path / "s"
    doc = yaml.safe_load((data / "data.yaml").read_text())
    doc["names"][0] = "human"
    (data / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = _files(study)
    r = tune("--iterations", "2", "--resume")
    assert r.returncode == 2, r.stderr
    assert "data names[0]: stored 'person' != given 'human'" in _last(r) and "--allow-changes" in _last(r), r.stderr
    assert _files(study) == before  # data.yaml, study.json, trials untouched
    # two classes for labels of 80: refused by the label check before any diff (Ultralytics would drop images)
    two = dict(doc, names={0: "a", 1: "b"})
    (data / "two.yaml").write_text(yaml.safe_dump(two, sort_keys=False))
    r = hpo_cli("tune", *common, "--iterations", "2", "--resume", "--data", str(data / "two.yaml"), env=os_env)
    assert r.returncode == 2, r.stderr
    assert "names 2 classes (ids 0-1)" in _last(r), _last(r)
    assert _files(study) == before
    # another data YAML with the labels' 80 classes, two renamed: the path and the names differ
    other = dict(doc, names={**doc["names"], 0: "a", 1: "b"})
    (data / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    r = hpo_cli("tune", *common, "--iterations", "2", "--resume", "--data", str(data / "other.yaml"), env=os_env)
    assert r.returncode == 2, r.stderr
    assert f'data: stored "{data / "data.yaml"}" != given "{data / "other.yaml"}"' in _last(r), _last(r)
    assert "data names[0]: stored 'person' != given 'a'" in _last(r), _last(r)
    assert _files(study) == before
    # allowed: data.yaml is rewritten, and the next trial trains on the new names
    r = tune("--iterations", "2", "--resume", "--allow-changes")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((study / "data.yaml").read_text())["names"][0] == "human"
    settings = json.loads((study / "study.json").read_text())
    assert settings["data_resolved"]["names"]["0"] == "human"
    assert settings["resumes"][-1]["settings"] == 1
    assert settings["resumes"][-1]["allowed_changes"] == "data names[0]: stored 'person' != given 'human'"
    trained = {}
    for tid in (0, 1):
        ckpt = torch.load(study / "trials" / str(tid) / "weights" / "best.pt", map_location="cpu", weights_only=False)
        trained[tid] = ckpt["model"].names[0]
        assert yaml.safe_load((study / "trials" / str(tid) / "args.yaml").read_text())["data"] == str(study / "data.yaml")
    assert trained == {0: "person", 1: "human"}
    shown = json.loads(hpo_cli("show", "--json", str(study)).stdout)
    assert [(t["id"], t["settings"], t["status"]) for t in shown["trials"]] == [(0, 0, "complete"), (1, 1, "complete")]


def test_a_resume_rewrites_the_studys_data_yaml_from_the_checked_data(tmp_path, coco8):
    """A study an older hpo resumed after a data edit says one thing (study.json data_resolved) while
    its data.yaml, which the trials train on, says another: any resume writes data.yaml again."""
    args = ("--model", "yolov8n.yaml", "--data", str(coco8), "--epochs", "1", "--output", str(tmp_path), "--name", "d")
    common = (*args, "--space", '{"hsv_v": [0.0, 0.9]}', "--quiet", "imgsz=32")
    assert hpo_cli("tune", *common, "--iterations", "1", env=SIM).returncode == 0
    written = tmp_path / "d" / "data.yaml"
    doc = yaml.safe_load(written.read_text())
    written.write_text(yaml.safe_dump(dict(doc, names={**doc["names"], 0: "stale"}), sort_keys=False))
    r = hpo_cli("tune", *common, "--iterations", "2", "--resume", env=SIM)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(written.read_text()) == doc and doc["names"][0] == "person"


def test_the_python_api_raises_when_the_study_has_no_complete_trial(tmp_path, digits_cls):
    """Bug 1 through ``Tuner.run()``: a resume of a study whose every trial failed raised nothing."""
    from hpo import Tuner
    from hpo.errors import RunFailedError

    kw = dict(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space={"lr0": (1e-4, 1e-2)},
        iterations=2,
        epochs=1,
        train_args={"imgsz": 32, "optimizer": "SGD"},
        output=tmp_path,
        name="f",
        trainer=SIMULATED,
        trainer_options={"fail": [0, 1]},
        plots=False,
    )
    with pytest.raises(RunFailedError, match=r"^every trial failed; first error \(trial 0\): "):
        Tuner(**kw).run()
    with pytest.raises(RunFailedError, match=r"^every trial failed \(the study already has its 2 finished trials"):
        Tuner(**kw, resume=True).run()
    # a study stopped by its budget before any trial completed raises too, with the reason
    budget = dict(kw, name="b", iterations=None, epochs=50, time_budget=1, trainer_options={"epoch_s": 0.1})
    with pytest.raises(
        RunFailedError, match=r"^time budget: 1s ended the study before any trial completed \(0 failed, 1 pruned\)"
    ):
        Tuner(**budget).run()


def test_live_holder_is_the_locks_own_proof_of_a_live_writer(tmp_path, monkeypatch):
    """What --join asks before it adds a process: a held flock is a live writer (another process
    here), a free one a dead writer, and in heartbeat mode a fresh heartbeat of another host counts
    as live. Probing never makes a writer that starts at that instant fail."""
    import signal
    import subprocess
    import sys

    from hpo.lock import StudyLock

    monkeypatch.delenv("HPO_LOCK_HEARTBEAT", raising=False)
    lock = tmp_path / "lock"
    assert StudyLock(lock).live_holder() is None  # no lock file: no writer
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hpo.lock import StudyLock; StudyLock({str(lock)!r}).acquire(); print('ok', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        assert StudyLock(lock).live_holder()["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists() and StudyLock(lock).live_holder() is None  # its record is left, its flock is gone
    lock.write_text(json.dumps({"host": "other-pod", "pid": 1, "started": "x"}))
    assert StudyLock(lock, reliable=False).live_holder()["host"] == "other-pod"  # heartbeat mode: fresh, may live
    old = lock.stat().st_mtime - 600
    os.utime(lock, (old, old))
    assert StudyLock(lock, reliable=False).live_holder() is None  # a stale heartbeat: gone
    assert StudyLock(lock, reliable=True).live_holder() is None


def test_a_renamed_class_folder_is_refused_on_resume_unless_allowed(tmp_path, digits_cls):
    """A classification folder's class names are its train/ sub-folders: renaming one between runs
    changes what every label means, so a resume names it (exit 2, nothing written) unless
    --allow-changes, as an edited data YAML's names are."""
    import shutil

    data = tmp_path / "digits"
    shutil.copytree(digits_cls, data)
    args = ("imgsz=32", "optimizer=SGD")
    assert _tune(data, tmp_path, "--iterations", "1", *args).returncode == 0
    study = tmp_path / "s"
    assert json.loads((study / "study.json").read_text())["data_classes"] == [str(d) for d in range(10)]
    for split in ("train", "val"):
        (data / split / "3").rename(data / split / "three")
    before = _files(study)
    r = _tune(data, tmp_path, "--iterations", "2", "--resume", *args)
    assert r.returncode == 2, r.stderr
    assert "data names[3]: stored '3' != given '4'" in _last(r) and "--allow-changes" in _last(r), _last(r)
    assert _files(study) == before
    r = _tune(data, tmp_path, "--iterations", "2", "--resume", "--allow-changes", *args)
    assert r.returncode == 0, r.stderr
    assert json.loads((study / "study.json").read_text())["data_classes"][-1] == "three"
