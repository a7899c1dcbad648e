"""``python -m hpo_bench simulate``: the backends against a surrogate of a recorded problem, on a
simulated clock, for statistical power (50 seeds in minutes instead of days).

A *surrogate* (:class:`Surrogate`) fitted on a recording (:mod:`hpo_bench.recording`) returns, for any
configuration of the space, its learning curve (the metric after each epoch), its seconds per epoch
and its seconds beside the epochs. :func:`surrogate_trainer` plays that curve as a trial through the
same trainer seam as the conformance suite's simulated trials (:func:`hpo.simulate.play_curve`), and
:func:`hpo.clock.simulated` turns its waits into clock ticks: every contender runs its real sampler,
pruner or mutation through hpo's real loop, records and time budget, and a study of several
simulated minutes takes about a second. Computing time of the samplers themselves is not charged
(a few milliseconds per trial against seconds of training). Trials run one at a time, as on the
recorded 2-core CPU.

``model.tune`` is simulated as the ultralytics backend (the same genetic mutation of Ultralytics'
Tuner) charged the extra seconds per iteration that the recording measured for Ultralytics' own
``model.tune`` (a ``yolo train`` subprocess per iteration) beside hpo's per-trial cost. Its 12
iterations set every other contender's time budget, seed by seed: equal wall clock. The Ray backend
is not simulated: Ray Tune runs trials in its own actor processes, whose clock a simulation cannot
drive; its ASHA is compared in the real benchmark only.

The surrogate is the better, by 5-fold cross-validation over the recorded configurations, of
scikit-learn's k-nearest-neighbours (k=5, distance-weighted) and random forest (200 trees) on the
parameters normalised to [0, 1]; the report states its held-out error and rank correlation, so the
reader knows how far to trust the simulated ranking. The real runs stay the ground truth.

*Scores.* A study hands on the configuration of its best trial within the budget, chosen on the
noisy values it saw; the primary simulated score is that configuration's noise-free quality (the
surrogate's mean final value, :meth:`Surrogate.true_final`), so a contender that ran more trials is
not credited with the larger maximum of more noise (the winner's curse); the noisy maximum is
reported beside it. The surrogate's held-out error is given over 5 fold assignments
(:meth:`Surrogate.cv_repeated`). Every study is reproducible from its seed: the same command gives
the same trials and scores (study names hold the contender and the seed only).

*Trial noise* (``noise="residual"``, the default): a regression surrogate returns a smooth mean
curve, so two nearby configurations get nearly the same curve and an epoch-1 value ranks them as
well as their final one; real 3-epoch YOLO trainings do not (in the recording, among the 50
configurations perturbed around Ultralytics' defaults, Spearman's rank correlation between the
epoch-1 and the final top-1 is 0.27, between epoch 2 and the final 0.68). So each simulated trial
adds to its predicted curve the held-out residual curve (recorded minus out-of-fold predicted, every
epoch) of one recorded configuration, drawn per trial from ``[study seed, trial id]``: a residual
bootstrap that keeps the real size of the deviations and their correlation across epochs.
Measured on the committed recording (random forest surrogate), replaying those 50 configurations:
with the noise the two correlations are 0.23-0.26 and 0.58-0.64 and the final top-1's sd 0.10
(recorded: 0.27, 0.68, 0.10); without it 0.47, 0.83 and 0.047. ``noise="none"`` plays the mean curve
(the simulator before 2026-12-04).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from hpo import TrialOutcome, TrialSpec

from .recording import read_table

__all__ = ["Surrogate", "surrogate_trainer", "SIM_CONTENDERS", "simulate", "load_surrogate"]

TRAINER = "hpo_bench.simulation:surrogate_trainer"


class Surrogate:
    """Learning curve, epoch seconds and per-trial seconds of any configuration, fitted on a recording.

    Args:
        rows: ``table.csv`` rows (:func:`hpo_bench.recording.read_table`).
        info: ``recording.json``.
        kind: ``"knn"``, ``"rf"`` or ``"auto"`` (the lower cross-validated error of the two).

    Attributes:
        residuals: ``(configs, epochs)`` array, each recorded curve minus its out-of-fold prediction
            by the chosen model (5-fold): the trial noise of :meth:`predict` with an ``rng``.
    """

    def __init__(self, rows: list[dict[str, Any]], info: dict[str, Any], kind: str = "auto") -> None:
        import numpy as np

        self.info = info
        self.keys = list(info["space"])
        self.epochs = int(info["epochs"])
        self.bounds = {k: (float(v[0]), float(v[1])) for k, v in info["space"].items()}
        by_config: dict[int, dict[int, dict[str, Any]]] = {}
        for r in rows:
            by_config.setdefault(int(r["config"]), {})[int(r["epoch"])] = r
        configs = sorted(c for c, eps in by_config.items() if len(eps) == self.epochs)
        x, y = [], []
        for c in configs:
            eps = by_config[c]
            curve = [float(eps[e]["objective"]) for e in range(1, self.epochs + 1)]
            times = [float(eps[e]["time_s"]) for e in range(1, self.epochs + 1)]
            per_epoch = [times[0]] + [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
            beside = float(eps[self.epochs]["duration_s"]) - times[-1]
            x.append(self._normalise({k: eps[1][k] for k in self.keys}))
            y.append([*curve, *per_epoch, beside])
        self.x = np.array(x)
        self.y = np.array(y)
        self.configs = configs
        oof = {k: self._out_of_fold(k) for k in ("knn", "rf")}
        self.cv = {k: self._scores(oof[k]) for k in oof}
        self.kind = min(self.cv, key=lambda k: self.cv[k]["mae_final"]) if kind == "auto" else kind
        self.model = self._model(self.kind).fit(self.x, self.y)
        self.residuals = self.y[:, : self.epochs] - oof[self.kind][:, : self.epochs]

    def _normalise(self, params: dict[str, Any]) -> list[float]:
        out = []
        for k in self.keys:
            low, high = self.bounds[k]
            out.append((float(params[k]) - low) / (high - low) if high > low else 0.0)
        return out

    @staticmethod
    def _model(kind: str) -> Any:
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.neighbors import KNeighborsRegressor

        if kind == "knn":
            return KNeighborsRegressor(n_neighbors=5, weights="distance")
        if kind == "rf":
            return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=0)
        raise ValueError(f"surrogate: unknown kind '{kind}'; choose knn, rf or auto")

    def _out_of_fold(self, kind: str, fold_seed: int = 0) -> Any:
        """Out-of-fold predictions of every output (5-fold, shuffled with ``fold_seed``): shape of ``self.y``."""
        import numpy as np
        from sklearn.model_selection import KFold

        pred = np.zeros_like(self.y)
        for train, test in KFold(n_splits=5, shuffle=True, random_state=fold_seed).split(self.x):
            pred[test] = self._model(kind).fit(self.x[train], self.y[train]).predict(self.x[test])
        return pred

    def cv_repeated(self, repeats: int = 5) -> dict[str, dict[str, list[float]]]:
        """The held-out error of each model kind over ``repeats`` fold assignments (5-fold CV
        shuffled with seeds 0..repeats-1; seed 0 is :attr:`cv`): ``{kind: {score: [one value per
        assignment]}}``, so a report can say how much the error depends on the folds (a few dozen
        configurations make one assignment's MAE a noisy estimate)."""
        out: dict[str, dict[str, list[float]]] = {}
        for kind in ("knn", "rf"):
            runs = [self.cv[kind]] + [self._scores(self._out_of_fold(kind, k)) for k in range(1, repeats)]
            out[kind] = {score: [r[score] for r in runs] for score in runs[0]}
        return out

    def true_final(self, params: dict[str, Any]) -> float:
        """The noise-free quality of ``params``: the surrogate's mean metric after the last epoch
        (what the configuration scores on average, without the trial noise a study selects on)."""
        return self.predict(params)[0][-1]

    def _scores(self, pred: Any) -> dict[str, float]:
        """Held-out error of the final-epoch metric: MAE, Spearman's rank correlation, the residuals' sd."""
        import numpy as np
        from scipy.stats import spearmanr

        e = self.epochs - 1
        truth, guess = self.y[:, e], pred[:, e]
        return {
            "mae_final": float(np.mean(np.abs(guess - truth))),
            "spearman_final": float(spearmanr(truth, guess).statistic),
            "sd_final": float(np.std(truth)),
            "residual_sd_final": float(np.std(truth - guess)),
        }

    def predict(self, params: dict[str, Any], rng: Any = None) -> tuple[list[float], list[float], float]:
        """``(metric after each epoch, seconds of each epoch, seconds beside the epochs)`` of ``params``.

        ``rng`` (a ``numpy.random.Generator``): add the trial noise, one recorded configuration's
        held-out residual curve (:attr:`residuals`) drawn with it, clipped into [0, 1] (the metrics
        here are fractions); ``None``: the mean curve.
        """
        row = self.model.predict([self._normalise(params)])[0]
        e = self.epochs
        curve = [float(v) for v in row[:e]]
        if rng is not None:
            noise = self.residuals[int(rng.integers(len(self.residuals)))]
            curve = [min(1.0, max(0.0, v + float(n))) for v, n in zip(curve, noise, strict=True)]
        return curve, [max(0.0, float(v)) for v in row[e : 2 * e]], max(0.0, float(row[2 * e]))


@lru_cache(maxsize=4)
def load_surrogate(folder: str, kind: str = "auto") -> Surrogate:
    """The :class:`Surrogate` of a recording folder, fitted once per process."""
    rows, info = read_table(Path(folder))
    return Surrogate(rows, info, kind)


def surrogate_trainer(spec: TrialSpec, report: Any, progress: Any = None) -> TrialOutcome:
    """A trainer (:mod:`hpo.trial`) that plays the surrogate's curve of ``spec.params``.

    ``spec.trainer_options``: ``recording`` (folder), ``surrogate`` (``knn``/``rf``/``auto``),
    ``extra_s`` (seconds added to every trial: the ``model.tune`` contender's subprocess per iteration),
    ``noise_seed`` (the study seed: the trial noise is drawn from ``[noise_seed, trial id]``; absent
    or ``None``: no noise, the mean curve).
    """
    import numpy as np

    from hpo.simulate import play_curve

    opts = spec.trainer_options
    s = load_surrogate(str(opts["recording"]), str(opts.get("surrogate", "auto")))
    seed = opts.get("noise_seed")
    rng = None if seed is None else np.random.default_rng([int(seed), int(spec.trial_id)])
    curve, per_epoch, beside = s.predict(spec.params, rng)
    return play_curve(
        spec,
        report,
        progress,
        lambda epoch: curve[min(epoch, len(curve)) - 1],
        epoch_s=per_epoch,
        start_s=beside + float(opts.get("extra_s", 0.0)),
    )


surrogate_trainer.in_process = True  # type: ignore[attr-defined]  # no global state


@dataclass(frozen=True)
class SimContender:
    """A simulated contender: an hpo backend with options (``extra_s``: the model.tune charge)."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    native: bool = False


#: The simulated contenders, in report order: the baseline, the defaults of every simulatable
#: backend and the variants that chose them (random starting proposals, early stopping).
SIM_CONTENDERS: dict[str, SimContender] = {
    c.name: c
    for c in (
        SimContender(
            "model.tune",
            "ultralytics",
            {"initial_random": 0, "pruner": "none"},  # the native start and no early stopping, whatever hpo's defaults
            "Ultralytics' own tuner: its genetic mutation, no early stopping, its per-iteration cost",
            True,
        ),
        SimContender(
            "ultralytics",
            "ultralytics",
            {},
            "hpo backend ultralytics, defaults (the native start: mutation from Ultralytics' defaults; no early stopping)",
        ),
        *(
            SimContender(
                f"ultralytics-random-{k}",
                "ultralytics",
                {"initial_random": k},
                f"ultralytics with {k} random proposals after the defaults"
                + (" (its default from 2026-12-05 to 2026-12-07)" if k == 6 else ""),
            )
            for k in (3, 6, 10)
        ),
        SimContender(
            "ultralytics-percentile",
            "ultralytics",
            {"pruner": "percentile"},
            "ultralytics defaults, stopping trials below the median (its default until 2026-12-05)",
        ),
        SimContender("optuna", "optuna", {}, "hpo backend optuna, defaults (TPE, Hyperband pruner)"),
        SimContender("optuna-no-pruning", "optuna", {"pruner": "none"}, "optuna: TPE without pruning"),
        SimContender("optuna-median", "optuna", {"pruner": "median"}, "optuna: TPE with the median pruner"),
        SimContender("random", "bench-random", {}, "baseline: uniform random search"),
    )
}


def _tiny_data(folder: Path) -> str:
    """A digits-cls folder of 2 images per class: the Tuner validates a real dataset, no trial reads it."""
    from hpo.datasets import make_digits_cls

    if not (folder / "train").is_dir():
        make_digits_cls(folder, seed=0, imgsz=32)
        for split in ("train", "val"):
            for cls_dir in sorted((folder / split).iterdir()):
                for f in sorted(cls_dir.glob("*.png"))[2:]:
                    f.unlink()
    return str(folder)


def _one_study(job: dict[str, Any]) -> dict[str, Any]:
    """Run one simulated study (in a pool worker) and return its trials on the simulated clock."""
    from hpo import Tuner, TunerCallback, TuneSettings, clock

    if job["backend"].startswith("bench-"):
        from .random_search import register

        register()
    ends: list[dict[str, Any]] = []
    params: dict[int, dict[str, Any]] = {}

    class _Ends(TunerCallback):
        def on_trial_end(self, record: Any) -> None:
            params[record.id] = dict(record.params)
            ends.append(
                {
                    "trial": record.id,
                    "status": record.status.value,
                    "objective": record.objective,
                    "epochs": record.epochs_completed,
                    "end_s": clock.monotonic(),
                }
            )

    settings = TuneSettings(
        backend=job["backend"],
        model="yolov8n-cls.yaml",
        data=job["data"],
        space=job["space"],
        iterations=job["iterations"],
        epochs=job["epochs"],
        train_args=job["train_args"],
        output=job["output"],
        name=job["name"],
        seed=job["seed"],
        time_budget=job["budget_s"],
        backend_options=job["options"],
        trainer=TRAINER,
        trainer_options=job["trainer_options"],
        plots=False,
        keep_weights="best",
    )
    with clock.simulated():
        tuner = Tuner(settings, callbacks=[_Ends()])
        result = tuner.run()
        elapsed = clock.monotonic()
    return {
        "contender": job["contender"],
        "seed": job["seed"],
        "trials": ends,
        "elapsed_s": elapsed,
        "best": result.best_objective,
        "chosen": _chosen(ends, params, job),
    }


def _chosen(ends: list[dict[str, Any]], params: dict[int, dict[str, Any]], job: dict[str, Any]) -> dict[str, Any] | None:
    """The configuration a study hands on at its budget (its best complete trial among those that
    ended within it, by the noisy objective it saw; ties: the lower id) and that configuration's
    noise-free quality (:meth:`Surrogate.true_final`): the primary simulated score. ``None`` when
    no trial completed within the budget."""
    budget = job["budget_s"]
    done = [
        t for t in ends if t["status"] == "complete" and t["objective"] is not None and (budget is None or t["end_s"] <= budget)
    ]
    if not done:
        return None
    best = max(done, key=lambda t: (t["objective"], -t["trial"]))
    opts = job["trainer_options"]
    s = load_surrogate(str(opts["recording"]), str(opts.get("surrogate", "auto")))
    return {
        "trial": best["trial"],
        "noisy": best["objective"],
        "true": s.true_final(params[best["trial"]]),
        "params": params[best["trial"]],
    }


def _pool_map(jobs: list[dict[str, Any]], processes: int) -> list[dict[str, Any]]:
    if processes <= 1:
        return [_one_study(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_one_study, jobs, chunksize=1))


def simulate(
    recording: Path,
    *,
    seeds: int,
    out: Path,
    contenders: list[str] | None = None,
    iterations: int = 12,
    processes: int = 2,
    surrogate: str = "auto",
    noise: str = "residual",
) -> dict[str, Any]:
    """Run every contender for ``seeds`` seeds at the wall-clock budget of ``model.tune``'s
    ``iterations`` iterations (per seed) and write ``out/simulated.json`` and the report.

    Args:
        recording: a recording folder (``table.csv``, ``recording.json``).
        seeds: seeds 0..seeds-1 (each contender's study seed).
        out: report folder (``simulated.json``, ``simulated.md``, ``simulated-best-vs-time.png``).
        contenders: names of :data:`SIM_CONTENDERS` (default all; ``model.tune`` is always run).
        iterations: ``model.tune``'s iterations, which set the budget (12 in the issue).
        processes: studies at once (each a process).
        surrogate: ``knn``, ``rf`` or ``auto``.
        noise: ``residual`` (each trial's curve plus a held-out residual curve, see the module's
            docstring) or ``none`` (the mean curve).

    Returns:
        the results (also ``out/simulated.json``).

    Raises:
        ValueError: an unknown contender or noise; FileNotFoundError: no recording.
    """
    if noise not in ("residual", "none"):
        raise ValueError(f"--noise: unknown '{noise}'; choose residual or none")
    names = ["model.tune", *[c for c in (contenders or list(SIM_CONTENDERS)) if c != "model.tune"]]
    unknown = [c for c in names if c not in SIM_CONTENDERS]
    if unknown:
        raise ValueError(f"--contenders: unknown {', '.join(unknown)}; choose from {', '.join(SIM_CONTENDERS)}")
    t0 = time.time()
    s = load_surrogate(str(recording), surrogate)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hpo-simulate-"))  # the studies' folders: scratch, removed at the end
    try:
        return _simulate(s, names, work, out, recording, seeds, iterations, processes, t0, noise)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _simulate(
    s: Surrogate,
    names: list[str],
    work: Path,
    out: Path,
    recording: Path,
    seeds: int,
    iterations: int,
    processes: int,
    t0: float,
    noise: str,
) -> dict[str, Any]:
    from .machine import machine_info

    info = s.info
    native = info.get("model_tune") or {}
    hpo_beside = float((info.get("hpo_trial_s") or {}).get("beside_epochs_s", 0.0))
    mean_epochs_s = float(s.y[:, s.epochs : 2 * s.epochs].sum(axis=1).mean())
    durations = native.get("durations_s") or []
    # model.tune's seconds per iteration beyond hpo's trial of the same epochs (measured in the recording)
    extra_s = max(0.0, (sum(durations) / len(durations)) - (mean_epochs_s + hpo_beside)) if durations else 0.0
    data = _tiny_data(work / "data")
    base = {
        "data": data,
        "space": info["space"],
        "epochs": s.epochs,
        "train_args": {"imgsz": 32, "batch": 16, "workers": 0, "device": "cpu", "optimizer": "AdamW"},
    }

    def job(c: SimContender, seed: int, budget: float | None, iters: int | None) -> dict[str, Any]:
        return {
            **base,
            "contender": c.name,
            "backend": c.backend,
            "options": dict(c.options),
            "seed": seed,
            "iterations": iters,
            "budget_s": budget,
            "output": str(work / "studies"),
            "name": f"{c.name}-s{seed}",  # no pid or time: a study is reproducible from its seed (the folder is this run's)
            "trainer_options": {
                "recording": str(recording),
                "surrogate": s.kind,
                "extra_s": extra_s if c.native else 0.0,
                "noise_seed": seed if noise == "residual" else None,
            },
        }

    print(f"[simulate] surrogate {s.kind}: {json.dumps(s.cv)}; model.tune extra {extra_s:.2f} s/iteration", file=sys.stderr)
    natives = _pool_map([job(SIM_CONTENDERS["model.tune"], seed, None, iterations) for seed in range(seeds)], processes)
    budgets = {r["seed"]: r["elapsed_s"] for r in natives}
    others = [job(SIM_CONTENDERS[n], seed, budgets[seed], None) for n in names[1:] for seed in range(seeds)]
    studies = natives + _pool_map(others, processes)
    results = {
        "recording": str(recording),
        "problem": info["problem"],
        "metric": info["metric"],
        "epochs": s.epochs,
        "seeds": seeds,
        "iterations_model_tune": iterations,
        "model_tune_extra_s": extra_s,
        "surrogate": {"kind": s.kind, "cv": s.cv, "cv_repeated": s.cv_repeated(), "configs": len(s.configs)},
        "noise": noise,
        "contenders": {n: SIM_CONTENDERS[n].description for n in names},
        "budgets_s": budgets,
        "studies": studies,
        "wall_s": time.time() - t0,
        "machine": machine_info(),
    }
    (out / "simulated.json").write_text(json.dumps(results, separators=(",", ":")) + "\n")  # compact: every trial of every study
    from .simreport import write_sim_report

    write_sim_report(results, out)
    return results


def best_so_far(trials: list[dict[str, Any]], until: float | None = None) -> list[tuple[float, float]]:
    """``[(end_s, best complete objective so far), ...]`` of a study's trials (maximised metric)."""
    best = -math.inf
    out = []
    for t in sorted(trials, key=lambda t: t["end_s"]):
        if until is not None and t["end_s"] > until:
            break
        if t["status"] == "complete" and t["objective"] is not None and t["objective"] > best:
            best = t["objective"]
            out.append((t["end_s"], best))
    return out
