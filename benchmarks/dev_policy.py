"""Issue 27 item 4: the decision rule of ``benchmarks/protocol-dev-policy.yaml``, applied to its run.

``python -m hpo_bench.dev_policy benchmarks/results/dev-policy`` reads the run's ``results.json``
and writes ``decision.md`` beside it: per (problem, seed, backend) cell each policy's final test
score (the mean of its incumbent's final trainings) and best validation value, the first trial's
validation value, each policy's mean over the cells where all three policies have a score, and the
policy the rule picks. The rule (fixed in the protocol file before the run): the highest mean; if
the best two differ by less than :data:`TIE`, the tie goes to ``resolve``, then ``keep``, then
``sgd``. Development seeds only: no claim about hpo's quality rests on these numbers.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

__all__ = ["POLICIES", "TIE", "decide", "main"]

#: The policies compared, in the order a tie prefers them.
POLICIES = ("resolve", "keep", "sgd")
#: A difference of means below this is a tie (the protocol file's rule).
TIE = 0.01


def _cells(results: dict[str, Any]) -> dict[tuple[str, int, str], dict[str, dict[str, Any]]]:
    """``(problem, seed, backend) -> {policy: {"test", "val", "first", "trials"}}`` from the units."""
    units = results.get("units", {})
    cells: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    for uid, u in units.items():
        if u.get("kind") != "study" or u.get("contender_kind") != "hpo":
            continue
        backend, _, policy = str(u["contender"]).rpartition("-")
        if policy not in POLICIES:
            continue
        final = units.get(uid.replace("study/", "final/", 1), {})
        trials = u.get("trials") or []
        first = next((t.get("objective") for t in sorted(trials, key=lambda t: t.get("trial", 0))), None)
        cells.setdefault((u["problem"], int(u["seed"]), backend), {})[policy] = {
            "test": final.get("score"),
            "val": u.get("best_val") if u.get("best_val") is not None else u.get("score_val"),
            "first": first,
            "trials": sum((u.get("counts") or {}).values()),
        }
    return cells


def decide(results: dict[str, Any]) -> dict[str, Any]:
    """The rule applied: ``{"cells", "means", "n", "ranking", "choice", "tie"}``; ``choice`` is
    ``None`` while no cell has a score for every policy."""
    cells = _cells(results)
    full = {k: v for k, v in cells.items() if all(v.get(p, {}).get("test") is not None for p in POLICIES)}
    means = {p: statistics.fmean(v[p]["test"] for v in full.values()) for p in POLICIES} if full else {}
    ranking = sorted(means, key=lambda p: (-means[p], POLICIES.index(p)))
    choice, tie = None, False
    if ranking:
        choice = ranking[0]
        close = [p for p in ranking if means[ranking[0]] - means[p] < TIE]
        if len(close) > 1:
            tie = True
            choice = min(close, key=POLICIES.index)
    return {"cells": cells, "means": means, "n": len(full), "ranking": ranking, "choice": choice, "tie": tie}


def _best_policy(cell: dict[str, dict[str, Any]]) -> str:
    """The policy with the highest final test score in one cell (ties: :data:`POLICIES`' order)."""
    return max(POLICIES, key=lambda p: float(cell[p]["test"]))


def _f(x: Any) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def report(results: dict[str, Any]) -> str:
    """``decision.md``'s text."""
    d = decide(results)
    lines = [
        "# Development run: what hpo does when no optimizer is given (issue 27 item 4)",
        "",
        f"Protocol file: `benchmarks/{Path(results.get('protocol', {}).get('path', 'protocol-dev-policy.yaml')).name}`; "
        f"seed set: {results.get('seed_set')}. **Development seeds: not an evaluation; no claim about "
        "hpo's quality rests on these numbers.** Each cell: the incumbent's final test score (mean of its "
        "final trainings), with the search's best validation value and the first trial's in brackets.",
        "",
        "| problem | seed | backend | " + " | ".join(POLICIES) + " |",
        "|---|---|---|" + "---|" * len(POLICIES),
    ]
    for (problem, seed, backend), v in sorted(d["cells"].items()):
        row = [
            f"{_f(v.get(p, {}).get('test'))} ({_f(v.get(p, {}).get('val'))}; first {_f(v.get(p, {}).get('first'))})"
            for p in POLICIES
        ]
        lines.append(f"| {problem} | {seed} | {backend} | " + " | ".join(row) + " |")
    lines += ["", f"Cells with a final score for every policy: {d['n']}."]
    full = {k: v for k, v in d["cells"].items() if all(v.get(p, {}).get("test") is not None for p in POLICIES)}
    for problem in sorted({k[0] for k in full}):
        got = [v for k, v in full.items() if k[0] == problem]
        means = ", ".join(f"{p} {statistics.fmean(v[p]['test'] for v in got):.4f}" for p in POLICIES)
        best = [_best_policy(v) for v in got]
        wins = {p: best.count(p) for p in POLICIES}
        lines.append(
            f"{problem} alone ({len(got)} cells, descriptive): mean {means}; best in "
            + ", ".join(f"{p} {wins[p]}" for p in POLICIES)
            + " cells."
        )
    if d["means"]:
        lines.append("Mean final test score: " + ", ".join(f"{p} {d['means'][p]:.4f}" for p in d["ranking"]) + ".")
        rule = f"tie (best two within {TIE}): the rule's order resolve, keep, sgd" if d["tie"] else "the highest mean"
        lines.append(f"**Choice: `{d['choice']}`** ({rule}).")
    else:
        lines.append("No choice yet: no cell has a final score for every policy.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write DIR/decision.md; print it. Exit 2 without DIR/results.json."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else Path("benchmarks/results/dev-policy")
    f = folder / "results.json"
    if not f.is_file():
        print(f"benchmarks: error: DIR: no results.json in '{folder}'; give the development run's folder", file=sys.stderr)
        return 2
    text = report(json.loads(f.read_text()))
    (folder / "decision.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
