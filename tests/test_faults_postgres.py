"""A PostgreSQL server restarted, or down for long, in the middle of an optuna study (issue 31 item 3).

Each test runs its own PostgreSQL 15 server (tests/engines.py; the session's ``postgres`` fixture
is shared and must not be restarted under other tests) and the real ``hpo`` command with
simulated trials (``hpo.simulate``: the storage is the point, not training), two trials at once,
the hyperband pruner (so every epoch reports to the storage). Budget: about 30 s each, alone on
2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg")

from engines import PostgresServer, kill_groups, start_hpo, tune_argv, wait_until  # noqa: E402

from hpo import Study, TrialStatus  # noqa: E402
from hpo.testing import SIMULATED  # noqa: E402

SPACE = json.dumps({"lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-1}, "momentum": [0.6, 0.98]})
EPOCH_S = 0.5


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server of this module alone (its tests restart and stop it; each its own database)."""
    try:
        pg = PostgresServer().start()
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"no PostgreSQL server here: {e}")
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(autouse=True)
def _running(server):
    """Each test starts with the server up, and leaves it up."""
    if not (server.data / "postmaster.pid").is_file():
        server.resume()
    yield
    if not (server.data / "postmaster.pid").is_file():
        server.resume()


def _args(data: Path, out: Path, storage: str, n: int, **settings: object) -> list[str]:
    return tune_argv(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=data,
        iterations=n,
        epochs=4,
        concurrent_trials=2,
        output=out,
        name="s",
        storage=storage,
        space=SPACE,
        quiet=True,
        json=True,
        mlflow=False,
        **settings,
        train={"imgsz": 32, "optimizer": "SGD"},
    )


def _env(**options: str) -> dict[str, str]:
    return {"HPO_TRAINER": SIMULATED, "HPO_TRAINER_OPTIONS": json.dumps({"epoch_s": EPOCH_S, **options}), "HPO_PLOTS": "0"}


def _finished(study_dir: Path) -> int:
    if not (study_dir / "study.json").is_file():
        return 0
    return sum(r.status.finished for r in Study.open(study_dir).records().values())


def _check_exact(study_dir: Path, storage: str, n: int, *, resumed: bool = False) -> None:
    """Exactly ``n`` finished trials with unique ids in hpo's files (one final record each, none
    left running), and Optuna's trials the same: one per hpo id with the same params, state and
    value, nothing left ``RUNNING``. After a ``--resume`` (``resumed``), an attempt the stop
    interrupted may stay beside it as ``FAIL`` (as after any kill, tests/test_scale_postgres.py),
    and so may a trial Optuna was asking for when the storage was lost (no hpo record: never trained)."""
    lines: list[dict] = []
    for f in study_dir.glob("trials*.jsonl"):
        lines += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    final: dict[int, list[dict]] = {}
    for r in lines:
        if r["status"] in ("complete", "pruned", "failed"):
            final.setdefault(r["id"], []).append(r)
    assert all(len(v) == 1 for v in final.values()), {k: len(v) for k, v in final.items() if len(v) > 1}
    records = Study.open(study_dir).records()
    assert len(records) == n, sorted(records)
    statuses = {i: r.status for i, r in records.items()}
    assert all(s in (TrialStatus.COMPLETE, TrialStatus.PRUNED) for s in statuses.values()), statuses
    assert sorted(final) == sorted(records)

    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    FAIL = optuna.trial.TrialState.FAIL
    assert not [t.number for t in trials if not t.state.is_finished()]
    kept: dict[int, list] = {}
    for t in trials:
        if t.user_attrs.get("hpo_trial_id") in records and t.state is not FAIL:
            kept.setdefault(t.user_attrs["hpo_trial_id"], []).append(t)
    assert sorted(kept) == sorted(records), (sorted(kept), sorted(records))
    assert all(len(v) == 1 for v in kept.values()), {k: [(t.number, t.state.name) for t in v] for k, v in kept.items()}
    others = [(t.number, t.state.name, t.user_attrs) for t in trials if t.state is FAIL]
    if resumed:
        assert all(s == "FAIL" for _, s, _ in others), others
    else:  # ridden out: nothing else at all
        assert not others and len(trials) == n, others
    state = {TrialStatus.COMPLETE: optuna.trial.TrialState.COMPLETE, TrialStatus.PRUNED: optuna.trial.TrialState.PRUNED}
    for tid, r in records.items():
        (t,) = kept[tid]
        assert t.state is state[r.status], (tid, t.state, r.status)
        assert t.params == pytest.approx(dict(r.params)), (tid, t.params, r.params)
        if r.status is TrialStatus.COMPLETE:
            assert t.value == pytest.approx(r.objective), (tid, t.value, r.objective)


def test_a_restarted_server_is_ridden_out_and_the_study_is_exact(tmp_path, server, digits_cls):
    """Two processes (the writer and one ``--join``), two trials each at once; the server is
    restarted (``pg_ctl restart -m fast``: every session terminated) and then stopped for 3 s while
    trials run. Both processes exit 0 and the study holds exactly N trials, the same in Optuna."""
    url, n = server.database("restart"), 20
    study_dir, gate = tmp_path / "s", str(tmp_path / "joined-started")
    # the writer's trials wait until the joined process has started one (hpo.simulate's gate)
    writer = start_hpo(_args(digits_cls, tmp_path, url, n, seed=0), cwd=tmp_path, env=_env(gate=gate))
    procs = [writer]
    try:
        wait_until(lambda: (study_dir / "study.json").is_file(), procs, "the study")
        procs.append(start_hpo(_args(digits_cls, tmp_path, url, n, join=True), cwd=tmp_path, env=_env(open_gate=gate)))
        wait_until(lambda: _finished(study_dir) >= 1, procs, "a finished trial")
        started = _finished(study_dir)
        server.restart()
        wait_until(lambda: _finished(study_dir) >= started + 2, procs, "two more finished trials")
        server.pause()
        down = _finished(study_dir)
        time.sleep(3.0)  # trials keep training; their epochs' reports wait for the server
        server.resume()
        assert down < n, f"the study finished ({down} trials) before the server went down: raise n"
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        kill_groups(procs)
    for p, (_, stderr) in zip(procs, outs, strict=True):
        assert p.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
    # each process said what it waited for, once per outage, in one line
    for _, stderr in outs:
        print(stderr)
        lines = [x for x in stderr.splitlines() if x.strip()]
        assert all(x.startswith("hpo: ") for x in lines), stderr
    _check_exact(study_dir, url, n)


def test_a_server_down_past_the_bound_stops_with_one_line_then_resume_is_exact(tmp_path, server, digits_cls):
    """The server stopped and not back within ``--storage-wait`` (5 s here): the process stops
    with one line naming the storage (password masked), exit 1, within the bound plus seconds
    (measured 5.9 s from the stop to the exit here, in 4 runs); once the server is back, ``--resume``
    finishes exactly N trials."""
    plain, n, bound = server.database("down"), 8, 5.0
    secret = "pw" + "7" * 6  # trust authentication ignores it; it must never be shown
    url = plain.replace("postgres@", f"postgres:{secret}@")
    study_dir = tmp_path / "s"
    args = _args(digits_cls, tmp_path, url, n, seed=0, storage_wait=bound)
    proc = start_hpo(args, cwd=tmp_path, env=_env())
    try:
        wait_until(lambda: _finished(study_dir) >= 2, [proc], "two finished trials")
        server.pause()
        stopped = time.time()
        stdout, stderr = proc.communicate(timeout=bound + 60)
        took = time.time() - stopped
    finally:
        kill_groups([proc])
    print(f"stopped {took:.1f} s after the server went down (bound {bound} s)")
    assert proc.returncode == 1, stderr
    lines = [x for x in stderr.splitlines() if x.strip()]
    # the warning when the outage began, then the error when the bound passed: one line each
    assert len(lines) == 2 and lines[0].startswith("hpo: warning: optuna storage "), stderr
    assert "retrying for up to 5 s (--storage-wait)" in lines[0], lines[0]
    line = lines[1]
    assert line.startswith("hpo: error: optuna storage "), line
    assert f"postgresql://postgres:***@127.0.0.1:{server.port}/" in line, line
    assert secret not in line and "--resume" in line, line
    # the bound, plus the next storage call (an epoch's report: <= EPOCH_S) and stopping the
    # process on a loaded machine: never a hang
    assert took < bound + 10.0, f"{took:.1f} s to stop with a bound of {bound} s"
    left = _finished(study_dir)
    assert 2 <= left < n

    server.resume()
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", *_args(digits_cls, tmp_path, url, n, seed=0, storage_wait=bound, resume=True)],
        cwd=tmp_path,
        env={**os.environ, **_env()},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    _check_exact(study_dir, plain, n, resumed=True)
