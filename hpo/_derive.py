"""Derive the per-task table of :mod:`hpo.taskspace` from the installed Ultralytics, by training.

For each task, two real 2-epoch trainings on tiny data (4 train and 2 val images at 32 px, batch 2,
built here from the UCI digits of scikit-learn, so nothing is downloaded), in a child process set up
as hpo's trial workers are (:mod:`hpo._worker`: offline, Ultralytics' integrations off):

1. ``optimizer=SGD`` and 2. ``optimizer=auto`` (which picks AdamW on data this small), both with
   ``lr0=0.0123, momentum=0.8123``, values no rule of Ultralytics produces.

In each, ``trainer.args`` is swapped for a namespace that records every attribute read (callback
``on_pretrain_routine_start``, before the datasets, the model, the loss and the optimizer are
built, so their reads count; copies of it, such as the one ``_close_dataloader_mosaic`` hands to the
dataset, record too). After the optimizer is built (``on_train_start``) the callback reads:

- which tuner keys were read: the SGD run gives the ``sgd`` family, the auto run (AdamW) the ``adam`` family;
- whether the parameter groups hold the given ``lr0`` (``initial_lr``) and ``momentum`` (``momentum``
  or ``betas[0]``): the keys ``optimizer=auto`` ignores are those it did not apply (checked applied in the SGD run);
- which train args the auto run changed and the SGD run did not, besides ``optimizer`` and ``lr0``
  (``warmup_bias_lr``);
- whether the training dataset has a mosaic to close (``mosaic``/``close_mosaic``: else
  ``close_mosaic`` cannot act) and whether any training label carries segments (else ``copy_paste``
  cannot act; the detect data has polygon labels, which detection datasets may carry).

The optimizer families come from building every optimizer Ultralytics offers with its own
``BaseTrainer.build_optimizer`` on a two-layer model: ``sgd`` where the parameter groups carry
``momentum`` (the warmup then reads ``warmup_momentum``), else ``adam``.

Cost, measured on a shared 2-core CPU (Ultralytics 8.4.190, torch 2.14.1, 2026-12-06): the two
trainings of a task took 2.2 s (classify) to 4.6 s (obb), 19.6 s for the five tasks; with the child's
start (hpo's trial-worker imports), the tiny datasets and the optimizer families, the whole
derivation took 37-42 s of wall time.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import ultra

__all__ = ["derive_table", "dump_table", "TASK_MODELS", "SENTINEL", "DERIVE_COMMAND"]

#: The command that regenerates ``hpo/taskspaces.yaml``.
DERIVE_COMMAND = "python -m hpo.taskspace derive"

#: The bundled model YAML each task is probed with.
TASK_MODELS = {
    "detect": "yolov8n.yaml",
    "segment": "yolov8n-seg.yaml",
    "classify": "yolov8n-cls.yaml",
    "pose": "yolov8n-pose.yaml",
    "obb": "yolov8n-obb.yaml",
}
#: ``lr0`` and ``momentum`` of the probe trainings: values no rule of Ultralytics produces.
SENTINEL = {"lr0": 0.0123, "momentum": 0.8123}
#: Why a key the trainer reads cannot act, per check.
INERT_REASONS = {
    "close_mosaic": "the training dataset has no mosaic to close (BaseTrainer._close_dataloader_mosaic acts only on "
    "a dataset with mosaic/close_mosaic)",
    "copy_paste": "the labels carry no segments, and CopyPaste leaves labels without segments unchanged",
}


def _tiny_data(root: Path) -> dict[str, str]:
    """Tiny datasets of every task under ``root``: ``{task: data}`` (a data YAML with an absolute
    ``path``, or a classification folder). Detect, segment, obb and pose labels are made from the
    boxes of :func:`hpo.datasets.make_digits_det`: the box outline as a polygon (detect, segment),
    its corners as an oriented box (obb) or as 4 keypoints (pose, ``kpt_shape: [4, 3]``)."""
    import numpy as np
    import yaml
    from PIL import Image

    from .datasets import _digits, make_digits_det

    make_digits_det(root / "boxes", n_train=4, n_val=2, canvas=64, digits_per_image=(1, 2), digit_size=(16, 24))
    out: dict[str, str] = {}
    for task in ("detect", "segment", "obb", "pose"):
        folder = root / task
        for split in ("train", "val"):
            (folder / "images" / split).mkdir(parents=True)
            (folder / "labels" / split).mkdir(parents=True)
            for image in sorted((root / "boxes" / "images" / split).iterdir()):
                (folder / "images" / split / image.name).write_bytes(image.read_bytes())
                rows = []
                label = root / "boxes" / "labels" / split / f"{image.stem}.txt"
                for line in label.read_text().splitlines():
                    c, x, y, w, h = line.split()
                    cx, cy, bw, bh = (float(v) for v in (x, y, w, h))
                    corners = [
                        (cx - bw / 2, cy - bh / 2),
                        (cx + bw / 2, cy - bh / 2),
                        (cx + bw / 2, cy + bh / 2),
                        (cx - bw / 2, cy + bh / 2),
                    ]
                    if task == "pose":
                        points = " ".join(f"{a:.6f} {b:.6f} 2" for a, b in corners)
                        rows.append(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {points}")
                    else:
                        rows.append(f"{c} " + " ".join(f"{a:.6f} {b:.6f}" for a, b in corners))
                (folder / "labels" / split / label.name).write_text("\n".join(rows) + "\n")
        data: dict[str, Any] = {
            "path": str(folder),
            "train": "images/train",
            "val": "images/val",
            "names": {k: str(k) for k in range(10)},
        }
        if task == "pose":
            data.update(kpt_shape=[4, 3], flip_idx=[1, 0, 3, 2])
        (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        out[task] = str(folder / "data.yaml")
    images, labels = _digits()
    rng = np.random.default_rng(0)
    for part, per_class in (("train", 2), ("val", 1)):
        for digit in (0, 1):
            (root / "classify" / part / str(digit)).mkdir(parents=True)
            for i in rng.choice(np.flatnonzero(labels == digit), per_class, replace=False):
                img = Image.fromarray(images[i], mode="L").resize((32, 32), Image.Resampling.BILINEAR).convert("RGB")
                img.save(root / "classify" / part / str(digit) / f"{i:04d}.png")
    out["classify"] = str(root / "classify")
    return out


def _families() -> dict[str, str]:
    """``{optimizer: "sgd" | "adam"}`` for every optimizer ``BaseTrainer.build_optimizer`` offers
    (``auto`` aside), built by that method on a two-layer model."""
    from types import SimpleNamespace

    import torch.nn as nn
    from ultralytics.engine.trainer import BaseTrainer

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))

    names, _ = ultra.str_arg_values()["optimizer"]
    out = {}
    for name in sorted(n for n in names if n.lower() != "auto"):
        fake = SimpleNamespace(args=SimpleNamespace(lr0=0.01, warmup_bias_lr=0.1), data={"nc": 10})
        build: Any = BaseTrainer.build_optimizer  # called with a stand-in for the trainer: it reads args and data only
        optimizer = build(fake, Tiny(), name=name, lr=0.01, momentum=0.9, decay=0.0, iterations=10)
        out[name] = "sgd" if any("momentum" in g for g in optimizer.param_groups) else "adam"
    return out


@functools.cache
def _recorder() -> type:
    """A subclass of Ultralytics' ``IterableSimpleNamespace`` that adds the name of every public
    attribute read to its class set ``reads``. Made once, at module level, so that the checkpoint
    Ultralytics saves (which pickles ``trainer.args``) can name it."""
    from ultralytics.utils import IterableSimpleNamespace

    class Recorder(IterableSimpleNamespace):
        reads: set[str] = set()

        def __getattribute__(self, name: str) -> Any:
            if not name.startswith("_"):
                Recorder.reads.add(name)
            return super().__getattribute__(name)

    Recorder.__qualname__ = Recorder.__name__ = "_Recorder"
    globals()["_Recorder"] = Recorder
    return Recorder


def _probe(task: str, optimizer: str, data: str, project: Path) -> dict[str, Any]:
    """One 2-epoch training of ``task`` with ``optimizer``, recording what its trainer read and built."""
    from ultralytics import YOLO

    read: set[str] = _recorder().reads  # type: ignore[attr-defined]
    read.clear()
    seen: dict[str, Any] = {}

    def swap(trainer: Any) -> None:
        seen["before"] = dict(vars(trainer.args))
        trainer.args = _recorder()(**vars(trainer.args))

    def built(trainer: Any) -> None:
        groups = trainer.optimizer.param_groups
        seen["optimizer"] = type(trainer.optimizer).__name__
        seen["lr"] = [g.get("initial_lr", g["lr"]) for g in groups]
        seen["momentum"] = [g.get("momentum", (g.get("betas") or (None,))[0]) for g in groups]
        seen["after"] = dict(object.__getattribute__(trainer.args, "__dict__"))
        dataset = trainer.train_loader.dataset
        seen["mosaic"] = hasattr(dataset, "mosaic") or hasattr(dataset, "close_mosaic")
        labels = getattr(dataset, "labels", None)
        seen["segments"] = None if labels is None else any(len(lb.get("segments", [])) for lb in labels)

    model = YOLO(TASK_MODELS[task])
    model.add_callback("on_pretrain_routine_start", swap)
    model.add_callback("on_train_start", built)
    start = time.perf_counter()
    model.train(
        data=data,
        epochs=2,
        imgsz=32,
        batch=2,
        workers=0,
        device="cpu",
        plots=False,
        verbose=False,
        project=str(project),
        name=f"{task}-{optimizer}",
        exist_ok=True,
        optimizer=optimizer,
        seed=0,
        **SENTINEL,
    )
    keys = ultra.native_default_space()
    return {**seen, "read": [k for k in keys if k in read], "seconds": round(time.perf_counter() - start, 2)}


def _task_entry(sgd: dict[str, Any], auto: dict[str, Any], families: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The table entry of one task from its two probe runs, and what ``optimizer=auto`` did there.

    Raises:
        RuntimeError: the runs cannot support the table: the SGD run did not apply the given
            ``lr0``/``momentum``, or ``auto`` picked an optimizer outside the Adam family.
    """
    if families.get(auto["optimizer"]) != "adam":
        raise RuntimeError(f"optimizer=auto picked {auto['optimizer']} on the probe data, not an Adam-family optimizer")
    applied = {"lr0": sgd["lr"], "momentum": sgd["momentum"]}
    for key, values in applied.items():
        if any(v != SENTINEL[key] for v in values):
            raise RuntimeError(f"the SGD probe did not apply {key}={SENTINEL[key]} (its groups hold {values})")
    ignores = [k for k, values in (("lr0", auto["lr"]), ("momentum", auto["momentum"])) if any(v != SENTINEL[k] for v in values)]
    changed = {k for k, v in auto["after"].items() if auto["before"].get(k) != v}
    changed_sgd = {k for k, v in sgd["after"].items() if sgd["before"].get(k) != v}
    sets = {k: auto["after"][k] for k in sorted(changed - changed_sgd - {"optimizer", "lr0"})}
    inert = {}
    read = set(sgd["read"]) | set(auto["read"])
    if "close_mosaic" in read and not (sgd["mosaic"] or auto["mosaic"]):
        inert["close_mosaic"] = INERT_REASONS["close_mosaic"]
    if "copy_paste" in read and sgd["segments"] is False:
        inert["copy_paste"] = INERT_REASONS["copy_paste"]
    entry = {"read": {"sgd": sgd["read"], "adam": auto["read"]}, "inert": inert}
    return entry, {"ignores": ignores, "sets": sets}


def _derive_here(tasks: list[str], work: Path) -> dict[str, Any]:
    """Run the probes in this process (the child of :func:`derive_table`)."""
    families = _families()
    data = _tiny_data(work / "data")
    entries: dict[str, Any] = {}
    autos: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for task in tasks:
        sgd = _probe(task, "SGD", data[task], work / "runs")
        auto = _probe(task, "auto", data[task], work / "runs")
        entries[task], autos[task] = _task_entry(sgd, auto, families)
        seconds[task] = round(sgd["seconds"] + auto["seconds"], 2)
    return {"families": families, "tasks": entries, "auto": autos, "seconds": seconds}


def derive_table(tasks: list[str] | None = None, *, timeout: float = 900) -> dict[str, Any]:
    """The table of :mod:`hpo.taskspace`, derived from the installed Ultralytics by training.

    Runs the probes in a child process set up as hpo's trial workers (:mod:`hpo._worker`) and
    assembles the table: ``ultralytics`` (the version), ``families``, ``auto`` (what
    ``optimizer=auto`` ignores and sets, the same for every task probed) and ``tasks``. The
    seconds each task took are in the returned mapping's ``seconds`` (not part of the shipped file).

    Args:
        tasks: the tasks to derive (default: all of :data:`TASK_MODELS`).
        timeout: seconds the child may take.

    Raises:
        RuntimeError: the child failed (its last output lines in the message), or tasks disagree
            on what ``optimizer=auto`` does.
    """
    tasks = list(tasks or TASK_MODELS)
    with tempfile.TemporaryDirectory(prefix="hpo-derive-") as tmp:
        out = Path(tmp) / "derived.json"
        env = {**os.environ, "HPO_PLOTS": "0"}
        run = subprocess.run(
            [sys.executable, "-m", "hpo._derive", str(out), *tasks],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if run.returncode != 0 or not out.is_file():
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"deriving the per-task spaces failed (exit {run.returncode}):\n{tail}")
        derived = json.loads(out.read_text())
    autos = list(derived["auto"].values())
    if any(a != autos[0] for a in autos):
        raise RuntimeError(f"tasks disagree on what optimizer=auto does: {derived['auto']}")
    return {
        "ultralytics": ultra.version(),
        "families": derived["families"],
        "auto": autos[0],
        "tasks": derived["tasks"],
        "seconds": derived["seconds"],
    }


def dump_table(derived: dict[str, Any]) -> str:
    """The table as the YAML text of ``hpo/taskspaces.yaml`` (without the timings)."""
    import yaml

    body = {k: v for k, v in derived.items() if k != "seconds"}
    header = (
        "# Per-task default search spaces of hpo, derived from the installed Ultralytics by training\n"
        f"# (hpo/_derive.py). Generated by `{DERIVE_COMMAND}`: do not edit by hand.\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=120)


def _child(argv: list[str]) -> None:
    """``python -m hpo._derive OUT.json TASK...``: the probes, in a process set up as a trial worker."""
    from . import _worker  # noqa: F401  (offline, integrations off, local fonts, as in every trial)

    out, tasks = Path(argv[0]), argv[1:]
    result = _derive_here(tasks, out.parent)
    out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    _child(sys.argv[1:])
