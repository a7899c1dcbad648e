"""How many seeds a new evaluation needs: the chance of each primary verdict ``better`` and of issue
27's criterion, from an earlier evaluation's per-seed differences (protocol-v2.md, section 2).

For each number of seeds n, ``sims`` simulated evaluations draw each primary comparison's n per-seed
differences by a smoothed paired bootstrap of the earlier report's differences (one of them, drawn
with replacement, plus N(0, ``jitter``^2), so that no two |d| tie; where every comparison has the
same seeds, whole seeds are drawn, the same for every comparison, so that what one seed's
comparisons share, the baseline's score above all, stays shared), test them as the protocol does
(exact two-sided Wilcoxon, Holm over the family, :mod:`hpo_bench.stats`) and count how often a
comparison comes out ``better`` (adjusted p < alpha, positive mean) and how often every contender is
``better`` on at least ``needed`` problems. Optimistic by construction: it assumes the observed
effects hold on new seeds (no regression to the mean, no change of defaults).

    python -m hpo_bench.sizing benchmarks/results/protocol/report.json --family per_contender
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .stats import holm, wilcoxon_test

__all__ = ["chances", "main"]


def chances(
    comparisons: list[dict[str, Any]],
    seeds: int,
    *,
    family: str = "all",
    needed: int = 2,
    sims: int = 300,
    jitter: float = 0.01,
    alpha: float = 0.05,
    rng_seed: int = 0,
) -> dict[str, Any]:
    """Simulated chances at ``seeds`` seeds per comparison.

    Args:
        comparisons: the primary comparisons of a protocol report (``report.json``'s ``comparisons``
            with ``primary`` true): each with ``contender``, ``problem``, ``diffs`` and ``seeds``
            (the seed of each difference; optional).
        seeds: seeds per comparison in the simulated evaluation.
        family: ``all`` (Holm over every comparison) or ``per_contender`` (Holm over each
            contender's comparisons).
        needed: the criterion: ``better`` on at least this many problems, for every contender.
        sims: simulated evaluations.
        jitter: sd of the normal noise added to each drawn difference (score units).
        alpha: family-wise level.
        rng_seed: seed of the draws (the same seed gives the same numbers).

    Returns:
        ``{"seeds", "better": {"<problem>/<contender>": chance}, "criterion": chance}``.

    Raises:
        ValueError: ``family`` unknown, or a comparison without differences.
    """
    if family not in ("all", "per_contender"):
        raise ValueError(f"family: '{family}' is neither all nor per_contender")
    if any(not c.get("diffs") for c in comparisons):
        raise ValueError("comparisons: each needs its per-seed differences ('diffs')")
    rng = np.random.default_rng(rng_seed)
    who = sorted({c["contender"] for c in comparisons})
    shown = np.zeros(len(comparisons))
    met = 0
    diffs = [np.asarray(c["diffs"], dtype=float) for c in comparisons]
    # the same evaluation seeds for every comparison: resample whole seeds, so that what the
    # comparisons of one seed share (the baseline's score, the seed's start) stays shared
    joint = all(c.get("seeds") and c["seeds"] == comparisons[0]["seeds"] for c in comparisons)
    groups = (  # the Holm families, as indices into comparisons
        [[i for i, c in enumerate(comparisons) if c["contender"] == w] for w in who]
        if family == "per_contender"
        else [list(range(len(comparisons)))]
    )
    for _ in range(sims):
        if joint:
            pick = rng.integers(0, len(diffs[0]), size=seeds)
            drawn = [d[pick] + rng.normal(0, jitter, size=seeds) for d in diffs]
        else:
            drawn = [rng.choice(d, size=seeds) + rng.normal(0, jitter, size=seeds) for d in diffs]
        raw = [wilcoxon_test(list(d))["p"] for d in drawn]
        adj: list[float | None] = [None] * len(comparisons)
        for idx in groups:
            for i, a in zip(idx, holm([raw[i] for i in idx]), strict=True):
                adj[i] = a
        better = [a is not None and a < alpha and float(d.mean()) > 0 for a, d in zip(adj, drawn, strict=True)]
        shown += better
        met += all(sum(b for c, b in zip(comparisons, better, strict=True) if c["contender"] == w) >= needed for w in who)
    return {
        "seeds": seeds,
        "better": {f"{c['problem']}/{c['contender']}": float(s / sims) for c, s in zip(comparisons, shown, strict=True)},
        "criterion": met / sims,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m hpo_bench.sizing REPORT [--family F] [--seeds 10,12,...] [--sims N]``: prints one
    line per number of seeds. Exit 2 on a report without primary comparisons."""
    ap = argparse.ArgumentParser(prog="python -m hpo_bench.sizing", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a protocol run's report.json")
    ap.add_argument("--family", choices=["all", "per_contender"], default="all")
    ap.add_argument("--seeds", default="10,12,14,16,20", help="comma-separated numbers of seeds")
    ap.add_argument("--sims", type=int, default=300)
    ap.add_argument("--needed", type=int, default=2)
    args = ap.parse_args(argv)
    comps = [c for c in json.loads(args.report.read_text())["comparisons"] if c.get("primary")]
    if not comps:
        ap.exit(2, f"report: {args.report} has no primary comparisons\n")
    print(
        f"{args.sims} simulated evaluations per number of seeds; Holm family: {args.family}; criterion: every contender better on >= {args.needed}"
    )
    for n in (int(x) for x in args.seeds.split(",")):
        r = chances(comps, n, family=args.family, needed=args.needed, sims=args.sims)
        cells = ", ".join(f"{k} {v:.2f}" for k, v in r["better"].items())
        print(f"{n} seeds: criterion {r['criterion']:.2f}; better: {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
