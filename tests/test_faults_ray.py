"""The ray backend under the faults of its engine (issue 31): a Ray cluster of two nodes on this
machine, a head started with ``ray start --head`` (token authentication, no CPUs, like the
KubeRay head of manifests/ray: it trains nothing) and a worker node joined with ``ray start
--address ... --block`` (tests/engines.py ``RayNode``), where every trial runs.

- A worker node SIGKILLed mid-trial (a preempted GPU node; every process of the node, by pid)
  while a second node joins: the trials it ran are recorded ``interrupted`` and run again under
  their ids with their params; the study ends with exactly ``--iterations`` finished trials, each
  recorded finished once.
- The head SIGKILLed mid-study: the driver stops within seconds with one line and exit code 1;
  the head restarted (same port and token) with a new worker node, ``--resume`` finishes the study
  with every trial finished before the kill kept as it was.

Trials are simulated (``HPO_TRAINER=hpo.simulate:simulated_trainer``, 1.5 s per epoch), so they
are killed mid-way on any load. Budget: about 1.5 minutes each alone on 2 cores (the head test 2).
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

from engines import RayHead, RayNode

ITERATIONS, EPOCHS = 4, 3
#: The head test's trials: 12 epochs of 1.5 s, so a trial caught at most 4 epochs in has at least
#: 12 s to run, more than the driver takes to notice a lost head (hpo_ray's HEAD_LOST_S, 5 s, polled
#: every second); with 3 epochs a trial caught mid-way could complete before that and leave no
#: running trial to record ``interrupted`` (seen once in CI on a loaded machine).
HEAD_EPOCHS, HEAD_CAUGHT_BY = 12, 4


def _env(home: Path, token: str) -> dict[str, str]:
    """A user's shell (no RAY_* but the token, ``HOME`` = ``home``) with the simulated trainer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and not k.startswith("HPO_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        RAY_AUTH_TOKEN=token,
        HPO_TRAINER="hpo.simulate:simulated_trainer",
        HPO_TRAINER_OPTIONS=json.dumps({"epoch_s": 1.5}),
    )
    return env


def _args(data: Path, out: Path, address: str, name: str, epochs: int = EPOCHS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hpo.cli",
        "tune",
        "--backend",
        "ray",
        "--ray-address",
        address,
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(data),
        "--iterations",
        str(ITERATIONS),
        "--epochs",
        str(epochs),
        "--output",
        str(out),
        "--name",
        name,
        "--space",
        json.dumps({"lr0": [0.001, 0.1], "momentum": [0.6, 0.98]}),
        "--seed",
        "0",
        "--scheduler",
        "fifo",
        "--concurrent-trials",
        "2",
        "--quiet",
        "--no-mlflow",
        "--no-plots",
        "optimizer=SGD",
    ]


def _lines(study: Path) -> list[dict]:
    f = study / "trials.jsonl"
    if not f.is_file():
        return []
    return [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]


def _latest(study: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for d in _lines(study):
        out[d["id"]] = d
    return out


def _wait(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the driver ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"not {what} within {timeout:g} s"
        time.sleep(0.2)


def _mid_trial(study: Path, max_epochs: int | None = None) -> bool:
    """A trial is running with at least one epoch done (and at most ``max_epochs``, when given)."""
    return any(
        d["status"] == "running" and d.get("epochs") and (max_epochs is None or len(d["epochs"]) <= max_epochs)
        for d in _latest(study).values()
    )


FINISHED = ("complete", "pruned", "failed")


@pytest.fixture
def cluster():
    """A head with no CPUs and one worker node ``a`` with 2 CPUs; more nodes are added to ``nodes``."""
    head = RayHead(num_cpus=0).start()
    nodes: list[RayNode] = []
    try:
        nodes.append(RayNode(head, num_cpus=2, tag="a").start())
        yield head, nodes
    finally:
        for node in nodes:
            node.stop()
        head.stop()


@pytest.mark.slow
def test_worker_node_killed_mid_trial_reruns_its_trials(cluster, digits_cls, tmp_path):
    head, nodes = cluster
    out, study = tmp_path / "studies", tmp_path / "studies" / "lost-node"
    proc = subprocess.Popen(
        _args(digits_cls, out, head.address, "lost-node"),
        env=_env(tmp_path / "home", head.token),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait(lambda: _mid_trial(study), proc, 240, "a trial mid-way")
        running = {i: d for i, d in _latest(study).items() if d["status"] == "running"}
        assert nodes[0].kill()  # every process of node a: its raylet and the trials' workers
        nodes.append(RayNode(head, num_cpus=2, tag="b").start())  # the autoscaler's new node
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    final = _latest(study)
    assert sorted(final) == list(range(ITERATIONS))
    assert all(d["status"] == "complete" for d in final.values()), {i: (d["status"], d.get("error")) for i, d in final.items()}
    lines = _lines(study)
    for tid in final:  # each trial recorded finished exactly once: nothing counted twice
        assert sum(1 for d in lines if d["id"] == tid and d["status"] in FINISHED) == 1, tid
    lost = sorted({d["id"] for d in lines if d["status"] == "interrupted"})
    assert lost and set(lost) <= set(running), (lost, sorted(running))
    for tid in lost:
        interrupted = next(d for d in lines if d["id"] == tid and d["status"] == "interrupted")
        assert interrupted["error"].startswith("its worker was lost (Ray: ")
        assert interrupted["error"].endswith(
            "it runs again under its id with its params, later in this run, or on --resume if the run ends first"
        )
        assert final[tid]["params"] == running[tid]["params"]  # run again with its params
        assert len(final[tid]["epochs"]) == EPOCHS
        assert f"ray: trial {tid} lost its Ray worker" in err
    # the study's summary agrees with its records
    show = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "show", str(study), "--json"], capture_output=True, text=True, timeout=120
    )
    assert show.returncode == 0, show.stderr
    summary = json.loads(show.stdout)
    assert summary["counts"]["complete"] == ITERATIONS and summary["counts"]["running"] == 0


@pytest.mark.slow
def test_head_killed_stops_the_driver_in_one_line_and_resume_finishes(cluster, digits_cls, tmp_path):
    head, nodes = cluster
    out, study = tmp_path / "studies", tmp_path / "studies" / "lost-head"
    args = _args(digits_cls, out, head.address, "lost-head", epochs=HEAD_EPOCHS)
    env = _env(tmp_path / "home", head.token)
    proc = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _wait(
            lambda: any(d["status"] in FINISHED for d in _latest(study).values()) and _mid_trial(study, HEAD_CAUGHT_BY),
            proc,
            240,
            f"a finished trial and one at most {HEAD_CAUGHT_BY} epochs in",
        )
        killed_at = time.monotonic()
        assert head.kill()  # every process of the head (GCS, its raylet): the head pod is gone
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == 1, err[-3000:]
    assert took < 25, f"the driver took {took:.0f} s to stop"  # Ray's own client waits 60 s for the GCS
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("hpo: notice:")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"hpo: error: ray: the Ray cluster's head at {head.address} stopped answering")
    assert "--resume" in lines[0]
    before = _latest(study)
    assert any(d["status"] == "interrupted" for d in before.values()), before

    # the head comes back on the same port with the same token, with a new worker node
    nodes[0].stop()
    head.start()
    nodes.append(RayNode(head, num_cpus=2, tag="b").start())
    done = subprocess.run([*args, "--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _latest(study)
    assert sorted(after) == list(range(ITERATIONS))
    assert all(d["status"] == "complete" for d in after.values()), {i: (d["status"], d.get("error")) for i, d in after.items()}
    for tid, d in before.items():  # nothing finished before the kill is lost or changed
        if d["status"] in FINISHED:
            assert after[tid] == d
    lines_all = _lines(study)
    for tid in after:
        assert sum(1 for d in lines_all if d["id"] == tid and d["status"] in FINISHED) == 1, tid
