"""Bounded disk: which trials keep their weights (``--keep-weights best|top-K|all``).

Each trial's Ultralytics run folder holds ``weights/best.pt`` and ``weights/last.pt`` (about 6 MB
each for a nano detector, hundreds of MB for a large one). :class:`WeightsKeeper` deletes the
``weights/*.pt`` of every finished trial outside the K best complete trials as trials finish; the
rest of each trial folder (``args.yaml``, ``results.csv``, ``train.log``) stays, and so does the
study's own copy ``<study>/weights/best.pt``. Running trials are never touched, nor the current
best trial. A finished trial never re-enters the top K (objectives do not change), so what is
deleted is never needed again: resume, MLflow (which logs ``<study>/weights/best.pt``) and the
KFP outputs (``best_weights``) keep working.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .callbacks import TunerCallback
from .errors import ConfigError
from .hookspecs import hookimpl
from .study import Study, TrialRecord, TrialStatus

if TYPE_CHECKING:
    from .config import TuneConfig

__all__ = [
    "DEFAULT_KEEP_WEIGHTS",
    "parse_keep_weights",
    "keep_weights_text",
    "WeightsKeeper",
    "prune_weights",
    "hpo_study_observers",
]

#: The default: the best trial's weights plus the next two (``top-3``).
DEFAULT_KEEP_WEIGHTS = "top-3"


def parse_keep_weights(value: Any) -> int | None:
    """``"best"`` -> 1, ``"top-K"`` (or an int K >= 1) -> K, ``"all"`` -> ``None`` (keep every trial's).

    Raises:
        ConfigError: any other value (one line naming it and the valid forms).
    """
    text = str(value).strip().lower()
    if text == "all":
        return None
    if text == "best":
        return 1
    k = text[4:] if text.startswith("top-") else text
    if k.isdigit() and int(k) >= 1 and not isinstance(value, bool):
        return int(k)
    raise ConfigError(f"keep_weights: {value!r} is not best, top-K (K >= 1) or all; e.g. --keep-weights top-3")


def keep_weights_text(keep: int | None) -> str:
    """The canonical spelling: ``None`` -> ``"all"``, 1 -> ``"best"``, K -> ``"top-K"``."""
    return "all" if keep is None else ("best" if keep == 1 else f"top-{keep}")


def prune_weights(study: Study, keep: int | None) -> int:
    """Delete ``trials/<id>/weights/*.pt`` of finished trials outside the ``keep`` best complete ones.

    Args:
        study: the open study.
        keep: how many of the best complete trials keep their weights (``None``: all; nothing deleted).

    Returns:
        Bytes freed.
    """
    if keep is None:
        return 0
    finished = study.finished()
    ranked = [r for r in study.ranked(finished) if r.status is TrialStatus.COMPLETE and r.objective is not None]
    kept = {r.id for r in ranked[:keep]}
    best = study.best(finished)
    if best is not None:
        kept.add(best.id)
    freed = 0
    for r in finished:
        if r.id in kept:
            continue
        for f in (study.trial_dir(r.id) / "weights").glob("*.pt"):
            try:
                size = f.stat().st_size
                f.unlink()
                freed += size
            except OSError:  # already gone, or another process's cleanup got there first
                pass
    return freed


class WeightsKeeper(TunerCallback):
    """Keeps the weights of the ``keep`` best trials, deleting the others' as trials finish (an
    observer of :class:`hpo.Tuner`; see the module docstring).

    Args:
        keep: from :func:`parse_keep_weights` (``None``: keep all).
    """

    def __init__(self, keep: int | None):
        self.keep = keep
        self.study: Study | None = None
        self.freed = 0
        self._lock = threading.Lock()

    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        """Record the setting in ``study.json`` (shown by ``hpo show``) and apply it to the trials
        already finished (a resumed study may have been run with another setting)."""
        self.study = study
        if not config.join and study.settings.get("keep_weights") != keep_weights_text(self.keep):
            study.settings["keep_weights"] = keep_weights_text(self.keep)
            study.save_settings()
        self._sweep()

    def on_trial_start(self, record: TrialRecord) -> None:
        """No-op."""

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """No-op."""

    def on_trial_end(self, record: TrialRecord) -> None:
        """Delete the weights that fell out of the top ``keep``."""
        self._sweep()

    def on_study_end(self, study: Study, result: Any) -> None:
        """No-op."""

    def _sweep(self) -> None:
        if self.study is None or self.keep is None:
            return
        with self._lock:
            self.freed += prune_weights(self.study, self.keep)


@hookimpl(trylast=True)
def hpo_study_observers(config: TuneConfig) -> list[TunerCallback]:
    """hpo's own plugin (:data:`hpo.plugins.DEFAULT_PLUGINS`): the weights keeper of every study
    (``keep_weights``, validated in :attr:`hpo.TuneConfig.keep_weights`), called after every other
    observer (it deletes weights the others may still read)."""
    return [WeightsKeeper(config.keep_weights)]
