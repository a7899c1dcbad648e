"""Issue 27 item 4: the decision rules of the development protocols, applied to their runs.

``python -m hpo_bench.dev_policy benchmarks/results/dev-policy`` reads the run's ``results.json``
and writes ``decision.md`` beside it: per (problem, seed, backend) cell each candidate's final test
score (the mean of its incumbent's final trainings) and best validation value, the first trial's
validation value, each candidate's mean over the cells where every candidate has a score, and the
candidate the rule picks. A candidate is the part of a contender's name after its last ``-``
(``optuna-keep``: backend ``optuna``, candidate ``keep``). The rule (fixed in each protocol file
before its run, :data:`RULES`): the highest mean; candidates within :data:`TIE` of it are a tie,
which goes to the first of them in the rule's order. Development seeds only: no claim about hpo's
quality rests on these numbers.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["POLICIES", "RULES", "TIE", "Rule", "decide", "main"]


class Rule(NamedTuple):
    """One development protocol's rule: what it chooses and its candidates in the order a tie prefers them."""

    title: str
    candidates: tuple[str, ...]


#: The policies compared by ``protocol-dev-policy.yaml``, in the order a tie prefers them.
POLICIES = ("resolve", "keep", "sgd")
#: Each development protocol's rule, by the protocol's ``name`` (its file states the same order).
RULES = {
    "issue27-dev-policy": Rule("what hpo does when no optimizer is given", POLICIES),
    "issue27-dev-ultralytics": Rule(
        "the ultralytics backend's start (initial_random r0/r2/r6) and pruning (p: percentile)",
        ("r6", "r2", "r0", "r6p", "r2p", "r0p"),
    ),
    "issue27-dev-ray": Rule(
        "the ray backend's start (random or defaults) and scheduler (asha; fifo: none)",
        ("defaults", "random", "defaultsfifo"),
    ),
    "issue27-dev-optuna": Rule(
        "the optuna backend's pruning (hyperband or none) and TPE's random start (startup_trials 10 or 5)",
        ("hyperband", "none", "startup5"),
    ),
}
#: A difference of means below this is a tie (the protocol files' rule).
TIE = 0.01


def _rule(results: dict[str, Any]) -> Rule:
    """The rule of the run's protocol (``protocol-dev-policy.yaml``'s when the run names none)."""
    return RULES.get(str(results.get("name") or ""), RULES["issue27-dev-policy"])


def _cells(results: dict[str, Any], candidates: tuple[str, ...]) -> dict[tuple[str, int, str], dict[str, dict[str, Any]]]:
    """``(problem, seed, backend) -> {candidate: {"test", "val", "first", "trials"}}`` from the units."""
    units = results.get("units", {})
    cells: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    for uid, u in units.items():
        if u.get("kind") != "study" or u.get("contender_kind") != "hpo":
            continue
        backend, _, policy = str(u["contender"]).rpartition("-")
        if policy not in candidates:
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
    """The run's rule (:data:`RULES`, by the run's protocol name) applied: ``{"cells", "means", "n",
    "ranking", "choice", "tie", "rule"}``; ``choice`` is ``None`` while no cell has a score for every
    candidate."""
    rule = _rule(results)
    order = rule.candidates
    cells = _cells(results, order)
    full = {k: v for k, v in cells.items() if all(v.get(p, {}).get("test") is not None for p in order)}
    means = {p: statistics.fmean(v[p]["test"] for v in full.values()) for p in order} if full else {}
    ranking = sorted(means, key=lambda p: (-means[p], order.index(p)))
    choice, tie = None, False
    if ranking:
        choice = ranking[0]
        close = [p for p in ranking if means[ranking[0]] - means[p] < TIE]
        if len(close) > 1:
            tie = True
            choice = min(close, key=order.index)
    return {"cells": cells, "means": means, "n": len(full), "ranking": ranking, "choice": choice, "tie": tie, "rule": rule}


def _best_candidate(cell: dict[str, dict[str, Any]], order: tuple[str, ...]) -> str:
    """The candidate with the highest final test score in one cell (ties: the rule's order)."""
    return max(order, key=lambda p: (float(cell[p]["test"]), -order.index(p)))


def _f(x: Any) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def report(results: dict[str, Any]) -> str:
    """``decision.md``'s text."""
    d = decide(results)
    order = d["rule"].candidates
    lines = [
        f"# Development run: {d['rule'].title} (issue 27 item 4)",
        "",
        f"Protocol file: `benchmarks/{Path(results.get('protocol', {}).get('path', 'protocol-dev-policy.yaml')).name}`; "
        f"seed set: {results.get('seed_set')}. **Development seeds: not an evaluation; no claim about "
        "hpo's quality rests on these numbers.** Each cell: the incumbent's final test score (mean of its "
        "final trainings), with the search's best validation value and the first trial's in brackets.",
        "",
        "| problem | seed | backend | " + " | ".join(order) + " |",
        "|---|---|---|" + "---|" * len(order),
    ]
    for (problem, seed, backend), v in sorted(d["cells"].items()):
        row = [
            f"{_f(v.get(p, {}).get('test'))} ({_f(v.get(p, {}).get('val'))}; first {_f(v.get(p, {}).get('first'))})"
            for p in order
        ]
        lines.append(f"| {problem} | {seed} | {backend} | " + " | ".join(row) + " |")
    lines += ["", f"Cells with a final score for every candidate: {d['n']}."]
    full = {k: v for k, v in d["cells"].items() if all(v.get(p, {}).get("test") is not None for p in order)}
    for problem in sorted({k[0] for k in full}):
        got = [v for k, v in full.items() if k[0] == problem]
        means = ", ".join(f"{p} {statistics.fmean(v[p]['test'] for v in got):.4f}" for p in order)
        best = [_best_candidate(v, order) for v in got]
        wins = {p: best.count(p) for p in order}
        lines.append(
            f"{problem} alone ({len(got)} cells, descriptive): mean {means}; best in "
            + ", ".join(f"{p} {wins[p]}" for p in order)
            + " cells."
        )
    if d["means"]:
        lines.append("Mean final test score: " + ", ".join(f"{p} {d['means'][p]:.4f}" for p in d["ranking"]) + ".")
        rule = f"tie (within {TIE} of the best): the rule's order {', '.join(order)}" if d["tie"] else "the highest mean"
        lines.append(f"**Choice: `{d['choice']}`** ({rule}).")
    else:
        lines.append("No choice yet: no cell has a final score for every candidate.")
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
