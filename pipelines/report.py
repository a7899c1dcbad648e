"""The tuning step's HTML report: one self-contained page (no scripts, no external files) that the
KFP UI renders from an ``Output[HTML]``: the study's summary, a best-so-far plot (when matplotlib is
installed, as it is in the hpo image), the parameters' importance (Optuna's fANOVA, when optuna is
installed, from 10 complete trials as in ``hpo show``) and the leaderboard."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import Any

from hpo.show import MIN_IMPORTANCE_TRIALS

__all__ = ["study_report_html", "best_so_far", "param_importances"]


def _t(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp() if iso else None
    except ValueError:
        return None


def best_so_far(records: list[Any], direction: str) -> list[tuple[float, float, int]]:
    """``(seconds since the first trial started, best objective so far, trial id)`` at the end of
    each complete trial, in end-time order.

    Args:
        records: the study's :class:`hpo.TrialRecord` objects.
        direction: ``"maximize"`` or ``"minimize"``.
    """
    starts = [t for t in (_t(r.start) for r in records) if t is not None]
    done = sorted(
        (t, r) for r in records if r.status.value == "complete" and r.objective is not None and (t := _t(r.end)) is not None
    )
    if not starts or not done:
        return []
    t0, sign, best, out = min(starts), (1 if direction == "maximize" else -1), None, []
    for t, r in done:
        if best is None or sign * r.objective > sign * best:
            best = r.objective
        out.append((t - t0, float(best), r.id))
    return out


def param_importances(records: list[Any], direction: str, seed: int = 0) -> dict[str, float] | None:
    """Optuna's fANOVA importance of each hyperparameter for the objective, over the complete trials
    (the search space taken from the values tried); ``None`` when optuna (or the scikit-learn that
    its fANOVA uses) is not installed, or with fewer than :data:`hpo.show.MIN_IMPORTANCE_TRIALS`
    (10) complete trials, the bar ``hpo show`` uses (fANOVA over fewer points ranks noise).

    Args:
        records: the study's :class:`hpo.TrialRecord` objects.
        direction: ``"maximize"`` or ``"minimize"``.
        seed: the random forest's seed (the result is deterministic for a seed).
    """
    done = [r for r in records if r.status.value == "complete" and r.objective is not None]
    keys = sorted({k for r in done for k in r.params})
    if len(done) < MIN_IMPORTANCE_TRIALS or not keys:
        return None
    try:
        import optuna
        from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    except ImportError:
        return None
    dists: dict[str, Any] = {}
    for k in keys:
        values = [r.params.get(k) for r in done]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if min(values) < max(values):
                dists[k] = optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))
        elif len({str(v) for v in values}) > 1:
            dists[k] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    if not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if direction == "minimize" else "maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={
                    k: (float(r.params[k]) if isinstance(d, optuna.distributions.FloatDistribution) else str(r.params[k]))
                    for k, d in dists.items()
                },
                distributions=dists,
                value=float(r.objective),
            )
            for r in done
        ]
    )
    try:
        return {k: float(v) for k, v in get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)).items()}
    except ImportError:  # fANOVA's scikit-learn
        return None


def _plot_png(points: list[tuple[float, float, int]], metric: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.step([p[0] for p in points], [p[1] for p in points], where="post", marker="o")
    ax.set_xlabel("seconds since the study started")
    ax.set_ylabel(f"best {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.5g}" if isinstance(v, float) else str(v)


def study_report_html(study_dir: str | Path, top: int = 100) -> str:
    """The study's report as one HTML page.

    Args:
        study_dir: the study directory.
        top: most leaderboard rows (default 100).

    Raises:
        hpo.errors.StudyError: no study at ``study_dir``.
    """
    from hpo import Study
    from hpo.report import count_trials, format_counts

    study = Study.open(study_dir)
    records = list(study.records().values())
    ranked = study.ranked(records)
    metric, direction = str(study.settings.get("metric")), study.direction
    counts = count_trials(records, ("complete", "pruned", "failed", "running"))
    points = best_so_far(records, direction)
    png = _plot_png(points, metric) if points else None
    keys = list(ranked[0].params) if ranked else []
    e = html.escape
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{e(_fmt(c))}</td>"
            for c in (i, r.id, r.status.value, r.objective, r.epochs_completed, r.duration_s, *(r.params.get(k) for k in keys))
        )
        + "</tr>"
        for i, r in enumerate(ranked[:top], 1)
    )
    plot = (
        f'<h2>Best so far</h2><img alt="best {e(metric)} so far against time" src="data:image/png;base64,{png}">' if png else ""
    )
    best = study.best(records)
    importances = param_importances(records, direction)
    n_complete = counts.get("complete", 0)
    if importances:
        plot += (
            "<h2>Parameter importance</h2><p>Optuna's fANOVA importance for the objective, over the complete "
            "trials</p><table><tr><th>parameter</th><th>importance</th></tr>"
            + "".join(f"<tr><td>{e(k)}</td><td>{v:.3f}</td></tr>" for k, v in importances.items())
            + "</table>"
        )
    elif n_complete < MIN_IMPORTANCE_TRIALS:
        plot += (
            f"<h2>Parameter importance</h2><p>importance needs {MIN_IMPORTANCE_TRIALS} complete trials, "
            f"the study has {n_complete}</p>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>hpo study</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h1>hpo study <code>{e(study.path.name)}</code></h1>"
        f"<p>backend <b>{e(str(study.settings.get('backend')))}</b>, objective <code>{e(metric)}</code> ({e(direction)}); "
        + format_counts(counts)
        + (f"; best trial {best.id}: {e(_fmt(best.objective))}" if best else "")
        + f"</p>{plot}<h2>Leaderboard</h2><table><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in ("rank", "trial", "status", "objective", "epochs", "seconds", *keys))
        + f"</tr>{rows}</table></body></html>\n"
    )
