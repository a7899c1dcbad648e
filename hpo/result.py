"""What a run of a study returns: :class:`TuneResult` (a plain type, at the bottom of the core)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .final import FinalResult

__all__ = ["TuneResult"]


@dataclass
class TuneResult:
    """The outcome of :meth:`Tuner.run`.

    Attributes:
        best_params: params of the best complete trial (``{}`` if none).
        best_objective: its objective value (``None`` if none).
        best_trial: its id (``None`` if none).
        metric, direction: the objective and whether it is maximised or minimised.
        trials: every trial as a DataFrame (see :func:`hpo.report.trials_frame`).
        study_dir: the study directory.
        best_weights: ``<study>/weights/best.pt`` if written.
        counts: ``{"complete": n, "failed": n, "pruned": n}``.
        nothing_to_do: the study had already reached its total (or spent its time budget).
        stopped_by: ``"time_budget"`` when the time budget ended the study, else ``None``.
        elapsed_s: wall-clock seconds the study has run, over all its runs.
        iterations: the total of finished trials this run aimed at (the ``iterations`` given;
            ``None``: no cap). With ``nothing_to_do`` the study already had at least that many.
        final: the final stage's result (``final_epochs``; :class:`hpo.FinalResult`), else ``None``.
    """

    best_params: dict[str, Any]
    best_objective: float | None
    best_trial: int | None
    metric: str
    direction: str
    trials: Any
    study_dir: Path
    best_weights: Path | None
    counts: dict[str, int] = field(default_factory=dict)
    nothing_to_do: bool = False
    stopped_by: str | None = None
    elapsed_s: float | None = None
    iterations: int | None = None
    final: FinalResult | None = None
