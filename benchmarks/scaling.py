"""Scale-out throughput: finished trials per hour with 1, 2, 3 joined processes and with Ray.

``python -m hpo_bench.scaling --out DIR`` runs the same small study (digits-cls, ``yolov8n-cls.yaml``
from scratch at 32 px, 1 epoch per trial, a fixed total of trials) several ways, each a fresh study:

- ``joined-k`` (k = 1, 2, 3): one ``hpo tune --backend optuna`` process plus k - 1 processes
  started with ``--join`` as soon as the study exists, all sharing the Optuna storage (the journal
  file in the study directory, or ``--storage URL``, e.g. a PostgreSQL database);
- ``ray``: ``hpo tune --backend ray`` on a Ray cluster (``--ray-address``; default a local Ray
  started by hpo with ``--num-cpus`` = this machine's cores), ``--scheduler fifo`` so every trial
  runs its epochs and the numbers compare.

Throughput = finished trials / wall time (first launch to last exit) x 3600. Writes
``results.json`` (every run, the machine) and ``report.md`` (a table) into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .machine import machine_info

__all__ = ["run_joined", "run_ray", "throughput_report", "main"]

TRAIN = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "SGD", "fraction": 0.5}
SPACE = {"lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-1}, "momentum": (0.6, 0.98)}


def _common(data: Path, out: Path, name: str, trials: int, epochs: int, *, drop: tuple[str, ...] = ()) -> list[str]:
    return [
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(data),
        "--iterations",
        str(trials),
        "--epochs",
        str(epochs),
        "--output",
        str(out),
        "--name",
        name,
        "--space",
        json.dumps(SPACE),
        "--seed",
        "0",
        "--quiet",
        "--no-mlflow",
        *[f"{k}={v}" for k, v in TRAIN.items() if k not in drop],
    ]


def _popen(args: list[str], log: Path) -> subprocess.Popen:
    f = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], stdout=f, stderr=subprocess.STDOUT, text=True)


def _finished(study_dir: Path) -> dict[str, int]:
    from hpo import Study

    counts: dict[str, int] = {}
    for r in Study.open(study_dir).records().values():
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return counts


def _row(kind: str, processes: int, wall: float, study_dir: Path, rcs: list[int], storage: str) -> dict[str, Any]:
    counts = _finished(study_dir)
    done = sum(v for k, v in counts.items() if k in ("complete", "pruned", "failed"))
    return {
        "run": kind,
        "processes": processes,
        "storage": storage,
        "wall_s": round(wall, 1),
        "counts": counts,
        "finished": done,
        "trials_per_hour": round(done / wall * 3600, 1),
        "exit_codes": rcs,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }  # other work on the machine skews the numbers


def run_joined(k: int, *, data: Path, out: Path, trials: int, epochs: int, storage: str | None = None) -> dict[str, Any]:
    """One optuna study run by ``k`` processes (the first creates it, the others ``--join``).

    Returns:
        A row: ``run``, ``processes``, ``storage``, ``wall_s`` (s), ``counts``, ``finished``,
        ``trials_per_hour``, ``exit_codes``.
    """
    name = f"joined-{k}"
    args = [*_common(data, out, name, trials, epochs), "--backend", "optuna", "--pruner", "none"]
    if storage:
        args += ["--storage", storage]
    t0 = time.perf_counter()
    procs = [_popen(args, out / f"{name}-0.log")]
    study = out / name
    while not (study / "study.json").is_file():
        if procs[0].poll() is not None:
            raise RuntimeError(f"{name}: the first process exited with {procs[0].returncode}; see {out / f'{name}-0.log'}")
        time.sleep(0.1)
    procs += [_popen([*args, "--join"], out / f"{name}-{i}.log") for i in range(1, k)]
    rcs = [p.wait() for p in procs]
    return _row(name, k, time.perf_counter() - t0, study, rcs, storage or "journal file")


def run_ray(*, data: Path, out: Path, trials: int, epochs: int, address: str | None, num_cpus: int) -> dict[str, Any]:
    """One ray study (FIFO scheduler, 1 CPU per trial) on ``address`` or a local Ray of ``num_cpus`` CPUs."""
    name = "ray"
    # Ray assigns the device (CPU here: --gpus-per-trial 0)
    args = [
        *_common(data, out, name, trials, epochs, drop=("device",)),
        "--backend",
        "ray",
        "--scheduler",
        "fifo",
        "--cpus-per-trial",
        "1",
    ]
    args += ["--ray-address", address] if address else ["--num-cpus", str(num_cpus)]
    t0 = time.perf_counter()
    rc = _popen(args, out / f"{name}.log").wait()
    return _row(
        name + (" (cluster)" if address else f" (local, {num_cpus} CPUs)"),
        1,
        time.perf_counter() - t0,
        out / name,
        [rc],
        "Ray experiment",
    )


def _or(value: Any, missing: str) -> Any:
    return missing if value is None else value


def throughput_report(results: dict[str, Any]) -> str:
    """The Markdown report of a :func:`main` run's ``results``."""
    m = results["machine"]
    lines = [
        "# Scale-out throughput",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB, "
        f"{', '.join(m['gpus']) or 'no GPU'}; hpo {m['versions'].get('hpo')}, torch {m['versions'].get('torch')}, "
        f"Ultralytics {m['versions'].get('ultralytics')}, Optuna {m['versions'].get('optuna')}, Ray {m['versions'].get('ray')}; "
        f"{results['date']}.",
        "",
        f"Study: digits-cls, yolov8n-cls.yaml from scratch, {TRAIN['imgsz']} px, {results['trials']} trials x "
        f"{results['epochs']} epoch(s), fraction {TRAIN['fraction']}; throughput = finished trials / wall time "
        "(first launch to last exit).",
        "",
        "| run | processes | storage | wall s | finished | trials/hour | exit codes | load avg (1 min) at end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['run']} | {r['processes']} | {r['storage']} | {r['wall_s']} | {r['finished']} | "
            f"{r['trials_per_hour']} | {r['exit_codes']} | {_or(r.get('load_avg_1m_at_end'), 'not recorded')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpo_bench.scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="report folder (results.json, report.md, the logs)")
    ap.add_argument("--trials", type=int, default=6, help="trials per study (default 6)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    ap.add_argument("--processes", default="1,2,3", help="joined process counts (default 1,2,3)")
    ap.add_argument(
        "--storage",
        action="append",
        default=[],
        help="also run the joined studies on this Optuna storage URL (repeatable; e.g. postgresql://...)",
    )
    ap.add_argument("--ray-address", default=None, help="Ray cluster for the ray run (default: a local Ray)")
    ap.add_argument("--no-ray", action="store_true", help="skip the ray run")
    ap.add_argument("--append", action="store_true", help="add the runs to DIR/results.json instead of replacing it")
    args = ap.parse_args(argv)
    from hpo.datasets import make_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hpo-scaling-"))
    data = make_dataset("digits-cls", work / "digits-cls", seed=0)
    ks = [int(x) for x in args.processes.split(",") if x]
    runs = []
    for storage in [None, *args.storage]:
        for k in ks:
            out = work / (f"db{args.storage.index(storage)}" if storage else "journal")
            out.mkdir(exist_ok=True)
            runs.append(run_joined(k, data=data, out=out, trials=args.trials, epochs=args.epochs, storage=storage))
            print(json.dumps(runs[-1]), flush=True)
    if not args.no_ray:
        runs.append(
            run_ray(
                data=data,
                out=work,
                trials=args.trials,
                epochs=args.epochs,
                address=args.ray_address,
                num_cpus=os.cpu_count() or 1,
            )
        )
        print(json.dumps(runs[-1]), flush=True)
    for r in runs:  # no credentials in the committed results
        if "://" in r["storage"]:
            from hpo import mask_text

            r["storage"] = mask_text(r["storage"])
    if args.append and (args.out / "results.json").is_file():
        runs = json.loads((args.out / "results.json").read_text())["runs"] + runs
    results = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "trials": args.trials,
        "epochs": args.epochs,
        "runs": runs,
        "work_dir": str(work),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "report.md").write_text(throughput_report(results))
    print(throughput_report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
