"""The machine a benchmark ran on: CPU, cores, memory, GPU, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

__all__ = ["machine_info", "machine_key"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """``cpu`` (model name from /proc/cpuinfo), ``cores`` (usable by this process), ``ram_bytes``,
    ``gpus`` (names via ``torch.cuda``; ``[]`` without CUDA), ``platform``, and ``versions`` of
    python, torch, ultralytics, optuna, ray, hpo (``None`` when not installed).
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in (
        ("hpo", "hpo-yolo"),
        ("torch", "torch"),
        ("ultralytics", "ultralytics"),
        ("optuna", "optuna"),
        ("ray", "ray"),
        ("numpy", "numpy"),
    ):
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or a broken driver: report no GPU
        gpus = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "ram_bytes": _ram_bytes(),
        "gpus": gpus,
        "platform": platform.platform(),
        "versions": versions,
    }


def machine_key(machine: dict[str, Any]) -> str:
    """What identifies a machine for a wall-clock budget (protocol amendment 2): the CPU model and
    the cores, e.g. ``"AMD EPYC, 2 cores"``, from a :func:`machine_info` record."""
    return f"{machine.get('cpu')}, {machine.get('cores')} cores"
