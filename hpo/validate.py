"""The validation of a study's settings, done before anything runs or is written.

:func:`build_config` checks every setting of a :class:`hpo.TuneSettings` (backend, model, data,
space, counts, metric, train args, output...) and makes the :class:`hpo.TuneConfig` a study runs
with, or raises a one-line :class:`~hpo.errors.ConfigError` naming the field and the fix. It sits
above the plugin registry (it looks the backend up) and below the study loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import ultra
from .backend import Backend, Controller
from .config import TuneConfig
from .data import ResolvedData, cache_warnings, resolve_data
from .errors import ConfigError, HpoWarning, closest
from .optimizer_policy import study_space
from .plugins import backends, get_backend
from .settings import TuneSettings, check_keywords
from .space import SearchSpace
from .values import (
    _RESERVED_FIX,
    RESERVED_TRAIN_ARGS,
    _count,
    _trainer,
    format_duration,
    gpu_indices,
    parse_duration,
    parse_train_args,
    usable_cpus,
)
from .weights import parse_keep_weights

__all__ = [
    "build_config",
    "check_first",
    "parse_train_args",
    "parse_duration",
    "format_duration",
    "gpu_indices",
    "usable_cpus",
    "RESERVED_TRAIN_ARGS",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: ASCII only, no trailing newline


def _check_train_arg_keys(train_args: dict[str, Any], space: SearchSpace) -> None:
    """Key checks that need no Ultralytics import (valid keys are read from its source)."""
    valid = ultra.train_defaults()
    for key in train_args:
        if key != key.strip():
            raise ConfigError(f"train args: '{key}' has stray whitespace; write '{key.strip()}'")
        if key in RESERVED_TRAIN_ARGS:
            fix = _RESERVED_FIX.get(key, f"use {RESERVED_TRAIN_ARGS[key]} instead")
            raise ConfigError(f"train args: '{key}' is set by hpo; {fix}")
        if key not in valid:
            raise ConfigError(f"train args: '{key}' is not an Ultralytics train argument{closest(key, valid, ultra.ARG_ALIASES)}")
        if key in space:
            raise ConfigError(
                f"train args: '{key}' is also in the search space; a fixed value would override the sampled one: "
                "remove it from the train args or from the space"
            )


def _check_train_arg_types(train_args: dict[str, Any]) -> None:
    """The type checks of Ultralytics' ``check_cfg`` that need no import of it (its key sets are read
    from its source, :mod:`hpo.ultra`), and hpo's ``imgsz`` rule, made first: importing Ultralytics
    for ``check_cfg`` takes seconds (torch), and bad input is refused before that (``imgsz=abc``
    took 5.8 s to refuse, issue 30). :func:`_check_train_arg_values` still runs ``check_cfg`` itself
    later (ranges, the keys of its own rules)."""
    for key, value in train_args.items():
        if value is None or key in RESERVED_TRAIN_ARGS:  # a reserved key gets its own line (_check_train_arg_keys)
            continue
        kind = (
            "int"
            if key in ultra.int_keys()
            else "float"
            if key in ultra.float_keys()
            else "bool"
            if key in ultra.bool_keys()
            else None
        )
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"train args: {key}={value!r} must be a whole number (e.g. {key}=3)")
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"train args: {key}={value!r} must be a number (e.g. {key}=0.5)")
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"train args: {key}={value!r} must be True or False ({key}=True)")
    imgsz = train_args.get("imgsz")
    sizes = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz]
    if "imgsz" in train_args and not (
        1 <= len(sizes) <= 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in sizes)
    ):
        raise ConfigError(f"train args: imgsz={imgsz!r} must be a whole number of pixels > 0 (imgsz=640) or [h, w]")


def _check_train_arg_values(train_args: dict[str, Any], space: SearchSpace) -> tuple[dict[str, Any], list[str]]:
    """Ultralytics' own type/range checks (``check_cfg``; imports Ultralytics)."""
    notices: list[str] = []
    args = dict(train_args)
    try:
        from ultralytics.cfg import check_cfg

        check_cfg(args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train args: {str(e).splitlines()[0]}") from None
    for key, value in args.items():
        problem = ultra.str_arg_problem(key, value)
        if problem:
            raise ConfigError(f"train args: {key}={value} {problem}")
    _check_space_values(space)
    imgsz = args.get("imgsz")
    sizes = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz]
    if "imgsz" in args and not (
        1 <= len(sizes) <= 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in sizes)
    ):
        raise ConfigError(f"train args: imgsz={imgsz!r} must be a whole number of pixels > 0 (imgsz=640) or [h, w]")
    # the optimizer when none is given (optimizer=auto ignores lr0 and momentum): hpo.optimizer_policy, in build_config
    return args, notices


def _check_space_values(space: SearchSpace) -> None:
    """Every choice and bound of the space through Ultralytics' own ``check_cfg`` (imports it), for
    the train args :mod:`hpo.space` has no rule of its own for (``amp``, ``compile``, ``quantize``...)."""
    from ultralytics.cfg import check_cfg

    for key, p in space.items():
        values = [("choice", c) for c in p.choices] if p.choices else [("low", p.low), ("high", p.high)]
        for label, value in values:
            try:
                check_cfg({key: value})
            except (TypeError, ValueError) as e:
                raise ConfigError(
                    f"space: '{key}' {label} {value!r} is refused by Ultralytics {ultra.version()} "
                    f"({str(e).splitlines()[0]}); remove it or give a value it accepts"
                ) from None


def _check_output(study_dir: Path) -> None:
    probe = study_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output: '{probe}' is not a writable folder; choose a writable --output")


#: Variables a distributed launcher (torchrun, a PyTorchJob, MPI via torch) sets in every process.
DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _check_not_distributed() -> None:
    """hpo starts its trials itself; under torchrun each trial would believe it is one DDP rank."""
    found = [f"{k}={os.environ[k]}" for k in DISTRIBUTED_ENV if k in os.environ]
    if found:
        raise ConfigError(
            f"environment: {' '.join(found)} is set by a distributed launcher (torchrun, a PyTorchJob); hpo runs "
            f"its trials itself: start it as one plain process (unset {' '.join(DISTRIBUTED_ENV)}), once per node, "
            "with --concurrent-trials N to run N trials at once on N GPUs"
        )


def _check_bare_options(backend: str, backend_cls: type[Backend | Controller], options: dict[str, Any]) -> None:
    """A ``True`` for an option that is not a bool is a bare ``--flag`` missing its value
    (pydantic's lax mode would turn it into 1 or 1.0)."""
    from pydantic import TypeAdapter

    for key, value in options.items():
        f = backend_cls.Options.model_fields.get(key)
        if f is None or f.annotation is None or not isinstance(value, bool):
            continue
        try:
            TypeAdapter(f.annotation).validate_python(value, strict=True)
        except ValidationError:
            flag = "--" + key.replace("_", "-")
            kind = getattr(f.annotation, "__name__", f.annotation)
            if value is False:
                raise ConfigError(
                    f"{backend} option {flag}: false is not a {kind} (default {f.default}); write {flag} VALUE"
                ) from None
            raise ConfigError(
                f"{backend} option {flag} needs a value ({kind}, default {f.default}): write {flag} VALUE; "
                "only true/false options may be given bare"
            ) from None


def _concurrency_warning(workers: int, device: Any) -> str | None:
    """``--concurrent-trials`` beyond the machine: more trials at once than the GPUs they train on
    (``device=0,1``, or GPU 0 when ``device`` is unset and CUDA is there, as Ultralytics picks),
    or, training on the CPU, than :func:`usable_cpus`."""
    if workers <= 1:
        return None
    gpus = gpu_indices(device)
    if not gpus and device in (None, ""):
        import torch

        gpus = [0] if torch.cuda.is_available() else []
    if gpus:
        if workers <= len(gpus):
            return None
        shown = ",".join(map(str, gpus))
        return (
            f"concurrent_trials: {workers} trials at once on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} "
            f"(device={shown}) put up to {math.ceil(workers / len(gpus))} on each GPU, sharing its memory and time; "
            f"use --concurrent-trials {len(gpus)} (one trial per GPU) unless a trial needs only part of one"
        )
    cpus = usable_cpus()
    if workers <= cpus:
        return None
    return (
        f"concurrent_trials: {workers} trials at once on the CPU exceed the {cpus} CPUs this process may use: they "
        f"compete for them (each trial slower, each with its own model and data in memory); use --concurrent-trials {cpus} or fewer"
    )


def _risk_warnings(data: ResolvedData, train_args: dict[str, Any], workers: int = 1) -> list[str]:
    """Valid but risky input: a dataset whose label cache cannot be written, ``val=False``, more
    concurrent trials than GPUs or CPUs (:func:`_concurrency_warning`)."""
    out = cache_warnings(data)
    busy = _concurrency_warning(workers, train_args.get("device"))
    if busy:
        out.append(busy)
    if train_args.get("val") is False:
        out.append(
            "train args: val=False validates only after the last epoch, so trials record no per-epoch objective and "
            "a pruner or scheduler (optuna --pruner, ray --scheduler) has nothing to compare; drop val=False to prune"
        )
    return out


def check_first(settings: TuneSettings) -> int | None:
    """The checks :class:`hpo.Tuner` makes before anything else (before it fetches official
    weights): ``allow_changes`` needs ``resume``; ``keep_weights`` is a valid policy.

    Returns:
        ``keep_weights`` as a count (:func:`hpo.weights.parse_keep_weights`: ``None`` keeps all).

    Raises:
        ConfigError: naming the setting and the fix.
    """
    if settings.allow_changes and not settings.resume:
        raise ConfigError(
            "allow_changes: --allow-changes applies to --resume only (a new study has nothing to change, and a "
            "joined process runs with the running study's settings); add --resume or drop --allow-changes"
        )
    return parse_keep_weights(settings.keep_weights)


def build_config(
    settings: TuneSettings | None = None,
    /,
    *,
    warm_up: Callable[[type[Backend | Controller], str], None] | None = None,
    **fields: Any,
) -> TuneConfig:
    """Validate every setting and return the :class:`TuneConfig` a study runs with. Writes nothing.

    Args:
        settings: the settings as given (:class:`hpo.TuneSettings`); or give its fields as
            keywords (``build_config(model=..., data=...)``), which also change a given ``settings``.
        warm_up: called with the backend class once every check that needs no Ultralytics
            import has passed, before the ones that import it (``check_cfg``, the task's metric
            names: ~1.5 s on a 2-core CPU). The Tuner starts the trial workers' forkserver there,
            so that its own imports overlap the driver's.

    Valid but risky input (a dataset whose label cache cannot be written, ``val=False``, more
    concurrent trials than GPUs or CPUs) is issued as :class:`~hpo.errors.HpoWarning`
    (``warnings.warn``) and kept in ``TuneConfig.warnings``.

    Raises:
        ConfigError: the first problem found, naming the field, the value and the fix; among
            them a distributed launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
            a non-bool backend option given without a value, a study name that is not a folder
            name, a fixed text train arg or a space value Ultralytics refuses (its ``check_cfg``,
            :func:`hpo.ultra.str_arg_problem`), and every check of :func:`check_first`,
            :func:`hpo.data.resolve_data`, :meth:`hpo.SearchSpace.parse` and the backend's ``check``.
        TypeError: a keyword that is no setting (naming the closest one).
    """
    if settings is None:
        check_keywords(fields, "build_config()")
        settings = TuneSettings(**fields)
    elif fields:
        settings = settings.replace(**fields)
    keep = check_first(settings)
    s = settings
    backend, model, data, space, metric, train_args = s.backend, s.model, s.data, s.space, s.metric, s.train_args
    iterations, epochs, time_budget, trial_timeout, workers = (
        s.iterations,
        s.epochs,
        s.time_budget,
        s.trial_timeout,
        s.concurrent_trials,
    )
    output, name, resume, join, seed = s.output, s.name, s.resume, s.join, s.seed
    backend_options, trainer, trainer_options = s.backend_options, s.trainer, s.trainer_options
    _check_not_distributed()
    _check_train_arg_types(dict(train_args or {}))  # before anything slow: no Ultralytics import
    backend_cls = get_backend(backend)
    if join and not backend_cls.supports_join:
        joinable = [n for n, c in backends().items() if c.supports_join]
        raise ConfigError(
            f"join: backend '{backend}' cannot share a study between processes; "
            f"use a backend that can ({', '.join(joinable) or 'none installed'}) or drop --join"
        )
    if join and resume:
        raise ConfigError(
            "join: --join and --resume exclude each other; --resume continues a study in its one writer, --join adds a process to a running one"
        )
    if time_budget is not None:
        time_budget = parse_duration("time_budget", time_budget)
    if iterations is None and time_budget is None:
        iterations = 10
    iterations = None if iterations is None else _count("iterations", iterations)
    epochs = _count("epochs", epochs)
    final_epochs = None if s.final_epochs in (None, 0, "0", "") else _count("final_epochs", s.final_epochs)
    final_seeds = _count("final_seeds", s.final_seeds)
    final_top = _count("final_top", s.final_top)
    workers = _count("concurrent_trials", workers)  # the user-facing name (was --workers)
    if trial_timeout is not None:
        try:
            trial_timeout = float(trial_timeout)
        except (TypeError, ValueError):
            raise ConfigError(f"trial_timeout: {trial_timeout!r} must be a number of seconds > 0") from None
        if not math.isfinite(trial_timeout) or trial_timeout <= 0:
            raise ConfigError(f"trial_timeout: {trial_timeout!r} must be a number of seconds > 0")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed: {seed!r} must be an integer >= 0")
    model, task = ultra.resolve_model(str(model))
    if train_args and "task" in train_args:
        raise ConfigError("train args: 'task' is set by hpo from the model name (-cls, -seg, -pose, -obb)")
    resolved = resolve_data(os.fspath(data), task, single_cls=(train_args or {}).get("single_cls") is True)
    chosen = study_space(
        space, task=task, data=resolved, train_args=dict(train_args or {}), epochs=epochs, policy=s.auto_optimizer
    )
    space, train_args = chosen.space, chosen.train_args  # the task's default space; the optimizer policy's args
    _check_train_arg_keys(dict(train_args or {}), space)
    derived = not name
    name = name or f"{Path(resolved.source).stem if resolved.kind == 'yaml' else Path(resolved.source).name}-{backend}"
    if not _NAME_RE.fullmatch(name):
        rule = "1-128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit (it is a folder name)"
        if derived:
            raise ConfigError(
                f"name: '{name}' was derived from the data '{data}' (<data>-<backend>) and is not a study name: "
                f"a name is {rule}; give one with --name"
            )
        raise ConfigError(f"name: {name!r} must be {rule}")
    output = Path(output).expanduser().resolve()
    _check_output(output / name)
    _check_bare_options(backend, backend_cls, dict(backend_options or {}))
    try:
        options = backend_cls.Options(**(backend_options or {}))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "?"
        valid = ", ".join(backend_cls.Options.model_fields) or "none"
        flag = f" (--{loc.replace('_', '-')})" if loc in backend_cls.Options.model_fields else ""
        raise ConfigError(f"{backend} option '{loc}'{flag}: {err['msg']} (options of {backend}: {valid})") from None
    trainer, trainer_options = _trainer(trainer, trainer_options)
    if warm_up is not None:
        warm_up(backend_cls, trainer)
    # checks below import Ultralytics (and torch)
    args, notices = _check_train_arg_values(dict(train_args or {}), space)
    notices = [*chosen.notices, *notices]
    metric = metric or ultra.TASK_METRIC[task]
    reported = ultra.task_metrics(task)
    if metric not in reported:
        raise ConfigError(
            f"metric: '{metric}' is not reported for task {task}{closest(metric, reported)}; choose one of {', '.join(reported)}"
        )
    direction = ultra.metric_direction(metric)
    if final_epochs:
        from .data import test_split

        if test_split(resolved) == "test" and metric.startswith("val/"):
            raise ConfigError(
                f"final_epochs: the objective '{metric}' is a validation loss, which Ultralytics' val() does not report "
                f"on the test split the final stage scores on; tune on a metric (e.g. {ultra.TASK_METRIC[task]}) or drop --final-epochs"
            )
    config = TuneConfig(
        backend=backend,
        model=model,
        task=task,
        data=resolved,
        space=space,
        iterations=iterations,
        epochs=epochs,
        metric=metric,
        direction=direction,
        train_args=args,
        output=output,
        name=name,
        resume=bool(resume),
        join=bool(join),
        trial_timeout=trial_timeout,
        time_budget=time_budget,
        workers=workers,
        seed=seed,
        options=options,
        trainer=trainer,
        trainer_options=trainer_options,
        keep_weights=keep,
        final_epochs=final_epochs,
        final_seeds=final_seeds,
        final_top=final_top,
        notices=tuple(notices),
        settings=settings,
    )
    options.check(config)
    _check_gpus_visible(args.get("device"))
    risks = _risk_warnings(resolved, args, workers)
    for text in risks:
        warnings.warn(text, HpoWarning, stacklevel=3)
    return dataclasses.replace(config, warnings=tuple(risks)) if risks else config


def _check_gpus_visible(device: Any) -> None:
    """Refuse ``device=`` naming a GPU torch cannot see, before any trial (else every trial fails)."""
    wanted = gpu_indices(device)
    if not wanted:
        return
    import torch

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in wanted if g >= seen]
    if missing:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise ConfigError(
            f"train args: device={device} names GPU {', '.join(map(str, missing))} but torch sees {seen} "
            f"(CUDA_VISIBLE_DEVICES={visible}); use device=cpu, or run on a node with that many GPUs"
        )
