"""The study store: atomic writes, the single-writer lock, torn lines, best."""

import json
import os
import socket
import subprocess
import sys

import pytest

from hpo import Study, StudyError, StudyLocked, TrialRecord, TrialStatus
from hpo.study import atomic_write_text


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "best.yaml"
    atomic_write_text(p, "a: 1\n")
    atomic_write_text(p, "a: 2\n")
    assert p.read_text() == "a: 2\n"
    assert [f.name for f in tmp_path.iterdir()] == ["best.yaml"]


def test_records_fold_to_last_snapshot_and_skip_torn_last_line(tmp_path):
    study = Study.create(tmp_path / "s", {"direction": "maximize", "metric": "m"})
    r = TrialRecord(id=0, params={"lr0": 0.01})
    study.append(r)
    r.status, r.objective = TrialStatus.COMPLETE, 0.5
    study.append(r)
    study.append(TrialRecord(id=1, params={"lr0": 0.02}))
    with open(study.records_file, "a") as f:
        f.write('{"id": 2, "params": {"lr0"')  # a writer killed mid-line
    recs = study.records()
    assert sorted(recs) == [0, 1]
    assert recs[0].status is TrialStatus.COMPLETE and recs[0].objective == 0.5
    assert recs[1].status is TrialStatus.RUNNING
    assert [r.id for r in study.finished()] == [0]
    study.close()


def test_nan_metrics_are_stored_as_null_not_invalid_json(tmp_path):
    study = Study.create(tmp_path / "s", {})
    study.append(TrialRecord(id=0, params={}, epochs=[{"epoch": 1, "val/loss": float("nan")}]))
    line = study.records_file.read_text().strip()
    assert json.loads(line)["epochs"][0]["val/loss"] is None
    study.close()


def test_best_ignores_failed_and_respects_direction(tmp_path):
    study = Study.create(tmp_path / "s", {"direction": "minimize"})
    for i, (status, obj) in enumerate([("complete", 0.3), ("failed", None), ("complete", 0.1), ("pruned", 0.01)]):
        study.append(TrialRecord(id=i, params={}, status=TrialStatus(status), objective=obj))
    assert study.best().id == 2
    study.close()


def test_lock_is_exclusive_names_holder_and_is_released(tmp_path):
    path = tmp_path / "s"
    study = Study.create(path, {})
    # a second *process* cannot take it
    code = (
        "import sys; from hpo import Study, StudyLocked\n"
        f"try:\n    Study.open({str(path)!r}, writer=True)\nexcept StudyLocked as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3
    assert f"host {socket.gethostname()} pid {os.getpid()}" in out.stdout
    assert "hpo unlock" in out.stdout
    study.close()
    assert not (path / "lock").exists()
    Study.open(path, writer=True).close()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "s"
    Study.create(path, {}).lock._stop.set()  # keep the lock file, as a killed process would
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = json.loads((path / "lock").read_text())
    info["pid"] = int(dead.stdout)
    (path / "lock").write_text(json.dumps(info))
    study = Study.open(path, writer=True)
    assert study.lock.took_over["pid"] == int(dead.stdout)
    study.close()


def test_live_lock_on_another_host_blocks_and_unlock_breaks_it(tmp_path):
    path = tmp_path / "s"
    Study.create(path, {}).lock._stop.set()
    (path / "lock").write_text(json.dumps({"host": "other-pod", "pid": 1, "started": "x"}))
    with pytest.raises(StudyLocked, match="other-pod pid 1"):
        Study.open(path, writer=True)
    assert Study.break_lock(path)["host"] == "other-pod"
    Study.open(path, writer=True).close()


def test_create_refuses_existing_and_open_refuses_missing(tmp_path):
    Study.create(tmp_path / "s", {}).close()
    with pytest.raises(StudyError, match="already exists; pass --resume"):
        Study.create(tmp_path / "s", {})
    with pytest.raises(StudyError, match="no study at"):
        Study.open(tmp_path / "missing")


def test_ranked_is_the_leaderboard_order(tmp_path):
    from hpo.tuner import leaderboard_markdown

    study = Study.create(tmp_path / "s", {"direction": "minimize", "backend": "b", "metric": "val/loss"})
    for i, (status, obj) in enumerate([("failed", None), ("complete", 0.3), ("pruned", 0.01), ("complete", 0.1)]):
        study.append(TrialRecord(id=i, params={"lr0": 0.001 * (i + 1)}, status=TrialStatus(status), objective=obj))
    assert [r.id for r in study.ranked()] == [3, 1, 0, 2]  # complete by objective, then the rest by id
    board = leaderboard_markdown(study).splitlines()
    assert board[6].startswith("| 1 | 3 | complete | 0.1 |") and board[8].startswith("| 3 | 0 | failed | - |")
    study.close()
