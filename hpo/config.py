"""Study settings and their validation, done before anything runs or is written.

:func:`build_config` checks every input (backend, model, data, space, counts, metric, train
args, output) and raises a one-line :class:`~hpo.errors.ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import ultra
from .backend import Backend, BackendOptions, Controller
from .data import ResolvedData, cache_warnings, resolve_data
from .errors import ConfigError, HpoWarning, closest
from .plugins import backends, get_backend
from .space import SearchSpace, load_yaml
from .trial import ULTRALYTICS_TRAINER, trainer_in_process

__all__ = ["TuneConfig", "build_config", "parse_train_args", "parse_duration", "format_duration", "RESERVED_TRAIN_ARGS"]

#: Train args hpo sets itself, per trial; giving them is an error naming the hpo setting to use.
RESERVED_TRAIN_ARGS = {
    "data": "--data",
    "model": "--model",
    "epochs": "--epochs",
    "project": "--output",
    "name": "--name",
    "exist_ok": "(hpo sets it)",
    "resume": "--resume",
    "mode": "(always train)",
    "task": "(from the model name)",
}
#: The fix a message gives for each of :data:`RESERVED_TRAIN_ARGS` that is no hpo option.
_RESERVED_FIX = {
    "exist_ok": "hpo sets exist_ok=True for every trial's folder: drop it",
    "mode": "hpo always trains: drop it",
    "task": "hpo takes the task from the model (-cls, -seg, -pose, -obb): drop it",
}

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: ASCII only, no trailing newline


@dataclass(frozen=True)
class TuneConfig:
    """Validated settings of a study.

    Attributes:
        backend: backend name.
        model: model as Ultralytics loads it (bundled YAML name or absolute local path).
        task: Ultralytics task (``detect``, ``classify``, ...).
        data: the resolved dataset.
        space: the search space.
        iterations: total finished trials the study must reach (>= 1); ``None``: no cap (only
            with a ``time_budget``).
        epochs: training epochs per trial, the full fidelity (>= 1).
        metric: the objective, an Ultralytics metric name (e.g. ``metrics/mAP50-95(B)``).
        direction: ``"maximize"`` or ``"minimize"``.
        train_args: fixed Ultralytics train args (validated by Ultralytics' ``check_cfg``).
        output: the output folder (absolute).
        name: the study name; the study lives in ``output/name``.
        resume: continue an existing study.
        join: add this process to a running study of a backend with ``supports_join`` (records
            to ``trials.<worker>.jsonl``, no lock, no retries).
        trial_timeout: seconds per trial before it is killed (``None``: none).
        time_budget: wall-clock seconds of the whole study, over all its runs (``None``: none): no
            trial starts after it, running trials stop at their next epoch (``pruned``).
        workers: trials run at once by this process (the user-facing ``concurrent_trials``).
        seed: seed of the backend's sampler (``None``: random).
        options: the backend's validated options.
        trainer: ``"module:function"`` that trains a trial (:mod:`hpo.trial`).
        trainer_options: its JSON-able options.
        notices: things hpo changed on the user's behalf (printed by the CLI).
        warnings: valid but risky input (a read-only dataset whose label caches are missing or
            stale, ``val=False``, more concurrent trials than GPUs or CPUs), one line each; the
            CLI prints them as ``hpo: warning: ...``, the Python API shows them as :class:`~hpo.errors.HpoWarning`.
    """

    backend: str
    model: str
    task: str
    data: ResolvedData
    space: SearchSpace
    iterations: int | None
    epochs: int
    metric: str
    direction: str
    train_args: dict[str, Any]
    output: Path
    name: str
    resume: bool = False
    join: bool = False
    trial_timeout: float | None = None
    time_budget: float | None = None
    workers: int = 1
    seed: int | None = None
    options: BackendOptions = field(default_factory=BackendOptions)
    trainer: str = ULTRALYTICS_TRAINER
    trainer_options: dict[str, Any] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def study_dir(self) -> Path:
        """``output / name``."""
        return self.output / self.name

    @property
    def backend_class(self) -> type[Backend | Controller]:
        return get_backend(self.backend)

    def identity(self) -> dict[str, Any]:
        """The settings a resumed study must keep (a change is refused with a diff)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "data": self.data.source,
            "space": self.space.to_spec(),
            "metric": self.metric,
            "epochs": self.epochs,
        }

    def to_settings(self) -> dict[str, Any]:
        """The ``study.json`` contents (without timestamps), credentials masked
        (:func:`hpo.redact.mask_secrets`: ``postgresql://user:***@host/db``)."""
        from .redact import mask_secrets

        settings = {
            **self.identity(),
            "task": self.task,
            "direction": self.direction,
            "iterations": self.iterations,
            "train_args": self.train_args,
            "trial_timeout": self.trial_timeout,
            "time_budget": self.time_budget,
            "workers": self.workers,
            "seed": self.seed,
            "options": self.options.model_dump(mode="json"),
            "data_resolved": self.data.content or self.data.source,
            **({"trainer": self.trainer, "trainer_options": self.trainer_options} if self.trainer != ULTRALYTICS_TRAINER else {}),
        }
        return mask_secrets(settings)


def _count(field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{field_name}: {value!r} must be a whole number >= 1")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{field_name}: {value!r} must be a whole number >= 1") from None
    if not math.isfinite(number) or not number.is_integer() or number < 1:
        raise ConfigError(f"{field_name}: {value!r} must be a whole number >= 1")
    return int(number)


_DURATION_RE = re.compile(r"^\s*(?:(\d+(?:\.\d*)?)\s*h)?\s*(?:(\d+(?:\.\d*)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d*)?)\s*s?)?\s*$", re.I)


def parse_duration(field_name: str, value: Any) -> float:
    """Seconds of a duration: a number (seconds) or text ``"3600"``, ``"90m"``, ``"2h"``, ``"1h30m"``,
    ``"45s"``, ``"1.5h"``.

    Raises:
        ConfigError: not a duration, or not > 0 (naming ``field_name`` and the accepted forms).
    """
    bad = ConfigError(f"{field_name}: {value!r} must be a duration > 0: seconds (3600) or 90m, 2h, 1h30m")
    if isinstance(value, bool) or value is None:
        raise bad
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if not m or not any(m.groups()):
            raise bad
        h, mins, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mins * 60 + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise bad
    return seconds


def format_duration(seconds: float) -> str:
    """``"2h"``, ``"1h30m"``, ``"90s"``: the short form of a duration in seconds."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{sec}s" if sec or not (h or m) else ""]
    return "".join(parts)


def _smart_value(text: str) -> Any:
    """Parse a ``KEY=VALUE`` value like the ``yolo`` CLI: numbers (``1e-5`` and ``1E-5`` too),
    booleans, None, lists, else the string."""
    import yaml

    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.lower() not in ("none", "null", "~") else value


def parse_train_args(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``["imgsz=32", "batch=16"]`` into ``{"imgsz": 32, "batch": 16}``.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"train args: '{pair}' is not KEY=VALUE (e.g. imgsz=32)")
        key, value = pair.split("=", 1)
        if not key.strip():
            raise ConfigError(f"train args: '{pair}' has an empty key")
        out[key.strip()] = _smart_value(value)
    return out


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


def _check_train_arg_values(train_args: dict[str, Any], space: SearchSpace) -> tuple[dict[str, Any], list[str]]:
    """Ultralytics' own type/range checks (``check_cfg``; imports Ultralytics) and the optimizer notice."""
    valid = ultra.train_defaults()
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
    optimizer = str(args.get("optimizer", valid.get("optimizer", "auto")))
    tuned = [k for k in ("lr0", "momentum") if k in space]
    if tuned and optimizer.lower() == "auto":
        args["optimizer"] = "SGD"
        notices.append(
            f"optimizer=auto ignores {' and '.join(tuned)}, which the space tunes: set optimizer=SGD "
            "(Ultralytics' defaults lr0=0.01, momentum=0.937 are SGD values); pass optimizer=... to choose another"
        )
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


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask (``os.sched_getaffinity``), capped by a cgroup v2
    CPU quota (``/sys/fs/cgroup/cpu.max``, what a Kubernetes CPU limit sets), rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


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


def build_config(
    *,
    backend: str = "ultralytics",
    model: str,
    data: str | os.PathLike,
    space: Any = None,
    iterations: Any = 10,
    epochs: Any = 10,
    metric: str | None = None,
    train_args: dict[str, Any] | None = None,
    output: str | os.PathLike = "runs/hpo",
    name: str | None = None,
    resume: bool = False,
    join: bool = False,
    trial_timeout: float | None = None,
    time_budget: Any = None,
    workers: Any = 1,
    seed: int | None = None,
    backend_options: dict[str, Any] | None = None,
    trainer: str | None = None,
    trainer_options: dict[str, Any] | None = None,
    warm_up: Callable[[type[Backend | Controller], str], None] | None = None,
) -> TuneConfig:
    """Validate every input and return a :class:`TuneConfig`. Writes nothing.

    Arguments are those of :class:`hpo.Tuner`, plus ``warm_up``: called with the backend class
    once every check that needs no Ultralytics import has passed, before the ones that import it
    (``check_cfg``, the task's metric names: ~1.5 s on a 2-core CPU). The Tuner starts the trial
    workers' forkserver there, so that its own imports overlap the driver's.

    Valid but risky input (a dataset whose label cache cannot be written, ``val=False``, more
    concurrent trials than GPUs or CPUs) is issued as :class:`~hpo.errors.HpoWarning`
    (``warnings.warn``) and kept in ``TuneConfig.warnings``.

    Raises:
        ConfigError: the first problem found, naming the field, the value and the fix; among
            them a distributed launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
            a non-bool backend option given without a value, a study name that is not a folder
            name, a fixed text train arg or a space value Ultralytics refuses (its ``check_cfg``,
            :func:`hpo.ultra.str_arg_problem`), and every check of :func:`hpo.data.resolve_data`,
            :meth:`hpo.SearchSpace.parse` and the backend's ``check``.
    """
    _check_not_distributed()
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
    space = SearchSpace.parse(space)
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
    metric = metric or ultra.TASK_METRIC[task]
    reported = ultra.task_metrics(task)
    if metric not in reported:
        raise ConfigError(
            f"metric: '{metric}' is not reported for task {task}{closest(metric, reported)}; choose one of {', '.join(reported)}"
        )
    direction = ultra.metric_direction(metric)
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
        notices=tuple(notices),
    )
    options.check(config)
    _check_gpus_visible(args.get("device"))
    risks = _risk_warnings(resolved, args, workers)
    for text in risks:
        warnings.warn(text, HpoWarning, stacklevel=3)
    return dataclasses.replace(config, warnings=tuple(risks)) if risks else config


def _trainer(trainer: str | None, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The trial trainer and its options: the given ones, else ``HPO_TRAINER`` / ``HPO_TRAINER_OPTIONS``
    (JSON), else Ultralytics. Raises :class:`ConfigError` for one that cannot be imported.

    hpo's own Ultralytics trainer is not imported here (:func:`hpo.trial.trainer_in_process`);
    Ultralytics itself is checked with the backend's extras (:func:`hpo.plugins.get_backend`)."""
    import json

    name = trainer or os.environ.get("HPO_TRAINER") or ULTRALYTICS_TRAINER
    if options is None:
        text = os.environ.get("HPO_TRAINER_OPTIONS", "").strip()
        try:
            options = json.loads(text) if text else {}
        except ValueError as e:
            raise ConfigError(f"HPO_TRAINER_OPTIONS: not JSON ({e}); give a JSON object or unset it") from None
    if not isinstance(options, dict):
        raise ConfigError(f"trainer_options: {options!r} must be a JSON object (a dict)")
    trainer_in_process(name)  # imports (checks) any trainer but hpo's own
    return name, dict(options)


def gpu_indices(device: Any) -> list[int]:
    """CUDA indices an Ultralytics ``device`` value names (``0``, ``"0,1"``, ``[0, 1]``, ``"cuda:1"``,
    ``"cuda"``); ``[]`` for the CPU, Apple's ``mps`` or unset (Ultralytics' ``select_device`` syntax)."""
    if device is None or isinstance(device, bool):
        return []
    items = device if isinstance(device, (list, tuple)) else str(device).split(",")
    out = []
    for item in items:
        text = str(item).strip().lower().removeprefix("cuda:")
        if text == "cuda":
            text = "0"
        if text.isdigit():
            out.append(int(text))
    return out


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
