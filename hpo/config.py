"""The validated settings of a study (:class:`TuneConfig`) and the base of a backend's options
(:class:`BackendOptions`): plain types, no registry lookups.

:func:`hpo.validate.build_config` makes a :class:`TuneConfig` from a :class:`hpo.TuneSettings`;
backends, controllers and observers receive it. Looking a backend up by name is the plugin
registry's job (:func:`hpo.plugins.get_backend`), never this type's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .data import ResolvedData
from .settings import TuneSettings
from .space import SearchSpace
from .trial import ULTRALYTICS_TRAINER

__all__ = ["TuneConfig", "BackendOptions"]


class BackendOptions(BaseModel):
    """Base of a backend's options model: unknown options are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, config: TuneConfig) -> None:
        """The backend's pre-flight: refuse settings it cannot run, before anything is written.

        Called once by :func:`hpo.validate.build_config` with the otherwise validated settings.
        Default: accepts everything.

        Raises:
            hpo.errors.ConfigError: naming the setting and the fix (exit code 2).
        """


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
        keep_weights: how many of the best complete trials keep their weights (``None``: all;
            from ``keep_weights``: ``"best"`` 1, ``"top-K"`` K, ``"all"`` ``None``).
        final_epochs: epochs of each final-model run after the search (:mod:`hpo.final`); ``None``:
            no final stage.
        final_seeds: final runs per configuration, with seeds no trial used (:func:`hpo.final.fresh_seeds`).
        final_top: how many of the best configurations the final stage trains.
        notices: things hpo changed on the user's behalf (printed by the CLI).
        warnings: valid but risky input (a read-only dataset whose label caches are missing or
            stale, ``val=False``, more concurrent trials than GPUs or CPUs), one line each; the
            CLI prints them as ``hpo: warning: ...``, the Python API shows them as :class:`~hpo.errors.HpoWarning`.
        settings: the settings as given, which this config was validated from (``None`` for a config
            built another way, e.g. :func:`hpo.testing.build_settings`); a setting without a field
            of its own here is read from it.
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
    keep_weights: int | None = 3
    final_epochs: int | None = None
    final_seeds: int = 1
    final_top: int = 1
    notices: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    settings: TuneSettings | None = field(default=None, compare=False, repr=False)

    @property
    def study_dir(self) -> Path:
        """``output / name``."""
        return self.output / self.name

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
            **({"data_classes": self.data.classes} if self.data.classes else {}),
            **({"trainer": self.trainer, "trainer_options": self.trainer_options} if self.trainer != ULTRALYTICS_TRAINER else {}),
            **(
                {"final_epochs": self.final_epochs, "final_seeds": self.final_seeds, "final_top": self.final_top}
                if self.final_epochs
                else {}
            ),
        }
        return mask_secrets(settings)
