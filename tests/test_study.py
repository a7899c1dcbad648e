"""The study store: atomic writes, the single-writer lock, torn lines, best."""

import json
import os
import socket
import subprocess
import sys

import pytest

from hpo import Study, StudyError, StudyLockedError, TrialRecord, TrialStatus
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
        "import sys; from hpo import Study, StudyLockedError\n"
        f"try:\n    Study.open({str(path)!r}, writer=True)\nexcept StudyLockedError as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3
    assert f"host {socket.gethostname()} pid {os.getpid()}" in out.stdout
    assert "stop that process" in out.stdout
    study.close()
    assert not (path / "lock").exists()
    Study.open(path, writer=True).close()


def test_killed_writers_lock_is_taken_over_at_once(tmp_path):
    path = tmp_path / "s"
    code = (
        "import os, signal; from hpo import Study\n"
        f"s = Study.create({str(path)!r}, {{}})\nprint(os.getpid(), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == -9
    assert json.loads((path / "lock").read_text())["pid"] == int(out.stdout)  # the file is left behind
    study = Study.open(path, writer=True)  # the kernel released the dead writer's flock: no waiting
    assert study.lock.took_over["pid"] == int(out.stdout)
    study.close()


def test_lock_of_another_host_in_heartbeat_mode_blocks_until_forced(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_LOCK_HEARTBEAT", "1")  # as on a filesystem without cross-host locks (NFSv3)
    path = tmp_path / "s"
    Study.create(path, {}).close()
    (path / "lock").write_text(json.dumps({"host": "other-pod", "pid": 1, "started": "x"}))
    with pytest.raises(StudyLockedError, match="other-pod pid 1.*hpo unlock --force"):
        Study.open(path, writer=True)
    with pytest.raises(StudyLockedError, match="unlock --force"):
        Study.break_lock(path)
    assert Study.break_lock(path, force=True)["host"] == "other-pod"
    Study.open(path, writer=True).close()
    # a heartbeat older than the limit is a dead pod's: taken over with a record of it
    (path / "lock").write_text(json.dumps({"host": "other-pod", "pid": 1, "started": "x"}))
    old = os.stat(path / "lock").st_mtime - 600
    os.utime(path / "lock", (old, old))
    study = Study.open(path, writer=True)
    assert study.lock.took_over["host"] == "other-pod"
    study.close()


def test_lock_of_another_host_on_a_local_filesystem_is_proven_dead(tmp_path, monkeypatch):
    monkeypatch.delenv("HPO_LOCK_HEARTBEAT", raising=False)
    from hpo.lock import kernel_lock_reliable

    if not kernel_lock_reliable(tmp_path):
        pytest.skip(f"{tmp_path} is not on a filesystem with reliable flock")
    path = tmp_path / "s"
    Study.create(path, {}).close()
    (path / "lock").write_text(json.dumps({"host": "killed-pod", "pid": 1, "started": "x"}))
    study = Study.open(path, writer=True)  # no flock held: its writer is gone, whatever host it was on
    assert study.lock.took_over["host"] == "killed-pod"
    assert study.lock._thread is None  # no heartbeat where the kernel proves liveness
    study.close()


def test_empty_lock_file_of_a_starting_writer_is_not_stale(tmp_path):
    import fcntl

    path = tmp_path / "s"
    Study.create(path, {}).close()
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT)  # a writer that locked but has not written its record
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StudyLockedError, match="starting"):
            Study.open(path, writer=True)
    finally:
        os.close(fd)
    Study.open(path, writer=True).close()


def test_unlock_refuses_the_lock_of_a_live_process_on_this_host(tmp_path):
    path = tmp_path / "s"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; from hpo import Study; s = Study.create({str(path)!r}, {{}}); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StudyLockedError, match=f"live process {holder.pid} on this host; stop it first"):
            Study.break_lock(path, force=True)
        assert (path / "lock").exists()
    finally:
        holder.kill()
        holder.wait()
    assert Study.break_lock(path)["pid"] == holder.pid  # gone now: removed
    assert not (path / "lock").exists()


_RACE = r"""
import os, sys
from pathlib import Path
from hpo.errors import StudyLockedError
from hpo.lock import StudyLock

root, rounds, n_procs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for round_ in range(rounds):
    lock_path = root / f"r{round_}.lock"
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    done_r, done_w = os.pipe()
    pids = []
    for _ in range(n_procs):
        pid = os.fork()
        if pid == 0:  # child: wait for the start, race, report, hold the lock until told
            try:
                os.read(go_r, 1)
                try:
                    StudyLock(lock_path).acquire()
                    os.write(res_w, b"W")
                except StudyLockedError:
                    os.write(res_w, b"L")
                os.read(done_r, 1)
            finally:
                os._exit(0)
        pids.append(pid)
    os.write(go_w, b"x" * n_procs)
    got = b""
    while len(got) < n_procs:
        got += os.read(res_r, n_procs)
    os.write(done_w, b"x" * n_procs)
    for pid in pids:
        os.waitpid(pid, 0)
    for fd in (go_r, go_w, res_r, res_w, done_r, done_w):
        os.close(fd)
    print(got.decode(), flush=True)
"""


def test_lock_race_has_exactly_one_writer_every_round(tmp_path):
    """Forked processes open one study's lock at the same instant, 300 rounds: one writer each time.

    The forks come from a small fresh interpreter (forking pytest, with torch loaded, is slow)."""
    out = subprocess.run([sys.executable, "-c", _RACE, str(tmp_path), "300", "4"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rounds = out.stdout.split()
    assert len(rounds) == 300
    bad = [(n, r) for n, r in enumerate(rounds) if r.count("W") != 1 or len(r) != 4]
    assert not bad, f"rounds without exactly one writer: {bad[:5]}"


def test_study_files_get_the_umask_modes_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        study = Study.create(tmp_path / "s", {"direction": "maximize"})
        study.append(TrialRecord(id=0, params={"lr0": 0.01}, status=TrialStatus.COMPLETE, objective=0.5))
        study.write_best(study.best())
        study.close()
    finally:
        os.umask(old)
    for name in ("study.json", "trials.jsonl", "best.yaml"):
        assert oct((tmp_path / "s" / name).stat().st_mode & 0o777) == oct(0o644), name


def test_writer_repairs_a_torn_last_record_before_appending(tmp_path, capsys):
    study = Study.create(tmp_path / "s", {})
    study.append(TrialRecord(id=0, params={"lr0": 0.01}, status=TrialStatus.COMPLETE, objective=0.5))
    study.close()
    with open(tmp_path / "s" / "trials.jsonl", "a") as f:
        f.write('{"id":1,"params":{"lr0"')  # the volume filled up mid-line
    assert sorted(Study.open(tmp_path / "s").records()) == [0]  # a reader skips it and changes nothing
    assert (tmp_path / "s" / "trials.jsonl").read_text().endswith('"lr0"')
    study = Study.open(tmp_path / "s", writer=True)
    assert "torn record" in capsys.readouterr().err
    study.append(TrialRecord(id=1, params={"lr0": 0.02}))
    lines = (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    assert [json.loads(ln)["id"] for ln in lines] == [0, 1]
    study.close()


def test_a_damaged_middle_record_is_salvaged_or_skipped_never_fatal(tmp_path, capsys):
    study = Study.create(tmp_path / "s", {})
    study.close()
    ok = lambda i: json.dumps(
        TrialRecord(id=i, params={}, status=TrialStatus.COMPLETE, objective=i / 10).to_json(), separators=(",", ":")
    )
    # what an older version left: a torn record with the next one appended onto it, then garbage
    (tmp_path / "s" / "trials.jsonl").write_text(ok(0) + "\n" + '{"id":1,"par' + ok(1) + "\n" + "#garbage\n" + ok(2) + "\n")
    recs = Study.open(tmp_path / "s").records()
    assert sorted(recs) == [0, 1, 2] and recs[1].objective == 0.1
    assert "line 3 is damaged" in capsys.readouterr().err


def test_study_json_that_is_not_an_object_is_one_clear_error(tmp_path):
    Study.create(tmp_path / "s", {}).close()
    (tmp_path / "s" / "study.json").write_text("[1, 2]")
    with pytest.raises(StudyError, match="holds a JSON list, not the study's settings object"):
        Study.open(tmp_path / "s")
    (tmp_path / "s" / "study.json").write_text("{not json")
    with pytest.raises(StudyError, match="is unreadable"):
        Study.open(tmp_path / "s")


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


def test_two_records_of_one_id_with_other_params_warn_once_and_the_first_wins(tmp_path, capsys):
    """A trial's params never change after the running record that started it, which it trained with:
    a later record of the same id with other params (a hand edit, a foreign line) is ignored, with one
    warning naming the id and both lines; the study's best stays the trial whose weights
    weights/best.pt holds. Only an unfinished id may start again with new params."""
    study = Study.create(tmp_path / "s", {"direction": "maximize", "metric": "m"})
    for i, (lr0, obj) in enumerate([(0.01, 0.5), (0.02, 0.6)]):
        r = TrialRecord(id=i, params={"lr0": lr0})
        study.append(r)
        r.status, r.objective = TrialStatus.COMPLETE, obj
        study.append(r)
    study.append(TrialRecord(id=0, params={"lr0": 0.09}, status=TrialStatus.COMPLETE, objective=0.99))  # line 5
    capsys.readouterr()
    recs = study.records()
    assert recs[0].params == {"lr0": 0.01} and recs[0].objective == 0.5
    assert study.best().id == 1
    err = capsys.readouterr().err
    assert err == (
        f"hpo: warning: trial 0 has other params at '{study.records_file}' line 5 ({{\"lr0\": 0.09}}) than at "
        f"'{study.records_file}' line 1 ({{\"lr0\": 0.01}}), where it started; the later record is ignored (the trial's "
        "folder and weights belong to the first): remove the wrong line\n"
    )
    study.records()
    assert capsys.readouterr().err == ""  # once per study
    r = TrialRecord(id=2, params={"lr0": 0.03})
    study.append(r)
    r.status = TrialStatus.INTERRUPTED
    study.append(r)
    study.append(TrialRecord(id=2, params={"lr0": 0.04}))  # an interrupted id started again with new params (ray)
    assert study.records()[2].params == {"lr0": 0.04} and capsys.readouterr().err == ""
    study.close()
