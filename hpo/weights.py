"""Bounded disk: which trials keep their weights (``--keep-weights best|top-K|all``).

Each trial's Ultralytics run folder holds ``weights/best.pt`` and ``weights/last.pt`` (about 6 MB
each for a nano detector, hundreds of MB for a large one). :class:`WeightsKeeper` deletes the
``weights/*.pt`` of every finished trial outside the K best complete trials as trials finish; the
rest of each trial folder (``args.yaml``, ``results.csv``, ``train.log``) stays, and so does the
study's own copy ``<study>/weights/best.pt``. Running trials are never touched, nor the current
best trial. A finished trial never re-enters the top K (objectives do not change), so what is
deleted is never needed again: resume, MLflow (which logs ``<study>/weights/best.pt``) and the
KFP outputs (``best_weights``) keep working.

The keeper applies the setting to every finished trial once, when a run starts (a resumed study
may have been run with another setting); after that it keeps the K best in memory and, as each
trial finishes, touches only the folder of the trial that fell out of the top K, or of the new
trial if it is outside: the cost of a trial does not grow with the study (nor with a slow network
volume's directory listings).
"""

from __future__ import annotations

import math
import os
import threading
from bisect import insort
from pathlib import Path
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


def _rank_key(record: TrialRecord, direction: str) -> tuple[float, int] | None:
    """The leaderboard key of a complete trial with a finite objective (smaller is better, ties
    by id, as :meth:`hpo.Study.ranked`); ``None`` for any other trial."""
    if record.status is not TrialStatus.COMPLETE or record.objective is None or not math.isfinite(record.objective):
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return (sign * float(record.objective), record.id)


def _delete_weights(folder: Path) -> int:
    """Delete ``folder/*.pt``; return the bytes freed (a missing folder or file frees nothing)."""
    freed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no weights folder: a failed or a simulated trial
        return 0
    for e in entries:
        if not e.name.endswith(".pt"):
            continue
        try:
            size = e.stat(follow_symlinks=False).st_size
            os.unlink(e.path)
            freed += size
        except OSError:  # already gone, or another process's cleanup got there first
            pass
    return freed


def prune_weights(study: Study, keep: int | None) -> int:
    """Delete ``trials/<id>/weights/*.pt`` of finished trials outside the ``keep`` best complete ones.

    Looks at every finished trial's folder: what :class:`WeightsKeeper` does once when a run
    starts.

    Args:
        study: the open study.
        keep: how many of the best complete trials keep their weights (``None``: all; nothing deleted).

    Returns:
        Bytes freed.
    """
    if keep is None:
        return 0
    finished = study.finished()
    ranked = sorted((k, r.id) for r in finished if (k := _rank_key(r, study.direction)) is not None)
    kept = {tid for _, tid in ranked[:keep]}
    freed = 0
    for r in finished:
        if r.id not in kept:
            freed += _delete_weights(study.trial_dir(r.id) / "weights")
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
        #: trial folders whose weights this keeper deleted or looked for (a count, for tests and benchmarks)
        self.touched = 0
        self._lock = threading.Lock()
        self._top: list[tuple[tuple[float, int], int]] = []  # (rank key, id) of the kept trials, best first
        self._cursor = 0  # of Study.finished_since

    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        """Record the setting in ``study.json`` (shown by ``hpo show``) and apply it to the trials
        already finished (a resumed study may have been run with another setting)."""
        self.study = study
        if not config.join and study.settings.get("keep_weights") != keep_weights_text(self.keep):
            study.settings["keep_weights"] = keep_weights_text(self.keep)
            study.save_settings()
        if self.keep is None:
            return
        with self._lock:
            records, self._cursor = study.finished_since(0)
            self.freed += prune_weights(study, self.keep)
            self.touched += len(records)
            self._top = sorted((k, r.id) for r in records if (k := _rank_key(r, study.direction)) is not None)[: self.keep]

    def on_trial_start(self, record: TrialRecord) -> None:
        """No-op."""

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """No-op."""

    def on_trial_end(self, record: TrialRecord) -> None:
        """Delete the weights that fell out of the top ``keep``: those of the trial that left it, or
        of the trials finished since the last call (this process's and joined ones') outside it."""
        if self.study is None or self.keep is None:
            return
        with self._lock:
            records, self._cursor = self.study.finished_since(self._cursor)
            for r in records:
                self._consider(r)

    def on_study_end(self, study: Study, result: Any) -> None:
        """No-op."""

    def _consider(self, record: TrialRecord) -> None:
        assert self.study is not None and self.keep is not None
        self._top = [x for x in self._top if x[1] != record.id]  # its record changed: rank it again
        key = _rank_key(record, self.study.direction)
        out = record.id
        if key is not None:
            insort(self._top, (key, record.id))
            out = self._top.pop()[1] if len(self._top) > self.keep else -1
        if out >= 0:
            self.touched += 1
            self.freed += _delete_weights(self.study.trial_dir(out) / "weights")


@hookimpl(trylast=True)
def hpo_study_observers(config: TuneConfig) -> list[TunerCallback]:
    """hpo's own plugin (:data:`hpo.plugins.DEFAULT_PLUGINS`): the weights keeper of every study
    (``keep_weights``, validated in :attr:`hpo.TuneConfig.keep_weights`), called after every other
    observer (it deletes weights the others may still read)."""
    return [WeightsKeeper(config.keep_weights)]
