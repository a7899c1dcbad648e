"""Observers of a study: :class:`TunerCallback`.

An observer sees a study's events (study start, each trial's start, epochs, batches and end, the
final model's runs (:mod:`hpo.final`), study end) and changes nothing in it: the progress display (:mod:`hpo.progress`), the plots
(:mod:`hpo.plots`), MLflow tracking (:mod:`hpo.tracking`) and the weights keeper
(:mod:`hpo.weights`) are observers. Pass your own in ``Tuner(callbacks=[...])``, or let a plugin
contribute them through the hook :func:`hpo.hookspecs.hpo_study_observers`.

This module imports nothing of hpo at run time, so every other module can use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TuneConfig
    from .final import FinalRecord, FinalResult
    from .result import TuneResult
    from .study import Study, TrialRecord

__all__ = ["TunerCallback"]


class TunerCallback:
    """Observer of a study (progress display, MLflow tracking). Every method is an optional no-op.

    Methods are called in the driver process; with ``workers > 1`` they may be called from several
    threads (one per running trial), never concurrently for the same trial. An observer need not
    subclass this class: the study loop calls whichever of these methods it has.
    """

    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        """The study directory is open and locked; no trial of this run has started."""

    def on_trial_start(self, record: TrialRecord) -> None:
        """A trial is about to train (``record.status`` is ``running``)."""

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """A trial finished an epoch; ``row`` holds its metrics (``row["epoch"]`` is 1-based)."""

    def on_batch(self, record: TrialRecord, progress: dict[str, int]) -> None:
        """A trial is training: ``{"epoch": n, "batch": i, "batches": nb}`` (1-based), about once a
        second (backends whose trials run in hpo's worker processes; not Ray Tune)."""

    def on_trial_end(self, record: TrialRecord) -> None:
        """A trial finished (complete, failed or pruned) and is recorded."""

    def on_final_start(self, record: FinalRecord) -> None:
        """A final-model run is about to train (:mod:`hpo.final`; ``record.status`` is ``running``)."""

    def on_final_epoch(self, record: FinalRecord, row: dict[str, float]) -> None:
        """A final run finished an epoch; ``row`` holds its metrics (``row["epoch"]`` is 1-based)."""

    def on_final_batch(self, record: FinalRecord, progress: dict[str, int]) -> None:
        """A final run is training (as :meth:`on_batch`)."""

    def on_final_end(self, record: FinalRecord) -> None:
        """A final run ended (complete, failed or interrupted) and is recorded."""

    def on_final_stage_end(self, result: FinalResult) -> None:
        """The final stage ended and ``final.yaml`` and ``weights/final.pt`` are written (not
        called when it was interrupted)."""

    def on_study_end(self, study: Study, result: TuneResult | None) -> None:
        """The run ended (``result`` is ``None`` if it broke); a final stage runs before it."""
