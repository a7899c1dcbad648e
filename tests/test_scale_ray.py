"""The ray backend against a real Ray cluster: a head started with ``ray start --head`` and token
authentication (the session's ``ray_head`` fixture, tests/engines.py), reached through ``--ray-address``.

The client finds the token the way a user keeps it (``~/.ray/auth_token``, or ``RAY_AUTH_TOKEN``
from a Secret) and never sets ``RAY_AUTH_MODE`` itself. ``HOME`` is an empty folder per test, so
nothing of this machine's own ``~/.ray`` is used and anything written under ``~`` is seen.

Budget: about 4 minutes alone on 2 cores, measured (head start ~7 s; three refusals ~15 s each; 6
trials of digits-det at 64 px, 2 epochs, over a killed driver and a resume ~3 min).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

SPACE = json.dumps({"lr0": [0.0005, 0.05], "hsv_v": [0.0, 0.9], "close_mosaic": [0, 3]})
TRAIN = ["imgsz=64", "batch=16", "workers=0", "optimizer=AdamW", "mosaic=0"]


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no RAY_* variables unless given, ``HOME`` = ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    home.mkdir(parents=True, exist_ok=True)
    return env


def tune_args(data: Path, out: Path, address: str, *, name: str, iterations: int, epochs: int) -> list[str]:
    return [
        "tune",
        "--backend",
        "ray",
        "--ray-address",
        address,
        "--model",
        "yolov8n.yaml",
        "--data",
        str(data),
        "--iterations",
        str(iterations),
        "--epochs",
        str(epochs),
        "--output",
        str(out),
        "--name",
        name,
        "--space",
        SPACE,
        "--seed",
        "0",
        "--metric",
        "val/cls_loss",
        "--quiet",
        "--no-mlflow",
        *TRAIN,
    ]


def hpo(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def records(study: Path) -> dict:
    from hpo.study import Study

    return Study.open(study).records()


# --- refusals: one line, exit 2, nothing written


@pytest.mark.parametrize("case", ["no-token", "wrong-token", "unreachable"])
def test_cluster_auth_refused_in_one_line(ray_head, digits_det, tmp_path, case):
    home = tmp_path / "home"
    env = {
        "no-token": client_env(home),
        "wrong-token": client_env(home, RAY_AUTH_TOKEN="0" * 64),
        "unreachable": client_env(home, RAY_AUTH_TOKEN=ray_head.token),
    }[case]
    address = f"127.0.0.1:{__import__('engines').free_port()}" if case == "unreachable" else ray_head.address
    words = {
        "no-token": ["requires token authentication", "no token was found", "RAY_AUTH_TOKEN", "~/.ray/auth_token"],
        "wrong-token": ["refused the auth token from RAY_AUTH_TOKEN", "ray get-auth-token"],
        "unreachable": ["no Ray cluster answers", "Connection refused", "--ray-address"],
    }[case]
    out = tmp_path / "studies"
    res = hpo(tune_args(digits_det, out, address, name="refused", iterations=2, epochs=1), env, tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err[-3000:]  # not Ray's 30 s of InvalidAuthToken lines
    for w in words:
        assert w in err, err
    assert address in err
    assert not out.exists()
    assert ray_head.token not in err


# --- a study on the cluster


@pytest.mark.slow
def test_study_on_the_cluster_asha_sigkilled_driver_resumes(ray_head, digits_det, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(ray_head.token + "\n")  # where `ray get-auth-token` users keep it
    out = tmp_path / "studies"
    study = out / "cluster"
    args = tune_args(digits_det, out, ray_head.address, name="cluster", iterations=6, epochs=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", *args],
        env=client_env(home),
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def one_finished_one_mid_trial() -> bool:
        if not (study / "trials.jsonl").is_file():
            return False
        recs = records(study).values()
        return any(r.status.finished for r in recs) and any(not r.status.finished and r.epochs_completed >= 1 for r in recs)

    deadline = time.time() + 300
    try:
        while not one_finished_one_mid_trial():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no finished and mid-way trial within 300 s"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver only: the cluster lives on, like a killed driver pod
        proc.wait(30)
    before = records(study)
    assert any(not r.status.finished for r in before.values())
    assert not list(study.glob(".ray-probe-*"))  # the study-directory probe cleaned up after itself

    # the resume finds the token in RAY_AUTH_TOKEN this time (a Secret as env), same cluster
    env = client_env(tmp_path / "home2", RAY_AUTH_TOKEN=ray_head.token)
    done = hpo([*args, "--resume"], env, work)
    assert done.returncode == 0, done.stderr[-3000:]
    after = records(study)
    assert sorted(after) == list(range(6))
    assert all(r.status.value in ("complete", "pruned") for r in after.values()), {i: r.status for i, r in after.items()}
    for tid, r in before.items():  # nothing finished before the kill is lost or changed
        if r.status.finished:
            assert after[tid].to_json() == r.to_json()
    # whether ASHA stops one of 6 trials here depends on which reach epoch 1 first across the kill
    # (timing); tests/test_backend_ray.py asserts that ASHA stops trials, this test what it stops
    pruned = [r for r in after.values() if r.status.value == "pruned"]
    assert json.loads((study / "study.json").read_text())["options"]["scheduler"] == "asha"
    assert all(r.epochs_completed < 2 for r in pruned)
    assert all(r.epochs_completed == 2 for r in after.values() if r.status.value == "complete")
    # every artifact under the study directory: trial folders, Ray's experiment, best weights
    for r in after.values():
        assert (study / "trials" / str(r.id) / "results.csv").is_file()
        assert list((study / "ray").glob(f"tune-*/trial_{r.id}"))
        if r.weights:
            assert Path(r.weights).is_relative_to(study)
    assert (study / "weights" / "best.pt").is_file() and (study / "best.yaml").is_file()
    assert list(work.iterdir()) == []
    # under ~ only the token and Ultralytics' settings (~/.config/Ultralytics): no ~/ray_results
    assert {p.name for p in home.iterdir()} <= {".ray", ".config"} and os.listdir(home / ".ray") == ["auth_token"]
    assert not (home / "ray_results").exists() and not (tmp_path / "home2" / "ray_results").exists()
