"""What the benchmark runs: problems, contenders and suites, as plain data.

A *problem* is a dataset + model + search space + budget (trials x epochs, wall-clock cap). A
*contender* is one way to tune it. Every contender of a problem gets the same budget: the same
number of trials of the same number of epochs (so the same total training epochs; pruning only
spends fewer) and the same wall-clock cap per study.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Problem", "Contender", "CONTENDERS", "DEFAULT_CONTENDERS", "SUITES", "suite", "build_data", "apply_overrides"]

#: The space tuned on both problems: linear (low, high[, gain]) ranges so that every contender,
#: Ultralytics' native tuner included, can search it unchanged. Bounds follow Ultralytics' own
#: tuner space (``ultralytics/engine/tuner.py``), narrowed for 1-3 epoch trainings.
SPACE_CLS: dict[str, tuple] = {
    "lr0": (1e-4, 1e-2),
    "lrf": (0.01, 1.0),
    "momentum": (0.7, 0.98, 0.3),
    "weight_decay": (0.0, 0.001),
    "warmup_epochs": (0.0, 1.0),
    "hsv_v": (0.0, 0.9),
    "fliplr": (0.0, 0.5),
}
SPACE_DET: dict[str, tuple] = {**SPACE_CLS, "mosaic": (0.0, 1.0), "scale": (0.0, 0.9)}


@dataclass
class Problem:
    """One tuning problem.

    Two budgets (``budget``): ``"trials"``, every contender gets ``trials`` trials of ``epochs``
    epochs (the same training epochs) under the cap ``time_cap_s``; ``"wallclock"``, the question
    users ask: per seed, Ultralytics' own ``model.tune`` (contender ``ultralytics-native``) runs
    ``trials`` iterations first, and its wall time, launch to exit, is every other contender's
    time budget (``hpo tune --time-budget``; no cap on trials); only trials that end within it count.

    Attributes:
        name: ``digits-cls`` or ``digits-det`` (the :mod:`hpo.datasets` builder).
        model: bundled model YAML (built from scratch, never downloaded).
        space: the search space, Ultralytics' ``{key: (low, high[, gain])}`` form.
        trials: trials per study (every contender).
        epochs: epochs per trial, the full fidelity (also the retrain length).
        time_cap_s: wall-clock cap per study in seconds (the study is stopped there; finished
            trials count, running ones do not).
        imgsz: image size in pixels (train arg; for digits-det also the canvas size).
        batch: batch size.
        images: training images: per class for digits-cls (10 classes), canvases for digits-det.
        val_images: validation images, same units.
        train_args: further fixed Ultralytics train args.
        warm_start_epochs: if > 0, the model is first trained once from scratch for that many
            epochs (Ultralytics' defaults with ``warm_start_params``, training seed 0), and every
            contender, reference and retrain then starts from those weights (a local ``.pt``): the
            fine-tuning case. 0: every training starts from scratch.
        warm_start_params: hyperparameters of that one warm-start training.
        budget: ``"trials"`` or ``"wallclock"`` (above).
        max_trials: at equal wall clock, also stop each hpo study after this many trials (``None``:
            only the time budget; the quick suite sets it so that its studies end in seconds).
        digit_size: digits-det: inclusive (min, max) side of a pasted digit in px; ``None``: from
            ``imgsz`` (max(16, min(imgsz // 3, 64)) and half of it, the cpu-small rule).
        digits_per_image: digits-det: inclusive (min, max) digits per canvas.
        shared_init: without a warm start, every training of a seed (every contender's trials,
            the reference) starts from the same initial weights: ``model`` built once under
            ``torch.manual_seed(seed)`` and saved as a ``.pt`` (no training). Without it the
            initialisation differs by contender: Ultralytics' ``model.tune`` (8.4.x) builds its base
            model once, before any seeding, and starts every iteration from it, while an hpo trial
            builds the model after seeding with its training seed; on full digits-cls the same
            hyperparameters then scored 0.50 and 0.32 top-1 (benchmarks/README.md), which a
            comparison of searches must not measure.
    """

    name: str
    model: str
    space: dict[str, tuple]
    trials: int
    epochs: int
    time_cap_s: float
    imgsz: int
    batch: int
    images: int
    val_images: int
    train_args: dict[str, Any] = field(default_factory=dict)
    warm_start_epochs: int = 0
    warm_start_params: dict[str, Any] = field(default_factory=dict)
    budget: str = "trials"
    max_trials: int | None = None
    shared_init: bool = False
    digit_size: tuple[int, int] | None = None
    digits_per_image: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        """Raises: ValueError: ``budget`` is not ``trials`` or ``wallclock``."""
        if self.budget not in ("trials", "wallclock"):
            raise ValueError(f"budget: '{self.budget}' is not 'trials' or 'wallclock'")

    @property
    def task(self) -> str:
        return "classify" if self.model.endswith("-cls.yaml") else "detect"

    @property
    def metric(self) -> str:
        from hpo.ultra import TASK_METRIC

        return TASK_METRIC[self.task]

    def fixed_args(self, seed: int, device: str) -> dict[str, Any]:
        """The train args every training of this problem uses (``seed`` is the training seed)."""
        return {
            "imgsz": self.imgsz,
            "batch": self.batch,
            "workers": 0,
            "device": device,
            "optimizer": "AdamW",
            "seed": seed,
            "plots": False,
            **self.train_args,
        }


@dataclass(frozen=True)
class Contender:
    """One way to tune a problem.

    Attributes:
        name: the row label in the report.
        kind: ``"hpo"`` (a study through :class:`hpo.Tuner` with ``backend``) or ``"native"``
            (Ultralytics' ``model.tune`` run directly).
        backend: the hpo backend name (``kind == "hpo"``).
        description: one line for the report.
        options: backend options of the study (``Tuner(backend_options=...)``); empty: the backend's
            defaults, whatever they are in the installed release.
    """

    name: str
    kind: str
    backend: str | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, why)``: an hpo backend that is not installed is skipped."""
        if self.kind != "hpo" or (self.backend or "").startswith("bench-"):
            return True, ""
        from hpo.plugins import backends

        installed = backends()
        if self.backend in installed:
            return True, ""
        return False, f"hpo backend '{self.backend}' is not installed here (installed: {', '.join(installed)})"


#: Every contender, in report order. Add a row here to benchmark another backend.
CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("ultralytics", "hpo", "ultralytics", "hpo backend: Ultralytics' genetic mutation, through hpo's core"),
        Contender("optuna", "hpo", "optuna", "hpo backend: Optuna (its default sampler and pruner)"),
        Contender("ray", "hpo", "ray", "hpo backend: Ray Tune (its default searcher and scheduler)"),
        Contender("random", "hpo", "bench-random", "baseline: uniform random search through hpo's core"),
        Contender("ultralytics-native", "native", None, "Ultralytics' own model.tune(use_ray=False), run directly"),
        Contender(
            "ultralytics-percentile",
            "hpo",
            "ultralytics",
            "hpo backend ultralytics with early stopping below the median (--pruner percentile)",
            {"pruner": "percentile"},
        ),
        Contender(
            "ultralytics-mutation-only-percentile",
            "hpo",
            "ultralytics",
            "hpo backend ultralytics mutating from the defaults alone, stopping trials below the median "
            "(--initial-random 0 --pruner percentile: its defaults until 2026-12-05)",
            {"initial_random": 0, "pruner": "percentile"},
        ),
    )
}

#: The contenders a suite runs unless told otherwise: every backend at its defaults, the random
#: baseline and model.tune (variants such as ``ultralytics-mutation-only-percentile`` run with ``--contenders``).
DEFAULT_CONTENDERS = ["ultralytics", "optuna", "ray", "random", "ultralytics-native"]


def _problems_cpu_small() -> list[Problem]:
    # Sized for ~25 min alone on 2 CPU cores (30 studies + references, retrains, replays): a trial
    # costs ~3-4 s of set-up (model build, data scan, final validation) beside its epochs, so the
    # images are few: digits-cls 50 train / 15 val per class at 32 px (~2 s per epoch), digits-det
    # 48 / 16 canvases at 96 px (~1.5 s per epoch). The caps are ~2x the expected slowest study
    # (Ultralytics' model.tune, one `yolo train` subprocess per iteration). digits-cls uses batch 16:
    # with batch 64 its 16 optimizer steps leave every config at chance (10%); with 64 steps the
    # defaults reach ~27% top-1 and lr0=0.002 ~39% (measured), so configs differ. digits-det starts
    # from a 25-epoch warm-start checkpoint (the fine-tuning case), but at 48 canvases its mAP50-95
    # is still 0.0 after that warm start and after the 2-epoch trials (measured 2026-11-29, run in
    # benchmarks/results/cpu-small): on a 2-core CPU this problem measures overhead, not tuning
    # quality. Scale it up for that (--set digits-det.images=512 --set epochs=10 ..., on a GPU).
    return [
        Problem(
            "digits-cls",
            "yolov8n-cls.yaml",
            dict(SPACE_CLS),
            trials=5,
            epochs=2,
            time_cap_s=180,
            imgsz=32,
            batch=16,
            images=50,
            val_images=15,
        ),
        Problem(
            "digits-det",
            "yolov8n.yaml",
            dict(SPACE_DET),
            trials=5,
            epochs=2,
            time_cap_s=180,
            imgsz=96,
            batch=16,
            images=48,
            val_images=16,
            warm_start_epochs=25,
            warm_start_params={"lr0": 0.003, "mosaic": 0.0},
        ),
    ]


def _problems_quick() -> list[Problem]:
    # equal wall clock: model.tune's 2 one-epoch iterations set every contender's time budget; the
    # hpo studies also stop at 2 trials (the test suite's time), so only the code path is exercised
    return [
        Problem(
            "digits-cls",
            "yolov8n-cls.yaml",
            dict(SPACE_CLS),
            trials=2,
            epochs=1,
            time_cap_s=240,
            imgsz=32,
            batch=64,
            images=12,
            val_images=6,
            budget="wallclock",
            max_trials=2,
            shared_init=True,
        ),
    ]


def _digits_cls_full(**kw: Any) -> Problem:
    # all 1,797 UCI digits (80/20 split) at 32 px, batch 16, 3-epoch trials: ~3 s per fp32 epoch on a
    # 2-core EPYC (benchmarks/results/recording, 2026-12-05); Ultralytics' defaults reach 0.40-0.58 top-1
    # from the real runs' initialisations (benchmarks/results/cpu-wallclock; 0.18 in the recording) and
    # the best of 100 recorded configurations 0.87, so the metric moves
    args: dict[str, Any] = dict(trials=12, epochs=3, time_cap_s=900, imgsz=32, batch=16, images=1_000_000, val_images=1_000_000)
    args.update(kw)
    return Problem("digits-cls", "yolov8n-cls.yaml", dict(SPACE_CLS), budget="wallclock", shared_init=True, **args)


def _digits_det_cpu() -> Problem:
    # a detection problem whose metric moves on 2 CPU cores (measured 2026-12-04, 2-core Intel Xeon, fp32):
    # 640 train / 128 val canvases of 64 px holding 1-2 digits of 20-30 px (big glyphs on a small
    # canvas: ~4.7 s per epoch with validation). From scratch, yolov8n reaches mAP50-95 0.26 after
    # 10 epochs (lr0=0.003, no mosaic), and a 3-epoch training with Ultralytics' defaults from there
    # scores 0.03 / 0.27 / 0.33 per epoch (its 3 warm-up epochs at lr0=0.01 first shake the weights):
    # above 0.2 and still rising at the trial's end, in ~19 s per trial. The cpu-small canvases
    # (48 of 96 px, 2-4 digits of 16-32 px) stayed at mAP 0.0 after a 25-epoch warm start.
    return Problem(
        "digits-det",
        "yolov8n.yaml",
        dict(SPACE_DET),
        trials=12,
        epochs=3,
        time_cap_s=900,
        imgsz=64,
        batch=16,
        images=640,
        val_images=128,
        digit_size=(20, 30),
        digits_per_image=(1, 2),
        warm_start_epochs=10,
        warm_start_params={"lr0": 0.003, "mosaic": 0.0},
        budget="wallclock",
    )


def _problems_cpu_wallclock() -> list[Problem]:
    # the problems: model.tune's 12 iterations set each seed's budget (measured 2026-12-04 on a
    # 2-core Xeon: ~172 s on digits-cls, ~243 s on digits-det); with 5 contenders a seed takes ~15 and
    # ~21 min, the 5 seeds ~3 h (spread over sittings with --resume)
    return [_digits_cls_full(), _digits_det_cpu()]


def _problems_gpu() -> list[Problem]:
    # one large NVIDIA GPU, under 8 minutes in all (NOT YET RUN: no GPU was lent so far; every size
    # is an estimate): each model.tune iteration is a `yolo train` subprocess of ~10 s there (imports,
    # CUDA start, 3 short epochs), so 4 iterations set a ~45 s budget and a seed costs 5 x 45 s per
    # problem; one seed of both problems (digits-cls full at 64 px; digits-det 512 canvases of 320 px
    # warm-started for 20 epochs, 3 iterations) is ~7 min. --seeds 5 for the 5-seed comparison (~35 min).
    return [
        _digits_cls_full(imgsz=64, batch=64, trials=4, time_cap_s=180),
        Problem(
            "digits-det",
            "yolov8n.yaml",
            dict(SPACE_DET),
            trials=3,
            epochs=3,
            time_cap_s=180,
            imgsz=320,
            batch=64,
            images=512,
            val_images=128,
            warm_start_epochs=20,
            warm_start_params={"lr0": 0.003, "mosaic": 0.0},
            budget="wallclock",
        ),
    ]


#: Suites: problems, seeds, contenders, and which studies are replayed back to back in one process
#: (the first ``b2b_seeds`` seeds of ``b2b_contenders``: hpo's core and the native tuner's
#: subprocess-per-iteration, the two ways trials are isolated).
# the equal-wall-clock suites: every contender, their time on seeds (no back-to-back replay, no retrain)
_WALLCLOCK_SUITE: dict[str, Any] = {
    "contenders": list(DEFAULT_CONTENDERS),
    "b2b_seeds": 0,
    "b2b_contenders": [],
    "retrain": False,
}

SUITES: dict[str, dict[str, Any]] = {
    "cpu-small": {
        "problems": _problems_cpu_small,
        "seeds": [0, 1, 2],
        "contenders": list(DEFAULT_CONTENDERS),
        "b2b_seeds": 1,
        "b2b_contenders": ["ultralytics", "ultralytics-native"],
    },
    "quick": {
        "problems": _problems_quick,
        "seeds": [0],
        "contenders": ["ultralytics", "random", "ultralytics-native"],
        "b2b_seeds": 1,
        "b2b_contenders": ["ultralytics"],
    },
    "cpu-wallclock": {"problems": _problems_cpu_wallclock, "seeds": [0, 1, 2, 3, 4], **_WALLCLOCK_SUITE},
    "gpu": {"problems": _problems_gpu, "seeds": [0], "device": "0", **_WALLCLOCK_SUITE},
}


def suite(name: str) -> dict[str, Any]:
    """A fresh copy of suite ``name`` (``problems`` built anew).

    Raises:
        ValueError: unknown suite name (listing the known ones).
    """
    if name not in SUITES:
        raise ValueError(f"--suite: unknown '{name}'; choose one of {', '.join(SUITES)}")
    s = SUITES[name]
    return {
        **s,
        "problems": s["problems"](),
        "seeds": list(s["seeds"]),
        "contenders": list(s["contenders"]),
        "b2b_contenders": list(s["b2b_contenders"]),
    }


_FIELDS: dict[str, Callable[[str], Any]] = {
    "trials": int,
    "epochs": int,
    "time_cap_s": float,
    "imgsz": int,
    "batch": int,
    "images": int,
    "val_images": int,
    "warm_start_epochs": int,
    "budget": str,
    "max_trials": int,
    "shared_init": lambda v: {"true": True, "1": True, "false": False, "0": False}[v.lower()],
}


def apply_overrides(problems: list[Problem], sets: list[str]) -> list[Problem]:
    """Apply ``--set [PROBLEM.]FIELD=VALUE`` items (no ``PROBLEM.``: every problem).

    Fields: trials, epochs, time_cap_s, imgsz, batch, images, val_images, warm_start_epochs (0: from
    scratch), budget (``trials`` or ``wallclock``), max_trials, shared_init (true/false); any other name is
    an Ultralytics train arg (e.g. ``digits-det.amp=false``).

    Raises:
        ValueError: malformed item or unknown problem.
    """
    import yaml

    names = {p.name for p in problems}
    out = [dataclasses.replace(p, train_args=dict(p.train_args)) for p in problems]
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set: '{item}' is not [PROBLEM.]FIELD=VALUE (e.g. digits-cls.epochs=10)")
        target, _, fld = key.rpartition(".")
        if target and target not in names:
            raise ValueError(f"--set: unknown problem '{target}' in '{item}'; choose one of {', '.join(sorted(names))}")
        for p in out:
            if target and p.name != target:
                continue
            if fld in _FIELDS:
                try:
                    setattr(p, fld, _FIELDS[fld](value))
                except (KeyError, ValueError):
                    raise ValueError(f"--set: '{value}' is not a valid {fld} in '{item}'") from None
                try:
                    p.__post_init__()  # the dataclass's own checks, once more for the changed field
                except ValueError as e:
                    raise ValueError(f"--set: {e} in '{item}'") from None
            else:
                p.train_args[fld] = yaml.safe_load(value)
    return out


def build_data(problem: Problem, folder: Path, *, seed: int = 0) -> str:
    """Build the problem's dataset with :mod:`hpo.datasets` into ``folder``; returns the ``data=`` value.

    digits-cls keeps the first ``images`` train and ``val_images`` val images of each class (of
    the 1,797 real UCI digits); digits-det draws ``images`` / ``val_images`` canvases of
    ``imgsz`` px. Reused as-is when ``folder`` already holds it.
    """
    from hpo.datasets import make_digits_cls, make_digits_det

    folder = Path(folder)
    if problem.name == "digits-cls":
        if not (folder / "train").is_dir():
            # the split of the committed results (1,402 train / 395 val, no test/); hpo datasets make's
            # default now holds a test split (1,079 / 359 / 359)
            make_digits_cls(folder, seed=seed, imgsz=problem.imgsz, val_fraction=0.22, test_fraction=0.0)
            for split, keep in (("train", problem.images), ("val", problem.val_images)):
                for cls_dir in sorted((folder / split).iterdir()):
                    for f in sorted(cls_dir.glob("*.png"))[keep:]:
                        f.unlink()
        return str(folder)
    if problem.name == "digits-det":
        if not (folder / "data-abs.yaml").is_file():
            if folder.exists():
                shutil.rmtree(folder)
            big = max(16, min(problem.imgsz // 3, 64))
            make_digits_det(
                folder,
                seed=seed,
                n_train=problem.images,
                n_val=problem.val_images,
                canvas=problem.imgsz,
                digit_size=problem.digit_size or (max(8, big // 2), big),
                digits_per_image=problem.digits_per_image,
            )
        # data.yaml says `path: .` (its own folder), which hpo resolves but plain Ultralytics (the
        # native tuner, in-process trainings) would resolve against the working directory: give
        # every contender the same YAML with the absolute path
        import yaml

        doc = yaml.safe_load((folder / "data.yaml").read_text())
        doc["path"] = str(folder.resolve())
        (folder / "data-abs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(folder / "data-abs.yaml")
    raise ValueError(f"problem: unknown dataset '{problem.name}'")
