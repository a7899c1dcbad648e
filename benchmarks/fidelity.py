"""Does short-trial tuning transfer? (issue 27 item 5)

About 20 configurations of one problem, each trained by the final-training function
(:mod:`hpo_bench.finals`, the same code that scores the protocol) twice from the problem's start:
at the protocol's trial length E (what a trial sees) and at ``factor`` x E (a full schedule), with
one training seed. The configurations: Ultralytics' defaults (``{}``: what model.tune's first
iteration trains), the incumbents of the protocol runs given (``--incumbents``), and the rest
spread over the condition's hpo space by a Latin hypercube (:class:`scipy.stats.qmc.LatinHypercube`,
seeded).

The report gives Spearman's rank correlation (:func:`scipy.stats.spearmanr`) between the short
and the long trainings (the short run's validation score, as a trial reports it, against the long
run's test and validation scores; the short run's test score against the long run's), with a
bootstrap interval over configurations; and, per epoch k, between the validation score at epoch k
and the long run's final scores, both within the long run (an early-stopping rule sees these
epochs) and within the short run. Units are recorded like the protocol's (resumable, machine and
load per sitting).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from .protocol import FidelitySpec, Protocol, final_seeds

__all__ = ["check_fidelity", "run_fidelity", "write_fidelity_report", "spread_configs"]


def _spec(protocol: Protocol) -> FidelitySpec:
    return protocol.fidelity or FidelitySpec(condition=protocol.statistics.primary_condition)


def spread_configs(space: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` configurations spread over ``space`` (an :class:`hpo.SearchSpace`) by a Latin hypercube.

    Each parameter's unit interval maps to its range: linear, or logarithmic for a ``log``
    parameter; an integer parameter takes ``floor`` over ``[low, high + 1)``; a choice parameter
    the choice at ``floor(u * len(choices))``.
    """
    from scipy.stats import qmc

    from hpo import Kind

    if n <= 0:
        return []
    keys = list(space)
    u = qmc.LatinHypercube(d=len(keys), seed=seed).random(n)
    out = []
    for row in u:
        cfg: dict[str, Any] = {}
        for x, key in zip(row, keys, strict=True):
            p = space[key]
            if p.kind is Kind.CHOICE:
                cfg[key] = p.choices[min(int(x * len(p.choices)), len(p.choices) - 1)]
                continue
            low, high = p.bounds
            if p.kind is Kind.INT:
                cfg[key] = int(min(high, math.floor(low + x * (high - low + 1))))
            elif p.log:
                cfg[key] = float(math.exp(math.log(low) + x * (math.log(high) - math.log(low))))
            else:
                cfg[key] = float(low + x * (high - low))
        out.append(cfg)
    return out


def _incumbents(run_dirs: list[Path], problem: str) -> list[dict[str, Any]]:
    found = []
    for d in run_dirs:
        f = Path(d) / "results.json"
        if not f.is_file():
            raise ValueError(f"--incumbents: no results.json in '{d}'; give protocol run folders")
        doc = json.loads(f.read_text())
        for u in sorted(doc["units"].values(), key=lambda u: (u.get("seed", 0), u.get("contender", ""))):
            if u.get("kind") == "study" and u.get("problem") == problem and u.get("incumbent"):
                src = f"incumbent {u['condition']}/{u['contender']}/seed {u['seed']}"
                found.append({"source": src, "params": dict(u["incumbent"]), "contender": u["contender"]})
    # round-robin over contenders, so a few slots take every contender's incumbents in turn
    by: dict[str, list[dict[str, Any]]] = {}
    for x in found:
        by.setdefault(x["contender"], []).append(x)
    ordered: list[dict[str, Any]] = []
    while any(by.values()):
        for k in sorted(by):
            if by[k]:
                ordered.append(by[k].pop(0))
    return ordered


def check_fidelity(
    protocol: Protocol,
    protocol_path: Path,
    out: Path,
    *,
    problem: str,
    incumbents: list[Path],
    configs: int | None,
    factor: int | None,
    seed: int | None,
    resume: bool,
) -> dict[str, Any]:
    """Everything checked and planned before anything is written: the configurations and the schedule.

    Raises:
        ValueError: an unknown problem, a count below 3, a factor below 2, a folder without
            ``results.json`` among ``incumbents``, or ``out`` holding a run without ``resume``
            (or one of another plan).
    """
    from hpo import SearchSpace

    fs = _spec(protocol)
    if problem not in protocol.problems:
        raise ValueError(f"--problem: unknown '{problem}'; choose from {', '.join(protocol.problems)}")
    n = configs if configs is not None else fs.configs
    if n < 3:
        raise ValueError(f"--configs: {n} is too few for a rank correlation; give 3 or more (e.g. --configs 20)")
    f = factor if factor is not None else fs.factor
    if f < 2:
        raise ValueError(f"--factor: {f} must be 2 or more (the long schedule is FACTOR x the trial length)")
    seed = seed if seed is not None else (fs.seed if fs.seed is not None else protocol.development_seeds()[0])
    cond = protocol.conditions[fs.condition]
    found = _incumbents(incumbents, problem)
    chosen: list[dict[str, Any]] = [{"source": "Ultralytics defaults", "params": {}}]
    room = max(0, n - 1 - max(3, (n - 1) // 2))  # at least half of the rest (and 3) spread over the space
    chosen += [{"source": x["source"], "params": x["params"]} for x in found[:room]]
    space = SearchSpace.parse(cond.space)
    optimizer = fs.optimizer or cond.train_args.get("optimizer")
    for cfg in spread_configs(space, n - len(chosen), fs.sample_seed):
        chosen.append({"source": "spread over the space", "params": {**cfg, **({"optimizer": optimizer} if optimizer else {})}})
    for i, c in enumerate(chosen):
        c["id"] = i
    p = protocol.problems[problem]
    plan = {
        "problem": problem,
        "condition": fs.condition,
        "seed": seed,
        "training_seed": final_seeds(seed, 1)[0],
        "short_epochs": p.trial_epochs,
        "long_epochs": f * p.trial_epochs,
        "factor": f,
        "space": space.to_spec(),
        "spread_optimizer": optimizer or "none given (the condition's)",
        "configs": chosen,
        "incumbent_runs": [str(Path(d).resolve()) for d in incumbents],
    }
    doc = out / "fidelity.json"
    if doc.is_file():
        if not resume:
            raise ValueError(f"--out: '{out}' already holds a fidelity run; continue it with --resume or choose a new folder")
        then = json.loads(doc.read_text())["plan"]
        if json.dumps(then, sort_keys=True, default=str) != json.dumps(plan, sort_keys=True, default=str):
            raise ValueError(
                f"--out: '{out}' holds a fidelity run of another plan (problem, configurations or schedule); use a new folder"
            )
    return plan


def run_fidelity(
    protocol: Protocol, sha256: str, protocol_path: Path, out: Path, plan: dict[str, Any], *, argv: list[str]
) -> dict[str, Any]:
    """Train every configuration of ``plan`` short and long (resumable), then write the report."""
    from .finals import final_impl
    from .harness import _prepare, _Run, _run_final, _start_model, _writer_lock, atomic_write_json, protocol_provenance
    from .machine import machine_info

    out = out.expanduser().resolve()
    with _writer_lock(out):
        f = out / "fidelity.json"
        doc: dict[str, Any] = (
            json.loads(f.read_text())
            if f.is_file()
            else {
                "protocol": protocol_provenance(protocol_path, sha256),
                "plan": plan,
                "sittings": [],
                "units": {},
                "data": {},
            }
        )
        doc["sittings"].append(
            {
                "command": " ".join(["python -m hpo_bench protocol", *argv]),
                "started": time.time(),
                "ended": None,
                "machine": machine_info(),
                "load_start": _load(),
                "load_end": None,
                "final_impl": final_impl(),
                "units": [],
            }
        )
        run = _Run(out, doc, len(doc["sittings"]) - 1, protocol.device, results_file="fidelity.json")
        atomic_write_json(f, doc)
        pname = plan["problem"]
        problem = protocol.problems[pname]
        cond = protocol.conditions[plan["condition"]]
        data, checkpoint = _prepare(run, protocol, pname)
        model = _start_model(run, protocol, pname, plan["seed"], checkpoint)
        from .harness import _fixed_args

        fixed = {k: v for k, v in _fixed_args(problem, cond, plan["seed"], protocol.device).items() if k != "seed"}
        for length in ("short", "long"):
            epochs = plan["short_epochs"] if length == "short" else plan["long_epochs"]
            for c in plan["configs"]:
                uid = f"fidelity/{pname}/{c['id']}/{length}"
                if run.done(uid):
                    continue
                _run_final(
                    run,
                    uid,
                    problem,
                    model=model,
                    data=data,
                    params=dict(c["params"]),
                    fixed=fixed,
                    seeds=[plan["training_seed"]],
                    folder=out / "runs" / f"{c['id']}-{length}",
                    extra={"kind": "fidelity", "problem": pname, "config": c["id"], "length": length},
                    epochs=epochs,
                )
        run.save()
    write_fidelity_report(doc, out)
    return doc


def _load() -> float:
    import os

    return os.getloadavg()[0]


def _spearman(x: list[float | None], y: list[float | None], *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if len(pairs) < 3:
        return {"n": len(pairs), "rho": None, "p": None, "ci": None}
    a, b = np.asarray([p[0] for p in pairs]), np.asarray([p[1] for p in pairs])
    res = stats.spearmanr(a, b)
    rho = float(res.statistic) if np.isfinite(res.statistic) else None
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        i = rng.integers(0, len(a), len(a))
        r = stats.spearmanr(a[i], b[i]).statistic
        if np.isfinite(r):
            boots.append(r)
    ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if len(boots) > 100 else None
    return {"n": len(pairs), "rho": rho, "p": float(res.pvalue) if rho is not None else None, "ci": ci}


def compute_fidelity(doc: dict[str, Any]) -> dict[str, Any]:
    """Per configuration its short and long scores, and the rank correlations (module docstring)."""
    plan = doc["plan"]
    rows = []
    for c in plan["configs"]:
        s = doc["units"].get(f"fidelity/{plan['problem']}/{c['id']}/short") or {}
        lg = doc["units"].get(f"fidelity/{plan['problem']}/{c['id']}/long") or {}
        rows.append(
            {
                "id": c["id"],
                "source": c["source"],
                "params": c["params"],
                "short_val": s.get("score_val"),
                "short_test": s.get("score"),
                "long_val": lg.get("score_val"),
                "long_test": lg.get("score"),
                "short_curve": ((s.get("records") or [{}])[0]).get("curve") or [],
                "long_curve": ((lg.get("records") or [{}])[0]).get("curve") or [],
            }
        )
    cor: dict[str, Any] = {
        "short val -> long test": _spearman([r["short_val"] for r in rows], [r["long_test"] for r in rows]),
        "short val -> long val": _spearman([r["short_val"] for r in rows], [r["long_val"] for r in rows]),
        "short test -> long test": _spearman([r["short_test"] for r in rows], [r["long_test"] for r in rows]),
    }
    per_epoch_long, per_epoch_short = [], []
    for k in range(1, plan["long_epochs"] + 1):
        xs = [r["long_curve"][k - 1] if len(r["long_curve"]) >= k else None for r in rows]
        per_epoch_long.append(
            {
                "epoch": k,
                "vs long val": _spearman(xs, [r["long_val"] for r in rows]),
                "vs long test": _spearman(xs, [r["long_test"] for r in rows]),
            }
        )
    for k in range(1, plan["short_epochs"] + 1):
        xs = [r["short_curve"][k - 1] if len(r["short_curve"]) >= k else None for r in rows]
        per_epoch_short.append({"epoch": k, "vs long test": _spearman(xs, [r["long_test"] for r in rows])})
    done = [r for r in rows if r["short_val"] is not None and r["long_test"] is not None]
    top = {}
    if done:
        best_short = max(done, key=lambda r: r["short_val"])
        ranked = sorted(done, key=lambda r: -r["long_test"])
        top = {"best_short_config": best_short["id"], "its_rank_in_long_test": 1 + ranked.index(best_short), "of": len(done)}
    return {
        "rows": rows,
        "spearman": cor,
        "per_epoch_long": per_epoch_long,
        "per_epoch_short": per_epoch_short,
        "n_pairs": len(done),
        "best_short": top,
    }


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _cor(c: dict[str, Any]) -> str:
    ci = f" [{_f(c['ci'][0], 2)}, {_f(c['ci'][1], 2)}]" if c.get("ci") else ""
    return f"{_f(c['rho'], 2)}{ci} (n {c['n']}, p {_f(c['p'], 4)})"


def write_fidelity_report(doc: dict[str, Any], out: Path) -> Path:
    """Write ``out/fidelity.md`` and add the computed numbers to ``out/fidelity.json``; returns the .md path."""
    from .harness import atomic_write_json

    res = compute_fidelity(doc)
    doc["computed"] = res
    doc["n_pairs"] = res["n_pairs"]
    atomic_write_json(out / "fidelity.json", doc)
    plan = doc["plan"]
    L = [
        f"# Fidelity transfer: {plan['problem']} ({plan['short_epochs']} vs {plan['long_epochs']} epochs)",
        "",
        f"{len(plan['configs'])} configurations under condition `{plan['condition']}`, each trained once at the trial length "
        f"({plan['short_epochs']} epochs) and once at {plan['factor']}x it ({plan['long_epochs']} epochs), training seed "
        f"{plan['training_seed']}, from the start of protocol seed {plan['seed']}; spread configurations' optimizer: {plan['spread_optimizer']}. "
        f"Scores: best.pt on the validation split (val) and on the test split (test). Spearman's rho with a 95% bootstrap interval over configurations.",
        "",
        "## Rank correlation, short against long",
        "",
        "| pair | rho [95% CI] (n, p) |",
        "|---|---|",
        *[f"| {k} | {_cor(v)} |" for k, v in res["spearman"].items()],
        "",
    ]
    if res["best_short"]:
        b = res["best_short"]
        L += [
            f"The best configuration at the trial length (config {b['best_short_config']}) ranks {b['its_rank_in_long_test']} of {b['of']} on the long schedule's test score.",
            "",
        ]
    L += [
        "## Each epoch against the end",
        "",
        "| epoch | long run: vs its final val | long run: vs its test | short run: vs long test |",
        "|---|---|---|---|",
    ]
    short = {e["epoch"]: e for e in res["per_epoch_short"]}
    for e in res["per_epoch_long"]:
        s = short.get(e["epoch"])
        L.append(
            f"| {e['epoch']} | {_cor(e['vs long val'])} | {_cor(e['vs long test'])} | {_cor(s['vs long test']) if s else ''} |"
        )
    L += [
        "",
        "## Configurations",
        "",
        "| id | source | short val | short test | long val | long test |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        L.append(
            f"| {r['id']} | {r['source']} | {_f(r['short_val'])} | {_f(r['short_test'])} | {_f(r['long_val'])} | {_f(r['long_test'])} |"
        )
    L += [
        "",
        "## Sittings",
        "",
        "| sitting | started (UTC) | hours | machine | load at start / end | units |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(doc["sittings"]):
        m = s["machine"]
        hours = ((s.get("ended") or s["started"]) - s["started"]) / 3600
        L.append(
            f"| {i} | {time.strftime('%Y-%m-%d %H:%M', time.gmtime(s['started']))} | {hours:.2f} | {m['cpu']}, {m['cores']} cores | "
            f"{_f(s.get('load_start'), 2)} / {_f(s.get('load_end'), 2)} | {len(s['units'])} |"
        )
    walls = [u["wall_s"] for u in doc["units"].values() if u.get("kind") == "fidelity"]
    if walls:
        L += [
            "",
            f"Unit wall time: median {sorted(walls)[len(walls) // 2]:.0f} s, total {sum(walls) / 3600:.2f} h over {len(walls)} trainings.",
        ]
    bad = [u for u in doc["units"].values() if u.get("status") != "done"]
    if bad:
        L += ["", "Trainings without a result:", *[f"- `{u['id']}`: {u.get('error')}" for u in bad]]
    (out / "fidelity.md").write_text("\n".join(L) + "\n", encoding="utf-8")
    return out / "fidelity.md"
