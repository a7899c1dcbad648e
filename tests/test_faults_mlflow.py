"""The MLflow tracking server killed in the middle of a study (issue 31 item 4).

A real ``mlflow server`` (tests/test_tracking.py's ``MlflowServer``) is SIGKILLed by its pid
(its process group: the server and its workers) while two trials train, with per-epoch metrics
logged to it. The real ``hpo`` command, simulated trials (``hpo.simulate``: tracking is the point,
not training). Budget: about 30 s alone on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("mlflow")

from test_tracking import MlflowServer

from hpo import Study, TrialStatus
from hpo.testing import SIMULATED

EPOCHS, EPOCH_S, N = 4, 0.5, 8


def test_a_killed_tracking_server_costs_one_warning_and_the_study_finishes(tmp_path, digits_cls):
    server = MlflowServer(tmp_path / "mlflow").start()
    study_dir = tmp_path / "out" / "s"
    args = [
        sys.executable,
        "-m",
        "hpo.cli",
        "tune",
        "--backend",
        "optuna",
        "--pruner",
        "none",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        str(N),
        "--epochs",
        str(EPOCHS),
        "--concurrent-trials",
        "2",
        "--output",
        str(tmp_path / "out"),
        "--name",
        "s",
        "--space",
        json.dumps({"lr0": [1e-4, 1e-1], "momentum": [0.6, 0.98]}),
        "--seed",
        "0",
        "--mlflow",
        "--quiet",
        "--json",
        "imgsz=32",
        "optimizer=SGD",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}  # hpo's own bounds
    env.update(
        MLFLOW_TRACKING_URI=server.uri,
        HPO_TRAINER=SIMULATED,
        HPO_TRAINER_OPTIONS=json.dumps({"epoch_s": EPOCH_S}),
        HPO_PLOTS="0",
    )
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.time() + 120

        def finished() -> int:
            if not (study_dir / "trials.jsonl").is_file():
                return 0
            return sum(r.status.finished for r in Study.open(study_dir).records().values())

        while finished() < 2:  # the first trials tracked, two more training
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "timed out waiting for two finished trials"
            time.sleep(0.1)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # by its pid: the server and its workers, mid-epoch
        server.proc.wait(timeout=20)
        killed, left = time.time(), N - finished()
        stdout, stderr = proc.communicate(timeout=300)
        after_kill = time.time() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        server.stop()

    assert proc.returncode == 0, stderr
    lines = [x for x in stderr.splitlines() if x.strip()]
    warnings = [x for x in lines if "tracking stopped" in x]
    assert len(warnings) == 1, stderr  # one warning line, not one per trial or epoch
    assert warnings[0].startswith("hpo: mlflow: warning: tracking stopped ("), warnings[0]
    assert "the study continues" in warnings[0], warnings[0]
    assert "Traceback" not in stderr and len(lines) <= 3, stderr  # the parent run's line, the warning
    # bounded: the trials left train 2 at a time, EPOCHS * EPOCH_S s each; a dead server may cost
    # one call's retries once (hpo's MLFLOW_HTTP_REQUEST_* bounds: seconds), not minutes per trial
    assert 0 < left < N
    assert after_kill < (left / 2 + 1) * EPOCHS * EPOCH_S + 20, f"{after_kill:.1f} s for {left} trials"

    # the results are complete on the volume
    out = json.loads(stdout)
    assert out["counts"] == {"complete": N, "failed": 0, "pruned": 0}, out["counts"]
    records = Study.open(study_dir).records()
    assert sorted(records) == list(range(N))
    assert all(r.status is TrialStatus.COMPLETE and r.epochs_completed == EPOCHS for r in records.values())
    best = max(records.values(), key=lambda r: r.objective)
    assert out["best"]["trial"] == best.id
    assert (study_dir / "best.yaml").is_file()
    for r in records.values():  # no trial was stalled by the dead server
        assert r.duration_s < EPOCHS * EPOCH_S + 10, (r.id, r.duration_s)
