"""The study's search space and what hpo does when the user gives no optimizer.

Ultralytics' default ``optimizer=auto`` picks the optimizer per training (``BaseTrainer.build_optimizer``,
8.4.x): ``AdamW(lr=round(0.002 * 5 / (4 + nc), 6), momentum=0.9)`` for at most 10,000 iterations,
else ``MuSGD(lr=0.01, momentum=0.9)``, ignoring ``lr0`` and ``momentum`` and setting
``warmup_bias_lr=0.0``. A space that tunes ``lr0`` or ``momentum`` under ``auto`` would search keys the
trainer ignores, so when no optimizer is given (or ``optimizer=auto``), hpo follows a policy, chosen
by the setting ``auto_optimizer`` (:class:`hpo.TuneSettings`, ``hpo tune --auto-optimizer``), by
default by the environment variable :data:`POLICY_ENV` (``HPO_AUTO_OPTIMIZER``):

- ``sgd`` (hpo's behaviour before issue 27 chose a default): when the space tunes ``lr0`` or ``momentum`` (the
  default space always does), train every trial with ``optimizer=SGD``, whose values Ultralytics'
  defaults ``lr0=0.01, momentum=0.937`` are. The first trial is then not Ultralytics' default training.
- ``keep`` (the default): keep ``auto``. The default space leaves out the keys ``auto`` ignores (``lr0``,
  ``momentum``) and those the optimizer it picks does not read (``warmup_momentum`` under AdamW), so
  the first trial is exactly Ultralytics' default training and the search tunes the rest. A space of
  the user's that tunes ``lr0`` or ``momentum`` cannot keep ``auto``: it is resolved as under ``resolve``.
- ``resolve``: resolve ``auto`` as Ultralytics would for the trial's length (its rule on the train
  split's images, ``batch``, ``nbs``, the study's ``epochs`` and the data's classes:
  :func:`hpo.taskspace.resolve_auto`), set that optimizer explicitly with ``warmup_bias_lr=0.0``, and
  start the search there: the first trial's ``lr0`` and ``momentum`` are ``auto``'s (the space's
  ``start``; fixed train args when the space does not tune them), so it trains exactly as
  Ultralytics' default does, and the default space keeps ``lr0`` (log-scaled under AdamW) and ``momentum``.

A user who gives an optimizer (``optimizer=AdamW``) gets exactly that under every policy, with
the task's default space for that optimizer's family. The default space of a task
(:mod:`hpo.taskspace`) leaves out keys given as fixed train args. Each step hpo takes is one
notice line (printed by the CLI, kept in ``TuneConfig.notices``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import taskspace, ultra
from .data import ResolvedData, _class_count, _walk_images
from .errors import ConfigError
from .space import Kind, SearchSpace

__all__ = ["POLICY_ENV", "OptimizerPolicy", "StudySpace", "optimizer_policy", "study_space", "train_images", "class_count"]

#: The environment variable that selects the policy.
POLICY_ENV = "HPO_AUTO_OPTIMIZER"


class OptimizerPolicy(str, enum.Enum):
    """What hpo does when no optimizer is given (module docstring)."""

    SGD = "sgd"
    KEEP = "keep"
    RESOLVE = "resolve"


#: The policy when :data:`POLICY_ENV` is unset, chosen on development seeds by the rule committed before the run
#: (benchmarks/protocol-dev-policy.yaml; the numbers in benchmarks/results/dev-policy/decision.md).
DEFAULT_POLICY = OptimizerPolicy.KEEP

_POLICY_HELP = (
    "sgd (train with optimizer=SGD when lr0 or momentum are searched), keep (keep Ultralytics' optimizer=auto, "
    "the default space leaving out what it ignores) or resolve (set the optimizer auto would pick, starting at its lr0 and momentum)"
)


def optimizer_policy(value: str | OptimizerPolicy | None = None) -> OptimizerPolicy:
    """The policy ``value`` names (the setting ``auto_optimizer``), else :data:`POLICY_ENV`'s, else
    :data:`DEFAULT_POLICY`.

    Raises:
        ConfigError: a value that names no policy (naming ``auto_optimizer`` or :data:`POLICY_ENV`,
            where the value came from).
    """
    if isinstance(value, OptimizerPolicy):
        return value
    field = "auto_optimizer" if value is not None else POLICY_ENV
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"auto_optimizer: {value!r} is not a policy; use {_POLICY_HELP}")
    text = (value if value is not None else os.environ.get(POLICY_ENV, "")).strip().lower()
    if not text:
        return DEFAULT_POLICY
    try:
        return OptimizerPolicy(text)
    except ValueError:
        raise ConfigError(f"{field}: '{text}' is not a policy; use {_POLICY_HELP}") from None


@dataclass(frozen=True)
class StudySpace:
    """The space and train args a study runs with, after the optimizer policy.

    Attributes:
        space: the search space.
        train_args: the fixed train args, with what the policy set (``optimizer``, ``lr0``, ...).
        notices: one line per step hpo took on the user's behalf.
        policy: the policy followed.
        auto: what ``optimizer=auto`` picks for the trials, where the policy resolved it; else ``None``.
    """

    space: SearchSpace
    train_args: dict[str, Any]
    notices: tuple[str, ...] = ()
    policy: OptimizerPolicy = DEFAULT_POLICY
    auto: taskspace.AutoOptimizer | None = None


def _fraction_count(n: int, fraction: Any) -> int:
    """Training images Ultralytics keeps of ``n`` for its ``fraction`` train arg (``get_split_fraction``
    and ``BaseDataset.get_img_files``, 8.4.x: a ratio, an image count, or a ``[train, val, test]`` list)."""
    if isinstance(fraction, list):
        fraction = fraction[0] if fraction else 1.0
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or fraction in (0, 1):
        return n
    count = fraction if isinstance(fraction, int) else max(1, round(n * fraction))
    return min(int(count), n)


def train_images(data: ResolvedData, fraction: Any = 1.0) -> int:
    """Images in the train split, as Ultralytics' dataset counts them before checking each (so
    corrupt ones included), after ``fraction``: image files in the class folders of a
    classification ``train/``, or in a data YAML's ``train`` entries (folders, ``.txt`` lists)."""
    if data.kind == "folder":
        root = Path(data.source) / "train"
        n = sum(len(_walk_images(d)) for d in sorted(root.iterdir()) if d.is_dir())
    else:
        entry = data.content["train"]
        n = sum(len(_walk_images(Path(e))) for e in (entry if isinstance(entry, list) else [entry]))
    return _fraction_count(n, fraction)


def class_count(data: ResolvedData, *, single_cls: bool = False) -> int:
    """``nc`` as the trainer gets it: the class folders of a classification ``train/``
    (``check_cls_dataset``), the data YAML's ``names``/``nc`` (``check_det_dataset``), 1 with ``single_cls``."""
    if single_cls:
        return 1
    if data.kind == "folder":
        return sum(1 for d in (Path(data.source) / "train").iterdir() if d.is_dir())
    return _class_count(data.content, Path(data.source))


def _whole(value: Any, default: int) -> tuple[int, bool]:
    """``(value, True)`` for a whole number >= 1, else ``(default, False)``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 and float(value).is_integer():
        return int(value), True
    return default, False


def _resolve(
    task: str, data: ResolvedData, train_args: dict[str, Any], epochs: int, space: SearchSpace | None
) -> tuple[taskspace.AutoOptimizer, str]:
    """What ``auto`` picks for this study's trials, and a note on an assumption made (or ``""``)."""
    defaults = ultra.train_defaults()
    batch, known = _whole(train_args.get("batch", defaults["batch"]), 16)
    note = ""
    if space is not None and "batch" in space:
        start = space.defaults()["batch"]
        batch, known = _whole(start, batch)
        note = f" (batch is searched: counted at its start {start})"
    elif not known:
        batch, note = int(defaults["nbs"]), f" (batch={train_args.get('batch')} is chosen at run time: counted as nbs)"
    nbs, _ = _whole(train_args.get("nbs", defaults["nbs"]), int(defaults["nbs"]))
    auto = taskspace.resolve_auto(
        images=train_images(data, train_args.get("fraction", defaults["fraction"])),
        nc=class_count(data, single_cls=train_args.get("single_cls") is True),
        batch=batch,
        nbs=nbs,
        epochs=epochs,
    )
    return auto, note


def _why(auto: taskspace.AutoOptimizer, note: str) -> str:
    """``"AdamW(lr0=0.000714, momentum=0.9) for 66 iterations <= 10000 (1402 images, batch 16, nbs 64, 3 epochs, 10 classes)"``."""
    side = ">" if auto.iterations > taskspace.AUTO_ITERATIONS else "<="
    return (
        f"{auto.describe()} for {auto.iterations} iterations {side} {taskspace.AUTO_ITERATIONS} "
        f"({auto.images} train images, batch {auto.batch}, nbs {auto.nbs}, {auto.epochs} epoch{'s' if auto.epochs != 1 else ''}, {auto.nc} classes){note}"
    )


def study_space(
    source: Any,
    *,
    task: str,
    data: ResolvedData,
    train_args: dict[str, Any],
    epochs: int,
    policy: str | OptimizerPolicy | None = None,
) -> StudySpace:
    """The search space and fixed train args of a study, the optimizer policy applied.

    Args:
        source: the user's space (any form :meth:`hpo.SearchSpace.parse` accepts); ``None`` or
            ``"default"``: the task's default space (:mod:`hpo.taskspace`); ``"ultralytics"``: the
            26-key tuner space of ``model.tune``.
        task: the model's task.
        data: the resolved dataset (counted only where ``auto`` is resolved).
        train_args: the user's fixed train args (not changed).
        epochs: epochs per trial.
        policy: the policy (default: :func:`optimizer_policy` of the environment).

    Raises:
        ConfigError: a bad policy name; a space that does not parse; a default space left empty
            by the fixed train args.
    """
    policy = optimizer_policy(policy)
    args = dict(train_args)
    is_default = source is None or source == "default"
    optimizer = args.get("optimizer")
    given = optimizer is not None and str(optimizer).lower() != "auto"
    notices: list[str] = []

    def default_space(family_optimizer: str, drop: tuple[str, ...] = ()) -> SearchSpace:
        fixed = tuple(k for k in taskspace.task_spec(task, family_optimizer) if k in args)
        spec = taskspace.task_spec(task, family_optimizer, drop=(*drop, *fixed))
        if not spec:
            raise ConfigError(
                f"space: the default space of task {task} is empty once the fixed train args ({', '.join(fixed)}) are left out; "
                "give a space with --space"
            )
        return SearchSpace.parse(spec)

    if given:
        known = str(optimizer).lower() in {k.lower() for k in taskspace.table()["families"]}
        # an optimizer the table does not know is refused later (hpo.validate); if a newer Ultralytics
        # offers it, the SGD family's keys are a superset of the Adam family's: no key is lost
        space = default_space(str(optimizer) if known else "SGD") if is_default else SearchSpace.parse(source)
        return StudySpace(space, args, tuple(notices), policy)

    user_space = None if is_default else SearchSpace.parse(source)
    if user_space is not None and "optimizer" in user_space:  # the space chooses the optimizer of each trial
        return StudySpace(user_space, args, tuple(notices), policy)
    tuned = [k for k in taskspace.auto_ignores() if user_space is not None and k in user_space]
    if policy is OptimizerPolicy.SGD:
        space = default_space("SGD") if user_space is None else user_space
        tuned = [k for k in ("lr0", "momentum") if k in space]
        if tuned:
            args["optimizer"] = "SGD"
            notices.append(
                f"optimizer: none given, and optimizer=auto ignores {' and '.join(tuned)}, which the space tunes: hpo trains "
                "with optimizer=SGD (Ultralytics' defaults lr0=0.01, momentum=0.937 are SGD values; auto_optimizer=sgd); "
                f"pass optimizer=... to choose, or auto_optimizer=keep or resolve (--auto-optimizer, {POLICY_ENV})"
            )
        return StudySpace(space, args, tuple(notices), policy)

    if policy is OptimizerPolicy.KEEP and user_space is not None and not tuned:
        return StudySpace(user_space, args, tuple(notices), policy)
    auto, note = _resolve(task, data, args, epochs, user_space)
    if policy is OptimizerPolicy.KEEP and user_space is None:
        ignored = taskspace.auto_ignores()
        unread = tuple(k for k in taskspace.task_spec(task, "SGD") if k not in taskspace.task_spec(task, auto.optimizer))
        space = default_space(auto.optimizer, drop=ignored)
        notices.append(
            f"optimizer: none given: hpo keeps Ultralytics' optimizer=auto (auto_optimizer=keep), which picks {_why(auto, note)}, "
            f"so the first trial is Ultralytics' default training; the default space leaves out {', '.join(ignored)} (auto "
            f"ignores them){' and ' + ', '.join(unread) + f' ({auto.optimizer} does not read it)' if unread else ''}"
        )
        return StudySpace(space, args, tuple(notices), policy, auto)

    # resolve (or keep with a user space that tunes what auto ignores)
    space = default_space(auto.optimizer) if user_space is None else user_space
    start = {"lr0": auto.lr0, "momentum": auto.momentum}
    params = dict(space.items())
    for key, value in start.items():
        p = params.get(key)
        if p is not None and p.start is None and p.kind is not Kind.CHOICE:
            params[key] = dataclasses.replace(p, start=p.clip(value))
    space = SearchSpace(params)
    set_args = {"optimizer": auto.optimizer}
    for key, value in {**start, **taskspace.auto_sets()}.items():
        if key not in space and key not in args:
            set_args[key] = value
    args.update(set_args)
    why = (
        f"auto_optimizer=keep cannot keep optimizer=auto, which ignores {' and '.join(tuned)}, tuned by the space: "
        if policy is OptimizerPolicy.KEEP
        else "auto_optimizer=resolve: "
    )
    started = [f"{k}={space[k].start:g}" for k in start if k in space and space[k].start is not None]
    differ = [
        f"{k} clipped to {space[k].start:g} by the space"
        for k in start
        if k in space and space[k].start is not None and space[k].start != start[k]
    ]
    differ += [f"{k}={args[k]} given" for k in (*start, *taskspace.auto_sets()) if k in train_args]
    notices.append(
        f"optimizer: none given; {why}hpo sets what Ultralytics' optimizer=auto picks for these trials, {_why(auto, note)}: "
        f"{', '.join(f'{k}={v}' for k, v in set_args.items())}"
        + (f", and the search starts at {', '.join(started)}" if started else "")
        + (
            f"; the first trial is not quite Ultralytics' default training: {', '.join(differ)}"
            if differ
            else ", so the first trial trains as Ultralytics' default does"
        )
    )
    return StudySpace(space, args, tuple(notices), policy, auto)
