"""Simulated trials: learning curves from a formula, no training, milliseconds per trial.

:func:`simulated_trainer` is a trainer (:mod:`hpo.trial`) that plugs into the same seam as
Ultralytics training: ``Tuner(trainer="hpo.simulate:simulated_trainer")``, or the environment
variable ``HPO_TRAINER=hpo.simulate:simulated_trainer`` for the ``hpo`` command. Every backend then
runs its real sampler, pruner, scheduler or mutation through hpo's real loop, records and resume,
against curves that cost nothing. The backend conformance suite (:mod:`hpo.testing`) runs on it.

The curve of a trial with params ``p`` at epoch ``e`` (1-based)::

    q(p)        = mean over numeric keys k of (1 + sin(3 * x_k + i_k)) / 2,  x_k = log10(v) if v > 0 else v
    value(p, e) = 0.05 + 0.9 * q(p) * (1 - exp(-e / (1 + 2 * (1 - q(p)))))

(``i_k`` is the key's position in sorted order), so it is deterministic, between 0.05 and 0.95,
rises with every epoch, and a better configuration is better at every epoch (the premise of
successive halving). For a loss metric (a name containing ``loss``) the value is ``1 - value``.

Options (``trainer_options``, or ``HPO_TRAINER_OPTIONS`` as JSON):
    epoch_s: seconds slept per epoch (default 0; a few tenths let a test kill a study mid-trial).
    quick: trial ids that sleep no time whatever ``epoch_s`` says (e.g. one trial that completes
        before a time budget ends while the next one is still training).
    fail: trial ids whose training raises (recorded ``failed``).
    nan: trial ids whose metric is NaN from the first epoch (a diverged training: ``failed``).
    weights_bytes: size of the ``weights/best.pt`` and ``last.pt`` each trial writes (default 0:
        none), for tests of disk use and full volumes.
    gate: a file path; every trial waits before its first epoch until that file exists (polled every
        0.05 s), so a test orders events across processes instead of guessing with sleeps: e.g. a
        study's trials wait until a process joined to it has started one of its own.
    gate_s: the longest a trial waits for ``gate`` (default 600 s); then it fails, naming the file.
    open_gate: a file path that every trial creates when it starts (the other side of ``gate``).
    barrier, barrier_n: a folder and a count; every trial creates a file in the folder when it
        starts and waits before its first epoch until the folder holds ``barrier_n`` files (at most
        ``gate_s``), so ``barrier_n`` trials are sure to train at once, however loaded the machine.

A spec with an ``eval_split`` (a final-model run, :mod:`hpo.final`) also gets ``eval_metrics``: the
final value :data:`EVAL_GAP` worse (:func:`eval_value`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import clock
from .study import TrialStatus
from .trial import Progress, Report, TrialOutcome, TrialSpec

__all__ = [
    "simulated_trainer",
    "play_curve",
    "curve_value",
    "eval_value",
    "EVAL_GAP",
    "quality",
    "wait_for_gate",
    "wait_at_barrier",
]


def quality(params: dict[str, Any]) -> float:
    """``q(p)`` in [0, 1] (see the module docstring); 0.5 for a space without numeric keys."""
    terms = []
    for i, key in enumerate(sorted(params)):
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        x = math.log10(v) if v > 0 else float(v)
        terms.append((1 + math.sin(3 * x + i)) / 2)
    return sum(terms) / len(terms) if terms else 0.5


def curve_value(params: dict[str, Any], epoch: int, metric: str = "") -> float:
    """The simulated metric of ``params`` after ``epoch`` epochs (1-based)."""
    q = quality(params)
    value = 0.05 + 0.9 * q * (1 - math.exp(-epoch / (1 + 2 * (1 - q))))
    return 1 - value if "loss" in metric else value


def _write_weights(run_dir: Path, size: int) -> str | None:
    if size <= 0:
        return None
    folder = run_dir / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    block = b"\0" * min(size, 1 << 20)
    for name in ("last.pt", "best.pt"):
        with open(folder / name, "wb") as f:
            left = size
            while left > 0:
                left -= f.write(block[:left])
            f.flush()
            os.fsync(f.fileno())
    return str(folder / "best.pt")


def simulated_trainer(spec: TrialSpec, report: Report, progress: Progress | None = None) -> TrialOutcome:
    """Simulate training ``spec`` (see the module docstring for the curve and the options).

    Returns:
        ``COMPLETE`` after ``spec.epochs`` epochs (``final_metrics`` = the last epoch's), or
        ``PRUNED`` when ``report`` asked to stop.

    Raises:
        RuntimeError: the trial id is in the ``fail`` option (a simulated training error), or the
            ``gate`` file did not appear within ``gate_s`` seconds.
        OSError: writing the weights failed (e.g. a full volume).
    """
    opts = spec.trainer_options
    if opts.get("open_gate"):
        Path(opts["open_gate"]).touch()
    if opts.get("gate"):
        wait_for_gate(Path(opts["gate"]), float(opts.get("gate_s", 600.0)))
    if opts.get("barrier"):
        wait_at_barrier(Path(opts["barrier"]), int(opts.get("barrier_n", 2)), spec.trial_id, float(opts.get("gate_s", 600.0)))
    if spec.trial_id in set(opts.get("fail", ())):
        raise RuntimeError(f"simulated training error of trial {spec.trial_id}")
    diverged = spec.trial_id in set(opts.get("nan", ()))
    metric = spec.metric or "metrics/accuracy_top1"
    outcome = play_curve(
        spec,
        report,
        progress,
        lambda epoch: math.nan if diverged else curve_value(spec.params, epoch, metric),
        epoch_s=0.0 if spec.trial_id in set(opts.get("quick", ())) else float(opts.get("epoch_s", 0.0)),
        weights_bytes=int(opts.get("weights_bytes", 0)),
    )
    if spec.eval_split and outcome.status is TrialStatus.COMPLETE:
        outcome.eval_metrics = {metric: eval_value(outcome.final_metrics[metric], metric)}
    return outcome


#: How much worse the simulated score on an evaluation split (``TrialSpec.eval_split``) is than
#: the validation score (a held-out split scores a little below the split the epoch was chosen on).
EVAL_GAP = 0.02


def eval_value(val: float, metric: str = "") -> float:
    """The simulated score on an evaluation split of a run whose validation score is ``val``:
    :data:`EVAL_GAP` worse (higher for a loss)."""
    return val + EVAL_GAP if "loss" in metric else val - EVAL_GAP


def wait_at_barrier(folder: Path, n: int, trial_id: int, timeout_s: float) -> None:
    """Create ``folder/<pid>-<trial_id>``, then wait until ``folder`` holds ``n`` files (real time,
    polled every 0.05 s).

    Raises:
        RuntimeError: fewer than ``n`` trials arrived within ``timeout_s`` seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}-{trial_id}").touch()
    deadline = time.monotonic() + timeout_s
    while sum(1 for _ in folder.iterdir()) < n:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"simulated trial: fewer than {n} trials reached the barrier {folder} within {timeout_s:g} s")
        time.sleep(0.05)


def wait_for_gate(gate: Path, timeout_s: float) -> None:
    """Wait until the file ``gate`` exists (real time, polled every 0.05 s).

    Raises:
        RuntimeError: it did not appear within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not gate.exists():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"simulated trial: the gate file {gate} did not appear within {timeout_s:g} s")
        time.sleep(0.05)


def play_curve(
    spec: TrialSpec,
    report: Report,
    progress: Progress | None,
    value: Callable[[int], float],
    *,
    epoch_s: float | Sequence[float] = 0.0,
    start_s: float = 0.0,
    end_s: float = 0.0,
    weights_bytes: int = 0,
) -> TrialOutcome:
    """Play a learning curve as a trial: the shared body of simulated trainers.

    Waits with :func:`hpo.clock.sleep` (real seconds, or a simulated clock's), so inside
    :func:`hpo.clock.simulated` a trial takes no time at all yet the study's time budget sees it.

    Args:
        spec: the trial (its ``epochs``, ``metric``, ``run_dir``).
        report, progress: the trainer's callbacks (:mod:`hpo.trial`).
        value: ``value(epoch)`` -> the metric after ``epoch`` (1-based) epochs.
        epoch_s: seconds per epoch, one number or one per epoch.
        start_s: seconds before the first epoch (model build, data scan), and ``end_s`` after the
            last (final validation), the per-trial cost beside the epochs.
        weights_bytes: size of ``weights/best.pt`` and ``last.pt`` written each epoch (0: none).

    Returns:
        ``COMPLETE`` after ``spec.epochs`` epochs, or ``PRUNED`` when ``report`` asked to stop; every
        epoch row holds ``epoch``, the metric, and ``time`` (seconds since the first epoch began,
        as in Ultralytics' ``results.csv``).
    """
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metric = spec.metric or "metrics/accuracy_top1"
    per_epoch = [float(epoch_s)] * spec.epochs if isinstance(epoch_s, (int, float)) else [float(x) for x in epoch_s]
    rows: list[dict[str, float]] = []
    weights = None
    clock.sleep(start_s)
    elapsed = 0.0
    for epoch in range(1, spec.epochs + 1):
        seconds = per_epoch[min(epoch, len(per_epoch)) - 1] if per_epoch else 0.0
        if seconds > 0:
            steps = 4
            for b in range(1, steps + 1):
                clock.sleep(seconds / steps)
                if progress is not None:
                    progress({"epoch": epoch, "batch": b, "batches": steps})
        elapsed += seconds
        row: dict[str, float] = {"epoch": epoch, metric: value(epoch), "time": round(elapsed, 3)}
        rows.append(row)
        weights = _write_weights(run_dir, weights_bytes) or weights
        if report(row):
            return TrialOutcome(TrialStatus.PRUNED, epochs=rows, applied=dict(spec.params), weights=weights)
    clock.sleep(end_s)
    return TrialOutcome(
        TrialStatus.COMPLETE,
        epochs=rows,
        final_metrics={metric: rows[-1][metric]},
        applied=dict(spec.params),
        weights=weights,
    )


simulated_trainer.in_process = True  # type: ignore[attr-defined]  # no global state: the runner skips the worker process
