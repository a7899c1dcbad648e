"""The Ray Tune trainable: trains ONE trial inside a Ray worker with the core's trial code.

Runs in a Ray worker process (a fresh actor per trial: ``reuse_actors=False``), so the trial is
isolated from the driver and from other trials as with the core's runner. It calls
:func:`hpo.train_trial` in-process on the core's :class:`hpo.TrialSpec` and, after each epoch,
``ray.tune.report``\\ s

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

from hpo import Study, TrialStatus, train_trial

__all__ = ["ray_trainable", "trial_id_of", "TRIAL_PREFIX", "PROGRESS_FILE", "OBJECTIVE", "tune_value"]

#: The metric every trial reports to Tune after each epoch: the study's objective metric of that epoch.
OBJECTIVE = "objective"

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


def tune_value(x: Any) -> float:
    """A metric as reported to Tune: a float, NaN for a missing or non-finite value."""
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


#: The trial's latest batch progress, read by the driver (``hpo_ray._driver``) for the progress display.
PROGRESS_FILE = "progress.json"


def _progress_file(run_dir: Path) -> Any:
    """A ``progress`` callback writing ``{"epoch", "batch", "batches"}`` to ``<run>/progress.json``
    (replaced atomically; at most once a second, as the trainer throttles it). Best effort."""
    import os

    def progress(p: dict[str, int]) -> None:
        tmp = run_dir / f".{PROGRESS_FILE}.tmp"
        try:
            tmp.write_text(json.dumps(p))
            os.replace(tmp, run_dir / PROGRESS_FILE)
        except OSError:
            pass

    return progress


_READERS: dict[str, Study] = {}


def _reader(study_path: Path) -> Study:
    """The study, opened read-only once per worker process: an actor that Ray reuses for trial after
    trial reads only the records appended since its last trial, not the whole study again."""
    key = str(study_path)
    if key not in _READERS:
        _READERS[key] = Study.open(study_path)
    return _READERS[key]


def ray_trainable(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """Ray Tune function trainable (bound with ``tune.with_parameters(ray_trainable, setup=...)``).

    Args:
        config: the sampled params (Ray's trial config), one entry per space key.
        setup: ``study`` (absolute study path), ``keys`` (the search space's keys), ``spec`` (the core's :class:`hpo.TrialSpec` of
            the study, :meth:`hpo.TrialRecorder.trial_spec`; its id, params and folder are
            this trial's), ``checkpoint`` (bool: report ``last.pt`` each epoch),
            ``trial_timeout`` (seconds or ``None``).

    Raises:
        RuntimeError: the training failed (text in ``<study>/trials/<id>/hpo_error.json``).
    """
    from ray import tune

    trial_dir = Path(tune.get_context().get_trial_dir())
    tid = trial_id_of(trial_dir.name)
    study_path = Path(setup["study"])
    template = setup["spec"]
    run_dir = study_path / "trials" / str(tid)
    params = {k: _plain(config[k]) for k in setup["keys"]}
    metric, epochs = template.metric, int(template.epochs)

    # Ray's saved state may lag behind the study (the driver was killed between the two): a trial
    # the study already finished is not trained again; its recorded result is replayed.
    record = _reader(study_path).record(tid)
    if record is not None and record.status.finished:
        tune.report({"epoch": record.epochs_completed, OBJECTIVE: tune_value(record.objective), "hpo_replay": 1})
        return

    train_args = dict(template.train_args)
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
    spec = template.replace(trial_id=tid, params=params, train_args=train_args, run_dir=str(run_dir))
    with open(spec.log_file, "a", encoding="utf-8") as log:
        log.write(
            f"hpo: trial {tid} in Ray trial {tune.get_context().get_trial_id()}"
            f"{' resumed from ' + train_args['resume'] if 'resume' in train_args else ''}\n"
        )

    held: dict[str, Any] = {}
    last_ckpt: list[Path] = []

    def report(row: dict[str, float]) -> bool:
        n = int(row["epoch"])
        metrics = {"epoch": n, OBJECTIVE: tune_value(row.get(metric)), "hpo_row": json.dumps(row)}
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

    timer = _start_timeout(setup.get("trial_timeout"), run_dir)
    try:
        outcome = train_trial(spec, report, _progress_file(run_dir), log=True)  # the trial's output goes to its train.log
    finally:
        if timer is not None:
            timer.cancel()
        for old in last_ckpt:
            shutil.rmtree(old, ignore_errors=True)
    if outcome.status is TrialStatus.FAILED:
        (run_dir / "hpo_error.json").write_text(json.dumps({"error": outcome.error, "applied": outcome.applied}, default=str))
        raise RuntimeError(f"trial {tid}: {outcome.error}")
    if not held:  # training stopped before the last epoch (Ultralytics' patience): report its last row again
        last = outcome.epochs[-1] if outcome.epochs else {"epoch": 0}
        held = {"epoch": int(last["epoch"]), OBJECTIVE: tune_value(last.get(metric)), "hpo_row": json.dumps(last)}
    done = {
        "final_metrics": outcome.final_metrics,
        "applied": outcome.applied,
        "train_s": outcome.train_s,
        "weights": outcome.weights,
    }
    tune.report({**held, "hpo_outcome": json.dumps(done, default=str)})
