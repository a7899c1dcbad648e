"""A joined process that dies mid-trial loses no trial (docs/scaling.md "Failure behaviour").

Real ``hpo`` processes on one optuna study (journal file in the study directory), the simulated
trainer (``hpo.simulate``: its gates order the processes by events, not by sleeps). The writer's
own take-over is tested for every joinable backend by the conformance suite
(``hpo.testing.BackendConformance.test_join_a_killed_joined_process_loses_no_trial``); PostgreSQL with
real training in tests/test_scale_postgres.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from engines import kill_groups, record_lines, start_hpo, tune_argv, wait_until

from hpo import Study, TrialStatus
from hpo.testing import SIMULATED

optuna = pytest.importorskip("optuna")

SPACE = {"lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-1}, "momentum": [0.6, 0.98]}


def _args(data: Path, out: Path, name: str, iterations: int) -> list[str]:
    return tune_argv(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=data,
        iterations=iterations,
        epochs=2,
        output=out,
        name=name,
        pruner="none",
        sampler="random",
        space=SPACE,
        seed=0,
        quiet=True,
        train={"imgsz": 32},
    )


def _env(options: dict) -> dict[str, str]:
    return {"HPO_TRAINER": SIMULATED, "HPO_TRAINER_OPTIONS": json.dumps(options), "HPO_PLOTS": "0"}


@pytest.mark.parametrize("heartbeat", ["0", "1"], ids=["flock", "heartbeat-mode"])
def test_a_joined_process_is_gone_once_its_own_lock_is_free(tmp_path, monkeypatch, heartbeat):
    """The proof a live process uses before it takes a trial over (:meth:`hpo.Study.process_gone`):
    a joined process holds ``<study>/joined/<worker>.lock`` while it lives; SIGKILLed, or ended,
    it is gone; the writer's file is the study lock's; a process's own file is never gone to it."""
    monkeypatch.setenv("HPO_LOCK_HEARTBEAT", heartbeat)  # on this host a free flock proves it in both modes
    path = tmp_path / "s"
    writer = Study.create(path, {"name": "s"})
    code = (
        "import sys; from hpo import Study\n"
        f"s = Study.open({str(path)!r}, worker=sys.argv[1]); s.hold_process_lock()\n"
        "print('ok', flush=True); input(); s.close()\n"
    )
    procs = {
        w: subprocess.Popen([sys.executable, "-c", code, w], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for w in ("w1", "w2")
    }
    try:
        assert all(p.stdout.readline().strip() == "ok" for p in procs.values())
        assert sorted(p.name for p in (path / "joined").iterdir()) == ["w1.lock", "w2.lock"]
        joined = Study.open(path, worker="w3")
        assert not joined.process_gone("trials.w1.jsonl") and not joined.process_gone("trials.w2.jsonl")
        assert not joined.process_gone("trials.jsonl")  # the writer lives
        assert not joined.process_gone("trials.w3.jsonl")  # its own
        procs["w1"].kill()  # SIGKILL: the kernel drops its flock, its file stays
        procs["w1"].wait()
        procs["w2"].communicate("\n", timeout=30)  # ends normally: its file goes
        assert (path / "joined" / "w1.lock").exists() and not (path / "joined" / "w2.lock").exists()
        assert joined.process_gone("trials.w1.jsonl") and joined.process_gone("trials.w2.jsonl")
        assert joined.process_gone("trials.never-joined.jsonl")  # no file: no live process
        assert not writer.process_gone("trials.jsonl")
        writer.close()
        assert joined.process_gone("trials.jsonl")  # the writer ended
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_restarted_joined_process_takes_over_the_killed_ones_trial(tmp_path, digits_cls):
    """A KFP retry of a preempted ``--join`` pod: the joined process is SIGKILLed mid-trial, the
    same command starts again and re-runs the lost trial under its id with its params (the writer
    is busy with a trial of its own and cannot), then the study ends with exactly ``--iterations``
    finished trials, unique ids, and Optuna agrees: the lost attempt ``FAIL``, its re-run
    ``COMPLETE`` with the same params, nothing left ``RUNNING``."""
    n, name = 4, "retry"
    out = tmp_path / "studies"
    study = out / name
    args = _args(digits_cls, out, name, n)
    writer_gate, joined_started = tmp_path / "writer-may-go", tmp_path / "joined-started"
    # the writer's trials wait until the test opens its gate: it holds its first trial throughout
    writer = start_hpo(args, env=_env({"epoch_s": 0.05, "gate": str(writer_gate), "gate_s": 300}))
    procs = [writer]
    try:
        wait_until(lambda: bool(record_lines(study / "trials.jsonl")), procs, "the writer's first trial")
        joined = start_hpo([*args, "--join"], env=_env({"epoch_s": 60, "open_gate": str(joined_started)}))
        procs.append(joined)
        own = study / f"trials.{re.sub(r'[^A-Za-z0-9._-]', '_', socket.gethostname())}-{joined.pid}.jsonl"
        wait_until(lambda: own.is_file() and joined_started.exists(), procs, "a trial of the joined process")
        os.killpg(joined.pid, signal.SIGKILL)  # preempted: the process and its trial worker
        joined.wait()
        procs.remove(joined)
        lost = record_lines(own)
        assert {r["status"] for r in lost} == {"running"} and len({r["id"] for r in lost}) == 1, lost
        killed, params = lost[-1]["id"], lost[-1]["params"]

        # the retry: the same command, a new process
        retry = subprocess.run(
            [sys.executable, "-m", "hpo.cli", *args, "--join"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **_env({"epoch_s": 0.05})},
        )
        assert retry.returncode == 0, retry.stderr[-3000:]
        assert writer.poll() is None  # still in its first trial
        writer_gate.touch()
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-3000:]
    finally:
        kill_groups(procs)

    records = Study.open(study).records()
    assert len(records) == n and all(r.status is TrialStatus.COMPLETE for r in records.values()), {
        i: r.status for i, r in records.items()
    }
    assert records[killed].params == params
    # the retried process ran it, in its own records file; nobody else did; the dead file is as it was left
    files = {p.name: record_lines(p) for p in study.glob("trials*.jsonl")}
    assert record_lines(own) == lost
    (again,) = [f for f, rows in files.items() if f != own.name and any(r["id"] == killed for r in rows)]
    assert again not in ("trials.jsonl", own.name)
    assert [r["status"] for r in files[again] if r["id"] == killed][-1] == "complete"
    assert f"trial {killed}: the process that ran it" in retry.stderr and "is gone" in retry.stderr, retry.stderr
    # each finished id is recorded finished in exactly one file
    done = [(f, r["id"]) for f, rows in files.items() for r in rows if r["status"] == "complete"]
    assert sorted(i for _, i in done) == sorted(records), done

    from optuna.storages.journal import JournalFileBackend, JournalStorage

    ostudy = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(study / "optuna/journal.log"))))
    states: dict[int, list[str]] = {}
    for t in ostudy.trials:
        states.setdefault(t.user_attrs["hpo_trial_id"], []).append(t.state.name)
    assert sorted(states) == sorted(records)
    assert states[killed] == ["FAIL", "COMPLETE"], states
    assert all(v == ["COMPLETE"] for k, v in states.items() if k != killed), states
    (rerun,) = [t for t in ostudy.trials if t.user_attrs["hpo_trial_id"] == killed and t.state.name == "COMPLETE"]
    assert rerun.params == pytest.approx(params) and rerun.user_attrs.get("retry") is True
    assert rerun.value == pytest.approx(records[killed].objective)
