"""The compaction of a records file at the end of a run (Study.compact_records): every reader sees
the same trials afterwards, only the per-epoch snapshots go, and a kill, a refused write or a file
that is not all hpo's own lines leaves the file as it was."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import CLS_ARGS, hpo_cli, kv

from hpo import Study, TrialRecord, TrialStatus


def _history(study: Study, rng: random.Random, n: int, *, epochs: int = 3) -> None:
    """Append ``n`` trials the way the loop records them, with every kind of history the fold knows:
    a snapshot per epoch, failures, pruning, an interruption resumed with the same params, an
    interrupted id restarted with other params (the ray backend), a later line with other params
    for a finished trial (a hand edit: warned about, ignored), and trials still running."""
    for i in range(n):
        params = {"lr0": round(rng.uniform(1e-4, 1e-2), 6), "momentum": round(rng.uniform(0.6, 0.98), 4)}
        rec = TrialRecord(id=i, params=params)
        study.append(rec)
        kind = {5: 0.41, 6: 0.32, 7: 0.25}.get(i, rng.random())  # each history at least once
        for e in range(epochs):
            rec.epochs.append({"epoch": e + 1, "metrics/accuracy_top1": rng.random()})
            rec.epochs_completed = e + 1
            study.append(rec)
            if kind < 0.1 and e == 1:
                break
        if kind < 0.1:
            rec.status, rec.objective = TrialStatus.PRUNED, rng.random()
        elif kind < 0.2:
            rec.status, rec.error = TrialStatus.FAILED, "CUDA out of memory"
        elif kind < 0.3:  # interrupted, then resumed with its params
            rec.status = TrialStatus.INTERRUPTED
            study.append(rec)
            rec.status = TrialStatus.RUNNING
            study.append(rec)
            rec.status, rec.objective = TrialStatus.COMPLETE, rng.random()
        elif kind < 0.35:  # interrupted, its id given to a new trial with other params
            rec.status = TrialStatus.INTERRUPTED
            study.append(rec)
            rec = TrialRecord(id=i, params={**params, "lr0": 0.5})
            study.append(rec)
            rec.status, rec.objective = TrialStatus.COMPLETE, rng.random()
        elif kind < 0.4:  # still running
            continue
        else:
            rec.status, rec.objective = TrialStatus.COMPLETE, rng.random()
        study.append(rec)
        if 0.4 <= kind < 0.42:  # a finished trial, then a line with other params: ignored with a warning
            study.append(TrialRecord(id=i, params={"lr0": 0.9}, status=TrialStatus.COMPLETE, objective=1.0))


def _warnings(err: str) -> list[str]:
    """The warnings on stderr without their line numbers."""
    return sorted(ln.split(" at ")[0] for ln in err.splitlines() if "warning" in ln)


def _fold(path) -> dict:
    return {k: v.to_json() for k, v in Study.open(path).records().items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compaction_keeps_every_trial_and_drops_only_the_epoch_snapshots(tmp_path, seed, capsys):
    rng = random.Random(seed)
    study = Study.create(tmp_path / "s", {"direction": "maximize"})
    _history(study, rng, 60)
    f = tmp_path / "s" / "trials.jsonl"
    reader = Study.open(tmp_path / "s")  # a reader that has read the file before it is compacted
    before = {k: v.to_json() for k, v in reader.records().items()}
    _, cursor = reader.finished_since(0)
    lines_before, size = len(f.read_bytes().splitlines()), f.stat().st_size
    capsys.readouterr()
    _fold(tmp_path / "s")
    warned = _warnings(capsys.readouterr().err)
    assert any(w.endswith("trial 5 has other params") for w in warned)

    saved = study.compact_records(min_bytes=0)
    lines = f.read_bytes().splitlines()
    assert saved == size - f.stat().st_size and saved > size / 2
    assert len(lines) < lines_before / 2
    assert _fold(tmp_path / "s") == before  # a new reader
    # the same warnings (the ignored lines of other params), with other line numbers
    assert _warnings(capsys.readouterr().err) == warned
    assert {k: v.to_json() for k, v in reader.records().items()} == before  # the old reader, reading again
    assert reader.finished_since(cursor)[0] == []  # the rewrite is no news to an observer
    assert {k: v.to_json() for k, v in study.records().items()} == before
    # a complete trial now has two lines: the running snapshot that started it and its last one
    ids = [json.loads(ln)["id"] for ln in lines]
    complete = [k for k, v in before.items() if v["status"] == "complete" and ids.count(k) == 2]
    assert len(complete) > 30
    assert study.compact_records(min_bytes=0) is None  # nothing more to drop
    # the writer goes on appending after the compaction, and every reader follows
    study.append(TrialRecord(id=100, params={"lr0": 0.1}, status=TrialStatus.COMPLETE, objective=2.0))
    assert reader.best().id == 100 and _fold(tmp_path / "s")[100]["objective"] == 2.0
    study.close()


def test_the_writer_compacts_only_a_large_file_when_it_closes(tmp_path, monkeypatch):
    study = Study.create(tmp_path / "s", {"direction": "maximize"})
    _history(study, random.Random(3), 20)
    f = tmp_path / "s" / "trials.jsonl"
    size = f.stat().st_size
    study.close()  # below COMPACT_MIN_BYTES (1 MiB): left as written
    assert f.stat().st_size == size and Study.COMPACT_MIN_BYTES == 1 << 20
    Study.open(tmp_path / "s").close()  # a reader never rewrites the file
    assert f.stat().st_size == size
    monkeypatch.setattr(Study, "COMPACT_MIN_BYTES", size)
    before = _fold(tmp_path / "s")
    Study.open(tmp_path / "s", writer=True).close()
    assert f.stat().st_size < size / 2 and _fold(tmp_path / "s") == before
    assert [p.name for p in (tmp_path / "s").iterdir() if "compact" in p.name] == []


def test_a_joined_process_compacts_its_own_file_and_the_writer_reads_it_again(tmp_path, monkeypatch):
    monkeypatch.setattr(Study, "COMPACT_MIN_BYTES", 0)
    writer = Study.create(tmp_path / "s", {"direction": "maximize"})
    writer.append(TrialRecord(id=0, params={"lr0": 0.1}, status=TrialStatus.COMPLETE, objective=0.2))
    joined = Study.open(tmp_path / "s", worker="w1")
    joined.hold_process_lock()
    rng = random.Random(4)
    for i in range(1, 30):
        rec = TrialRecord(id=i, params={"lr0": rng.random()})
        joined.append(rec)
        for e in range(4):
            rec.epochs.append({"epoch": e + 1, "fitness": rng.random()})
            joined.append(rec)
        rec.status, rec.objective = TrialStatus.COMPLETE, rng.random()
        joined.append(rec)
    before = {k: v.to_json() for k, v in writer.records().items()}
    _, cursor = writer.finished_since(0)
    f = tmp_path / "s" / "trials.w1.jsonl"
    size = f.stat().st_size
    joined.close()
    assert f.stat().st_size < size / 2 and len(f.read_bytes().splitlines()) == 2 * 29
    assert {k: v.to_json() for k, v in writer.records().items()} == before and writer.finished_since(cursor)[0] == []
    writer.close()
    assert len((tmp_path / "s" / "trials.jsonl").read_bytes().splitlines()) == 1  # nothing to drop: as written


def test_a_torn_or_damaged_file_is_left_as_written(tmp_path):
    study = Study.create(tmp_path / "s", {"direction": "maximize"})
    _history(study, random.Random(5), 10)
    f = tmp_path / "s" / "trials.jsonl"
    good = f.read_bytes()
    f.write_bytes(good + b'{"id":11,"params":{"lr0":0.1},"stat')  # a torn last line: repair decides
    assert study.compact_records(min_bytes=0) is None and f.read_bytes().endswith(b'"stat')
    lines = good.splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:5] + [b"#garbage\n"] + lines[5:]))  # a damaged middle line
    assert study.compact_records(min_bytes=0) is None and b"#garbage" in f.read_bytes()
    f.write_bytes(b"".join(lines[:5] + [b'{"params": {"lr0": 0.1}, "id": 3, "status": "complete"}\n'] + lines[5:]))
    assert study.compact_records(min_bytes=0) is None  # a foreign line (another writer's form)
    f.write_bytes(good)
    assert study.compact_records(min_bytes=0) > 0
    study.close()


_COMPACT_SCRIPT = """
import resource, signal, sys
from hpo import Study
if len(sys.argv) > 2:  # a volume that refuses writes past this many bytes (EFBIG, as ENOSPC would)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
s = Study.open(sys.argv[1], writer=True)
print(s.compact_records(min_bytes=0), flush=True)
"""


def _big_study(path, trials: int) -> None:
    """A study of ``trials`` trials of 10 epochs, written as hpo writes them but without an fsync per line."""
    Study.create(path, {"direction": "maximize"}).close()
    rng = random.Random(6)
    with open(path / "trials.jsonl", "w") as fh:
        for i in range(trials):
            rec = TrialRecord(id=i, params={"lr0": rng.random(), "momentum": rng.random()})
            fh.write(json.dumps(rec.to_json(), separators=(",", ":")) + "\n")
            for e in range(10):
                rec.epochs.append({"epoch": e + 1, "metrics/mAP50-95(B)": rng.random(), "train/box_loss": rng.random()})
                fh.write(json.dumps(rec.to_json(), separators=(",", ":")) + "\n")
            rec.status, rec.objective = TrialStatus.COMPLETE, rng.random()
            fh.write(json.dumps(rec.to_json(), separators=(",", ":")) + "\n")


def test_a_compaction_killed_at_any_point_leaves_one_whole_file(tmp_path):
    """SIGKILL of a compacting process at random moments: the records file is the old one or the
    new one, whole; the temp file a kill leaves is no records file to any reader and goes with the
    next compaction."""
    path = tmp_path / "s"
    _big_study(path, 2000)
    f = path / "trials.jsonl"
    tmp = path / ".trials.jsonl.compact.tmp"
    expected = _fold(path)
    size = f.stat().st_size
    rng = random.Random(7)
    seen_tmp = 0
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", _COMPACT_SCRIPT, str(path)], stdout=subprocess.PIPE)
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        while time.monotonic() < deadline and p.poll() is None:
            if tmp.exists():
                seen_tmp += 1
                time.sleep(rng.uniform(0, 0.05))
                break
            time.sleep(0.005)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert _fold(path) == expected
        if f.stat().st_size < size:
            break  # it finished before the kill: compacted
    assert _fold(path) == expected
    # what a kill between the temp file's write and its rename leaves, whatever it holds
    tmp.write_bytes(f.read_bytes()[:1000])
    assert _fold(path) == expected
    done = f.stat().st_size < size  # a run the kill came too late for compacted it already
    r = subprocess.run([sys.executable, "-c", _COMPACT_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    assert not tmp.exists() and _fold(path) == expected
    assert (r.stdout.strip() == "None") == done  # compacted once
    assert f.stat().st_size < size / 3 and len(f.read_bytes().splitlines()) == 2 * 2000
    assert seen_tmp >= 1  # at least one kill came while the temp file was being written


def test_a_volume_that_refuses_the_copy_leaves_the_file_as_written(tmp_path):
    path = tmp_path / "s"
    _big_study(path, 300)
    f = path / "trials.jsonl"
    data = f.read_bytes()
    r = subprocess.run(
        [sys.executable, "-c", _COMPACT_SCRIPT, str(path), str(len(data) // 10)], capture_output=True, text=True, check=True
    )
    assert r.stdout.strip() == "None" and f.read_bytes() == data
    assert [p.name for p in path.iterdir() if "compact" in p.name] == []


def test_a_study_compacted_shows_and_resumes_as_before(tmp_path, digits_cls):
    """A real study (hpo tune, the simulated trainer): a copy compacted shows the same in
    `hpo show --json` and resumes to more trials."""
    base = ["tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output", str(tmp_path / "o")]
    base += ["--epochs", "4", "--space", '{"lr0": [0.001, 0.01], "momentum": [0.6, 0.95]}', "--quiet", *kv(CLS_ARGS)]
    env = {"HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_PLOTS": "0"}
    r = hpo_cli(*base, "--name", "s", "--iterations", "6", env=env)
    assert r.returncode == 0, r.stderr
    study, copy = tmp_path / "o" / "s", tmp_path / "o" / "c"
    shutil.copytree(study, copy)
    lines = len((copy / "trials.jsonl").read_bytes().splitlines())
    with Study.open(copy, writer=True) as s:
        assert s.compact_records(min_bytes=0) > 0
    assert len((copy / "trials.jsonl").read_bytes().splitlines()) == 12 < lines  # 6 trials x (running, complete)

    def shown(path):
        r = hpo_cli("show", str(path), "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        return json.loads(json.dumps(doc).replace(str(path), "STUDY"))

    a, b = shown(study), shown(copy)
    for doc in (a, b):
        doc.pop("disk_bytes", None)
    assert a == b and len(a["trials"]) == 6
    r = hpo_cli(*base, "--name", "c", "--iterations", "9", "--resume", env=env)
    assert r.returncode == 0, r.stderr
    recs = Study.open(copy).records()
    assert sorted(recs) == list(range(9)) and all(v.status is TrialStatus.COMPLETE for v in recs.values())
    assert all(len(v.epochs) == 4 for v in recs.values())
