"""Pictures of a study, for every backend: ``<study>/plots/``.

Drawn from the study's records alone (``trials.jsonl``), so a study of any backend gets the same
plots, at the end of a run (:class:`PlotCallback`, registered by :class:`hpo.Tuner`) and on demand
(``hpo plot STUDY``)::

    plots/history.png      best objective so far against trials and against wall time
    plots/curves.png       every trial's objective per epoch (the best complete trials each in its
                           colour, labelled with id and objective; pruned dashed, failed red crosses)
    plots/importance.png   parameter importance (Optuna's fANOVA evaluator); skipped, with one line
                           saying why, when every complete trial has the same objective
    plots/parallel.png     parallel coordinates of the most important parameters
    plots/slice.png        objective against each of the most important parameters
    plots/importance.json  ``{param: importance}``, most important first (read by ``hpo show``)
    plots/importance.meta.json  what it rests on: method, complete trials, a key of their records
    plots/final.png        the final model (:mod:`hpo.final`), when the study has a final stage:
                           per configuration each seed's score on the test split (or the
                           validation split, labelled "val (no test split)"), their mean ± sd,
                           the final runs' validation mean and the search's validation value
    plots/report.html      all of them, interactive (plotly), one self-contained file (no CDN)

Parameter importance and the Optuna plots run on an in-memory Optuna study rebuilt from the
records (:func:`optuna_study`): ``optuna.trial.create_trial`` with the distributions of the
study's search space, the objective per epoch as intermediate values.

Importance (:func:`importance`): Optuna's fANOVA evaluator, whose cost grows faster than the
trials (on 2 CPU cores about 0.8 s for 100 complete trials, 7 s for 500, 22 s for 1,000, plus
1.5 s to import scikit-learn), so the plots compute it over at most :data:`PLOT_FANOVA_TRIALS`
complete trials (a seeded random sample of them above that) and keep the result keyed by the
records it came from (``importance.meta.json``). ``hpo show`` reuses it while it is current, else
runs fANOVA up to :data:`SHOW_FANOVA_TRIALS` complete trials, and above that the main-effect
estimate (:func:`main_effects`: each parameter's share of the objective's variance explained by
its own value, milliseconds at 10,000 trials, no scikit-learn).

Every file is written atomically (:func:`hpo.files.atomic_target`, :func:`hpo.files.atomic_write_text`:
a temp file beside it, then ``os.replace``), so a kill while plotting leaves the previous plots
whole; a temp file such a kill left (``plots/.NAME.*.tmp*``) is removed by the next drawing once
it is :data:`STALE_TEMP_S` old.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callbacks import TunerCallback
from .files import atomic_target, atomic_write_text
from .fmt import count_of, format_counts, format_value
from .hookspecs import hookimpl
from .study import Study, TrialRecord, TrialStatus

if TYPE_CHECKING:
    import optuna

    from .config import TuneConfig
    from .result import TuneResult

__all__ = [
    "write_plots",
    "optuna_study",
    "param_importances",
    "importance",
    "cached_importance",
    "Importance",
    "PlotCallback",
    "TOP_PARAMS",
    "main_effects",
    "PLOT_FANOVA_TRIALS",
    "SHOW_FANOVA_TRIALS",
    "METHODS",
    "plots_wanted",
    "hpo_study_observers",
    "require_plot_libraries",
    "importance_skipped",
    "CURVE_LABELS",
    "parallel_figure",
    "slice_figure",
]

#: ``curves.png`` gives this many complete trials (the best ones) a colour and a legend entry each
#: (:data:`_CURVE_PALETTE`); the other complete trials are grey.
CURVE_LABELS = 8
#: The colours of the labelled complete trials in ``curves.png``: matplotlib's ``tab10`` without its
#: orange, red and grey (pruned, failed and the other complete trials), and black.
_CURVE_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#000000")
#: Parameters shown in the parallel-coordinate and slice plots (the most important ones).
TOP_PARAMS = 6
#: The plots' fANOVA runs over at most this many complete trials (a seeded random sample above):
#: about 22 s on 2 CPU cores (fANOVA over 1,000 trials of a 26-parameter space).
PLOT_FANOVA_TRIALS = 1000
#: ``hpo show`` runs fANOVA itself (no current ``plots/importance.json``) up to this many complete
#: trials (about 0.8 s on 2 CPU cores, plus the import of scikit-learn), above it :func:`main_effects`.
SHOW_FANOVA_TRIALS = 100
#: The importance methods (``method`` of :func:`importance`) and their names.
METHODS = {"fanova": "fANOVA", "ped-anova": "PED-ANOVA", "main-effects": "main-effect variance shares"}
#: Seconds after which a temp file in ``plots/`` is a leftover of a killed drawing (a live one
#: renames its temp files within seconds), removed by the next :func:`write_plots`.
STALE_TEMP_S = 600.0


def require_plot_libraries(feature: str = "the study's plots", *, html: bool = True) -> None:
    """Fail before anything is drawn unless the ``plots`` extra's libraries are installed.

    Args:
        feature: what needs them, for the message (e.g. ``"hpo plot"``).
        html: also require plotly (``plots/report.html``).

    Raises:
        hpo.extras.MissingExtra: matplotlib, Optuna (its plots and fANOVA), scikit-learn (fANOVA's
            forests) or, with ``html``, plotly cannot be imported (exit 2); the message names the
            ``plots`` extra.
    """
    from .extras import require

    for module in ("matplotlib", "optuna", "sklearn"):
        require(module, "plots", feature)
    if html:
        require("plotly", "plots", f"{feature} (plots/report.html; --no-html draws the PNGs without it)")


def importance_skipped(complete: list[TrialRecord]) -> str | None:
    """Why parameter importance cannot be computed from these complete trials, or ``None`` if it can.

    fANOVA needs two complete trials and an objective that varies (on a constant objective
    Optuna's evaluator raises "Encountered zero total variance in all trees").

    Args:
        complete: the complete trials with a finite objective.

    Returns:
        One sentence, e.g. ``"every complete trial has the same objective (0)"``, or ``None``.
    """
    if len(complete) < 2:
        return f"it needs two complete trials, the study has {len(complete)}"
    values = {float(r.objective or 0.0) for r in complete}
    if len(values) == 1:
        return f"every one of the {len(complete)} complete trials has the same objective ({format_value(values.pop())})"
    return None


def _space_of(study: Study) -> Any:
    from .space import SearchSpace

    return SearchSpace.parse(study.settings.get("space") or None)


def optuna_study(study: Study, records: list[TrialRecord] | None = None, *, curves: bool = True) -> optuna.Study:
    """An in-memory Optuna study holding the finished trials of ``study`` (any backend).

    Complete trials carry their objective, pruned ones their objective and ``PRUNED`` state,
    failed ones ``FAIL``; each trial's per-epoch objective is its intermediate values. Parameters
    outside the stored space (an edited space on resume) are left out of that trial.

    Args:
        study: an open study (read only).
        records: the trials to include (default: every finished trial).
        curves: include the per-epoch objectives (``False``: importance alone needs none, and
            the study builds about twice as fast).

    Returns:
        ``optuna.Study`` in the study's direction, trials in id order.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    metric = str(study.settings.get("metric") or "")
    dists = _space_of(study).to_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    out = optuna.create_study(
        direction="maximize" if study.direction == "maximize" else "minimize", storage=optuna.storages.InMemoryStorage()
    )
    states = {
        TrialStatus.COMPLETE: TrialState.COMPLETE,
        TrialStatus.PRUNED: TrialState.PRUNED,
        TrialStatus.FAILED: TrialState.FAIL,
    }
    for r in sorted(records if records is not None else study.finished(), key=lambda r: r.id):
        if not r.status.finished:
            continue
        state = states[r.status]
        value = r.objective if state is not TrialState.FAIL and r.objective is not None and math.isfinite(r.objective) else None
        if state is TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        params, used = {}, {}
        for k, v in r.params.items():
            d = dists.get(k)
            try:
                if d is not None and d._contains(d.to_internal_repr(v)):
                    params[k], used[k] = v, d
            except (TypeError, ValueError):
                pass
        steps = {
            int(row["epoch"]): float(row[metric])
            for row in (r.epochs if curves else ())
            if "epoch" in row and isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])
        }
        out.add_trial(
            create_trial(
                state=state,
                value=value if state is not TrialState.FAIL else None,
                params=params,
                distributions=used,
                intermediate_values=steps,
                user_attrs={"hpo_trial": r.id},
            )
        )
    return out


def param_importances(ostudy: optuna.Study, method: str = "fanova") -> dict[str, float]:
    """Parameter importance, most important first: Optuna's fANOVA evaluator (seed 0), or its
    PED-ANOVA evaluator (``method="ped-anova"``, default quantiles: the best 10% against all).

    Returns ``{}`` with fewer than two complete trials (nothing to compare).
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    done = [t for t in ostudy.trials if t.state is optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return {}
    evaluator = PedAnovaImportanceEvaluator() if method == "ped-anova" else FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(get_param_importances(ostudy, evaluator=evaluator))


@dataclass
class Importance:
    """Parameter importance and what it rests on.

    Attributes:
        values: ``{param: importance}``, most important first (sums to 1).
        method: ``"fanova"``, ``"ped-anova"`` or ``"main-effects"``.
        trials: the complete trials it was computed over.
        of: the complete trials of the study when it was computed.
        key: :func:`importance_key` of those records.
        source: ``"computed"`` (now), ``"cached"`` (``plots/importance.json``, current) or
            ``"legacy"`` (``plots/importance.json`` of an earlier hpo, newer than every record).
        seconds: CPU seconds the computation took (when it was computed).
    """

    values: dict[str, float]
    method: str
    trials: int
    of: int
    key: str = ""
    source: str = "computed"
    seconds: float | None = None

    def describe(self) -> str:
        """``"fANOVA over 100 complete trials"``, ``"PED-ANOVA over a sample of 1000 of 10000
        complete trials"``, with ``", from plots/importance.json"`` when it was read from there."""
        name = METHODS.get(self.method, self.method)
        over = (
            f"{self.trials} complete trials"
            if self.trials >= self.of
            else f"a sample of {self.trials} of {self.of} complete trials"
        )
        where = {"cached": ", from plots/importance.json", "legacy": ", from plots/importance.json"}.get(self.source, "")
        return f"{name} over {over}{where}"


def _columns(records: list[TrialRecord], keys: list[str]) -> list[list[Any]]:
    """Each key's values over ``records`` (``None`` where a record lacks it), transposed in C:
    one ``itemgetter`` call per record instead of one ``dict.get`` per record and key (4x faster
    over 10,000 trials of 26 parameters)."""
    from operator import itemgetter

    if len(keys) < 2:  # itemgetter of one key returns the value, not a tuple
        return [[r.params.get(k) for r in records] for k in keys]
    get = itemgetter(*keys)
    try:
        rows = [get(r.params) for r in records]
    except KeyError:  # some record lacks a key (a space changed with --allow-changes)
        rows = [tuple(r.params.get(k) for k in keys) for r in records]
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in keys]


def main_effects(complete: list[TrialRecord], keys: list[str], bins: int = 10) -> dict[str, float]:
    """Each parameter's main effect: the share of the objective's variance that its own value
    explains (the correlation ratio, Pearson's eta squared, of the objective on the parameter),
    normalised to sum to 1, most important first.

    A numeric parameter's trials are cut into ``bins`` groups of equal size by rank (so a log
    scale changes nothing), a choice parameter's by value; eta squared is the variance of the
    group means (weighted by group size) over the total variance. It is the first-order
    (main-effect) variance fraction that fANOVA also reports, estimated from the trials directly
    instead of from a random-forest surrogate (Saltelli et al., *Global Sensitivity Analysis: The
    Primer*, 2008, ch. 1), so it misses interactions and needs no scikit-learn: milliseconds for
    10,000 trials of 26 parameters.

    Args:
        complete: complete trials with a finite objective.
        keys: the parameters to rate.
        bins: groups per numeric parameter (fewer when the trials are few: at least 5 per group).

    Returns:
        ``{param: share}``, most important first; ``{}`` with fewer than two trials or an
        objective that does not vary.
    """
    import numpy as np

    y_all = np.array([float(r.objective or 0.0) for r in complete])
    out: dict[str, float] = {}
    for key, column in zip(keys, _columns(complete, keys), strict=True):
        idx = [i for i, v in enumerate(column) if v is not None] if None in column else None
        values = column if idx is None else [column[i] for i in idx]
        y = y_all if idx is None else y_all[idx]
        if len(y) < 2:
            continue
        total = float(((y - y.mean()) ** 2).sum())
        if total <= 0:
            continue
        try:
            if any(isinstance(v, (bool, str)) for v in values[:50]):
                raise TypeError("a choice")
            x = np.asarray(values, dtype=float)
            groups = max(2, min(bins, len(y) // 5))
            labels = np.empty(len(y), dtype=int)
            labels[np.argsort(x, kind="stable")] = np.arange(len(y)) * groups // len(y)
        except (TypeError, ValueError):  # a choice parameter: its values are the groups
            codes: dict[str, int] = {}
            labels = np.array([codes.setdefault(str(v), len(codes)) for v in values])
        counts = np.bincount(labels)
        sums = np.bincount(labels, weights=y)
        used = counts > 0
        between = float((counts[used] * (sums[used] / counts[used] - y.mean()) ** 2).sum())
        out[key] = between / total
    norm = sum(out.values())
    if norm <= 0:
        return {}
    return dict(sorted(((k, v / norm) for k, v in out.items()), key=lambda kv: -kv[1]))


def importance_key(study: Study, complete: list[TrialRecord]) -> str:
    """A digest of what importance depends on: the direction, the space's keys, and each complete
    trial's id and objective (a trial's params never change), SHA-256 hex."""
    h = hashlib.sha256()
    h.update(json.dumps([study.direction, sorted(study.settings.get("space") or {})]).encode())
    h.update(";".join(f"{r.id}:{r.objective!r}" for r in sorted(complete, key=lambda r: r.id)).encode())
    return h.hexdigest()


def _complete(records: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective)]


def cached_importance(study: Study, finished: list[TrialRecord] | None = None) -> Importance | None:
    """The importance in ``plots/importance.json`` if it was computed from the study's current
    records (its ``importance.meta.json`` holds their :func:`importance_key`), or, for a file an
    earlier hpo wrote without one, if it is newer than every records file; else ``None``."""
    folder = study.path / "plots"
    try:
        values = json.loads((folder / "importance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or not values:
        return None
    complete = _complete(study.finished() if finished is None else finished)
    try:
        meta = json.loads((folder / "importance.meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        meta = None
    except (OSError, ValueError):
        return None
    if meta is None:  # written by an earlier hpo: current if newer than every record
        newest = max((f.stat().st_mtime for f in study.path.glob("trials*.jsonl")), default=0.0)
        if (folder / "importance.json").stat().st_mtime < newest:
            return None
        return Importance(values, "fanova", len(complete), len(complete), source="legacy")
    if not isinstance(meta, dict) or meta.get("key") != importance_key(study, complete):
        return None
    return Importance(
        values, str(meta.get("method", "fanova")), int(meta.get("trials", 0)), int(meta.get("of", 0)), meta["key"], "cached"
    )


def importance(
    study: Study, finished: list[TrialRecord] | None = None, *, method: str = "fanova", max_trials: int | None = None
) -> Importance | None:
    """Compute parameter importance over the complete trials of ``finished`` (default: the study's).

    Args:
        study: the open study.
        finished: the finished trials (default :meth:`hpo.Study.finished`).
        method: ``"fanova"``, ``"ped-anova"`` (see :func:`param_importances`) or
            ``"main-effects"`` (:func:`main_effects`).
        max_trials: at most this many complete trials: a random sample (seed 0) above it.

    Returns:
        :class:`Importance`, or ``None`` when :func:`importance_skipped` gives a reason (fewer than
        two complete trials, or an objective that does not vary).
    """
    import random
    import time

    complete = _complete(study.finished() if finished is None else finished)
    if importance_skipped(complete) is not None:
        return None
    used = complete
    if max_trials is not None and len(complete) > max_trials:
        used = sorted(random.Random(0).sample(complete, max_trials), key=lambda r: r.id)
    t = time.process_time()
    if method == "main-effects":
        values = main_effects(used, list(_space_of(study)) or sorted({k for r in used for k in r.params}))
    else:
        values = param_importances(optuna_study(study, used, curves=False), method)
    if not values:
        return None
    return Importance(values, method, len(used), len(complete), importance_key(study, complete), seconds=time.process_time() - t)


def _save_importance(folder: Path, imp: Importance) -> None:
    meta = {"method": imp.method, "trials": imp.trials, "of": imp.of, "key": imp.key, "cpu_s": imp.seconds}
    atomic_write_text(folder / "importance.json", json.dumps(imp.values, indent=2))
    atomic_write_text(folder / "importance.meta.json", json.dumps(meta, indent=2) + "\n")


def _elapsed_s(records: list[TrialRecord]) -> list[float | None]:
    def ts(s: str | None) -> float | None:
        return datetime.fromisoformat(s).timestamp() if s else None

    starts = [t for t in (ts(r.start) for r in records) if t is not None]
    t0 = min(starts) if starts else 0.0
    ends = [ts(r.end) for r in records]
    return [(t - t0) if t is not None else None for t in ends]


def _best_so_far(values: list[float | None], direction: str) -> list[float | None]:
    best: float | None = None
    out = []
    for v in values:
        if v is not None and (best is None or (v > best if direction == "maximize" else v < best)):
            best = v
        out.append(best)
    return out


_COLORS = {"complete": "#1f77b4", "pruned": "#ff7f0e", "failed": "#d62728"}


def _history_data(study: Study, finished: list[TrialRecord]) -> dict[str, Any]:
    by_end = sorted(finished, key=lambda r: r.end or "")
    complete = [r.objective if r.status is TrialStatus.COMPLETE else None for r in by_end]
    return {
        "records": by_end,
        "n": list(range(1, len(by_end) + 1)),
        "t": _elapsed_s(by_end),
        "best": _best_so_far(complete, study.direction),
    }


def _png_history(study: Study, finished: list[TrialRecord], path: Path) -> None:
    import matplotlib.pyplot as plt

    h = _history_data(study, finished)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, xs, label in ((axes[0], h["n"], "finished trials"), (axes[1], h["t"], "wall time (s)")):
        for status in ("complete", "pruned", "failed"):
            pts = [(x, r.objective) for x, r in zip(xs, h["records"], strict=False) if r.status.value == status and x is not None]
            if status == "failed":  # no objective: a cross on the axis floor
                pts = [(x, None) for x, _ in pts]
            if not pts:
                continue
            if status == "failed":
                ax.scatter(
                    [p[0] for p in pts],
                    [0] * len(pts),
                    marker="x",
                    color=_COLORS[status],
                    label=status,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                    zorder=3,
                )
            else:
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=_COLORS[status],
                    label=status,
                    alpha=0.7,
                    marker="o" if status == "complete" else "v",
                    zorder=3,
                )
        line = [(x, b) for x, b in zip(xs, h["best"], strict=False) if x is not None and b is not None]
        if line:
            ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="black", label="best so far")
        ax.set_xlabel(label)
        ax.set_ylabel(study.settings.get("metric", "objective"))
        ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: the tick 1, not 0.95..1.05
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{study.path.name}: best so far ({study.direction})")
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _curves_figure(study: Study, finished: list[TrialRecord]) -> Any:
    """The figure of ``curves.png``: the best :data:`CURVE_LABELS` complete trials each in its own
    colour labelled ``trial ID (objective)`` in the legend, further complete trials in
    grey under one entry, pruned trials dashed orange, failed ones red crosses; integer epoch ticks."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = str(study.settings.get("metric") or "")
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    complete = list(_complete(finished))
    complete.sort(key=lambda r: (-(r.objective or 0.0) if study.direction == "maximize" else (r.objective or 0.0), r.id))
    labelled = {r.id: i for i, r in enumerate(complete[:CURVE_LABELS])}
    palette = _CURVE_PALETTE
    seen: set[str] = set()
    others = len(complete) - len(labelled)
    for r in sorted(finished, key=lambda r: (r.id in labelled, -labelled.get(r.id, 0), r.id)):  # labelled on top, best last
        pts = [(row["epoch"], row[metric]) for row in r.epochs if "epoch" in row and isinstance(row.get(metric), (int, float))]
        status = r.status.value
        style = {"complete": "-", "pruned": "--", "failed": ":"}[status]
        label: str | None
        color: Any
        if r.id in labelled:
            color, label, alpha, width = (
                palette[labelled[r.id] % len(palette)],
                f"trial {r.id} ({format_value(r.objective)})",
                0.9,
                1.8,
            )
        elif status == "complete":
            color, alpha, width = "#b0b0b0", 0.6, 1.0
            label = f"{others} other complete" if "other" not in seen else None
            seen.add("other")
        else:
            color, alpha, width = _COLORS[status], 0.8, 1.2
            label = status if status not in seen else None
            seen.add(status)
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                style,
                color=color,
                alpha=alpha,
                linewidth=width,
                label=label,
                marker="x" if status == "failed" else ("v" if status == "pruned" else "o"),
                markersize=4,
                markevery=[-1],
            )
        elif status == "failed":
            ax.scatter([0], [0], marker="x", color=color, label=label, transform=ax.get_yaxis_transform())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: the tick 1, not 0.95..1.05
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{study.path.name}: every trial's {metric} per epoch")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # the labelled trials in rank order (best first), then the others
        order = sorted(
            range(len(labels)), key=lambda i: (not labels[i].startswith("trial "), labelled.get(_trial_id(labels[i]), 0))
        )
        ax.legend(
            [handles[i] for i in order], [labels[i] for i in order], loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8
        )
    return fig


def _trial_id(label: str) -> int:
    """The id in a legend label ``"trial 7 (0.5)"`` (-1 for other labels)."""
    parts = label.split()
    return int(parts[1]) if len(parts) > 1 and parts[0] == "trial" and parts[1].isdigit() else -1


def _png_curves(study: Study, finished: list[TrialRecord], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = _curves_figure(study, finished)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _final_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The configurations of a final stage that have a complete run, best first, with a label."""
    rows = []
    for c in summary.get("configurations") or []:
        if not c.get("test"):
            continue
        label = f"trial {c['source_trial']}" if c.get("source_trial") is not None else "config"
        rows.append({**c, "label": label})
    return rows


def _final_title(study: Study, summary: dict[str, Any]) -> str:
    seeds = summary.get("seeds") or []
    return (
        f"{study.path.name}: final model, {count_of(summary.get('epochs'), 'epoch')} x {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
        f"scored on {summary.get('split_label')}"
    )


def _png_final(study: Study, summary: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = _final_rows(summary)
    metric = str(summary.get("metric") or "")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) + 3), 4.5), constrained_layout=True)
    for x, c in enumerate(rows):
        ax.scatter(
            [x] * len(c["test"]), c["test"], color=_COLORS["complete"], alpha=0.6, zorder=3, label="each seed" if x == 0 else None
        )
        ax.errorbar(
            [x + 0.15],
            [c["test_mean"]],
            yerr=[[c["test_sd"] or 0.0], [c["test_sd"] or 0.0]],
            fmt="s",
            color="black",
            capsize=4,
            zorder=4,
            label="mean ± sd" if x == 0 else None,
        )
        if c.get("val_mean") is not None:
            ax.scatter(
                [x - 0.15],
                [c["val_mean"]],
                marker="D",
                color=_COLORS["pruned"],
                zorder=3,
                label="final val mean" if x == 0 else None,
            )
        if c.get("search_objective") is not None:
            ax.scatter(
                [x - 0.3],
                [c["search_objective"]],
                marker="^",
                color="tab:purple",
                zorder=3,
                label="search's val" if x == 0 else None,
            )
    chosen = summary.get("chosen") or {}
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([c["label"] + (" *" if chosen.get("source_trial") == c.get("source_trial") else "") for c in rows])
    ax.set_ylabel(f"{metric} ({summary.get('split_label')})")
    ax.set_title(_final_title(study, summary) + (" (* the final model)" if chosen else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _plotly_final(study: Study, summary: dict[str, Any]) -> list[Any]:
    import plotly.graph_objects as go

    rows = _final_rows(summary)
    if not rows:
        return []
    fig = go.Figure()
    labels = [c["label"] for c in rows]
    fig.add_trace(
        go.Scatter(
            x=[c["label"] for c in rows for _ in c["test"]],
            y=[v for c in rows for v in c["test"]],
            mode="markers",
            name=f"each seed ({summary.get('split_label')})",
            marker={"color": _COLORS["complete"], "opacity": 0.6},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[c["test_mean"] for c in rows],
            error_y={"type": "data", "array": [c["test_sd"] or 0.0 for c in rows]},
            mode="markers",
            name="mean ± sd",
            marker={"color": "black", "symbol": "square"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=labels, y=[c.get("val_mean") for c in rows], mode="markers", name="final val mean", marker={"symbol": "diamond"}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[c.get("search_objective") for c in rows],
            mode="markers",
            name="search's val",
            marker={"symbol": "triangle-up"},
        )
    )
    fig.update_layout(title=_final_title(study, summary), yaxis_title=str(summary.get("metric")), height=420)
    return [fig]


def _final_html(summary: dict[str, Any]) -> str:
    """The report's "Final model" paragraph: the stage, and the final model with its scores."""
    from .final import render_final

    return "<h2>Final model</h2><pre>" + html.escape("\n".join(render_final(summary))) + "</pre>"


#: Colour map of the parallel-coordinate and slice PNGs: viridis has no white end (Optuna's
#: ``Blues`` draws the worst trials white on a grey background) and reads in greyscale too.
_CMAP = "viridis"


def _line_alpha(n: int) -> float:
    """Opacity of one of ``n`` lines or points: 0.8 for a handful, down to 0.06 at 1,000 and more,
    so overlapping trials show as density rather than a solid block (about 50 opaque-equivalents)."""
    return max(0.06, min(0.8, 50.0 / max(1, n)))


def _axis_values(p: Any, values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """A parameter's values on [0, 1] (log scale for a log parameter, index for a choice) and the
    tick labels of its axis: bottom, middle and top (choices: every choice, at most 8)."""
    import math as _m

    if p.choices:
        choices = list(p.choices)
        pos = {c: (i / (len(choices) - 1) if len(choices) > 1 else 0.5) for i, c in enumerate(choices)}
        step = max(1, math.ceil(len(choices) / 8))
        return [pos.get(v, 0.5) for v in values], [(pos[c], str(c)) for c in choices[::step]]
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    lo = min([float(p.low), *nums]) if p.low is not None else min(nums, default=0.0)
    hi = max([float(p.high), *nums]) if p.high is not None else max(nums, default=1.0)
    log = bool(p.log) and lo > 0

    def f(x: float) -> float:
        a, b, x = (_m.log10(lo), _m.log10(hi), _m.log10(x)) if log else (lo, hi, x)
        return 0.5 if b == a else (x - a) / (b - a)

    mid = 10 ** ((_m.log10(lo) + _m.log10(hi)) / 2) if log else (lo + hi) / 2
    ticks = [(0.0, format_value(lo)), (0.5, format_value(mid)), (1.0, format_value(hi))] if hi > lo else [(0.5, format_value(lo))]
    return [f(float(v)) if isinstance(v, (int, float)) else 0.5 for v in values], ticks


def _png_parallel(study: Study, complete: list[TrialRecord], params: list[str], path: Path) -> None:
    """Draw :func:`parallel_figure` into ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    fig = parallel_figure(study, complete, params)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)


def parallel_figure(study: Study, complete: list[TrialRecord], params: list[str]) -> Any:
    """``parallel.png``: one vertical axis for the objective and one per parameter (the most
    important first), each with its own bottom/middle/top labels beside it (no shared ticks, so
    none collide); one line per complete trial, coloured by objective on viridis, the best drawn
    last and thicker; lines fade with the number of trials (:func:`_line_alpha`)."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    space = _space_of(study)
    sign = 1 if study.direction == "maximize" else -1
    rows = sorted(complete, key=lambda r: sign * float(r.objective or 0.0))  # worst first: the best on top
    objs = [float(r.objective or 0.0) for r in rows]
    omin, omax = min(objs), max(objs)
    norm = [(o - omin) / (omax - omin) if omax > omin else 0.5 for o in objs]
    cols: list[list[float]] = [norm]
    labels: list[list[tuple[float, str]]] = [
        [(0.0, format_value(omin)), (0.5, format_value((omin + omax) / 2)), (1.0, format_value(omax))]
    ]
    for key in params:
        v, t = _axis_values(space[key] if key in space else _Inferred(), [r.params.get(key) for r in rows])
        cols.append(v)
        labels.append(t)
    names = [str(study.settings.get("metric") or "objective").rsplit("/", 1)[-1], *params]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.9 * len(names)), 5.0))
    cmap = plt.get_cmap(_CMAP)
    colour = [cmap(x if sign > 0 else 1 - x) for x in norm]  # yellow = best in either direction
    segs = [[(j, cols[j][i]) for j in range(len(names))] for i in range(n)]
    best_k = min(n, 10)
    ax.add_collection(LineCollection(segs[: n - best_k], colors=colour[: n - best_k], linewidths=1.0, alpha=_line_alpha(n)))
    ax.add_collection(LineCollection(segs[n - best_k :], colors=colour[n - best_k :], linewidths=2.0, alpha=0.95))
    for j, ticks in enumerate(labels):
        ax.axvline(j, color="#333333", linewidth=1.0)
        for y, text in ticks:
            ax.annotate(
                text,
                (j, y),
                xytext=(-4, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    ax.set_xlim(-0.6, len(names) - 0.8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    sm = plt.cm.ScalarMappable(cmap=cmap if sign > 0 else cmap.reversed(), norm=plt.Normalize(omin, omax))
    fig.colorbar(sm, ax=ax, pad=0.01, fraction=0.03).set_label(names[0])
    bold = f" (the best {best_k} bold)" if n > best_k else ""
    ax.set_title(f"{study.path.name}: {n} complete trials{bold}; each axis spans its parameter's range")
    return fig


class _Inferred:
    """A parameter of the records that the stored space does not name: numbers, linear scale."""

    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log = False
    kind: Any = None


def _png_slice(study: Study, complete: list[TrialRecord], params: list[str], path: Path) -> None:
    """Draw :func:`slice_figure` into ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    fig = slice_figure(study, complete, params)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)


def slice_figure(study: Study, complete: list[TrialRecord], params: list[str]) -> Any:
    """``slice.png``: the objective against each parameter (the most important first), three
    panels a row; at most 4 ticks per axis labelled by :func:`hpo.fmt.format_value` (no run-together
    labels such as ``0.00025000.0005``), log axes for log parameters, points coloured by trial
    number on viridis and fading with their number (:func:`_line_alpha`)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

    space = _space_of(study)
    ncol = min(3, max(1, len(params)))
    nrow = math.ceil(len(params) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False, sharey=True)
    objs = [float(r.objective or 0.0) for r in complete]  # complete: objective set
    ids = [r.id for r in complete]
    n = len(complete)
    fmt = FuncFormatter(lambda v, _pos: format_value(float(v)))
    points = None
    for k, key in enumerate(params):
        ax = axes[k // ncol][k % ncol]
        p = space[key] if key in space else _Inferred()
        xs = [r.params.get(key) for r in complete]
        if p.choices:
            choices = list(p.choices)
            xs = [choices.index(x) if x in choices else -1 for x in xs]
            ax.set_xticks(range(len(choices)), [str(c) for c in choices], rotation=30 if len(choices) > 4 else 0)
        elif p.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(numticks=4))
            ax.xaxis.set_major_formatter(fmt)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
        else:
            ax.xaxis.set_major_locator(
                MaxNLocator(nbins=4, integer=getattr(p, "kind", None) is not None and p.kind.value == "int")
            )
            ax.xaxis.set_major_formatter(fmt)
        points = ax.scatter(
            xs, objs, c=ids, cmap=_CMAP, s=28 if n <= 100 else 10, alpha=max(0.25, _line_alpha(n)), edgecolors="none"
        )
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
        if k % ncol == 0:
            ax.set_ylabel(str(study.settings.get("metric") or "objective"))
            ax.yaxis.set_major_formatter(fmt)
    for k in range(len(params), nrow * ncol):
        axes[k // ncol][k % ncol].set_visible(False)
    if points is not None:
        fig.colorbar(points, ax=axes, pad=0.01, fraction=0.03).set_label("trial")
    fig.suptitle(f"{study.path.name}: objective against each parameter ({n} complete trials)")
    return fig


def _save_optuna_png(draw: Any, path: Path, **kw: Any) -> None:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
        ax = draw(**kw)
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    fig.set_size_inches(max(8, fig.get_size_inches()[0]), max(4.5, fig.get_size_inches()[1]))
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plotly_history(study: Study, finished: list[TrialRecord]) -> list[Any]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    h = _history_data(study, finished)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against finished trials", "against wall time (s)"))
    for col, xs in ((1, h["n"]), (2, h["t"])):
        for status in ("complete", "pruned", "failed"):
            rs = [(x, r) for x, r in zip(xs, h["records"], strict=False) if r.status.value == status and x is not None]
            if not rs:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[x for x, _ in rs],
                    y=[r.objective if status != "failed" else None for _, r in rs]
                    if status != "failed"
                    else [min((v for v in h["best"] if v is not None), default=0)] * len(rs),
                    mode="markers",
                    name=status,
                    legendgroup=status,
                    showlegend=col == 1,
                    marker={
                        "color": _COLORS[status],
                        "symbol": {"complete": "circle", "pruned": "triangle-down", "failed": "x"}[status],
                    },
                    text=[f"trial {r.id}" + (f": {r.error}" if r.error else "") for _, r in rs],
                ),
                row=1,
                col=col,
            )
        line = [(x, b) for x, b in zip(xs, h["best"], strict=False) if x is not None and b is not None]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in line],
                y=[p[1] for p in line],
                mode="lines",
                line_shape="hv",
                name="best so far",
                legendgroup="best",
                showlegend=col == 1,
                line={"color": "black"},
            ),
            row=1,
            col=col,
        )
    fig.update_layout(title=f"Best {study.settings.get('metric')} so far ({study.direction})", height=420)
    fig.update_xaxes(tickformat="d", dtick=max(1, math.ceil(len(h["n"]) / 10)), row=1, col=1)  # whole trials
    return [fig]


def _plotly_curves(study: Study, finished: list[TrialRecord]) -> list[Any]:
    import plotly.graph_objects as go

    metric = str(study.settings.get("metric") or "")
    fig = go.Figure()
    for r in sorted(finished, key=lambda r: r.id):
        pts = [(row["epoch"], row[metric]) for row in r.epochs if "epoch" in row and isinstance(row.get(metric), (int, float))]
        s = r.status.value
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="lines+markers",
                name=f"trial {r.id} ({s})",
                line={"dash": {"complete": "solid", "pruned": "dash", "failed": "dot"}[s]}
                | ({} if s == "complete" else {"color": _COLORS[s]}),
                marker={"symbol": "x" if s == "failed" else "circle", "size": 5},
            )
        )
    fig.update_layout(
        title=f"Every trial's {metric} per epoch (pruned dashed, failed dotted)",
        xaxis_title="epoch",
        yaxis_title=metric,
        height=420,
    )
    fig.update_xaxes(tickformat="d", dtick=_epoch_dtick(finished))
    return [fig]


def _epoch_dtick(finished: list[TrialRecord]) -> int:
    """A whole-number step between epoch ticks: 1 up to 10 epochs, else about 10 ticks."""
    last = max((int(row["epoch"]) for r in finished for row in r.epochs if isinstance(row.get("epoch"), (int, float))), default=1)
    return max(1, math.ceil(last / 10))


def write_plots(study_dir: str | Path, *, html_report: bool = True) -> list[Path]:
    """Draw the study's plots into ``<study>/plots/`` (see the module docstring for the files).

    Plots that need more than the study has (importance and parameter plots need two complete
    trials) are left out.

    Args:
        study_dir: the study directory.
        html_report: also write ``plots/report.html`` (about 5 MB: plotly.js is inlined).

    Returns:
        The files written.

    Raises:
        hpo.errors.StudyError: no study at ``study_dir``.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; never open a window
    from optuna.visualization import matplotlib as omp

    study = Study.open(study_dir)
    out = study.path / "plots"
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    finished = study.finished()
    written: list[Path] = []
    if not finished:
        return written
    _png_history(study, finished, out / "history.png")
    _png_curves(study, finished, out / "curves.png")
    written += [out / "history.png", out / "curves.png"]
    ostudy = optuna_study(study, finished)
    imp = cached_importance(study, finished)
    if imp is None or imp.source != "cached" or imp.method != "fanova":
        imp = importance(study, finished, method="fanova", max_trials=PLOT_FANOVA_TRIALS)
        if imp is not None:
            _save_importance(out, imp)
    importances = imp.values if imp is not None else {}
    complete = _complete(finished)
    why = importance_skipped(complete) if imp is None and len(complete) >= 2 else None
    if why is not None:  # (with fewer than two complete trials there is nothing to rate: no line)
        from .log import get_logger, notice

        notice(get_logger("plots"), f"parameter importance, parallel and slice plots skipped: {why}")
    top = list(importances)[:TOP_PARAMS]
    if importances:
        written += [out / "importance.json", out / "importance.meta.json"]
        _save_optuna_png(omp.plot_param_importances, out / "importance.png", study=ostudy, evaluator=_evaluator(importances))
        _png_parallel(study, complete, top, out / "parallel.png")
        _png_slice(study, complete, top, out / "slice.png")
        written += [out / "importance.png", out / "parallel.png", out / "slice.png"]
    from .final import read_final_summary

    final = read_final_summary(study.path)
    if final is not None and _final_rows(final):
        _png_final(study, final, out / "final.png")
        written.append(out / "final.png")
    if html_report:
        written.append(_write_report(study, finished, ostudy, importances, top, out / "report.html", final))
    return written


def _remove_stale_temps(folder: Path) -> None:
    """Remove temp files (``.NAME.*.tmp*``) a killed drawing left in ``folder``, once
    :data:`STALE_TEMP_S` old (a drawing running now renames its own within seconds)."""
    import time

    now = time.time()
    for f in folder.glob(".*.tmp*"):
        try:
            if now - f.lstat().st_mtime > STALE_TEMP_S:
                f.unlink()
        except OSError:
            pass


def _evaluator(importances: dict[str, float]) -> Any:
    """An Optuna importance evaluator that answers the importances computed once (fANOVA is the
    slow part: about 2 s for 26 parameters), so every plot shows the same numbers."""
    from optuna.importance import BaseImportanceEvaluator

    class Computed(BaseImportanceEvaluator):
        def evaluate(self, study: Any, params: Any = None, *, target: Any = None) -> dict[str, float]:
            return {k: v for k, v in importances.items() if params is None or k in params}

    return Computed()


def _plotly_parallel(study: Study, complete: list[TrialRecord], params: list[str]) -> Any:
    """The report's parallel coordinates: as ``parallel.png`` (:func:`parallel_figure`), a plotly
    ``Parcoords`` (drag along an axis to select trials) coloured by objective on viridis (Optuna's
    own uses ``Blues``, whose worst trials are white), each axis labelled at its bottom, middle and
    top by :func:`hpo.fmt.format_value` (log parameters on a log scale)."""
    import plotly.graph_objects as go

    space = _space_of(study)
    objs = [float(r.objective or 0.0) for r in complete]  # complete: objective set
    metric = str(study.settings.get("metric") or "objective")
    dims = [{"label": metric.rsplit("/", 1)[-1], "values": objs}]
    for key in params:
        values, ticks = _axis_values(space[key] if key in space else _Inferred(), [r.params.get(key) for r in complete])
        dims.append(
            {
                "label": key,
                "values": values,
                "range": [0, 1],
                "tickvals": [t for t, _ in ticks],
                "ticktext": [text for _, text in ticks],
            }
        )
    line = {
        "color": objs,
        "colorscale": "Viridis",
        "reversescale": study.direction != "maximize",
        "showscale": True,
        "colorbar": {"title": {"text": metric.rsplit("/", 1)[-1]}},
    }
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims))
    fig.update_layout(title=f"Parallel coordinates ({len(complete)} complete trials; drag along an axis to select)")
    return fig


def _plotly_slice(study: Study, complete: list[TrialRecord], params: list[str]) -> Any:
    """The report's slice view: as ``slice.png`` (:func:`slice_figure`), three panels a row (Optuna's
    puts every parameter in one row wider than a window), points coloured by trial number on
    viridis and fading with their number, log axes for log parameters."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    space = _space_of(study)
    ncol = min(3, max(1, len(params)))
    nrow = max(1, math.ceil(len(params) / ncol))
    fig = make_subplots(rows=nrow, cols=ncol, shared_yaxes=True, subplot_titles=params)
    objs = [float(r.objective or 0.0) for r in complete]  # complete: objective set
    ids = [r.id for r in complete]
    n = len(complete)
    for k, key in enumerate(params):
        p = space[key] if key in space else _Inferred()
        xs = [r.params.get(key) for r in complete]
        row, col = k // ncol + 1, k % ncol + 1
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=objs,
                mode="markers",
                name=key,
                text=[f"trial {i}" for i in ids],
                marker={
                    "color": ids,
                    "colorscale": "Viridis",
                    "size": 7 if n <= 100 else 5,
                    "opacity": max(0.3, _line_alpha(n)),
                    "showscale": k == 0,
                    "colorbar": {"title": {"text": "trial"}},
                },
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        if p.log:
            fig.update_xaxes(type="log", row=row, col=col)
        fig.update_xaxes(nticks=5, row=row, col=col)
    fig.update_yaxes(title_text=str(study.settings.get("metric") or "objective"), col=1)
    fig.update_layout(title=f"Objective against each parameter ({n} complete trials)", height=320 * nrow + 80)
    return fig


def _write_report(
    study: Study,
    finished: list[TrialRecord],
    ostudy: Any,
    importances: dict[str, float],
    top: list[str],
    path: Path,
    final: dict[str, Any] | None = None,
) -> Path:
    import plotly.offline
    from optuna import visualization as ov

    figs = _plotly_history(study, finished) + _plotly_curves(study, finished)
    if importances:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figs.append(ov.plot_param_importances(ostudy, evaluator=_evaluator(importances)))
            figs.append(_plotly_parallel(study, _complete(finished), top))
            figs.append(_plotly_slice(study, _complete(finished), top))
    best = study.best(finished)
    counts = {s.value: sum(r.status is s for r in finished) for s in TrialStatus if s.finished}
    head = (
        f"<h1>hpo study {html.escape(study.path.name)}</h1><p>backend <b>{html.escape(str(study.settings.get('backend')))}</b>, "
        f"objective <code>{html.escape(str(study.settings.get('metric')))}</code> ({study.direction}), trials: "
        + format_counts(counts)
        + (
            f"; best trial {best.id}: {format_value(best.objective)}</p><pre>{html.escape(json.dumps(best.params, indent=1))}</pre>"
            if best
            else "</p>"
        )
    )
    body = "\n".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    if final is not None:
        body += _final_html(final) + "\n".join(
            f.to_html(full_html=False, include_plotlyjs=False) for f in _plotly_final(study, final)
        )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>hpo "
        f"{html.escape(study.path.name)}</title><script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
        f"</head><body style='font-family:sans-serif'>{head}{body}</body></html>"
    )
    atomic_write_text(path, page)
    return path


class PlotCallback(TunerCallback):
    """Draws the study's plots when a run ends (an observer of :class:`hpo.Tuner`).

    A plotting error never fails the study: it becomes one warning line on stderr.
    """

    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        """No-op."""

    def on_trial_start(self, record: TrialRecord) -> None:
        """No-op."""

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """No-op."""

    def on_trial_end(self, record: TrialRecord) -> None:
        """No-op."""

    def on_study_end(self, study: Study, result: TuneResult | None) -> None:
        """Write ``<study>/plots/`` (any finished trial is enough); without the ``plots`` extra one
        warning line naming it (without plotly alone: the PNGs, and the line says report.html is missing)."""
        from .extras import MissingExtra, install_hint, installed

        log = logging.getLogger("hpo.plots")
        try:
            require_plot_libraries("the study's plots", html=False)
            html_report = installed("plotly")
            write_plots(study.path, html_report=html_report)
            if not html_report:
                log.warning(
                    "the study's plots: plots/report.html not written: needs the Python package 'plotly', "
                    f"which is not installed; {install_hint('plots')}"
                )
        except MissingExtra as e:
            log.warning(str(e))
        except Exception as e:  # noqa: BLE001 - pictures are never worth a failed study
            logging.getLogger("hpo.plots").warning(f"could not draw the study's plots ({type(e).__name__}: {e})".splitlines()[0])


def plots_wanted(setting: bool | None) -> bool:
    """Whether a study draws its plots: the setting ``plots`` when given, else on unless the
    environment sets ``HPO_PLOTS`` to ``0``, ``false``, ``no`` or ``off``."""
    if setting is not None:
        return bool(setting)
    return os.environ.get("HPO_PLOTS", "1").strip().lower() not in ("0", "false", "no", "off")


@hookimpl(tryfirst=True)
def hpo_study_observers(settings: Mapping[str, Any]) -> list[TunerCallback]:
    """hpo's own plugin (:data:`hpo.plugins.DEFAULT_PLUGINS`): the plots of a study that wants them
    (:func:`plots_wanted`), drawn before the other plugins' observers see the study end (MLflow
    logs them)."""
    return [PlotCallback()] if plots_wanted(settings.get("plots")) else []
