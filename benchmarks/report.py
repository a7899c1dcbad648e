"""Writes the report of a suite run: ``report.md``, ``trials.csv``, ``machine.json`` and PNG plots.

Everything is computed from ``results.json`` (see :func:`hpo_bench.run.run_suite`), so a report
can be rebuilt without training: ``python -m hpo_bench report DIR``.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_report", "best_so_far", "TRIAL_COLUMNS"]

TRIAL_COLUMNS = [
    "problem",
    "contender",
    "seed",
    "trial",
    "status",
    "objective",
    "epochs",
    "end_s",
    "duration_s",
    "train_s",
    "overhead_s",
    "params",
    "error",
]


def best_so_far(trials: list[dict[str, Any]]) -> list[tuple[float, int, float]]:
    """``[(end_s, epochs consumed so far, best objective so far), ...]`` in the order trials ended.

    Every finished trial's epochs count as consumed (pruned and failed ones too); only complete
    trials can improve the best (maximised objective).
    """
    out, epochs, best = [], 0, None
    for t in sorted((t for t in trials if t.get("end_s") is not None), key=lambda t: t["end_s"]):
        epochs += int(t.get("epochs") or 0)
        if t["status"] == "complete" and t.get("objective") is not None:
            best = t["objective"] if best is None else max(best, t["objective"])
        if best is not None:
            out.append((float(t["end_s"]), epochs, float(best)))
    return out


def _time_to(curve: list[tuple[float, int, float]], target: float | None) -> float | None:
    if target is None:
        return None
    # tolerance: Ultralytics' native tuner stores metrics rounded to 5 decimals, hpo stores float32 values
    return next((t for t, _, b in curve if b >= target - 1e-5), None)


def _overhead(t: dict[str, Any]) -> float | None:
    if t.get("duration_s") is None or t.get("train_s") is None:
        return None
    return float(t["duration_s"]) - float(t["train_s"])


def _ms(given: Sequence[float | None], fmt: str = "{:.4f}") -> str:
    values = [v for v in given if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(statistics.stdev(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _summary_rows(problem: str, pres: dict[str, Any], contenders: list[str]) -> list[dict[str, Any]]:
    refs = {int(s): r.get("objective") for s, r in pres["reference"].items()}
    rows = []
    for name in contenders:
        studies = [s for s in pres["studies"] if s["contender"] == name]
        if not studies:
            continue
        trials = [t for s in studies for t in s["trials"]]
        reach = [_time_to(best_so_far(s["trials"]), refs.get(s["seed"])) for s in studies]
        reached = [r for r in reach if r is not None]
        overheads = [o for o in (_overhead(t) for t in trials) if o is not None]
        rows.append(
            {
                "contender": name,
                "seeds": len(studies),
                "best": _ms([s["best_objective"] for s in studies]),
                "retrain": _ms([s.get("retrain_objective") for s in studies]),
                "reference": _ms([refs.get(s["seed"]) for s in studies]),
                "counts": "/".join(str(sum(t["status"] == k for t in trials)) for k in ("complete", "pruned", "failed")),
                "epochs": _f(_mean([sum(t["epochs"] or 0 for t in s["trials"]) for s in studies])),
                "wall": _f(_mean([s["wall_s"] for s in studies])),
                "reach": f"{len(reached)}/{len(studies)}" + (f", median {statistics.median(reached):.0f} s" if reached else ""),
                "overhead": _f(_mean(overheads), "{:.2f}"),
                "capped": sum(bool(s["capped"]) for s in studies),
            }
        )
    return rows


SUMMARY_HEADER = (
    "| contender | seeds | best objective (mean ± sd [min, max]) | retrain, new seed | default-hparams reference "
    "| trials complete/pruned/failed | epochs used per study | study wall s | reached reference (seeds, median time) "
    "| overhead s/trial | capped |"
)


def _plot_curves(path: Path, pres: dict[str, Any], contenders: list[str], x: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(contenders):
        first = True
        for s in (s for s in pres["studies"] if s["contender"] == name):
            curve = best_so_far(s["trials"])
            if not curve:
                continue
            xs = [c[0] if x == "time" else c[1] for c in curve]
            ys = [c[2] for c in curve]
            ax.step(
                xs,
                ys,
                where="post",
                color=colors[i % len(colors)],
                alpha=0.8,
                marker="o",
                markersize=3,
                label=name if first else None,
            )
            first = False
    refs = [r.get("objective") for r in pres["reference"].values() if r.get("objective") is not None]
    if refs:
        ax.axhline(statistics.fmean(refs), color="black", linestyle="--", linewidth=1, label="defaults (mean)")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel("wall-clock seconds since study start" if x == "time" else "training epochs consumed")
    ax.set_ylabel(f"best {pres['metric']} so far")
    ax.set_title(f"{pres['problem']['name']}: best so far vs {'wall-clock time' if x == 'time' else 'epochs'}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


NATIVE = "ultralytics-native"

WALLCLOCK_HEADER = (
    "| contender | seeds | best at budget, mean ± 95% CI | vs model.tune: better / tie / worse | Wilcoxon p "
    "| trials per study | reached model.tune's best (seeds, median s) |"
)


def _wallclock_section(pname: str, pres: dict[str, Any], contenders: list[str], out: Path) -> tuple[list[str], Path]:
    """The equal-wall-clock table and band plot of one problem (its ``budgets_s``: model.tune's wall
    time per seed); the statistics are :func:`hpo_bench.simreport.summarise`'s, as for the simulation."""
    from .simreport import plot_bands, summarise

    names = [c for c in contenders if any(s["contender"] == c for s in pres["studies"])]
    names = [NATIVE, *[c for c in names if c != NATIVE]]
    doc = {"studies": pres["studies"], "budgets_s": pres["budgets_s"], "contenders": names, "metric": pres["metric"]}
    rows = summarise(doc, baseline=NATIVE)
    png = out / f"{pname}-equal-wall-clock.png"
    counts = sorted({sum(s["contender"] == c for s in pres["studies"]) for c in names})
    seeds = f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds (table)"
    plot_bands(
        doc,
        png,
        xlabel="wall-clock seconds since the study's process started",
        title=f"{pname}: best so far, mean and 95% band over {seeds}",
        bold=(NATIVE, "ultralytics", "optuna"),
    )
    budgets = sorted(pres["budgets_s"].values())
    lines = [
        "",
        f"**Equal wall clock.** Per seed, Ultralytics' own `model.tune` ran {pres['problem']['trials']} iterations first; its "
        f"wall time, launch to exit ({budgets[0]:.0f}-{budgets[-1]:.0f} s), was every other contender's "
        "`--time-budget`, and only trials that ended within it count (trials running at the budget are pruned "
        "by hpo, never counted). 95% CI: Student's t over seeds; Wilcoxon: signed-rank test of the per-seed "
        "differences against model.tune (two-sided, scipy, ties split); reached: the first trial at least as good "
        "as model.tune's best of that seed.",
        "",
        WALLCLOCK_HEADER,
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = "-" if r["p"] is None else f"{r['p']:.2g}"
        reach = f"{r['reached']}/{r['seeds']}" + (f", {r['reach_median_s']:.0f} s" if r["reach_median_s"] is not None else "")
        vs = "-" if r["contender"] == NATIVE else f"{r['wins']} / {r['ties']} / {r['losses']}"
        label = f"{NATIVE} (model.tune)" if r["contender"] == NATIVE else r["contender"]
        mean = "-" if math.isnan(r["mean"]) else f"{r['mean']:.4f} ± {r['ci95']:.4f}"
        lines.append(f"| {label} | {r['seeds']} | {mean} | {vs} | {p} | {r['trials']:.1f} | {reach} |")
    lines += ["", f"![{pname} best so far at equal wall clock]({png.name})"]
    return lines, png


def _plot_overhead(path: Path, results: dict[str, Any], contenders: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(results["problems"])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    width = 0.8 / max(1, len(problems))
    for j, p in enumerate(problems):
        studies = results["problems"][p]["studies"]
        vals = [_mean([_overhead(t) for s in studies if s["contender"] == c for t in s["trials"]]) or 0.0 for c in contenders]
        ax.bar([i + j * width for i in range(len(contenders))], vals, width=width, label=p)
    ax.set_xticks([i + width * (len(problems) - 1) / 2 for i in range(len(contenders))])
    ax.set_xticklabels(contenders, rotation=15, fontsize=8)
    ax.set_ylabel("seconds per trial (trial wall time - training time)")
    ax.set_title("per-trial overhead")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _versions(machine: dict[str, Any]) -> str:
    """``"python 3.11.7, torch 2.14.1, ..."`` from a :func:`benchmarks.machine.machine_info` record."""
    return ", ".join(f"{k} {v or 'not installed'}" for k, v in (machine.get("versions") or {}).items())


def _continued_on(results: dict[str, Any]) -> list[str]:
    """One line per continuation (``--resume``) of a run: its command's machine, when it differs
    from the first command's (every study of a seed runs in one sitting, so each seed is paired on
    one machine); a command repeated on the same machine is listed once."""
    first = results["machine"]
    lines: list[str] = []
    for r in results.get("resumed", []):
        m = r.get("machine") or {}
        if m.get("cpu") != first.get("cpu") or m.get("versions") != first.get("versions"):
            line = f"- `{r['command']}` ran on: {m.get('cpu')} ({m.get('cores')} cores usable); versions: {_versions(m)}"
            if line not in lines:
                lines.append(line)
    return lines


def _total_time(results: dict[str, Any]) -> str:
    """The run's wall time, or for a continued run (whose sittings may be days apart) the sum of its
    studies' own wall times, minutes."""
    if not results.get("resumed"):
        return f"- total benchmark wall time: {(results.get('finished', results['started']) - results['started']) / 60:.1f} min"
    studies_s = sum(float(st.get("wall_s") or 0.0) for p in results["problems"].values() for st in p["studies"])
    return (
        f"- wall time of the studies: {studies_s / 60:.1f} min (a continued run over {1 + len(results['resumed'])} "
        "sittings: data building, warm starts and references not counted)"
    )


def write_report(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``report.md``, ``trials.csv``, ``machine.json`` and the PNGs into ``out``.

    Returns:
        ``{"report": path, "trials": path, "machine": path, "plots": [paths...]}``.
    """
    out = Path(out)
    contenders = list(results["contenders"])
    plots: list[Path] = []
    # raw data
    trials_csv = out / "trials.csv"
    with open(trials_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=TRIAL_COLUMNS)
        w.writeheader()
        for pname, pres in results["problems"].items():
            for s in pres["studies"]:
                for t in s["trials"]:
                    w.writerow(
                        {
                            **{k: t.get(k) for k in TRIAL_COLUMNS if k in t},
                            "problem": pname,
                            "contender": s["contender"],
                            "seed": s["seed"],
                            "overhead_s": _overhead(t),
                            "params": json.dumps(t.get("params"), sort_keys=True),
                        }
                    )
    machine = out / "machine.json"
    machine.write_text(json.dumps(results["machine"], indent=2))
    m = results["machine"]
    lines = [
        f"# hpo benchmark: suite `{results['suite']}`",
        "",
        f"Reproduce: `{results['command']}`"
        + "".join(f", then `{r['command']}`" + (f" ({r['note']})" if r.get("note") else "") for r in results.get("resumed", []))
        + (" (a continued run: each command's machine below)" if results.get("resumed") else ""),
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']} ({m['cores']} cores usable); RAM: {(m['ram_bytes'] or 0) / 2**30:.1f} GiB; "
        f"GPU: {', '.join(m['gpus']) or 'none'}; device used: `{results['device']}`",
        f"- {m['platform']}",
        "- versions: " + _versions(m),
        *_continued_on(results),
        _total_time(results),
        "",
        "## Contenders",
        "",
    ]
    lines += [f"- **{c}**: {d}" for c, d in results["contenders"].items()]
    lines += [f"- ~~{c}~~ skipped: {why}" for c, why in results["skipped"].items()]
    for pname, pres in results["problems"].items():
        p = pres["problem"]
        lines += [
            "",
            f"## {pname}",
            "",
            (
                f"`{p['model']}` warm-started by one {p['warm_start_epochs']}-epoch training from scratch "
                f"({pres['warm_start']['objective']:.4g} {pres['metric']}; its weights start every training below)"
                if pres.get("warm_start")
                else f"`{p['model']}` from scratch"
                + (
                    " (every training of a seed from one initialisation: the model built under "
                    "torch.manual_seed(seed), saved untrained)"
                    if p.get("shared_init")
                    else ""
                )
            )
            + f", objective `{pres['metric']}` (maximised); "
            + (
                f"budget per study: the wall time of model.tune's {p['trials']} iterations of {p['epochs']} epochs; "
                if pres.get("budgets_s")
                else f"budget per study: {p['trials']} trials x {p['epochs']} epochs = {p['trials'] * p['epochs']} epochs, "
                f"wall-clock cap {p['time_cap_s']:g} s; "
            )
            + f"imgsz {p['imgsz']}, batch {p['batch']}, "
            + (
                "all 1,797 UCI digits (80/20 split)"
                if pres["task"] == "classify" and p["images"] >= 1797
                else f"images {p['images']} / val {p['val_images']} ({'per class' if pres['task'] == 'classify' else 'canvases'})"
            )
            + f"; seeds {results['seeds']}.",
        ]
        if pres.get("budgets_s"):
            more, png = _wallclock_section(pname, pres, contenders, out)
            lines += more
            plots.append(png)
        lines += [
            "",
            SUMMARY_HEADER,
            "|" + "---|" * 11,
        ]
        for r in _summary_rows(pname, pres, contenders):
            lines.append(
                f"| {r['contender']} | {r['seeds']} | {r['best']} | {r['retrain']} | {r['reference']} | {r['counts']} "
                f"| {r['epochs']} | {r['wall']} | {r['reach']} | {r['overhead']} | {r['capped']} |"
            )
        lines += [
            "",
            "Per study:",
            "",
            "| contender | seed | best | retrain | study wall s | trials | exit |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in pres["studies"]:
            lines.append(
                f"| {s['contender']} | {s['seed']} | {_f(s['best_objective'], '{:.4f}')} | "
                f"{_f(s.get('retrain_objective'), '{:.4f}')} | {s['wall_s']:.1f} | {len(s['trials'])} | "
                f"{'capped' if s['capped'] else s['rc']} |"
            )
        if pres["b2b"]:
            lines += [
                "",
                "Study wall time against the same trainings back to back in ONE process "
                "(same params, same epochs; `hpo.train_trial` in-process, no isolation; that process runs only these "
                "trainings, and its wall time runs from launch to exit, as the study's does):",
                "",
                "| contender | seed | trainings | epochs | study wall s | one process wall s | study / one process "
                "| same, both up to their last training's end | one process: start-up s, training s, exit s |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for b in pres["b2b"]:
                ratio = b["study_wall_s"] / b["wall_s"] if b["wall_s"] else None
                s_last, b_last = b.get("study_to_last_s"), b.get("to_last_s")
                strict = s_last / b_last if s_last and b_last else None
                parts = ", ".join(_f(b.get(k), "{:.1f}") for k in ("startup_s", "train_s", "exit_s"))
                lines.append(
                    f"| {b['contender']} | {b['seed']} | {b['trainings']} | {b['epochs']} | {b['study_wall_s']:.1f} "
                    f"| {b['wall_s']:.1f} | {_f(ratio, '{:.2f}')} | {_f(strict, '{:.2f}')} | {parts} |"
                )
        for x in ("time", "epochs"):
            png = out / f"{pname}-best-vs-{x}.png"
            _plot_curves(png, pres, contenders, x)
            plots.append(png)
            lines += ["", f"![{pname} best so far vs {x}]({png.name})"]
    png = out / "overhead.png"
    _plot_overhead(png, results, contenders)
    plots.append(png)
    lines += [
        "",
        "## Overhead",
        "",
        "![per-trial overhead](overhead.png)",
        "",
        "## How to read this",
        "",
        "- *best objective*: the best complete trial of each study; mean ± sample standard deviation [min, max] over seeds.",
        "- *retrain*: that best configuration trained again for the full epochs with training seed 1000+seed.",
        "- *reference*: Ultralytics' default hyperparameters (clipped into the space) trained once per seed; "
        "*reached reference* counts studies whose best so far reached it, and the median wall time to get there.",
        "- *overhead s/trial*: trial wall time minus the training time measured inside the trainer (hpo records: "
        "`duration_s - train_s`, where `train_s` is all of `model.train()`; ultralytics-native: time between its "
        "iterations minus the `time` column of the iteration's results.csv, which covers the training loop only, "
        "so its overhead also includes dataset and model set-up and the `yolo train` subprocess start).",
        "- *study wall s*: from launching the study's process to its exit (interpreter start and imports included).",
        "- Raw per-trial data: [trials.csv](trials.csv); everything: [results.json](results.json); machine: [machine.json](machine.json).",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"report": report, "trials": trials_csv, "machine": machine, "plots": plots}
