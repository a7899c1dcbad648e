"""The trial worker: trains ONE trial with Ultralytics and reports as it goes.

This module imports torch and Ultralytics at import time on purpose: the runner's forkserver
preloads it once, and each trial is a fresh fork of that warm process (no 3-4 s import per trial,
no state shared between trials). The driver never imports it.

Protocol (over a ``multiprocessing`` pipe, see :mod:`hpo.runner`):
    worker -> driver  ``("epoch", {"epoch": n, <metric>: value, ...})`` after each epoch's validation;
    driver -> worker  ``"continue"`` or ``"stop"`` (prune: the worker stops before the next epoch);
    worker -> driver  ``("batch", {"epoch": n, "batch": i, "batches": nb})`` during an epoch, at most
                      once per :data:`BATCH_REPORT_S` seconds (no answer; progress display only);
    worker -> driver  ``("outcome", TrialOutcome)`` (complete, pruned or failed: :func:`hpo.trial.train_trial`).
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach for the network
os.environ.setdefault("YOLO_AUTOINSTALL", "False")  # never pip-install at run time

import torch  # noqa: F401  (preloaded by the forkserver)
from ultralytics import YOLO
from ultralytics.utils import SETTINGS

from .study import TrialStatus
from .trial import Progress, Report, TrialOutcome, TrialSpec, train_trial

# Ultralytics' integrations are off inside hpo's trials unless hpo asks for them: flipped in
# memory only (dict.__setitem__ bypasses the settings file, so the user's settings stay untouched).
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "sync", "hub", "platform")


def _quiet_integrations(enabled: tuple[str, ...] = ()) -> None:
    for key in _INTEGRATIONS:
        if key in SETTINGS:
            dict.__setitem__(SETTINGS, key, key in enabled)


_quiet_integrations()

# Modules Ultralytics imports on the first training of a process. Importing them here, once in the
# forkserver, spares every trial that cost: measured 1.45 s of a 4.5 s 1-epoch digits-cls trial on a
# 2-core CPU (Ultralytics 8.4.190, torch 2.14.1). None of them initialises CUDA. (torch._dynamo would
# save another ~0.35 s but pulls in triton, so it is left to the trial, away from the forkserver.)
_WARM_IMPORTS = (
    "polars",
    "torchvision.models",
    "torchvision.datasets",
    "torch.distributed",
    "ultralytics.engine.exporter",
    "ultralytics.utils.events",
    "ultralytics.utils.callbacks.platform",
    "thop",
    "PIL.ImageFile",
    "torch.utils.serialization",
    "numpy.ma",
)
for _name in _WARM_IMPORTS:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 - an optional speed-up; the trial imports what it needs anyway
        pass


def _local_fonts_only() -> None:
    """Ultralytics never fetches a font inside hpo's trials.

    Its detection-dataset check (``check_det_dataset``) calls ``check_font("Arial.ttf")`` on every
    training, plots or not, only to download the font when no local copy exists: a HEAD request
    with a 3 s timeout, then a download (Ultralytics 8.4.x, ``ultralytics/data/utils.py``). Here
    that call does nothing, and plotting (``plots=True``) looks for the font locally only (the
    user's Ultralytics config dir, then the system fonts matplotlib knows); without one, Ultralytics
    draws with PIL's default font.
    """
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.plotting as plotting
    from ultralytics.utils import USER_CONFIG_DIR

    def dataset_check_font(font: str = "Arial.ttf") -> None:
        return None

    def local_font(font: str = "Arial.ttf") -> Path | str | None:
        file = USER_CONFIG_DIR / Path(font).name
        if file.exists():
            return file
        from matplotlib import font_manager

        found = [f.fname for f in font_manager.fontManager.ttflist if font in f.fname and os.path.exists(f.fname)]
        return found[0] if found else None

    data_utils.check_font = dataset_check_font
    plotting.check_font = local_font


_local_fonts_only()


#: Least seconds between two batch-progress messages of a trial (the first batch of an epoch is always sent).
BATCH_REPORT_S = 1.0


class Pruned(Exception):
    """Raised inside Ultralytics' epoch callback when ``report`` says stop; ends ``model.train``."""


class AppliedMismatch(Exception):
    """The trainer applied a value different from the sampled one."""


def _floats(d: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _skip_amp_download() -> None:
    """Ultralytics' AMP check downloads yolo26n.pt on a CUDA device; with no local copy, skip it there.

    Ultralytics 8.4.x (``ultralytics/utils/checks.py``, ``check_amp``) turns AMP off on CPU and MPS
    without any download; that rule is kept (the original check runs). On CUDA, with no local
    ``yolo26n.pt``, the check is skipped and AMP stays on. (Before: AMP stayed on for every device,
    so CPU trials trained under bfloat16 autocast, unlike ``yolo train``: measured 10x slower on a
    2-core AMD EPYC without AVX-512, 84 s against 11 s for one full digits-cls epoch.)
    """
    from ultralytics.engine import trainer as trainer_module
    from ultralytics.utils import LOGGER, WEIGHTS_DIR

    if not (WEIGHTS_DIR / "yolo26n.pt").is_file():
        original = trainer_module.check_amp

        def check_amp(model: Any) -> bool:
            if next(model.parameters()).device.type != "cuda":
                return bool(original(model))  # CPU/MPS: False, nothing downloaded
            LOGGER.info("hpo: skipped Ultralytics' AMP check (it would download yolo26n.pt); amp stays on")
            return True

        trainer_module.check_amp = check_amp


def train_ultralytics(spec: TrialSpec, report: Report, progress: Progress | None = None) -> TrialOutcome:
    """The default trainer (:data:`hpo.trial.ULTRALYTICS_TRAINER`): train ``spec`` with Ultralytics
    in this process. Called through :func:`hpo.trial.train_trial`, which turns its errors into a
    failed outcome.

    Args:
        spec: the trial (``spec.run_dir`` becomes Ultralytics' ``project/name``).
        report: called after each epoch with ``{"epoch": n, metric: value, ...}`` (train losses,
            validation metrics, learning rates); returns ``True`` to stop (prune) the trial.
        progress: called during an epoch with ``{"epoch": n, "batch": i, "batches": nb}`` (1-based),
            at most once per :data:`BATCH_REPORT_S` seconds plus the first batch of each epoch.

    Returns:
        :class:`hpo.TrialOutcome`: ``COMPLETE`` (with the final validation's metrics) or
        ``PRUNED`` (``report`` asked to stop).

    Raises:
        AppliedMismatch: the trainer did not apply a sampled value.
        Exception: whatever Ultralytics raises; ``exc.hpo_outcome`` holds the partial outcome.
    """
    _quiet_integrations(tuple(spec.integrations))
    _skip_amp_download()
    params: dict[str, Any] = spec.params
    state: dict[str, Any] = {
        "epochs": [],
        "final": False,
        "final_metrics": {},
        "applied": {},
        "trainer": None,
        "validated": False,
    }

    def on_pretrain_routine_start(trainer: Any) -> None:
        state["trainer"] = trainer
        applied = {k: getattr(trainer.args, k, None) for k in params}
        state["applied"] = applied
        bad = {k: (params[k], applied[k]) for k in params if not _same(params[k], applied[k])}
        if bad:
            detail = ", ".join(f"{k}: sampled {s!r}, applied {a!r}" for k, (s, a) in bad.items())
            raise AppliedMismatch(f"the trainer did not apply the sampled values ({detail})")
        original = trainer.final_eval

        def final_eval() -> None:
            state["final"] = True
            original()

        trainer.final_eval = final_eval
        validate = trainer.validate

        def validated() -> Any:
            state["validated"] = True
            return validate()

        trainer.validate = validated

    def on_fit_epoch_end(trainer: Any) -> None:
        metrics = _floats(trainer.metrics or {})
        if state["final"]:
            state["final_metrics"] = metrics
            return
        if not state["validated"]:
            # val=False: Ultralytics skipped this epoch's validation and left its metrics at the zeros it
            # starts from (BaseTrainer._setup_train); they are no measurement, so the row has none
            metrics = {}
        state["validated"] = False
        row = {"epoch": trainer.epoch + 1}
        start = getattr(trainer, "train_time_start", None)
        if isinstance(start, float):  # seconds since the first epoch began (the "time" column of results.csv)
            row["time"] = round(time.time() - start, 3)
        row.update(_floats(trainer.label_loss_items(trainer.tloss, prefix="train")))
        row.update(metrics)
        row.update(_floats(getattr(trainer, "lr", {}) or {}))
        state["epochs"].append(row)
        if report(row):
            raise Pruned()

    batches = {"i": 0, "last": 0.0}

    def on_train_epoch_start(trainer: Any) -> None:
        batches["i"] = 0
        batches["last"] = 0.0

    def on_train_batch_end(trainer: Any) -> None:
        batches["i"] += 1
        now = time.monotonic()
        if progress is not None and (batches["i"] == 1 or now - batches["last"] >= BATCH_REPORT_S):
            batches["last"] = now
            progress({"epoch": trainer.epoch + 1, "batch": int(batches["i"]), "batches": len(trainer.train_loader)})

    model = YOLO(spec.model, task=spec.task)
    model.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    if progress is not None:
        model.add_callback("on_train_epoch_start", on_train_epoch_start)
        model.add_callback("on_train_batch_end", on_train_batch_end)
    run_dir = Path(spec.run_dir)
    args = {
        "plots": False,  # plots cost time per epoch; users may turn them back on
        **spec.train_args,
        **params,
        "data": spec.data,
        "epochs": spec.epochs,
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
    }
    t0 = time.perf_counter()

    def outcome(status: TrialStatus) -> TrialOutcome:
        trainer = state["trainer"]
        weights = None
        if trainer is not None:
            for w in (getattr(trainer, "best", None), getattr(trainer, "last", None)):
                if w is not None and Path(w).is_file():
                    weights = str(w)
                    break
        return TrialOutcome(
            status,
            epochs=state["epochs"],
            final_metrics=state["final_metrics"],
            applied={k: (v.item() if hasattr(v, "item") else v) for k, v in state["applied"].items()},
            train_s=time.perf_counter() - t0,
            weights=weights,
        )

    try:
        model.train(**args)
    except Pruned:
        return outcome(TrialStatus.PRUNED)
    except BaseException as e:
        e.hpo_outcome = outcome(TrialStatus.FAILED)  # type: ignore[attr-defined]  # partial epochs travel with the error
        raise
    done = outcome(TrialStatus.COMPLETE)
    if spec.eval_split:
        try:
            done.eval_metrics = evaluate_split(spec, state["trainer"], done.weights)
        except BaseException as e:
            e.hpo_outcome = done  # type: ignore[attr-defined]  # the training's epochs and weights travel with the error
            raise
    return done


#: Train args that :func:`evaluate_split` does not pass to Ultralytics' ``val()``: where the run's
#: files go, what hpo sets itself, and what the trainer's own validation never uses (``rect``:
#: its validation loader is always rectangular; ``augment``: no test-time augmentation while training).
_NOT_FOR_VAL = frozenset({"project", "name", "exist_ok", "data", "epochs", "resume", "mode", "plots", "split", "rect", "augment"})


def evaluate_split(spec: TrialSpec, trainer: Any, weights: str | None) -> dict[str, float]:
    """Validate a finished training's best weights on ``spec.eval_split`` with Ultralytics' own
    ``YOLO(best.pt).val(split=...)``, as its trainer validated them on the validation split.

    The weights are ``best.pt`` (the epoch Ultralytics' fitness chose on the validation split; the
    evaluated split never chooses anything). The validation gets the run's train args and params
    but :data:`_NOT_FOR_VAL`, and the batch size of the trainer's own validation loader (twice the
    training batch, once for obb: ``BaseTrainer._setup_train`` in Ultralytics 8.4), so an AutoBatch
    ``batch=-1`` is the size AutoBatch chose. Its files go to ``<run_dir>/<split>/``.

    Args:
        spec: the finished training (its ``eval_split``, ``data``, ``train_args``, ``params``, ``run_dir``).
        trainer: Ultralytics' trainer of that training (for its ``best`` and ``batch_size``).
        weights: the outcome's weights (``best.pt``, else ``last.pt``), used when the trainer has no ``best``.

    Returns:
        The metrics, Ultralytics' names (``metrics/accuracy_top1``, ``metrics/mAP50-95(B)``, ...).

    Raises:
        FileNotFoundError: the training left no weights.
        Exception: whatever Ultralytics' validation raises.
    """
    best = getattr(trainer, "best", None)
    path = str(best) if best is not None and Path(best).is_file() else weights
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"no weights to evaluate on the {spec.eval_split} split (no best.pt or last.pt)")
    args = {k: v for k, v in {**spec.train_args, **spec.params}.items() if k not in _NOT_FOR_VAL}
    size = getattr(trainer, "batch_size", None)
    if isinstance(size, int) and size >= 1:
        args["batch"] = size if spec.task == "obb" else size * 2
    run_dir = Path(spec.run_dir)
    print(f"hpo: validating {path} on the {spec.eval_split} split", flush=True)
    metrics = YOLO(path, task=spec.task).val(
        **args,
        data=spec.data,
        split=spec.eval_split,
        project=str(run_dir),
        name=str(spec.eval_split),
        exist_ok=True,
        plots=False,
    )
    return _floats(getattr(metrics, "results_dict", {}) or {})


def _tail(path: str | None, n: int = 20) -> str:
    if not path or not Path(path).is_file():
        return ""
    lines = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def run_in_child(spec: TrialSpec, conn: Any) -> None:
    """Entry point of a forked worker: redirect output, apply ``spec.env``, train, send the outcome."""
    os.environ.update({k: str(v) for k, v in spec.env.items()})

    def report(row: dict[str, float]) -> bool:
        conn.send(("epoch", row))
        return bool(conn.recv() == "stop")

    def progress(p: dict[str, int]) -> None:
        conn.send(("batch", p))

    try:
        conn.send(("outcome", train_trial(spec, report, progress, log=True)))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.close()
