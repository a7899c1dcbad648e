"""The protocol's statistics: paired tests, Holm's correction, bootstrap intervals, ties, sample size.

Every function takes plain numbers and returns plain numbers (JSON-able), so the report can be
recomputed from ``results.json`` and the tests can check each one on known inputs.

Sources:
    - Wilcoxon signed-rank test: Wilcoxon (1945); computed by :func:`scipy.stats.wilcoxon`, exact
      null distribution when no two ``|d|`` tie and none is 0, else an exact enumeration of the
      2^n sign flips (:class:`scipy.stats.PermutationMethod`) up to n = 20.
    - Holm's step-down correction: Holm, "A simple sequentially rejective multiple test procedure",
      Scand. J. Statist. 6 (1979) 65-70.
    - Bootstrap percentile interval of a mean: Efron & Tibshirani, "An Introduction to the
      Bootstrap" (1993), ch. 13; resampling the per-seed paired differences is the paired bootstrap.
    - Sample size of a paired t-test: power from the noncentral t distribution (Cohen, "Statistical
      Power Analysis for the Behavioral Sciences", 2nd ed. 1988, ch. 2); e.g. an effect of 0.5 sd of
      the differences needs 34 pairs at alpha 0.05 two-sided and power 0.8 (Cohen's table 2.4.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "holm",
    "wilcoxon_test",
    "bootstrap_ci",
    "seeds_needed",
    "sample_sd",
    "tie_margin",
    "compare_paired",
    "count_by_margin",
    "verdict",
]

#: Up to this many non-zero differences, a test with tied ``|d|`` enumerates every sign flip.
EXACT_ENUMERATION_MAX_N = 20


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order (``None`` stays ``None`` and is not counted).

    The adjusted p of the i-th smallest of m p-values is ``max_{j<=i} min(1, (m - j + 1) p_(j))``;
    rejecting where it is below alpha controls the family-wise error rate at alpha (Holm 1979).

    Args:
        pvalues: the family's raw p-values.

    Returns:
        Adjusted p-values in [0, 1].
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    order = sorted(idx, key=lambda i: float(pvalues[i]))  # type: ignore[arg-type]
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def wilcoxon_test(diffs: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired differences against 0.

    Zero differences are dropped (Wilcoxon's own rule, ``zero_method="wilcox"``).

    Args:
        diffs: per-seed differences (contender minus baseline).

    Returns:
        ``{"p": float | None, "n_nonzero": int, "method": str}``; ``p`` is 1.0 when every
        difference is 0 and ``None`` when there are none.
    """
    import numpy as np
    from scipy import stats

    d = [float(x) for x in diffs]
    nz = [x for x in d if x != 0.0]
    if not d:
        return {"p": None, "n_nonzero": 0, "method": "none"}
    if not nz:
        return {"p": 1.0, "n_nonzero": 0, "method": "all differences are 0"}
    ties = len({abs(x) for x in nz}) < len(nz)
    if not ties:
        res = stats.wilcoxon(np.asarray(nz), zero_method="wilcox", alternative="two-sided", method="exact")
        method = "exact"
    elif len(nz) <= EXACT_ENUMERATION_MAX_N:
        perm = stats.PermutationMethod(n_resamples=2 ** len(nz))
        res = stats.wilcoxon(np.asarray(nz), zero_method="wilcox", alternative="two-sided", method=perm)
        method = "exact enumeration of sign flips (tied |d|)"
    else:
        res = stats.wilcoxon(np.asarray(nz), zero_method="wilcox", alternative="two-sided", method="asymptotic")
        method = "normal approximation (tied |d|, n > 20)"
    return {"p": float(min(1.0, res.pvalue)), "n_nonzero": len(nz), "method": method}


def bootstrap_ci(diffs: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> list[float] | None:
    """Paired-bootstrap percentile interval of the mean difference.

    Args:
        diffs: per-seed differences (resampled with replacement, seeds as units).
        resamples: bootstrap resamples.
        level: confidence level, e.g. 0.95.
        seed: seed of the resampling RNG (fixed, so the report reproduces).

    Returns:
        ``[low, high]``, or ``None`` with fewer than 2 differences.
    """
    import numpy as np
    from scipy import stats

    d = np.asarray([float(x) for x in diffs])
    if len(d) < 2:
        return None
    if np.all(d == d[0]):
        return [float(d[0]), float(d[0])]
    res = stats.bootstrap(
        (d,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile", rng=np.random.default_rng(seed)
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def seeds_needed(sd_diff: float | None, *, delta: float = 0.02, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Pairs (seeds) a two-sided paired t-test needs to detect a mean difference ``delta``.

    The smallest n >= 2 whose power, ``P(|T| > t_{1-alpha/2, n-1})`` with T noncentral t of
    n - 1 degrees of freedom and noncentrality ``delta / sd_diff * sqrt(n)``, reaches ``power``.
    (The Wilcoxon test's asymptotic relative efficiency to the t-test is 0.955 for normal
    differences, so it needs about 5% more.)

    Args:
        sd_diff: the sample sd of the paired differences (``None``: unknown).
        delta: the difference to detect (objective units, e.g. 0.02 top-1).
        alpha: two-sided level.
        power: wanted power.

    Returns:
        n, or ``None`` when ``sd_diff`` is unknown or n would exceed 100,000.
    """
    from scipy import stats

    if sd_diff is None or not math.isfinite(sd_diff):
        return None
    if sd_diff <= 0:
        return 2
    for n in range(2, 100_001):
        df = n - 1
        tcrit = stats.t.ppf(1 - alpha / 2, df)
        nc = delta / sd_diff * math.sqrt(n)
        pw = 1 - stats.nct.cdf(tcrit, df, nc) + stats.nct.cdf(-tcrit, df, nc)
        if pw >= power:
            return n
    return None


def sample_sd(values: Sequence[float]) -> float | None:
    """The sample standard deviation (n - 1 denominator); ``None`` for fewer than 2 values."""
    v = [float(x) for x in values]
    if len(v) < 2:
        return None
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def tie_margin(noise_sd: float | None, *, k: float, final_seeds: int) -> float | None:
    """The largest paired difference that counts as a tie.

    A contender's score on a seed is the mean of ``final_seeds`` final trainings, so two scores of
    one configuration differ by training noise with sd ``noise_sd * sqrt(2 / final_seeds)``;
    a difference within ``k`` times that is a tie.

    Args:
        noise_sd: sd of one final training's test objective (the noise floor).
        k: the protocol's multiple.
        final_seeds: final trainings averaged per score.

    Returns:
        The margin, or ``None`` without a noise floor.
    """
    if noise_sd is None:
        return None
    return k * noise_sd * math.sqrt(2.0 / max(1, final_seeds))


def compare_paired(
    contender: dict[int, float | None],
    baseline: dict[int, float | None],
    *,
    margin: float | None,
    resamples: int,
    level: float,
    boot_seed: int,
    delta: float,
    alpha: float,
    power: float,
) -> dict[str, Any]:
    """Everything the report says about one contender against the baseline on one problem.

    Args:
        contender, baseline: score per seed (``None``: no score, e.g. a failed study or final).
        margin: the tie margin (:func:`tie_margin`); ``None``: ties only at exactly 0.
        resamples, level, boot_seed: :func:`bootstrap_ci`.
        delta, alpha, power: :func:`seeds_needed`.

    Returns:
        ``seeds`` (paired), ``missing`` (seeds without both scores), ``diffs``, ``mean_diff``,
        ``sd_diff``, ``better``/``tie``/``worse`` (per seed, by the margin), ``wilcoxon``
        (:func:`wilcoxon_test`), ``ci``, ``seeds_needed``.
    """
    seeds = sorted(s for s in set(contender) | set(baseline) if contender.get(s) is not None and baseline.get(s) is not None)
    missing = sorted(s for s in set(contender) | set(baseline) if s not in seeds)
    diffs = [float(contender[s]) - float(baseline[s]) for s in seeds]  # type: ignore[arg-type]
    sd = sample_sd(diffs)
    return {
        "seeds": seeds,
        "missing": missing,
        "diffs": diffs,
        "mean_diff": sum(diffs) / len(diffs) if diffs else None,
        "sd_diff": sd,
        **count_by_margin(diffs, margin),
        "wilcoxon": wilcoxon_test(diffs),
        "ci": bootstrap_ci(diffs, resamples=resamples, level=level, seed=boot_seed),
        "seeds_needed": seeds_needed(sd, delta=delta, alpha=alpha, power=power),
    }


def count_by_margin(diffs: Sequence[float], margin: float | None) -> dict[str, int]:
    """Per-seed differences counted ``better`` (above ``margin``), ``tie`` (within +-``margin``) and
    ``worse`` (below -``margin``); ``None``: ties only at exactly 0."""
    m = margin or 0.0
    return {"better": sum(x > m for x in diffs), "tie": sum(abs(x) <= m for x in diffs), "worse": sum(x < -m for x in diffs)}


def verdict(
    mean_diff: float | None, p_adjusted: float | None, ci: Sequence[float] | None, *, alpha: float, margin: float | None
) -> str:
    """The protocol's reading of one comparison.

    ``better`` / ``worse``: the adjusted p is below ``alpha`` and the mean difference is above /
    below 0; ``tie``: not that, and the whole interval lies within +-``margin``; else
    ``not shown`` (neither a difference nor equivalence); ``no data`` without pairs.
    """
    if mean_diff is None or p_adjusted is None:
        return "no data"
    if p_adjusted < alpha and mean_diff > 0:
        return "better"
    if p_adjusted < alpha and mean_diff < 0:
        return "worse"
    if ci is not None and margin is not None and -margin <= ci[0] and ci[1] <= margin:
        return "tie"
    return "not shown"
