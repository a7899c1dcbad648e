"""Checks and parsers of single setting values, with no registry lookups: counts, durations,
``KEY=VALUE`` train args, devices and CPUs, the trial trainer.

Shared by the validation layer (:mod:`hpo.validate`, which re-exports them), the final stage
(:mod:`hpo.final`), the study's ledger and the CLI; each raises one
:class:`~hpo.errors.ConfigError` line naming the field, the value and the fix.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .space import load_yaml
from .trial import ULTRALYTICS_TRAINER, trainer_in_process

__all__ = [
    "RESERVED_TRAIN_ARGS",
    "parse_duration",
    "format_duration",
    "parse_train_args",
    "usable_cpus",
    "gpu_indices",
]

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


def _trainer(trainer: str | None, options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
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
