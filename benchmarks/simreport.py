"""The report of a simulated benchmark (``simulated.md``, ``simulated-best-vs-time.png``) from its
``simulated.json`` (:func:`hpo_bench.simulation.simulate`); :func:`summarise` and :func:`plot_bands`
also give the equal-wall-clock table and plot of the real runs (:mod:`hpo_bench.report`)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

__all__ = ["write_sim_report", "summarise", "chosen_rows", "plot_bands"]


def _ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def _best_at(trials: list[dict[str, Any]], until: float) -> float | None:
    done = [
        t["objective"]
        for t in trials
        if t["status"] == "complete" and t["objective"] is not None and t.get("end_s") is not None and t["end_s"] <= until
    ]
    return max(done) if done else None


def _time_to(trials: list[dict[str, Any]], target: float) -> float | None:
    # tolerance: Ultralytics' native tuner stores metrics rounded to 5 decimals, hpo float32 values
    for t in sorted((t for t in trials if t.get("end_s") is not None), key=lambda t: t["end_s"]):
        if t["status"] == "complete" and t["objective"] is not None and t["objective"] >= target - 1e-5:
            return float(t["end_s"])
    return None


def summarise(results: dict[str, Any], baseline: str = "model.tune") -> list[dict[str, Any]]:
    """One row per contender: best objective at the budget (mean, 95% CI), seeds it beat / tied /
    lost to ``baseline`` (``model.tune``), the Wilcoxon signed-rank p-value against it (two-sided,
    ``zero_method="zsplit"``, scipy), trials per study, and the median time to reach the baseline's
    final best (seeds that reached it).

    Args:
        results: ``{"studies": [{"contender", "seed", "trials": [{"status", "objective", "end_s"}]}],
            "budgets_s": {seed: seconds}, "contenders": [names in order]}``; ``end_s`` in seconds
            since the study's start.
        baseline: the contender whose wall time is the budget.
    """
    from scipy.stats import wilcoxon

    by: dict[str, dict[int, dict[str, Any]]] = {}
    for s in results["studies"]:
        by.setdefault(s["contender"], {})[int(s["seed"])] = s
    budgets = {int(k): float(v) for k, v in results["budgets_s"].items()}
    native = by[baseline]
    ref = {seed: _best_at(s["trials"], budgets[seed]) for seed, s in native.items()}
    rows = []
    for name in results["contenders"]:
        studies = by.get(name, {})
        seeds = sorted(studies)
        best = {seed: _best_at(studies[seed]["trials"], budgets[seed]) for seed in seeds}
        vals = [v for v in best.values() if v is not None]
        mean, half = _ci95(vals) if vals else (math.nan, 0.0)
        diffs = [b - r for s in seeds if (b := best[s]) is not None and (r := ref[s]) is not None]
        # a tie within 1e-5: Ultralytics' native tuner stores metrics rounded to 5 decimals, hpo float32 values
        wins = sum(d > 1e-5 for d in diffs)
        losses = sum(d < -1e-5 for d in diffs)
        p = None
        if name != baseline and len(diffs) >= 2 and any(abs(d) > 1e-5 for d in diffs):  # one seed: no test
            p = float(wilcoxon(diffs, zero_method="zsplit").pvalue)
        # only trials that ended within the seed's budget may reach it (nobody is credited past the budget)
        reach = [
            _time_to([t for t in studies[s]["trials"] if (t.get("end_s") or math.inf) <= budgets[s]], r)
            for s in seeds
            if (r := ref[s]) is not None
        ]
        reached = sorted(t for t in reach if t is not None)
        rows.append(
            {
                "contender": name,
                "seeds": len(seeds),
                "mean": mean,
                "ci95": half,
                "wins": wins,
                "ties": len(diffs) - wins - losses,
                "losses": losses,
                "p": p,
                "trials": sum(len(studies[s]["trials"]) for s in seeds) / max(1, len(seeds)),
                "reached": len(reached),
                "reach_median_s": reached[len(reached) // 2] if reached else None,
                "budget_median_s": sorted(budgets.values())[len(budgets) // 2],
            }
        )
    return rows


def chosen_rows(results: dict[str, Any], baseline: str = "model.tune") -> list[dict[str, Any]]:
    """The primary simulated score per contender: the noise-free quality of the configuration each
    study chose (``studies[].chosen.true``, :func:`hpo_bench.simulation._chosen`), mean and 95% CI
    over seeds; seeds better / tied (within 1e-4) / worse than ``baseline`` on the same seed; the
    two-sided Wilcoxon signed-rank p against it (``zero_method="zsplit"``, scipy); and the noisy
    value the choice was made on, beside it (its mean; the gap is the winner's curse).

    Args:
        results: ``simulated.json`` (:func:`hpo_bench.simulation.simulate`).
        baseline: the contender the others are paired with.
    """
    from scipy.stats import wilcoxon

    by: dict[str, dict[int, dict[str, Any] | None]] = {}
    for st in results["studies"]:
        by.setdefault(st["contender"], {})[int(st["seed"])] = st.get("chosen")
    ref = by.get(baseline, {})
    rows = []
    for name in results["contenders"]:
        chosen = by.get(name, {})
        true = [c["true"] for c in chosen.values() if c]
        noisy = [c["noisy"] for c in chosen.values() if c]
        mean, half = _ci95(true) if true else (math.nan, 0.0)
        diffs = [c["true"] - r["true"] for seed, c in chosen.items() if c and (r := ref.get(seed))]
        wins, losses = sum(d > 1e-4 for d in diffs), sum(d < -1e-4 for d in diffs)
        p = None
        if name != baseline and len(diffs) >= 2 and any(abs(d) > 1e-4 for d in diffs):
            p = float(wilcoxon(diffs, zero_method="zsplit").pvalue)
        rows.append(
            {
                "contender": name,
                "seeds": len(chosen),
                "none": sum(1 for c in chosen.values() if not c),
                "true_mean": mean,
                "true_ci95": half,
                "noisy_mean": sum(noisy) / len(noisy) if noisy else math.nan,
                "wins": wins,
                "ties": len(diffs) - wins - losses,
                "losses": losses,
                "p": p,
            }
        )
    return rows


def plot_bands(results: dict[str, Any], path: Path, *, xlabel: str, title: str, bold: tuple[str, ...]) -> None:
    """Best so far against wall clock, mean and 95% band over seeds per contender, into PNG ``path``
    (``results`` as for :func:`summarise`; a contender's curve starts once every seed has a value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budgets = {int(k): float(v) for k, v in results["budgets_s"].items()}
    horizon = max(budgets.values())
    grid = np.linspace(0, horizon, 200)
    fig, ax = plt.subplots(figsize=(8, 5))
    by: dict[str, list[dict[str, Any]]] = {}
    for s in results["studies"]:
        by.setdefault(s["contender"], []).append(s)
    for name in results["contenders"]:
        curves = []
        for s in by.get(name, []):
            ys = [_best_at(s["trials"], t) for t in grid]
            curves.append([np.nan if y is None else y for y in ys])
        arr = np.array(curves, dtype=float)
        if not len(arr):
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a grid point no seed has reached yet
            mean = np.nanmean(arr, axis=0)
            sd = np.nanstd(arr, axis=0)
            n = np.sum(~np.isnan(arr), axis=0)
        half = 1.96 * sd / np.sqrt(np.maximum(n, 1))
        every = n == len(arr)  # from the time every seed has a complete trial (a mean of a few seeds misleads)
        mean, half, grid_c = mean[every], half[every], grid[every]
        ax.plot(grid_c, mean, label=name, lw=2 if name in bold else 1)
        ax.fill_between(grid_c, mean - half, mean + half, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"best {results['metric']} so far")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_sim_report(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``simulated.md`` and ``simulated-best-vs-time.png`` into ``out``; returns their paths."""
    rows = summarise(results)
    primary = chosen_rows(results) if all("chosen" in st for st in results["studies"]) else []
    png = out / "simulated-best-vs-time.png"
    plot_bands(
        results,
        png,
        xlabel="simulated wall clock, s (one trial at a time, the recorded CPU)",
        title=f"{results['problem']}: best so far, mean and 95% band over {results['seeds']} seeds (surrogate)",
        bold=("model.tune", "ultralytics", "optuna"),
    )
    cv = results["surrogate"]["cv"][results["surrogate"]["kind"]]
    repeated = (results["surrogate"].get("cv_repeated") or {}).get(results["surrogate"]["kind"])
    if repeated:
        maes, rhos = repeated["mae_final"], repeated["spearman_final"]
        folds = (
            f" (over {len(maes)} fold assignments: MAE {min(maes):.4f}-{max(maes):.4f}, Spearman {min(rhos):.2f}-{max(rhos):.2f})"
        )
    else:
        folds = ""
    m = results["machine"]
    lines = [
        f"# Simulated benchmark: {results['problem']}, {results['seeds']} seeds, equal wall clock",
        "",
        f"Every contender gets, seed by seed, the simulated wall time `model.tune` needs for "
        f"{results['iterations_model_tune']} iterations of {results['epochs']}-epoch trials (median "
        f"{rows[0]['budget_median_s']:.0f} s; `model.tune` charged {results['model_tune_extra_s']:.1f} s per iteration "
        "beyond hpo's trial, as measured in the recording). Curves and seconds come from a surrogate "
        f"({results['surrogate']['kind']}) fitted on {results['surrogate']['configs']} recorded configurations "
        f"([recording]({Path(results['recording']).name}/)); its 5-fold held-out error on the final "
        f"{results['metric']} is MAE {cv['mae_final']:.4f} (the recorded values' sd is {cv['sd_final']:.4f}), "
        f"Spearman rank correlation {cv['spearman_final']:.2f}{folds}. "
        + (
            "Trial noise: each simulated trial adds one recorded configuration's held-out residual curve "
            f"(sd {cv['residual_sd_final']:.4f} at the final epoch), drawn per trial, so epoch-1 values rank "
            "configurations as loosely as real ones do. "
            if results.get("noise") == "residual"
            else "No trial noise: every trial plays the surrogate's mean curve. "
        )
        + "The real runs stay the ground truth.",
        "",
    ]
    if primary:
        lines += [
            "**Primary score: the noise-free quality of the configuration each study chose** (the surrogate's mean "
            "final value of its best trial within the budget; the choice itself was made on noisy values, shown beside):",
            "",
            "| contender | seeds | chosen configuration's quality, mean ± 95% CI | vs model.tune: better / tie / worse | "
            "Wilcoxon p | the noisy value it was chosen on (mean) | seeds with no complete trial |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in primary:
            p = "-" if r["p"] is None else f"{r['p']:.2g}"
            vs = "-" if r["contender"] == "model.tune" else f"{r['wins']} / {r['ties']} / {r['losses']}"
            lines.append(
                f"| {r['contender']} | {r['seeds']} | {r['true_mean']:.4f} ± {r['true_ci95']:.4f} | {vs} | {p} | "
                f"{r['noisy_mean']:.4f} | {r['none']} |"
            )
        lines += ["", "The best noisy value each study saw (what a study reports, inflated by the noise it selected on):", ""]
    lines += [
        "| contender | seeds | best at budget, mean ± 95% CI | vs model.tune: better / tie / worse | Wilcoxon p | trials per study | reached model.tune's best (seeds, median s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = "-" if r["p"] is None else f"{r['p']:.2g}"
        reach = f"{r['reached']}/{r['seeds']}" + (f", {r['reach_median_s']:.0f} s" if r["reach_median_s"] is not None else "")
        vs = "-" if r["contender"] == "model.tune" else f"{r['wins']} / {r['ties']} / {r['losses']}"
        lines.append(
            f"| {r['contender']} | {r['seeds']} | {r['mean']:.4f} ± {r['ci95']:.4f} | {vs} | {p} | {r['trials']:.1f} | {reach} |"
        )
    lines += [
        "",
        f"![best so far against simulated wall clock]({png.name})",
        "",
        f"Simulated on {m.get('cpu', '?')} ({m.get('cores', '?')} cores) in {results['wall_s'] / 60:.1f} min; "
        f"contenders: " + "; ".join(f"`{k}`: {v}" for k, v in results["contenders"].items()) + ".",
        "",
    ]
    md = out / "simulated.md"
    md.write_text("\n".join(lines))
    return {"report": md, "plot": png}
