"""The default search space of each task: the keys of Ultralytics' tuner space its trainer reads.

Ultralytics' ``model.tune`` searches one 26-key space for every task (``Tuner.__init__``), among
them keys a classification trainer never reads (``box``, ``cls``, ``dfl``, ``mosaic``, ``mixup``,
``copy_paste``, ``translate``, ``shear``, ``perspective``, ...). hpo's default space of a task holds
only the tuner keys that the task's trainer reads, with the tuner's own bounds and gains.

Which keys a trainer reads is not a hand list: it is derived from the installed Ultralytics by
a real, short training per task and optimizer on tiny data (:mod:`hpo._derive`, ``python -m
hpo.taskspace derive``), and shipped as ``hpo/taskspaces.yaml``. ``tests/test_taskspace.py``
derives it again from the installed Ultralytics and fails, naming this command, when it changed.
The table holds, per task:

- ``read``: per optimizer family, the tuner keys the trainer read (attribute reads of
  ``trainer.args`` recorded during a 2-epoch training). The families differ by the optimizer's
  parameter groups (:func:`optimizer_family`): ``sgd`` (``SGD``, ``MuSGD``, ``RMSprop``: the
  groups carry ``momentum``, so the warmup reads ``warmup_momentum``, ``BaseTrainer._do_train``)
  and ``adam`` (``Adam``, ``AdamW``, ...: ``betas``, no ``warmup_momentum``);
- ``inert``: keys the trainer reads that cannot act on the task, with the reason checked in the
  same training: ``close_mosaic`` where the training dataset has no mosaic to close
  (``BaseTrainer._close_dataloader_mosaic`` acts only on a dataset with ``mosaic``/``close_mosaic``:
  classification), ``copy_paste`` where the labels carry no segments (``CopyPaste`` returns labels
  without segments unchanged; pose labels never carry them).

and, for every task, what Ultralytics' ``optimizer=auto`` does (``BaseTrainer.build_optimizer``):
the keys it ignores (``lr0``, ``momentum``: found by training with values that the optimizer's
parameter groups then did not hold) and the train args it overwrites (``warmup_bias_lr`` to 0.0).

Example:
    >>> task_keys("classify", "sgd")[:4]
    ('lr0', 'lrf', 'momentum', 'weight_decay')
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import ultra
from ._derive import DERIVE_COMMAND
from .errors import ConfigError

__all__ = [
    "TABLE",
    "FAMILIES",
    "AutoOptimizer",
    "table",
    "optimizer_family",
    "task_keys",
    "task_spec",
    "auto_ignores",
    "auto_sets",
    "resolve_auto",
    "LOG_KEYS",
]

#: The shipped table (``python -m hpo.taskspace derive`` writes it).
TABLE = Path(__file__).with_name("taskspaces.yaml")
#: Optimizer families of the table.
FAMILIES = ("sgd", "adam")
#: Keys the default space searches on a log scale, per family: ``lr0`` for Adam-family optimizers,
#: whose useful learning rates span 1e-4 to 3e-3 (Ultralytics' ``cfg/default.yaml``: "SGD=1E-2, Adam=1E-3";
#: ``optimizer=auto`` picks ``0.002 * 5 / (4 + nc)``, 7.1e-4 for 10 classes) while a linear draw
#: from the tuner's ``(1e-5, 1e-2)`` lands in 1e-4..3e-3 in 29 % of the draws (log-uniform: 49 %).
LOG_KEYS = {"sgd": frozenset(), "adam": frozenset({"lr0"})}


@functools.cache
def table() -> dict[str, Any]:
    """The shipped table (:data:`TABLE`) as a mapping.

    Raises:
        ConfigError: the file is missing or unreadable (a broken install).
    """
    try:
        with open(TABLE, encoding="utf-8") as f:
            return dict(yaml.safe_load(f))
    except (OSError, yaml.YAMLError, TypeError, ValueError) as e:
        raise ConfigError(
            f"space: cannot read hpo's table of per-task spaces '{TABLE}' ({e}); reinstall hpo or run {DERIVE_COMMAND}"
        ) from None


def optimizer_family(optimizer: str) -> str:
    """``"sgd"`` or ``"adam"``: the family of an Ultralytics optimizer name (any case), from the table's
    ``families`` (derived by building each optimizer: ``sgd`` where its parameter groups carry ``momentum``).

    Raises:
        ConfigError: ``auto`` (resolve it first: :func:`resolve_auto`) or a name the table does not know.
    """
    if str(optimizer).lower() == "auto":
        raise ConfigError(
            "optimizer: 'auto' picks its optimizer per training (AdamW or MuSGD); resolve it first (hpo.taskspace.resolve_auto)"
        )
    families = {k.lower(): v for k, v in table()["families"].items()}
    family = families.get(str(optimizer).lower())
    if family is None:
        known = ", ".join(sorted(table()["families"], key=str.lower))
        raise ConfigError(f"optimizer: '{optimizer}' has no family in hpo's table of per-task spaces (known: {known})")
    return str(family)


def _task(task: str) -> dict[str, Any]:
    tasks = table()["tasks"]
    if task not in tasks:
        raise ConfigError(f"task: '{task}' has no default space; tasks: {', '.join(tasks)}")
    return dict(tasks[task])


def task_keys(task: str, family: str) -> tuple[str, ...]:
    """The keys of the default space of ``task`` with an optimizer of ``family``: the tuner keys the
    trainer read, less those that cannot act on the task (``inert``), in the tuner's order, and only
    those the installed Ultralytics' tuner space still has.

    Raises:
        ConfigError: an unknown task or family.
    """
    if family not in FAMILIES:
        raise ConfigError(f"family: '{family}' is not one of {', '.join(FAMILIES)}")
    entry = _task(task)
    read, inert = set(entry["read"][family]), set(entry.get("inert") or {})
    return tuple(k for k in ultra.native_default_space() if k in read and k not in inert)


def task_spec(task: str, optimizer: str | None = None, *, drop: tuple[str, ...] | frozenset[str] = ()) -> dict[str, Any]:
    """The default space of ``task`` as a space mapping (``SearchSpace.parse`` builds it): the tuner's
    ``(low, high[, gain])`` of :func:`task_keys`, ``lr0`` log-scaled for Adam-family optimizers
    (:data:`LOG_KEYS`), without the keys in ``drop``.

    Args:
        task: an Ultralytics task.
        optimizer: the optimizer the trials train with (default ``SGD``, Ultralytics' values
            ``lr0=0.01, momentum=0.937`` being SGD values); not ``auto``.
        drop: keys to leave out (fixed train args, keys ``optimizer=auto`` ignores).

    Raises:
        ConfigError: an unknown task or optimizer.
    """
    family = optimizer_family(optimizer or "SGD")
    native = ultra.native_default_space()
    out: dict[str, Any] = {}
    for key in task_keys(task, family):
        if key in drop:
            continue
        bounds = native[key]
        if key in LOG_KEYS[family]:
            gain = {"gain": bounds[2]} if len(bounds) == 3 else {}
            out[key] = {"type": "logfloat", "low": bounds[0], "high": bounds[1], **gain}
        else:
            out[key] = tuple(bounds)
    return out


def auto_ignores() -> tuple[str, ...]:
    """Tuner keys ``optimizer=auto`` ignores (``lr0``, ``momentum`` in Ultralytics 8.4.x): found in the
    derivation by training with values that the optimizer's parameter groups then did not hold."""
    return tuple(table()["auto"]["ignores"])


def auto_sets() -> dict[str, Any]:
    """Train args ``optimizer=auto`` overwrites with a constant besides ``optimizer`` and ``lr0``
    (``{"warmup_bias_lr": 0.0}`` in 8.4.x: ``BaseTrainer.build_optimizer``), read in the derivation
    from ``trainer.args`` after the optimizer was built."""
    return dict(table()["auto"]["sets"])


@dataclass(frozen=True)
class AutoOptimizer:
    """What Ultralytics' ``optimizer=auto`` picks for a training (:func:`resolve_auto`).

    Attributes:
        optimizer: ``"AdamW"`` or ``"MuSGD"``.
        lr0: its learning rate.
        momentum: its momentum (AdamW's ``beta1``).
        iterations: the optimizer steps the rule counts, ``ceil(images / max(batch, nbs)) * epochs``.
        images, nc, batch, nbs, epochs: the inputs.
    """

    optimizer: str
    lr0: float
    momentum: float
    iterations: int
    images: int
    nc: int
    batch: int
    nbs: int
    epochs: int

    def describe(self) -> str:
        """``"AdamW(lr0=0.000714, momentum=0.9)"``."""
        return f"{self.optimizer}(lr0={self.lr0:g}, momentum={self.momentum:g})"


#: Above this many iterations ``optimizer=auto`` picks MuSGD, else AdamW (``BaseTrainer.build_optimizer``, 8.4.x).
AUTO_ITERATIONS = 10000


def resolve_auto(*, images: int, nc: int, batch: int, nbs: int, epochs: int) -> AutoOptimizer:
    """The optimizer Ultralytics' ``optimizer=auto`` builds for a training, computed as it does.

    Source (Ultralytics 8.4.x, ``ultralytics/engine/trainer.py``): ``BaseTrainer._build_train_pipeline``
    counts ``iterations = ceil(len(train dataset) / max(batch, nbs)) * epochs``;
    ``BaseTrainer.build_optimizer`` picks ``MuSGD(lr=0.01, momentum=0.9)`` above 10,000 iterations,
    else ``AdamW(lr=round(0.002 * 5 / (4 + nc), 6), momentum=0.9)``. ``tests/test_taskspace.py``
    checks this against ``build_optimizer`` itself.

    Args:
        images: training images (after ``fraction``).
        nc: classes (1 with ``single_cls``).
        batch: batch size (>= 1).
        nbs: nominal batch size (Ultralytics' ``nbs``, default 64).
        epochs: epochs of the training.
    """
    iterations = math.ceil(images / max(batch, nbs)) * epochs
    if iterations > AUTO_ITERATIONS:
        name, lr, momentum = "MuSGD", 0.01, 0.9
    else:
        name, lr, momentum = "AdamW", round(0.002 * 5 / (4 + nc), 6), 0.9
    return AutoOptimizer(name, lr, momentum, iterations, images, nc, batch, nbs, epochs)


def _show() -> str:
    """The table as text, one line per task and family."""
    t = table()
    lines = [f"per-task default spaces, derived from Ultralytics {t['ultralytics']} ({DERIVE_COMMAND}):"]
    for task in t["tasks"]:
        for family in FAMILIES:
            keys = task_keys(task, family)
            lines.append(f"{task:8} {family:4} {len(keys):2} keys: {', '.join(keys)}")
        for key, why in (t["tasks"][task].get("inert") or {}).items():
            lines.append(f"{task:8} inert: {key}: {why}")
    lines.append(f"optimizer=auto ignores {', '.join(auto_ignores())} and sets {auto_sets()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m hpo.taskspace derive [--out FILE]`` writes the table from the installed Ultralytics
    (about a minute on a 2-core CPU); ``check`` derives it and compares with the shipped one (exit 1
    on a difference); ``show`` prints it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hpo.taskspace", description=main.__doc__)
    parser.add_argument("command", choices=["derive", "check", "show"])
    parser.add_argument("--out", default=str(TABLE), help="where derive writes the table (default: the shipped file)")
    args = parser.parse_args(argv)
    if args.command == "show":
        print(_show())
        return 0
    from ._derive import derive_table, dump_table

    derived = derive_table()
    if args.command == "check":
        same = all(derived[k] == table()[k] for k in ("families", "auto", "tasks"))
        print("the shipped table matches the installed Ultralytics" if same else f"the table differs; run {DERIVE_COMMAND}")
        return 0 if same else 1
    Path(args.out).write_text(dump_table(derived), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
