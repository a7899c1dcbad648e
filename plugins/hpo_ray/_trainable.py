"""The Ray Tune trainable: trains ONE trial inside a Ray worker with the core's trial code.

Runs in a Ray worker process (a fresh actor per trial: ``reuse_actors=False``), so the trial is
isolated from the driver and from other trials as with the core's runner. It calls
:func:`hpo._worker.train` in-process and, after each epoch, ``ray.tune.report``\\ s

- ``epoch``: the Ultralytics epoch, 1-based (the scheduler's ``time_attr``);
- ``objective``: the study's objective metric of that epoch (NaN when not reported);
- ``hpo_row``: that epoch's full metric row (JSON text), recorded by the driver;
- a checkpoint: a folder holding the trial's Ultralytics ``last.pt`` of that epoch.

The last epoch's row is held back and reported once with the trial's outcome (``hpo_outcome``:
final validation metrics, applied args, weights) so a scheduler stopping the trial at ``max_t``
cannot cut the final validation short. A trial started from a Tune checkpoint (errored and
retried, paused and continued, or resumed with the study) continues from that epoch with
Ultralytics' ``resume=<last.pt>``. Training errors are written to ``<run>/hpo_error.json`` (read
by the driver) and raised, so Ray marks the trial errored.

Nothing here writes the study: the driver is the single writer.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

__all__ = ["train_trial", "trial_id_of", "TRIAL_PREFIX"]

#: Ray trial folders are named ``trial_<hpo trial id>`` (short; the config lives in ``params.json``).
TRIAL_PREFIX = "trial_"
_ID_RE = re.compile(r"^trial_(\d+)")


def trial_id_of(dirname: str) -> int:
    """The hpo trial id encoded in a Ray trial folder name (``trial_7`` -> 7).

    Raises:
        ValueError: the name was not made by :class:`hpo_ray._driver.TrialDirname`.
    """
    m = _ID_RE.match(dirname)
    if not m:
        raise ValueError(f"Ray trial folder '{dirname}' is not named trial_<id>")
    return int(m.group(1))


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def _start_timeout(seconds: float | None, run_dir: Path) -> Any:
    """Enforce ``--trial-timeout`` as the core's runner does: past ``seconds`` the trial's error
    (``timed out after N s (trial_timeout); killed``) is written for the driver and this Ray
    worker process exits at once, so Ray records the trial as errored. ``None``: no limit."""
    if not seconds:
        return None
    import os
    import threading

    def expire() -> None:
        text = f"timed out after {seconds:g} s (trial_timeout); killed"
        try:
            (run_dir / "hpo_error.json").write_text(json.dumps({"error": text}))
        finally:
            os._exit(1)

    timer = threading.Timer(float(seconds), expire)
    timer.daemon = True
    timer.start()
    return timer


def train_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """Ray Tune function trainable (bound with ``tune.with_parameters(train_trial, setup=...)``).

    Args:
        config: the sampled params (Ray's trial config), one entry per space key.
        setup: ``study`` (absolute study path), ``keys`` (space keys), ``model``, ``task``,
            ``data`` (absolute data path), ``train_args``, ``epochs`` (int), ``metric``,
            ``checkpoint`` (bool: report ``last.pt`` each epoch).

    Raises:
        RuntimeError: the training failed (text in ``<study>/trials/<id>/hpo_error.json``).
    """
    from ray import tune

    from hpo.study import Study

    trial_dir = Path(tune.get_context().get_trial_dir())
    tid = trial_id_of(trial_dir.name)
    study_path = Path(setup["study"])
    run_dir = study_path / "trials" / str(tid)
    params = {k: _plain(config[k]) for k in setup["keys"]}
    metric, epochs = setup["metric"], int(setup["epochs"])

    # Ray's saved state may lag behind the study (the driver was killed between the two): a trial
    # the study already finished is not trained again; its recorded result is replayed.
    record = Study.open(study_path).records().get(tid)
    if record is not None and record.status.finished:
        tune.report({"epoch": record.epochs_completed, "objective": _num(record.objective), "hpo_replay": 1})
        return

    train_args = dict(setup["train_args"])
    checkpoint = tune.get_checkpoint() if setup.get("checkpoint", True) else None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            src = Path(d) / "last.pt"
            if src.is_file():
                (run_dir / "weights").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, run_dir / "weights" / "last.pt")
                train_args["resume"] = str(run_dir / "weights" / "last.pt")
    if "resume" not in train_args and run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh start: nothing of an earlier attempt may leak into this one
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    from hpo._worker import redirect_output, train  # imports torch + ultralytics (this worker only)

    redirect_output(run_dir / "train.log")
    print(f"hpo: trial {tid} in Ray trial {tune.get_context().get_trial_id()}"
          f"{' resumed from ' + train_args['resume'] if 'resume' in train_args else ''}", flush=True)

    held: dict[str, Any] = {}
    last_ckpt: list[Path] = []

    def report(row: dict[str, float]) -> bool:
        n = int(row["epoch"])
        metrics = {"epoch": n, "objective": _num(row.get(metric)), "hpo_row": json.dumps(row)}
        if n >= epochs:
            held.update(metrics)  # reported with the outcome, after the final validation
            return False
        last = run_dir / "weights" / "last.pt"
        if setup.get("checkpoint", True) and last.is_file():
            d = run_dir / f".tune_checkpoint_{n}"
            d.mkdir(exist_ok=True)
            shutil.copyfile(last, d / "last.pt")
            (d / "epoch.json").write_text(json.dumps({"trial": tid, "epoch": n}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(d)))
            for old in last_ckpt:  # Ray copied the previous one to its trial folder by now
                shutil.rmtree(old, ignore_errors=True)
            last_ckpt[:] = [d]
        else:
            tune.report(metrics)
        return False

    spec = {
        "model": setup["model"],
        "task": setup["task"],
        "data": setup["data"],
        "params": params,
        "train_args": train_args,
        "epochs": epochs,
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "integrations": [],
    }
    timer = _start_timeout(setup.get("trial_timeout"), run_dir)
    try:
        outcome = train(spec, report)
    except BaseException as e:
        text = f"{type(e).__name__}: {e}".strip().splitlines()[0][:2000] if str(e) else type(e).__name__
        partial = getattr(e, "hpo_outcome", {}) or {}
        (run_dir / "hpo_error.json").write_text(json.dumps({"error": text, "applied": partial.get("applied", {})}, default=str))
        import traceback

        traceback.print_exc()
        raise RuntimeError(f"trial {tid}: {text}") from None
    finally:
        if timer is not None:
            timer.cancel()
        for old in last_ckpt:
            shutil.rmtree(old, ignore_errors=True)
    if not held:  # Ultralytics stopped before the last epoch (patience): report its last row again
        last = outcome["epochs"][-1] if outcome["epochs"] else {"epoch": 0}
        held = {"epoch": int(last["epoch"]), "objective": _num(last.get(metric)), "hpo_row": json.dumps(last)}
    tune.report({**held, "hpo_outcome": json.dumps(outcome, default=str)})
