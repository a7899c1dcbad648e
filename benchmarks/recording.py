"""``python -m hpo_bench record``: train K configurations of a problem to the full epochs and keep
every epoch's metric and seconds in a small table, the ground truth of the simulated benchmark
(:mod:`hpo_bench.simulation`; the idea of Syne Tune's blackbox repository, applied to YOLO).

The configurations are fixed before any training (``configs.json``): configuration 0 is
Ultralytics' defaults (``cfg/default.yaml``, clipped into the space), then alternately a point of a
Latin hypercube over the whole space (``scipy.stats.qmc``) and a Gaussian perturbation of the
defaults (standard deviation 15% of each range, clipped): searchers spend their trials both far
from and near the defaults, and the surrogate must be right in both places.

They are trained as one hpo study (``bench-list``: a backend that proposes the list in order), so a
killed recording resumes where it stopped (``record`` again with the same folder) and the records
are hpo's own. ``model.tune`` (Ultralytics' own tuner, one ``yolo train`` per iteration) is timed for
a few iterations on the same problem: its per-trial cost beside the epochs is what the simulation
charges the ``model.tune`` contender.

Files (``--out``, default ``benchmarks/results/recording/<problem>/``): ``table.csv`` (one row per
configuration and epoch: ``config``, the params, ``epoch``, ``objective``, ``time_s`` = seconds
since the configuration's first epoch began, ``duration_s`` = the whole trial as the study saw it),
``recording.json`` (problem, space, metric, machine, the ``model.tune`` timing); the study itself
goes to ``--work`` (default a scratch folder; weights are not committed).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from hpo import Backend, BackendOptions, SearchSpace, Suggestion, TrialRecord, hookimpl

from .suite import SPACE_CLS, Problem

__all__ = ["ListBackend", "register", "sample_configs", "recording_problem", "record", "read_table", "TABLE", "INFO"]

NAME = "bench-list"
TABLE = "table.csv"
INFO = "recording.json"
CONFIGS = "configs.json"


def recording_problem(name: str) -> Problem:
    """The problems a recording exists for.

    ``digits-cls``: all 1,797 UCI digits (``hpo.datasets``, 80/20 split) at 32 px, ``yolov8n-cls.yaml``
    from scratch, batch 16, 3-epoch trials, the benchmark's 7-key space (:data:`hpo_bench.suite.SPACE_CLS`).

    Raises:
        ValueError: an unknown problem name.
    """
    if name == "digits-cls":
        return Problem(
            "digits-cls",
            "yolov8n-cls.yaml",
            dict(SPACE_CLS),
            trials=100,
            epochs=3,
            time_cap_s=0,
            imgsz=32,
            batch=16,
            images=1_000_000,  # every image of each class
            val_images=1_000_000,
        )
    raise ValueError(f"--problem: no recording is defined for '{name}'; choose digits-cls")


def sample_configs(space: SearchSpace, k: int, seed: int = 0) -> list[dict[str, Any]]:
    """``k`` configurations of ``space``: the defaults, then alternately a Latin-hypercube point over
    the space and a Gaussian perturbation of the defaults (sd 15% of each range), all clipped and typed.

    Args:
        space: a numeric search space (choice keys are drawn uniformly).
        k: how many (>= 1).
        seed: the random seed (the same seed gives the same list).
    """
    import numpy as np
    from scipy.stats import qmc

    keys = list(space)
    defaults = space.defaults()
    rng = np.random.default_rng(seed)
    n_far = (k - 1 + 1) // 2
    cube = qmc.LatinHypercube(d=len(keys), seed=seed).random(max(n_far, 1))
    out = [dict(defaults)]
    far = near = 0
    while len(out) < k:
        params: dict[str, Any] = {}
        use_far = len(out) % 2 == 1
        for j, key in enumerate(keys):
            p = space[key]
            if p.choices:
                params[key] = p.choices[int(rng.integers(len(p.choices)))]
                continue
            low, high = p.bounds
            if use_far:
                u = float(cube[far][j])
                x = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if p.log else low + u * (high - low)
            else:
                x = float(defaults[key]) + float(rng.normal(0.0, 0.15 * (high - low)))
            params[key] = p.clip(x)
        if use_far:
            far += 1
        else:
            near += 1
        out.append(space.validate_params(params))
    return out


class ListOptions(BackendOptions):
    """Options of :class:`ListBackend`.

    Attributes:
        configs: path of a JSON list of configurations (``[{key: value}, ...]``).
    """

    configs: str


class ListBackend(Backend):
    """Proposes a fixed list of configurations in order (trial ``k`` gets configuration ``k``);
    never prunes. Only for recordings, inside the benchmark (registered by :func:`register`)."""

    name = NAME
    description = "benchmark recording: a fixed list of configurations, in order"
    library = "hpo_bench"
    Options = ListOptions

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._configs = json.loads(Path(self.options.configs).read_text())  # type: ignore[attr-defined]
        self._asked = len(self.study.records()) if self.study is not None else 0

    def ask(self) -> Suggestion:
        params = self._configs[self._asked % len(self._configs)]
        self._asked += 1
        return Suggestion(dict(params))

    def tell(self, record: TrialRecord) -> None:
        """A list learns nothing."""


@hookimpl
def hpo_register_backends() -> list[type[Backend]]:
    """Register :class:`ListBackend` (only in a process that called :func:`register`)."""
    return [ListBackend]


def register() -> None:
    """Add this module to hpo's plugin manager of this process (idempotent; before the first
    :func:`hpo.plugins.backends` call of the process, which caches the list)."""
    from hpo.plugins import register as register_plugin

    register_plugin(sys.modules[__name__], name="hpo_bench.recording")


def _log(msg: str) -> None:
    print(f"[record {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def record(
    problem_name: str, *, configs: int, out: Path, work: Path, device: str = "cpu", native_iterations: int = 3, seed: int = 0
) -> Path:
    """Record ``configs`` configurations of a problem (resumes an unfinished recording in ``work``).

    Args:
        problem_name: see :func:`recording_problem`.
        configs: K, the number of configurations (>= 2).
        out: folder of ``table.csv`` and ``recording.json``.
        work: folder of the study, the data and the ``model.tune`` run (keep it to resume).
        device: Ultralytics device of every training.
        native_iterations: ``model.tune`` iterations timed (0: none).
        seed: seed of the configurations and of every training.

    Returns:
        the path of ``table.csv``.

    Raises:
        ValueError: bad arguments; hpo.RunFailedError: the study failed.
    """
    from hpo import SearchSpace, Study

    from .machine import machine_info
    from .run import _native_trials, run_process
    from .suite import build_data

    if configs < 2:
        raise ValueError("--configs: must be >= 2")
    problem = recording_problem(problem_name)
    space = SearchSpace.parse(problem.space)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    data = build_data(problem, work / "data" / problem.name)
    listed = work / CONFIGS
    if listed.is_file():
        kept = json.loads(listed.read_text())
        if len(kept) != configs:
            raise ValueError(
                f"--configs: {work} holds a recording of {len(kept)} configurations, not {configs}; use another --work"
            )
    else:
        listed.write_text(json.dumps(sample_configs(space, configs, seed), indent=1) + "\n")
    study_dir = work / "studies" / "record"
    spec = {
        "backend": NAME,
        "backend_options": {"configs": str(listed)},
        "model": problem.model,
        "data": data,
        "space": problem.space,
        "iterations": configs,
        "epochs": problem.epochs,
        "train_args": problem.fixed_args(seed, device),
        "output": str(study_dir.parent),
        "name": study_dir.name,
        "seed": seed,
        "resume": Study.exists(study_dir),
        "keep_weights": "best",
    }
    _log(f"{problem.name}: {configs} configurations x {problem.epochs} epochs into {study_dir}")
    proc = run_process("study", spec, work=work, tag="record", cap_s=None)
    if proc["rc"] != 0:
        raise RuntimeError(f"the recording study failed (exit {proc['rc']}); see {proc['log']}")
    native: dict[str, Any] = {"iterations": 0}
    if native_iterations > 0 and not (work / "native.json").is_file():
        project = work / "native"
        nspec = {
            "model": problem.model,
            "task": problem.task,
            "data": data,
            "space": problem.space,
            "iterations": native_iterations,
            "epochs": problem.epochs,
            "train_args": problem.fixed_args(seed, device),
            "project": str(project),
            "name": "tune",
            "seed": seed,
        }
        _log(f"timing model.tune: {native_iterations} iterations")
        env = {"YOLO_CONFIG_DIR": str(project / "ultralytics-config")}
        nproc = run_process("native", nspec, work=work, tag="native", cap_s=None, env=env)
        rows = _native_trials(project / "tune", project / "bench_times.jsonl", problem.metric, nproc["t0"])
        durations = [r["duration_s"] for r in rows if r["duration_s"] is not None]
        native = {"iterations": len(rows), "wall_s": nproc["wall_s"], "durations_s": durations}
        (work / "native.json").write_text(json.dumps(native, indent=1))
    elif (work / "native.json").is_file():
        native = json.loads((work / "native.json").read_text())
    table = _write_table(Study.open(study_dir), space, out / TABLE)
    info = {
        "problem": problem.name,
        "model": problem.model,
        "metric": problem.metric,
        "direction": "maximize",
        "epochs": problem.epochs,
        "space": {k: list(v) for k, v in problem.space.items()},
        "train_args": problem.fixed_args(seed, device),
        "configs": configs,
        "seed": seed,
        "model_tune": native,
        "hpo_trial_s": _trial_costs(Study.open(study_dir)),
        "machine": machine_info(),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / INFO).write_text(json.dumps(info, indent=1) + "\n")
    _log(f"wrote {table}")
    return table


def _trial_costs(study: Any) -> dict[str, float]:
    """Mean seconds of a recorded trial beside its epochs (model build, data scan, final validation)."""
    extra = []
    for r in study.finished():
        if r.duration_s is not None and r.epochs and "time" in r.epochs[-1]:
            extra.append(r.duration_s - float(r.epochs[-1]["time"]))
    return {"beside_epochs_s": round(sum(extra) / len(extra), 3) if extra else 0.0, "trials": len(extra)}


def _write_table(study: Any, space: SearchSpace, path: Path) -> Path:
    keys = list(space)
    rows = []
    for r in sorted(study.finished(), key=lambda r: r.id):
        if r.status.value != "complete":
            continue
        for e in r.epochs:
            rows.append(
                {
                    "config": r.id,
                    **{k: r.params[k] for k in keys},
                    "epoch": int(e["epoch"]),
                    "objective": e.get(study.settings["metric"]),
                    "time_s": e.get("time"),
                    "duration_s": round(r.duration_s or 0.0, 3),
                }
            )
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["config", *keys, "epoch", "objective", "time_s", "duration_s"])
        w.writeheader()
        w.writerows(rows)
    return path


def read_table(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(rows of table.csv as numbers, recording.json)`` of a recording folder.

    Raises:
        FileNotFoundError: no recording there.
    """
    info = json.loads((folder / INFO).read_text())
    with open(folder / TABLE, newline="", encoding="utf-8") as f:
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows, info
