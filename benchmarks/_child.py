"""Entry points of the benchmark's subprocesses: ``python -m hpo_bench._child MODE SPEC.json``.

Every study, native tuning run and batch of plain trainings runs in its own process, so each
contender pays its own interpreter start and imports (as a user would), a wall-clock cap can kill
it with its whole process group, and no state (Ray, CUDA, Optuna) leaks between contenders.

Modes:
    ``study``   one hpo study through the public :class:`hpo.Tuner` (any installed backend; the
                benchmark's random-search backend is registered in-process first).
    ``native``  Ultralytics' own ``model.tune(use_ray=False)``, timestamping each iteration.
    ``train``   trainings run back to back in THIS process with :func:`hpo.train_trial`
                (default-hyperparameter references, retrains, and the back-to-back baseline).
    ``init``    a seed's shared initial weights: the model built from its YAML under
                ``torch.manual_seed(seed)``, saved untrained as a ``.pt``.
    ``final``   final trainings of one configuration, scored on the test split
                (:func:`hpo_bench.finals.train_final_records`); the records go to ``spec["out"]``.
    ``native-ray``  Ultralytics' own ``model.tune(use_ray=True)``; every Ray trial's config,
                metrics and end time go to ``spec["out"]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "sync", "hub", "platform")


def run_study(spec: dict[str, Any]) -> int:
    """Run one hpo study; the records are in ``<output>/<name>/trials.jsonl``. Returns the exit code."""
    from hpo import RunFailedError, Tuner, TuneSettings

    if spec["backend"] == "bench-list":
        from hpo_bench.recording import register

        register()
    elif spec["backend"].startswith("bench-"):
        from hpo_bench.random_search import register

        register()
    train_args = dict(spec["train_args"])
    options = dict(spec.get("backend_options") or {})
    if spec["backend"] == "ray":  # Ray assigns devices itself: device= is refused, GPUs go per trial
        device = str(train_args.pop("device", "cpu"))
        if device not in ("cpu", "") and "gpus_per_trial" not in options:
            options["gpus_per_trial"] = 1
    settings = TuneSettings(
        backend=spec["backend"],
        model=spec["model"],
        data=spec["data"],
        space=spec["space"],
        iterations=spec["iterations"],
        epochs=spec["epochs"],
        train_args=train_args,
        output=spec["output"],
        name=spec["name"],
        seed=spec["seed"],
        trial_timeout=spec.get("trial_timeout"),
        time_budget=spec.get("time_budget"),
        backend_options=options,
        resume=bool(spec.get("resume", False)),
    )
    if spec.get("keep_weights"):
        settings = settings.replace(keep_weights=spec["keep_weights"])
    tuner = Tuner(settings)
    try:
        result = tuner.run()
    except RunFailedError as e:
        print(f"benchmarks: study failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"best": result.best_objective, "counts": result.counts}))
    return 0


def _last_csv_row(run_dir: Path) -> tuple[float | None, int]:
    """``(time column of the last row, rows)`` of an Ultralytics ``results.csv`` (training-loop seconds)."""
    import csv

    f = run_dir / "results.csv"
    if not f.is_file():
        return None, 0
    with open(f, encoding="utf-8") as fh:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(fh)]
    if not rows:
        return None, 0
    try:
        return float(rows[-1]["time"]), len(rows)
    except (KeyError, ValueError):
        return None, len(rows)


def run_native(spec: dict[str, Any]) -> int:
    """Run ``YOLO(model).tune(use_ray=False, ...)`` and write ``<project>/bench_times.jsonl``.

    Ultralytics' integrations are switched off in a settings file of its own (``YOLO_CONFIG_DIR``,
    set by the parent and inherited by the ``yolo train`` subprocess of each iteration), so the
    user's settings are never touched. The native sampler draws from ``np.random.default_rng()``;
    it is seeded here (one generator per call from ``[seed, call]``) so a seed reproduces.
    """
    import numpy as np
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    from hpo_bench._native import on_native_result

    SETTINGS.update({k: False for k in _INTEGRATIONS if k in SETTINGS})
    project = Path(spec["project"])
    project.mkdir(parents=True, exist_ok=True)
    times = project / "bench_times.jsonl"
    t_start = time.time()
    calls = {"n": 0}
    original_rng = np.random.default_rng

    def seeded_rng(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return original_rng([int(spec["seed"]), calls["n"]])

    np.random.default_rng = seeded_rng

    def note_time(result: dict[str, Any]) -> None:
        dirs = list((result.get("save_dirs") or {}).values())
        train_s, epochs = _last_csv_row(Path(dirs[0])) if dirs else (None, 0)
        with open(times, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "iteration": result["iteration"],
                        "t": time.time(),
                        "t_start": t_start,
                        "train_loop_s": train_s,
                        "epochs": epochs,
                    }
                )
                + "\n"
            )

    on_native_result(note_time)
    model = YOLO(spec["model"], task=spec["task"])
    space = spec.get("space")
    model.tune(
        use_ray=False,
        data=spec["data"],
        iterations=spec["iterations"],
        epochs=spec["epochs"],
        # no space: model.tune's own 26-key default, as users run it
        **({"space": {k: tuple(v) for k, v in space.items()}} if space else {}),
        project=str(project),
        name=spec["name"],
        val=True,
        **spec["train_args"],  # train_args hold plots=False: no plotting, no font download
    )
    return 0


def run_trainings(spec: dict[str, Any]) -> int:
    """Train ``spec["jobs"]`` one after another in this process; one JSON line per job in ``spec["out"]``.

    Each job: ``tag``, ``model``, ``task``, ``data``, ``params``, ``train_args``, ``epochs``,
    ``project``, ``name``, ``metric``. A failed training is recorded with its error and
    ``objective: null`` (never 0).
    """
    from hpo import TrialSpec, TrialStatus, train_trial

    out = Path(spec["out"])
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "start", "t": time.time()}) + "\n")
    for job in spec["jobs"]:
        t0 = time.time()
        row: dict[str, Any] = {"tag": job["tag"], "start": t0}
        trial = TrialSpec(
            trial_id=0,
            model=job["model"],
            task=job["task"],
            data=job["data"],
            params=job["params"],
            train_args=job["train_args"],
            epochs=int(job["epochs"]),
            run_dir=str(Path(job["project"]) / job["name"]),
            metric=job["metric"],
        )
        res = train_trial(trial, lambda _row: False)  # a failed training is a result: never raises
        obj = res.objective(job["metric"]) if res.status is TrialStatus.COMPLETE else None
        row.update(status="complete" if obj is not None else "failed", objective=obj, train_s=res.train_s, epochs=len(res.epochs))
        if res.error:
            row["error"] = res.error[:500]
        row["wall_s"] = time.time() - t0
        row["end"] = time.time()
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return 0


def save_initial_weights(spec: dict[str, Any]) -> int:
    """Build ``spec["model"]`` (a model YAML) under ``torch.manual_seed(spec["seed"])`` and save it,
    untrained, to ``spec["out"]`` as an Ultralytics checkpoint.

    The checkpoint holds what Ultralytics' ``attempt_load_one_weight`` reads (``model``, float16
    as in Ultralytics' own checkpoints and ``Model.save``, 8.4.x) and ``train_args: {"task": ...}``
    (the task hpo reads from a ``.pt``). Every training started from it, ``model.tune``'s
    iterations and hpo's trials alike, loads these weights into its freshly built model
    (``Model.train``: ``get_model(weights=...)``), so all start from one initialisation.
    """
    import copy
    from datetime import datetime

    import torch
    from ultralytics import YOLO, __version__

    torch.manual_seed(int(spec["seed"]))
    net = YOLO(spec["model"], task=spec["task"]).model
    assert isinstance(net, torch.nn.Module)  # built from a YAML: the module itself
    ckpt = {
        "model": copy.deepcopy(net).half(),
        "train_args": {"task": spec["task"]},
        "date": datetime.now().isoformat(),
        "version": __version__,
    }
    out = Path(spec["out"])
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    return 0


def run_final(spec: dict[str, Any]) -> int:
    """Final trainings of ``spec`` (:func:`hpo_bench.finals.train_final_records`) into ``spec["out"]``
    (written atomically once all seeds are done); exit 0 when every seed completed, else 1."""
    from hpo_bench.finals import train_final_records

    records = train_final_records(spec)
    out = Path(spec["out"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, out)
    return 0 if records and all(r.get("status") == "complete" for r in records) else 1


def run_native_ray(spec: dict[str, Any]) -> int:
    """``YOLO(model).tune(use_ray=True, ...)`` as users run it (Ultralytics' Ray Tune path); every
    trial's config, last metrics and end time (epoch seconds) go to ``spec["out"]``."""
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update({k: False for k in _INTEGRATIONS if k in SETTINGS and k != "raytune"})
    model = YOLO(spec["model"], task=spec["task"])
    train_args = dict(spec["train_args"])
    if str(train_args.get("device", "cpu")).strip().lower() not in ("cpu", ""):
        # as a GPU user runs it: Ray gives a trial no GPU unless asked (run_ray_tune's gpu_per_trial)
        train_args.setdefault("gpu_per_trial", 1)
    grid = model.tune(
        use_ray=True,
        data=spec["data"],
        iterations=spec["iterations"],
        epochs=spec["epochs"],
        **train_args,
    )
    trials = []
    for res in grid:
        metrics = dict(res.metrics or {})
        end = metrics.get("timestamp")
        trials.append(
            {
                "config": {k: v for k, v in (res.config or {}).items() if k != "data"},
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "end": end,
                "error": str(res.error).splitlines()[0] if res.error else None,
            }
        )
    out = Path(spec["out"])
    out.write_text(json.dumps(trials, indent=1, default=str), encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    mode, spec_file = argv
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    modes = {
        "study": run_study,
        "native": run_native,
        "train": run_trainings,
        "init": save_initial_weights,
        "final": run_final,
        "native-ray": run_native_ray,
    }
    return modes[mode](spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
