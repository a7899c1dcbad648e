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


# --- the records in memory: read once, then only what was appended (issue 28, flat cost per trial)
def _reference_fold(path):
    """What the study held before it kept its records in memory: every trials*.jsonl re-read and
    folded from scratch (last snapshot wins, a finished one is never replaced by an unfinished one;
    a snapshot with other params than the id's current record counts only as a running one that
    starts an unfinished trial again)."""
    from hpo.study import _parse_record

    out = {}
    for f in sorted(path.glob("trials*.jsonl")):
        lines = f.read_text(encoding="utf-8", errors="replace").split("\n")
        for line in lines:
            rec = _parse_record(line) if line.strip() else None
            if rec is None:
                continue
            prev = out.get(rec.id)
            if prev is not None and rec.params != prev.params:
                if prev.status.finished or rec.status is not TrialStatus.RUNNING:
                    continue
            if prev is None or not (prev.status.finished and not rec.status.finished):
                out[rec.id] = rec
    return {i: out[i].to_json() for i in sorted(out)}


def _line(i, status="running", objective=None, lr0=None, **extra):
    params = {"lr0": 0.001 * (i + 1) if lr0 is None else lr0}
    rec = TrialRecord(id=i, params=params, status=TrialStatus(status), objective=objective, **extra)
    return json.dumps(rec.to_json(), separators=(",", ":")) + "\n"


_JOIN_SCRIPT = """
import sys
from hpo import Study, TrialRecord, TrialStatus
s = Study.open(sys.argv[1], worker="w1")
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    r = TrialRecord(id=i, params={"lr0": 0.5})
    s.append(r)
    r.status, r.objective = TrialStatus.COMPLETE, i / 100
    s.append(r)
"""


def test_records_read_only_what_another_process_appended(tmp_path):
    from hpo.study import record_read_stats

    writer = Study.create(tmp_path / "s", {"direction": "maximize"})
    for i in range(3):
        writer.append(TrialRecord(id=i, params={"lr0": 0.1}, status=TrialStatus.COMPLETE, objective=0.1 * i))
    reader = Study.open(tmp_path / "s")
    assert sorted(reader.records()) == [0, 1, 2]
    before = record_read_stats()
    # a joined process (another interpreter) appears with its own file and appends to it
    subprocess.run([sys.executable, "-c", _JOIN_SCRIPT, str(tmp_path / "s"), "3", "6"], check=True)
    recs = reader.records()
    assert sorted(recs) == [0, 1, 2, 3, 4, 5] and recs[5].status is TrialStatus.COMPLETE and recs[5].objective == 0.05
    joined = (tmp_path / "s" / "trials.w1.jsonl").stat().st_size
    read = record_read_stats()
    assert read["bytes_read"] - before["bytes_read"] == joined  # the new file alone, not trials.jsonl again
    assert read["lines_parsed"] - before["lines_parsed"] <= 6  # the new lines at most (superseded ones: not decoded)
    subprocess.run([sys.executable, "-c", _JOIN_SCRIPT, str(tmp_path / "s"), "6", "7"], check=True)
    before = record_read_stats()
    assert sorted(reader.records()) == list(range(7))
    assert (
        record_read_stats()["bytes_read"] - before["bytes_read"] == (tmp_path / "s" / "trials.w1.jsonl").stat().st_size - joined
    )
    # the writer sees the joined trials too (it counts them against the study's total), and its
    # own appends never make it read its own file back
    before = record_read_stats()
    writer.append(TrialRecord(id=7, params={"lr0": 0.2}))
    assert writer.trial_count() == 8 and writer.finished_count() == 7 and writer.best().id == 2  # 0.2 > 0.06
    assert record_read_stats()["bytes_read"] - before["bytes_read"] == (tmp_path / "s" / "trials.w1.jsonl").stat().st_size
    assert reader.records() == writer.records() and [r.id for r in reader.finished()] == list(range(7))
    writer.close()


def test_a_torn_last_line_is_skipped_until_another_process_completes_it(tmp_path, capsys):
    Study.create(tmp_path / "s", {}).close()
    reader = Study.open(tmp_path / "s")
    f = tmp_path / "s" / "trials.w2.jsonl"
    whole = _line(0) + _line(0, "complete", 0.5)
    with open(f, "w") as fh:
        fh.write(whole[:-30])  # caught mid-append
    assert reader.records()[0].status is TrialStatus.RUNNING
    with open(f, "a") as fh:
        fh.write(whole[-30:])
    assert reader.records()[0].status is TrialStatus.COMPLETE and reader.records()[0].objective == 0.5
    assert reader.finished_count() == 1 and reader.best().id == 0
    assert "warning" not in capsys.readouterr().err  # a tail being written is not damage


def test_a_repair_that_cuts_the_file_under_a_reader(tmp_path, capsys):
    study = Study.create(tmp_path / "s", {"direction": "minimize"})
    study.append(TrialRecord(id=0, params={}, status=TrialStatus.COMPLETE, objective=0.3))
    study.close()
    records = tmp_path / "s" / "trials.jsonl"
    with open(records, "a") as fh:
        fh.write('{"id":1,"params":{"lr0"\n')  # a torn record that happens to end in a newline
    reader = Study.open(tmp_path / "s")
    assert sorted(reader.records()) == [0]
    writer = Study.open(tmp_path / "s", writer=True)  # cuts the torn record off
    assert "torn record" in capsys.readouterr().err
    for i, obj in ((1, 0.2), (2, 0.1)):
        writer.append(TrialRecord(id=i, params={"lr0": i}, status=TrialStatus.COMPLETE, objective=obj))
    recs = reader.records()
    assert sorted(recs) == [0, 1, 2] and recs[2].objective == 0.1 and reader.best().id == 2
    assert "damaged" not in capsys.readouterr().err
    writer.close()
    # the file rewritten shorter by hand (as a test of Ray's resume does): read again from its start
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:1] + lines[2:]))
    assert sorted(reader.records()) == [0, 2] and [r.id for r in reader.finished()] == [0, 2]
    # rewritten to the same length with other content: the bytes before the reader's position differ
    records.write_text(_line(5, "complete", 0.9) + _line(0, "complete", 0.3))
    with open(records, "a") as fh:
        fh.write(_line(6))
    assert sorted(reader.records()) == [0, 5, 6]


def test_incremental_reading_matches_reading_everything_again(tmp_path):
    """Random appends, tears, completions, damage, repairs, rewrites and new files: after every step
    the records in memory equal a fold of the files read from scratch."""
    import random

    from hpo.files import repair_jsonl

    rng = random.Random(0)
    study = Study.create(tmp_path / "s", {"direction": "maximize"})
    reader = Study.open(tmp_path / "s")
    others = [tmp_path / "s" / f"trials.w{k}.jsonl" for k in range(3)]
    torn: dict = {}
    for step in range(400):
        op = rng.random()
        f = rng.choice(others)
        i = rng.randrange(40)
        status = rng.choice(["running", "interrupted", "complete", "failed", "pruned"])
        lr0 = rng.choice([None, None, None, 0.5])  # now and then other params for the id (a restart, or a wrong line)
        line = _line(
            i, status, rng.random() if status in ("complete", "pruned") else None, lr0=lr0, epochs_completed=rng.randrange(5)
        )
        if op < 0.3:
            study.append(TrialRecord.from_json(json.loads(line)))
        elif op < 0.6 and f not in torn:
            with open(f, "a") as fh:
                fh.write(line)
        elif op < 0.7 and f not in torn:
            cut = rng.randrange(1, len(line) - 1)
            torn[f] = line[cut:]
            with open(f, "a") as fh:
                fh.write(line[:cut])
        elif op < 0.8 and f in torn:
            with open(f, "a") as fh:
                fh.write(torn.pop(f))
        elif op < 0.85 and f in torn:  # a version without repair appends onto the tear
            torn.pop(f)
            with open(f, "a") as fh:
                fh.write(line)
        elif op < 0.88 and f not in torn:
            with open(f, "a") as fh:
                fh.write("#garbage\n" if rng.random() < 0.5 else '{"id":3,"par\n')
        elif op < 0.94 and f.exists():
            repair_jsonl(f)
            torn.pop(f, None)
        elif op < 0.97 and f.exists() and f not in torn:
            kept = f.read_text().splitlines(keepends=True)
            f.write_text("".join(ln for ln in kept if rng.random() < 0.8))
        expected = _reference_fold(tmp_path / "s")
        for who in (reader, study):
            got = {k: v.to_json() for k, v in who.records().items()}
            assert got == expected, (step, op)
        fin = [r.id for r in reader.finished()]
        assert fin == [k for k, v in expected.items() if TrialStatus(v["status"]).finished]
        best = reader.best()
        ref = study.best([TrialRecord.from_json(v) for v in expected.values()])
        assert (best.id if best else None) == (ref.id if ref else None)
    study.close()


def test_stored_records_are_read_only_and_copies_are_not(tmp_path):
    import copy
    import pickle

    study = Study.create(tmp_path / "s", {})
    mine = TrialRecord(id=0, params={"lr0": 0.1}, applied={"lr0": 0.1}, status=TrialStatus.COMPLETE, objective=0.5)
    study.append(mine)
    mine.objective = 0.9  # the caller's own record: the study keeps what was appended
    stored = study.records()[0]
    assert stored.objective == 0.5 and stored == TrialRecord(
        id=0, params={"lr0": 0.1}, applied={"lr0": 0.1}, status=TrialStatus.COMPLETE, objective=0.5
    )
    assert stored.applied is stored.params  # held once
    with pytest.raises(AttributeError, match="read-only"):
        stored.status = TrialStatus.FAILED
    got = study.records()
    got.pop(0)  # the dict is the caller's
    assert 0 in study.records()
    for clone in (copy.deepcopy(stored), pickle.loads(pickle.dumps(stored))):
        assert type(clone) is TrialRecord and clone == stored
        clone.objective, clone.params["lr0"] = 0.1, 0.2
        assert clone.applied == {"lr0": 0.1}  # params and applied are one dict in memory, not in a copy
        assert study.records()[0].objective == 0.5 and study.records()[0].params == {"lr0": 0.1}
    study.close()


def test_a_real_study_parses_each_record_line_once(tmp_path, digits_cls):
    """By a real run (simulated trainer): the writer decodes each line it appends once and never
    reads its records file back; a resume reads the file once, decoding one line per trial."""
    from hpo import Tuner
    from hpo.study import record_read_stats

    def run(n: int, resume: bool) -> None:
        Tuner(
            backend="ultralytics",
            model="yolov8n-cls.yaml",
            data=digits_cls,
            space={"lr0": (1e-4, 1e-1), "momentum": (0.6, 0.98)},
            iterations=n,
            epochs=3,
            output=tmp_path,
            name="once",
            resume=resume,
            seed=0,
            plots=False,
            mlflow=False,
            trainer="hpo.simulate:simulated_trainer",
            concurrent_trials=2,
        ).run()

    before = record_read_stats()
    run(24, False)
    f = tmp_path / "once" / "trials.jsonl"
    lines = f.read_text().splitlines()
    after = record_read_stats()
    assert len(lines) == 24 * 6  # reserved, started, 3 epochs, finished
    assert after["lines_parsed"] - before["lines_parsed"] <= len(lines)  # old code: ~N^2/2 of them
    # at most the first line, read back once, and now and then a line that a reader thread (the
    # scheduler's) read as its writer thread appended it (seen once under load 17: 627 bytes)
    assert after["bytes_read"] - before["bytes_read"] <= len(lines[0]) + 3 * max(map(len, lines)) + 8
    size = f.stat().st_size
    before = record_read_stats()
    run(30, True)
    after = record_read_stats()
    new = len(f.read_text().splitlines()) - len(lines)
    assert after["bytes_read"] - before["bytes_read"] <= size + 4096  # read once on open
    assert after["lines_parsed"] - before["lines_parsed"] <= 24 + new + 2  # a line per trial on open, then its own


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


def test_the_fast_record_prefilter_matches_as_the_plain_pattern_does():
    """hpo.study._HEAD (possessive quantifiers on Python >= 3.11, for speed) finds the same id and
    params bytes as the plain backtracking pattern, on hpo's own lines and on lines it must pass
    over (nested params, a brace inside a string, escaped quotes, a torn line)."""
    import json
    import re

    from hpo.study import _HEAD, TrialRecord, TrialStatus, _head

    plain = re.compile(rb'\{"id":\s*(-?\d+)\s*,\s*"params":\s*(\{(?:[^{}\[\]"]|"(?:[^"\\]|\\.)*")*\})\s*,')
    rec = TrialRecord(id=7, params={"lr0": 0.01, "optimizer": "SGD", "cos_lr": True}, status=TrialStatus.COMPLETE)
    lines = [
        json.dumps(rec.to_json()).encode(),
        b'{"id": 1, "params": {"a": "x}y", "b": 1.5}, "status": "running"}',
        b'{"id": 2, "params": {"a": [1, 2]}, "status": "running"}',
        b'{"id": 3, "params": {"a": "\\"q\\"", "b": 2}, "status": "complete"}',
        b'{"id": -4, "params": {}, "status": "failed"}',
        b'{"id": 5, "params": {"a": 1',
        b'{"id":6,"params":{"k":"v\\\\"},"status":"pruned"}',
    ]
    compact = [
        json.dumps(rec.to_json(), separators=(",", ":")).encode(),
        b'{"id":1,"params":{"a":"x}y","b":1.5},"status":"running"}',
        b'{"id":1,"params":{"a":"x","b":"}"},"status":"running"}',
        b'{"id":2,"params":{"a":[1,2]},"status":"running"}',
        b'{"id":2,"params":{"a":"[","b":{"c":1}},"status":"running"}',
        b'{"id":3,"params":{"a":"\\"q\\"","b":2},"status":"complete"}',
        b'{"id":-4,"params":{},"status":"failed"}',
        b'{"id":5,"params":{"a":1',
        b'{"id":5,"params":{"a":1}',
        b'{"id":8,"params":{"a":1},"objective":1,"status":"complete"}',
        b'{"id":9,"params":{"a":1},"status":"compl',
    ]
    for line in lines + compact:
        a, b = _HEAD.match(line), plain.match(line)
        assert (a is None) == (b is None), line
        if a is not None and b is not None:
            assert a.groups() == b.groups(), line
            # the fast reader of hpo's compact form agrees with the plain pattern, status included
            st = re.compile(rb'"status":\s*"([a-z]+)"').search(line, b.end())
            assert _head(line) == (int(b.group(1)), b.group(2), None if st is None else st.group(1)), line
        else:
            assert _head(line) is None, line


def test_a_first_read_of_many_trials_decodes_them_together_and_as_one_by_one(tmp_path, capsys):
    """A reader's first read decodes the winning snapshots in batches (hpo.study._decode_many); the
    records equal a fold of the lines one by one, and a damaged line among them (one that looks like
    hpo's form, one that is valid JSON only inside an array) is still skipped with one warning."""
    from hpo.study import _BATCH, record_read_stats

    study = Study.create(tmp_path / "s", {"direction": "maximize"})
    study.close()
    n = 2 * _BATCH + 7
    lines = []
    for i in range(n):
        lines += [_line(i), _line(i, "complete", i / n, epochs=[{"epoch": 1, "m": i / n}], epochs_completed=1)]
    # two trials whose only line is damaged: one looks whole and is not, one is valid only inside [...]
    lines.insert(300, f'{{"id":{n + 1},"params":{{"lr0":0.006}},"status":"complete","objective":0.5,\n')
    lines.insert(9, f'{{"id":{n},"params":{{"lr0":0.005}},"status":"complete"}},{{"x":1}}\n')
    (tmp_path / "s" / "trials.jsonl").write_text("".join(lines))
    before = record_read_stats()["lines_parsed"]
    recs = Study.open(tmp_path / "s").records()
    parsed = record_read_stats()["lines_parsed"] - before
    assert {k: v.to_json() for k, v in recs.items()} == _reference_fold(tmp_path / "s")
    assert len(recs) == n and recs[n - 1].objective == (n - 1) / n and recs[3].epochs == [{"epoch": 1, "m": 3 / n}]
    assert recs[5].applied is recs[5].params or recs[5].applied == {}
    err = capsys.readouterr().err
    assert "line 10 is damaged" in err and "line 302 is damaged" in err, err  # 1-based, after both inserts
    assert n <= parsed <= n + 4  # the winners (batches with a damaged line again one by one), never the running ones
