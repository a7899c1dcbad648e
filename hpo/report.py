"""Reporting on a study: trial counts, the trials as a table, the Markdown leaderboard, the summary.

One module for what ``hpo show --json``, :class:`hpo.TuneResult`, MLflow tracking
(:mod:`hpo.tracking`) and the KFP step (``hpo_kfp``) report, so they count and rank the same way:

- :func:`count_trials`: trials per status (the one place that counts them);
- :func:`trials_frame`: one row per trial as a pandas DataFrame;
- :func:`leaderboard_markdown`: the leaderboard as Markdown (best first);
- :func:`study_summary`: the ``hpo show --json`` object of a study directory.

pandas is imported inside :func:`trials_frame` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import tree_bytes
from .final import read_final_summary
from .fmt import format_counts, format_value  # re-exported: the one precision rule of what hpo shows
from .redact import mask_text
from .study import Study, TrialRecord, TrialStatus, settings_versions

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FINISHED",
    "SUMMARY_STATUSES",
    "count_trials",
    "trials_frame",
    "leaderboard_markdown",
    "study_summary",
    "format_value",
    "format_counts",
]

#: The statuses of finished trials (those with a result), in :class:`TrialStatus` order: the keys
#: of :attr:`hpo.TuneResult.counts`.
FINISHED: tuple[TrialStatus, ...] = tuple(s for s in TrialStatus if s.finished)
#: The statuses counted by :func:`study_summary` (``hpo show --json``'s ``counts``), in that order.
SUMMARY_STATUSES: tuple[TrialStatus, ...] = (
    TrialStatus.COMPLETE,
    TrialStatus.FAILED,
    TrialStatus.PRUNED,
    TrialStatus.RUNNING,
)


def count_trials(records: Iterable[TrialRecord], statuses: Iterable[TrialStatus | str] | None = None) -> dict[str, int]:
    """Trials per status: ``{"complete": n, "failed": n, ...}``.

    Args:
        records: the trials to count (e.g. :meth:`hpo.Study.finished` or every record).
        statuses: the statuses to count, in the order of the returned keys (members of
            :class:`TrialStatus` or their values); a status no record has counts 0, a record whose
            status is not listed is not counted. Default: every :class:`TrialStatus`, in its order.

    Returns:
        A dict from status value to the number of ``records`` with that status.

    Raises:
        ValueError: a status that is not a :class:`TrialStatus` value.
    """
    keys = [TrialStatus(s) for s in (TrialStatus if statuses is None else statuses)]
    counts = dict.fromkeys((s.value for s in keys), 0)
    for r in records:
        if r.status.value in counts:
            counts[r.status.value] += 1
    return counts


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """Trials as a pandas DataFrame: one row per trial, ``params.<key>`` columns.

    Columns: ``id, status, objective, epochs_completed, duration_s, train_s, start, end, error``,
    then one ``params.<key>`` per space key.
    """
    import pandas as pd

    rows = []
    for r in records:
        row = {
            "id": r.id,
            "status": r.status.value,
            "objective": r.objective,
            "epochs_completed": r.epochs_completed,
            "duration_s": r.duration_s,
            "train_s": r.train_s,
            "start": r.start,
            "end": r.end,
            "error": mask_text(r.error) if r.error else r.error,
        }
        row.update({f"params.{k}": v for k, v in r.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(v: Any) -> str:
    if v is None or isinstance(v, float):
        return format_value(v)
    return str(v).replace("|", "\\|")


def leaderboard_markdown(study: Study, *, top: int | None = 50) -> str:
    """The study's leaderboard as Markdown: a title line, the counts, then one row per trial in
    :meth:`Study.ranked` order (``rank, trial, status, objective, epochs, seconds, <params>``).

    Args:
        study: an open study.
        top: most rows shown (``None``: all).
    """
    records = study.ranked()
    counts = count_trials(records)
    keys = list(records[0].params) if records else []
    lines = [
        f"# hpo study `{study.path.name}`",
        "",
        f"backend **{study.settings.get('backend')}**, objective `{study.settings.get('metric')}` "
        f"({study.direction}), trials: " + format_counts(counts),
        "",
        "| rank | trial | status | objective | epochs | seconds | " + " | ".join(keys) + " |",
        "|" + "---|" * (6 + len(keys)),
    ]
    for rank, r in enumerate(records[:top], 1):
        cells = [rank, r.id, r.status.value, r.objective, r.epochs_completed, r.duration_s, *(r.params.get(k) for k in keys)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def study_summary(path: str | Path) -> dict[str, Any]:
    """The ``hpo show --json`` object of a study directory.

    Keys: ``study_dir``, ``backend``, ``metric``, ``direction``, ``iterations``, ``counts``
    (:data:`SUMMARY_STATUSES`), ``trials`` (each ``id``, ``status``, ``params``, ``objective``,
    ``epochs_completed``, ``duration_s``, ``error``, ``settings``: the settings version it trained
    under), ``best`` (``trial``, ``params``, ``objective``; ``null`` if none), ``disk_bytes`` (the
    study folder's size in bytes), ``settings_changes`` (one ``{"settings": k, "at": ..., "changes":
    "field: stored X != given Y; ..."}`` per resume with ``allow_changes``; ``[]`` if none), ``final``
    (the last final stage, :func:`hpo.final.read_final_summary`: its settings, ``split`` and
    ``split_label``, runs per status, per configuration ``val_mean``, ``test_mean``, ``test_sd``
    on the split, and the ``chosen`` run with its ``weights``; ``null`` without one).

    Args:
        path: the study directory ``<output>/<name>``.

    Raises:
        hpo.errors.StudyError: no study at ``path``.
    """
    study = Study.open(path)
    records = list(study.records().values())
    best = study.best([r for r in records if r.status.finished])
    return {
        "study_dir": str(study.path),
        "backend": study.settings.get("backend"),
        "metric": study.settings.get("metric"),
        "direction": study.direction,
        "iterations": study.settings.get("iterations"),
        "counts": count_trials(records, SUMMARY_STATUSES),
        "trials": [
            {
                "id": r.id,
                "status": r.status.value,
                "params": r.params,
                "objective": r.objective,
                "epochs_completed": r.epochs_completed,
                "duration_s": r.duration_s,
                "error": mask_text(r.error) if r.error else r.error,  # records older than masking
                "settings": r.settings,
            }
            for r in records
        ],
        "best": {"trial": best.id, "params": best.params, "objective": best.objective} if best else None,
        "disk_bytes": tree_bytes(study.path),
        "settings_changes": [
            {"settings": k, "at": e.get("at"), "changes": e.get("allowed_changes")}
            for k, e in sorted(settings_versions(study.settings).items())
        ],
        "final": read_final_summary(study.path),
    }
