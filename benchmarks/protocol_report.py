"""The protocol's report: ``report.md`` and ``report.json`` from a run's ``results.json`` (no training).

Every number is as measured: losses, ties, failed units and missing pairs included. The headline
table states its conditions in the table itself (optimizer, space, trial length, final schedule,
split, seeds) so that it can be quoted verbatim.
"""

from __future__ import annotations

import json
import statistics as st
import time
from pathlib import Path
from typing import Any

from . import stats
from .finals import HPO_IMPL
from .machine import machine_key
from .protocol import Protocol, parse_seed_set, recorded_protocol

__all__ = ["compute", "write_protocol_report", "projected_hours"]


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _utc(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def _code(sitting: dict[str, Any]) -> str:
    code = sitting.get("code")
    text = "-" if not code else f"`{str(code.get('commit'))[:10]}`" + (" **+ uncommitted changes**" if code.get("dirty") else "")
    env = sitting.get("hpo_env")
    return text + (f"; env {', '.join(env)}" if env else "")


def _units(results: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [u for u in results["units"].values() if u.get("kind") == kind]


def machine_of(results: dict[str, Any], unit: dict[str, Any]) -> str:
    """The CPU model and cores of the sitting that ran ``unit`` (protocol amendment 2: a budget is one machine's)."""
    return machine_key(results["sittings"][int(unit["sitting"])]["machine"])


def checkpoints(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per warm-start problem, every starting checkpoint the run trained, oldest first, labelled A, B, ...

    A checkpoint lost with its machine and trained again (protocol amendment 2) keeps its record
    under ``dropped``; the current one is in ``units``. Each entry: ``label``, ``sitting``,
    ``machine``, ``objective_val``, ``t_end`` (epoch seconds), ``current``.
    """
    preps = [(d["unit"], False) for d in results.get("dropped", []) if d["unit"].get("kind") == "prep"]
    preps += [(u, True) for u in _units(results, "prep")]
    out: dict[str, list[dict[str, Any]]] = {}
    for u, current in sorted(preps, key=lambda x: float(x[0]["t_end"])):
        cps = out.setdefault(u["problem"], [])
        cps.append(
            {
                "label": chr(ord("A") + len(cps)),
                "sitting": u["sitting"],
                "machine": machine_of(results, u),
                "objective_val": u.get("objective_val"),
                "t_end": u["t_end"],
                "current": current,
            }
        )
    return out


def _checkpoint_at(cps: dict[str, list[dict[str, Any]]], unit: dict[str, Any]) -> str | None:
    """The label of the checkpoint ``unit`` started from: the newest one trained before it started."""
    before = [c for c in cps.get(unit.get("problem", ""), []) if float(c["t_end"]) <= float(unit["t_start"])]
    return before[-1]["label"] if before else None


def noise_floor(results: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """Per problem: the noise-floor scores, their mean and sd, and the tie margin."""
    out: dict[str, Any] = {}
    for u in _units(results, "noise"):
        out.setdefault(u["problem"], {"scores": {}, "failed": []})
        if u.get("score") is None:
            out[u["problem"]]["failed"].append(u["seed"])
        else:
            out[u["problem"]]["scores"][str(u["seed"])] = u["score"]
    for pname, d in out.items():
        vals = list(d["scores"].values())
        d["n"] = len(vals)
        d["mean"] = sum(vals) / len(vals) if vals else None
        d["sd"] = stats.sample_sd(vals)
        d["margin"] = stats.tie_margin(d["sd"], k=protocol.statistics.tie_k, final_seeds=protocol.problems[pname].final_seeds)
    return out


def compute(results: dict[str, Any]) -> dict[str, Any]:
    """Scores, comparisons (Holm over the primary family) and verdicts, as ``report.json`` holds them."""
    protocol = recorded_protocol(results)
    sp = protocol.statistics
    noise = noise_floor(results, protocol)
    cps = checkpoints(results)
    scores: dict[str, Any] = {}
    for u in _units(results, "study"):
        cell = scores.setdefault(u["condition"], {}).setdefault(u["problem"], {}).setdefault(u["contender"], {})
        cell[str(u["seed"])] = {
            "best_val": u.get("best_val"),
            "budget_s": u.get("budget_s"),
            "study_status": u["status"],
            "wall_s": u["wall_s"],
            "machine": machine_of(results, u),
            "checkpoint": _checkpoint_at(cps, u),
        }
    for u in _units(results, "final"):
        cell = scores.setdefault(u["condition"], {}).setdefault(u["problem"], {}).setdefault(u["contender"], {})
        row = cell.setdefault(str(u["seed"]), {})
        row.update(
            score=u.get("score"),
            score_val=u.get("score_val"),
            optimizer=str(u["params"].get("optimizer") or u["train_args"].get("optimizer") or "auto"),
            split=u.get("split"),
            impl=u.get("impl"),
            final_checkpoint=_checkpoint_at(cps, u),
        )
    comparisons = []
    for cname, cond in protocol.conditions.items():
        for pname in cond.problems:
            by = scores.get(cname, {}).get(pname, {})
            base = {int(s): v.get("score") for s, v in by.get(cond.baseline, {}).items()}
            margin = (noise.get(pname) or {}).get("margin")
            for who in cond.contenders:
                if who == cond.baseline:
                    continue
                subset = set(parse_seed_set(cond.contender_seeds[who])) if who in cond.contender_seeds else None
                planned, pending = _planned_seeds(results, protocol, cname, cond.baseline, who, subset, by)
                if who not in by and not planned:
                    continue
                mine = {int(s): v.get("score") for s, v in by.get(who, {}).items()}
                cmp = stats.compare_paired(
                    mine,
                    base if subset is None else {s: v for s, v in base.items() if s in subset},
                    margin=margin,
                    resamples=sp.resamples,
                    level=sp.level,
                    boot_seed=sp.bootstrap_seed,
                    delta=sp.detect_delta,
                    alpha=sp.alpha,
                    power=sp.power,
                )
                primary = cname == sp.primary_condition and who in sp.primary_contenders
                cmp["missing"] = [s for s in cmp["missing"] if s not in pending]  # still to run, not missing
                labels: dict[int, str] = {
                    int(sd): str(v["checkpoint"]) for sd, v in by.get(who, {}).items() if v.get("checkpoint")
                }
                used = sorted({labels[sd] for sd in cmp["seeds"] if sd in labels})
                by_checkpoint: dict[str, Any] = {}
                if len(used) > 1:
                    for label in used:
                        d = [x for sd, x in zip(cmp["seeds"], cmp["diffs"], strict=True) if labels.get(sd) == label]
                        by_checkpoint[label] = {
                            "seeds": [sd for sd in cmp["seeds"] if labels.get(sd) == label],
                            "mean_diff": sum(d) / len(d),
                            **stats.count_by_margin(d, margin),
                        }
                comparisons.append(
                    {
                        "condition": cname,
                        "problem": pname,
                        "contender": who,
                        "baseline": cond.baseline,
                        "primary": primary,
                        "margin": margin,
                        **cmp,
                        "planned": planned,
                        "pending": pending,
                        "by_checkpoint": by_checkpoint,
                    }
                )
    fam = [c for c in comparisons if c["primary"]]
    for c, adj in zip(fam, stats.holm([c["wilcoxon"]["p"] for c in fam]), strict=True):
        c["p_holm"] = adj
    for c in comparisons:
        p_used = c.get("p_holm") if c["primary"] else c["wilcoxon"]["p"]
        c["verdict"] = (
            "incomplete" if c["pending"] else stats.verdict(c["mean_diff"], p_used, c["ci"], alpha=sp.alpha, margin=c["margin"])
        )
    return {
        "protocol": protocol.name,
        "seed_set": results["seed_set"],
        "checkpoints": cps,
        "provenance": provenance(results, scores),
        "noise_floor": noise,
        "scores": scores,
        "comparisons": comparisons,
        "criterion": criterion(fam, sp.primary_contenders, sp.criterion_better),
    }


def criterion(primary: list[dict[str, Any]], contenders: list[str], needed: int | None) -> dict[str, Any] | None:
    """The registered success criterion (``statistics.criterion_better``) per primary contender:
    ``{"needed", "contenders": {name: {"better": [problems], "met": True/False/None}}, "met"}``;
    ``met`` is ``None`` while a comparison of the contender that could still decide it is incomplete.
    ``None`` when the protocol registers no criterion."""
    if needed is None:
        return None
    out: dict[str, Any] = {}
    for who in contenders:
        mine = [c for c in primary if c["contender"] == who]
        better = [c["problem"] for c in mine if c["verdict"] == "better"]
        open_ = sum(c["verdict"] == "incomplete" for c in mine)
        met = True if len(better) >= needed else (None if len(better) + open_ >= needed else False)
        out[who] = {"better": better, "met": met}
    metv = [v["met"] for v in out.values()]
    return {
        "needed": needed,
        "contenders": out,
        "met": False if False in metv else (None if None in metv else True),
    }


def _planned_seeds(
    results: dict[str, Any],
    protocol: Protocol,
    cname: str,
    baseline: str,
    who: str,
    subset: set[int] | None,
    by: dict[str, dict[str, Any]],
) -> tuple[list[int], list[int]]:
    """The evaluation seeds planned for ``who`` (within its ``subset`` of seeds, if it has one) against
    ``baseline`` under condition ``cname``, and
    those of them the run has not finished yet: either side's study not recorded, or its study done
    and its final training not recorded. A comparison with pending seeds is ``incomplete``: the
    registered test is the one over every planned seed (a study or final that failed is not pending:
    it is a missing pair, protocol.md section 6). Development runs plan no seeds (``[], []``)."""
    if results["seed_set"] != "evaluation":
        return [], []
    planned = [s for s in protocol.condition_seeds(cname) if subset is None or s in subset]

    def pending(row: dict[str, Any] | None) -> bool:
        return row is None or (row.get("study_status") == "done" and "score" not in row)

    return planned, [s for s in planned if pending(by.get(baseline, {}).get(str(s))) or pending(by.get(who, {}).get(str(s)))]


def verdict_text(c: dict[str, Any]) -> str:
    """A comparison's verdict as the report prints it; an incomplete one says how far it got."""
    if c["verdict"] == "incomplete":
        done = len(c["planned"]) - len(c["pending"])
        return f"incomplete ({done} of {len(c['planned'])} seeds)"
    return str(c["verdict"])


def provenance(results: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    """What protocol amendment 2 requires the report to show: units dropped and run again, and
    every condition, problem and seed whose studies ran on more than one machine or whose studies
    and finals started from different checkpoints (``mixed_machines``, ``mixed_checkpoints``: none expected)."""
    mixed_machines, mixed_checkpoints = [], []
    for cname, by_p in scores.items():
        for pname, by_c in by_p.items():
            for seed in sorted({sd for v in by_c.values() for sd in v}, key=int):
                cells = [v[seed] for v in by_c.values() if seed in v]
                if len({c.get("machine") for c in cells if c.get("machine")}) > 1:
                    mixed_machines.append(f"{cname}/{pname}/{seed}")
                labels = {c.get(k) for c in cells for k in ("checkpoint", "final_checkpoint") if k in c}
                if len(labels) > 1:
                    mixed_checkpoints.append(f"{cname}/{pname}/{seed}")
    dropped = [
        {
            "unit": d["unit"].get("id"),
            "sitting": d["unit"].get("sitting"),
            "machine": machine_of(results, d["unit"]),
            "why": d["why"],
        }
        for d in results.get("dropped", [])
    ]
    return {"dropped": dropped, "mixed_machines": mixed_machines, "mixed_checkpoints": mixed_checkpoints}


def unit_times(results: dict[str, Any]) -> dict[str, Any]:
    """Wall seconds per unit kind, problem and contender: n, median, min, max, and the load at their starts."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for u in results["units"].values():
        key = "/".join(str(x) for x in (u["kind"], u.get("condition", "-"), u.get("problem", "-"), u.get("contender", "-")))
        groups.setdefault(key, []).append(u)
    out = {}
    for key, us in sorted(groups.items()):
        walls = [float(u["wall_s"]) for u in us]
        loads = [float(u["load_start"]) for u in us if u.get("load_start") is not None]
        out[key] = {
            "n": len(us),
            "median_s": st.median(walls),
            "min_s": min(walls),
            "max_s": max(walls),
            "load_min": min(loads) if loads else None,
            "load_max": max(loads) if loads else None,
        }
    return out


def trial_counts(results: dict[str, Any]) -> dict[str, Any]:
    """Trials per study, by condition, problem and contender: how many studies, and per study the
    mean number of trials that ended within the study's budget as ``complete`` (the ones its
    incumbent is chosen from), ``pruned`` (stopped early by the pruner or scheduler) or ``failed``,
    and of trials that ended after the budget (recorded, never counted). A baseline study has no
    budget (it sets it): all its trials count. Only studies with a result (``done``) are counted.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for u in _units(results, "study"):
        if u.get("status") == "done":
            groups.setdefault(f"{u['condition']}/{u['problem']}/{u['contender']}", []).append(u)
    out: dict[str, Any] = {}
    for key, us in sorted(groups.items()):
        per: dict[str, list[int]] = {"complete": [], "pruned": [], "failed": [], "after_budget": []}
        for u in us:
            budget = u.get("budget_s")
            trials = u.get("trials") or []
            late = [t for t in trials if budget is not None and (t.get("end_s") is None or t["end_s"] > budget)]
            within = [t for t in trials if t not in late]
            for status in ("complete", "pruned", "failed"):
                per[status].append(sum(1 for t in within if t.get("status") == status))
            per["after_budget"].append(len(late))
        out[key] = {"studies": len(us), **{f"{k}_mean": sum(v) / len(v) for k, v in per.items()}}
    return out


def projected_hours(results: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """The whole protocol's wall time at this run's median unit times (evaluation seeds of every
    condition, every contender, the finals and the noise floor); units never measured are listed."""
    times = unit_times(results)
    total, missing = 0.0, []
    per: dict[str, float] = {}
    for cname, cond in protocol.conditions.items():
        for pname in cond.problems:
            for who in cond.contenders:
                seeds = cond.contender_seeds.get(who)
                n = len(parse_seed_set(seeds)) if seeds else len(protocol.condition_seeds(cname))
                for kind in ("study", "final"):
                    t = times.get(f"{kind}/{cname}/{pname}/{who}")
                    if t is None:
                        missing.append(f"{kind}/{cname}/{pname}/{who}")
                        continue
                    total += n * t["median_s"]
                    per[f"{cname}/{pname}"] = per.get(f"{cname}/{pname}", 0.0) + n * t["median_s"]
    for pname in protocol.conditions[protocol.noise_floor.condition].problems:
        t = times.get(f"noise/{protocol.noise_floor.condition}/{pname}/-")
        if t is None:
            missing.append(f"noise/{pname}")
            continue
        total += protocol.noise_floor.trainings * t["median_s"]
        per[f"noise/{pname}"] = protocol.noise_floor.trainings * t["median_s"]
    for u in _units(results, "prep"):
        total += float(u["wall_s"])
        per[f"prep/{u['problem']}"] = float(u["wall_s"])
    return {"hours": total / 3600, "per_part_hours": {k: v / 3600 for k, v in per.items()}, "not_measured": missing}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def _ms(vals: list[float]) -> str:
    if not vals:
        return "-"
    sd = stats.sample_sd(vals)
    return f"{sum(vals) / len(vals):.3f} ± {sd:.3f}" if sd is not None else f"{vals[0]:.3f}"


def write_protocol_report(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``out/report.md`` and ``out/report.json``; returns their paths."""
    protocol = recorded_protocol(results)
    comp = compute(results)
    times = unit_times(results)
    proj = projected_hours(results, protocol)
    comp["unit_times"] = times
    comp["projected"] = proj
    prov = results["protocol"]
    git = prov.get("git") or {}
    impls = sorted({i for u in results["units"].values() for i in (u.get("impl") or [])})
    L: list[str] = [f"# Benchmark protocol `{protocol.name}`: report", ""]
    if results["seed_set"] != "evaluation":
        L += [f"> **PILOT on development seeds** ({protocol.seeds.development}): not an evaluation; no claim rests on it.", ""]
    if any(i != HPO_IMPL for i in impls):
        L += [
            f"> **Final trainings by another function** ({', '.join(i for i in impls if i != HPO_IMPL)}), not `hpo.train_final`.",
            "",
        ]
    L += [
        f"Protocol file `{Path(prov['path']).name}`, sha256 `{prov['sha256'][:16]}`, git commit "
        f"`{(git.get('commit') or 'none')[:12]}` ({git.get('committed_at') or 'not committed'})"
        f"{', working copy differs from it' if git.get('dirty') else ''}; first unit {_utc(min((u['t_start'] for u in results['units'].values()), default=None))} UTC.",
        "",
    ]
    # headline
    L += ["## Headline", ""]
    rows = []
    for c in [x for x in comp["comparisons"] if x["condition"] == protocol.statistics.primary_condition]:
        rows.append(_headline_row(results, protocol, comp, c))
    cond = protocol.conditions[protocol.statistics.primary_condition]
    for pname in cond.problems:
        rows.append(
            _headline_row(
                results,
                protocol,
                comp,
                {"condition": protocol.statistics.primary_condition, "problem": pname, "contender": cond.baseline},
            )
        )
    rows.sort(key=lambda r: (r[0], r[1] != cond.baseline, r[1]))
    L += _table(
        [
            "problem",
            "contender",
            "optimizer",
            "space",
            "trials (budget)",
            "final training",
            "seeds",
            "test score, mean ± sd",
            "search's best val",
            f"Δ vs {cond.baseline} [95% CI]",
            "better/tie/worse",
            "p (Holm)",
            "verdict",
        ],
        rows,
    )
    L += [
        "",
        f"Condition: {cond.label}. A tie is a per-seed difference within {protocol.statistics.tie_k:g} x the noise floor's sd x sqrt(2 / final seeds); "
        f"verdicts: better/worse where the Holm-adjusted Wilcoxon p < {protocol.statistics.alpha:g}, tie where the whole interval lies within that margin, else not shown; "
        "incomplete while seeds planned for the comparison are still to run (its numbers so far are shown, no verdict).",
        "",
    ]
    crit = comp.get("criterion")
    if crit:
        word = {True: "met", False: "**not met**", None: "open (comparisons incomplete)"}
        L += [
            "## The registered success criterion",
            "",
            f"Every primary contender's verdict `better` on at least {crit['needed']} of the problems: {word[crit['met']]}.",
            "",
        ]
        for who, v in crit["contenders"].items():
            L.append(f"- `{who}`: better on {', '.join(v['better']) or 'none'}: {word[v['met']]}")
        L.append("")
    L += ["## Where each contender wins, ties and loses", ""]
    for who in sorted({c["contender"] for c in comp["comparisons"]}):
        parts = []
        for c in [x for x in comp["comparisons"] if x["contender"] == who]:
            parts.append(
                f"{c['condition']}/{c['problem']}: **{verdict_text(c)}** ({_f(c['mean_diff'])}, {c['better']}/{c['tie']}/{c['worse']})"
            )
        L.append(f"- `{who}`: " + "; ".join(parts))
    L += ["", "## All comparisons", ""]
    crow = []
    for c in comp["comparisons"]:
        p = c.get("p_holm") if c["primary"] else c["wilcoxon"]["p"]
        crow.append(
            [
                c["condition"],
                c["problem"],
                c["contender"],
                str(len(c["seeds"])),
                ", ".join(map(str, c["missing"])) or "-",
                _f(c["mean_diff"]),
                _f(c["sd_diff"]),
                f"[{_f(c['ci'][0])}, {_f(c['ci'][1])}]" if c["ci"] else "-",
                f"{c['better']}/{c['tie']}/{c['worse']}",
                _f(c["wilcoxon"]["p"], 4),
                (_f(c.get("p_holm"), 4) + " (Holm)") if c["primary"] else "unadjusted",
                _f(p, 4),
                str(c["seeds_needed"] or "-"),
                verdict_text(c),
            ]
        )
    L += _table(
        [
            "condition",
            "problem",
            "contender",
            "pairs",
            "missing seeds",
            "mean Δ",
            "sd Δ",
            "95% CI",
            "better/tie/worse",
            "Wilcoxon p",
            "family",
            "p used",
            f"seeds for Δ={protocol.statistics.detect_delta:g}",
            "verdict",
        ],
        crow,
    )
    L += ["", "## Noise floor", ""]
    nrows = []
    for pname, d in comp["noise_floor"].items():
        nrows.append(
            [pname, str(d["n"]), _f(d["mean"]), _f(d["sd"], 4), _f(d["margin"], 4), ", ".join(map(str, d["failed"])) or "-"]
        )
    L += _table(["problem", "trainings", "test mean", "sd (one training)", "tie margin", "failed"], nrows)
    L += [
        "",
        f"Configuration: {protocol.noise_floor.params or 'Ultralytics defaults'} under condition `{protocol.noise_floor.condition}`.",
        "",
    ]
    L += ["## Per seed", ""]
    for cname, cond_ in protocol.conditions.items():
        for pname in cond_.problems:
            by = comp["scores"].get(cname, {}).get(pname, {})
            if not by:
                continue
            seeds = sorted({int(s) for v in by.values() for s in v})
            who = [w for w in cond_.contenders if w in by]
            L += [f"### {cname} / {pname}", "", "test score (search's best val); budget = the baseline's wall time", ""]
            prow = []
            for s in seeds:
                b = by.get(cond_.baseline, {}).get(str(s), {})
                cells = [str(s), _f(b.get("wall_s"), 0)]
                for w in who:
                    r = by[w].get(str(s), {})
                    cells.append(f"{_f(r.get('score'))} ({_f(r.get('best_val'))})")
                prow.append(cells)
            L += _table(["seed", "budget s", *who], prow)
            L.append("")
    L += _provenance_lines(comp)
    L += ["## Sittings (machine and load)", ""]
    srows = []
    for i, s in enumerate(results["sittings"]):
        mine = [results["units"][u] for u in s["units"] if u in results["units"]]
        loads = [float(u["load_start"]) for u in mine if u.get("load_start") is not None]
        m = s["machine"]
        srows.append(
            [
                str(i),
                _utc(s["started"]),
                _f(((s.get("ended") or s["started"]) - s["started"]) / 3600, 2),
                f"{m['cpu']}, {m['cores']} cores, {round((m.get('ram_bytes') or 0) / 2**30, 1)} GiB"
                + (f", {', '.join(m['gpus'])}" if m.get("gpus") else ""),
                f"{_f(s.get('load_start'), 2)} / {_f(s.get('load_end'), 2)}",
                f"{_f(min(loads), 2)}-{_f(max(loads), 2)}" if loads else "-",
                str(len(mine)),
                s.get("final_impl", "-"),
                _code(s),
                f"`{s['command']}`",
            ]
        )
    L += _table(
        [
            "sitting",
            "started (UTC)",
            "hours",
            "machine",
            "load 1-min at start / end",
            "load at unit starts",
            "units",
            "final training",
            "code (git HEAD)",
            "command",
        ],
        srows,
    )
    v = results["sittings"][0]["machine"]["versions"] if results["sittings"] else {}
    L += ["", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    counts = trial_counts(results)
    comp["trial_counts"] = counts
    L += ["## Trials per study", ""]
    L += [
        "Mean per study; a hpo or model.tune(use_ray=True) study counts only trials that ended within "
        "its budget (its incumbent is the best complete one of them); model.tune's own study sets the budget.",
        "",
    ]
    crows = [
        [
            k,
            str(c["studies"]),
            _f(c["complete_mean"], 1),
            _f(c["pruned_mean"], 1),
            _f(c["failed_mean"], 1),
            _f(c["after_budget_mean"], 1),
        ]
        for k, c in counts.items()
    ]
    L += _table(
        ["condition/problem/contender", "studies", "complete", "stopped early (pruned)", "failed", "ended after the budget"],
        crows,
    )
    L += ["", "## Unit wall times", ""]
    trows = [
        [
            k,
            str(t["n"]),
            _f(t["median_s"], 1),
            _f(t["min_s"], 1),
            _f(t["max_s"], 1),
            f"{_f(t['load_min'], 1)}-{_f(t['load_max'], 1)}",
        ]
        for k, t in times.items()
    ]
    L += _table(["unit (kind/condition/problem/contender)", "n", "median s", "min s", "max s", "load at start"], trows)
    L += [
        "",
        f"The whole protocol ({len(protocol.evaluation_seeds())} evaluation seeds, every condition) at these median unit times: "
        f"**{proj['hours']:.2f} h**"
        + (f"; not measured here: {', '.join(proj['not_measured'])}" if proj["not_measured"] else "")
        + ".",
        "",
    ]
    bad = [u for u in results["units"].values() if u.get("status") not in ("done",)]
    if bad:
        L += ["## Units without a result", ""]
        L += [f"- `{u['id']}`: {u.get('status')} (rc {u.get('rc')}): {u.get('error') or '-'}" for u in bad]
        L.append("")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(L) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(comp, indent=1, default=str), encoding="utf-8")
    return {"report": out / "report.md", "json": out / "report.json"}


def _headline_row(results: dict[str, Any], protocol: Protocol, comp: dict[str, Any], c: dict[str, Any]) -> list[str]:
    cname, pname, who = c["condition"], c["problem"], c["contender"]
    problem = protocol.problems[pname]
    cond = protocol.conditions[cname]
    by = comp["scores"].get(cname, {}).get(pname, {}).get(who, {})
    sc = [float(v["score"]) for v in by.values() if v.get("score") is not None]
    bv = [float(v["best_val"]) for v in by.values() if v.get("best_val") is not None]
    opts = sorted({str(v.get("optimizer")) for v in by.values() if v.get("optimizer")})
    spaces = sorted(
        {
            str(u.get("space"))
            for u in _units(results, "study")
            if (u["condition"], u["problem"], u["contender"]) == (cname, pname, who)
        }
    )
    # the budgets this contender ran under: the baseline's wall time on the seeds it ran
    base_walls = [
        float(v["wall_s"])
        for seed, v in comp["scores"].get(cname, {}).get(pname, {}).get(cond.baseline, {}).items()
        if v.get("wall_s") and seed in by
    ]
    given = cond.train_args.get("optimizer") or problem.train_args.get("optimizer")
    optimizer = ", ".join(opts) if opts else "-"
    if not given and opts != ["auto"]:
        optimizer = f"none given -> {optimizer}"
    trial = f"{problem.trial_epochs}-epoch trials, {protocol.contenders[who].kind}: " + (
        f"{problem.iterations} iterations"
        if who == cond.baseline
        else f"{_f(st.median(base_walls), 0) if base_walls else '-'} s median"
    )
    is_base = who == cond.baseline
    return [
        pname,
        who,
        optimizer,
        ", ".join(spaces) or "-",
        trial,
        f"{problem.final_epochs} epochs x {problem.final_seeds} seeds, test split",
        f"{len(sc)}",
        _ms(sc),
        _ms(bv),
        "-"
        if is_base
        else (f"{_f(c['mean_diff'])} [{_f(c['ci'][0])}, {_f(c['ci'][1])}]" if c.get("ci") else _f(c.get("mean_diff"))),
        "-" if is_base else f"{c['better']}/{c['tie']}/{c['worse']}",
        "-" if is_base else _f(c.get("p_holm") if c.get("primary") else c["wilcoxon"]["p"], 4),
        "-" if is_base else verdict_text(c),
    ]


def _provenance_lines(comp: dict[str, Any]) -> list[str]:
    """The report's section on amendments in effect: dropped units, checkpoints, machine and checkpoint checks."""
    prov, cps = comp["provenance"], comp["checkpoints"]
    if not prov["dropped"] and all(len(v) < 2 for v in cps.values()):
        return []
    L = ["## Units run again and starting checkpoints (protocol amendment 2)", ""]
    if prov["dropped"]:
        L += ["Dropped from the results and run again (the records stay under `dropped` in `results.json`):", ""]
        L += [f"- `{d['unit']}` (sitting {d['sitting']}, {d['machine']}): {d['why']}" for d in prov["dropped"]]
        L.append("")
    rows = []
    for pname, lst in cps.items():
        for c in lst:
            rows.append(
                [
                    pname,
                    c["label"],
                    str(c["sitting"]),
                    c["machine"],
                    _f(c["objective_val"], 4),
                    "current" if c["current"] else "lost, retrained",
                ]
            )
    L += _table(["problem", "checkpoint", "sitting", "machine", "val score", "file"], rows)
    L.append("")
    split = [c for c in comp["comparisons"] if c.get("by_checkpoint")]
    if split:
        L += ["Per-seed differences by the checkpoint their seed started from (descriptive; the tests above use every seed):", ""]
        srows = []
        for c in split:
            for label, d in c["by_checkpoint"].items():
                srows.append(
                    [
                        c["condition"],
                        c["problem"],
                        c["contender"],
                        label,
                        ", ".join(map(str, d["seeds"])),
                        _f(d["mean_diff"]),
                        f"{d['better']}/{d['tie']}/{d['worse']}",
                    ]
                )
        L += _table(["condition", "problem", "contender", "checkpoint", "seeds", "mean Δ", "better/tie/worse"], srows)
        L.append("")
    for key, what in (
        ("mixed_machines", "studies on more than one machine"),
        ("mixed_checkpoints", "units from different checkpoints"),
    ):
        L.append(f"Seeds with {what}: " + (", ".join(f"**{x}**" for x in prov[key]) if prov[key] else "none") + ".")
    L.append("")
    return L
