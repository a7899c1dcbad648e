"""The driver's cost per trial as a study grows: ``python -m hpo_bench scale``.

Runs one large study per backend on the simulated trainer (:mod:`hpo.simulate`: learning curves
from a formula, no training, so what is left is hpo's own cost and the backend's) and measures, in
the driver process (the one ``hpo tune`` runs in):

- **CPU per trial** in windows of the study: ``[N/100, 2N/100)``, ``[9N/100, N/10)`` and
  ``[99N/100, N)`` finished trials (trials 100-200, 900-1000 and 9,900-10,000 of a 10,000-trial
  study): the process's CPU time (``time.process_time``, every thread) between the two counts,
  divided by the trials. Beside it, the CPU spent inside the backend's own ``ask``, ``tell`` and
  ``should_prune`` (its sampler and pruner, e.g. Optuna's TPE, whose cost grows with the trials by
  design; Ray Tune's own loop is not split out, see the report), and inside hpo's recording
  (the study's writes, :meth:`hpo.Study.append`, ``write_best`` and ``save_settings``, and the
  observers, every :class:`hpo.TunerCallback`'s ``on_trial_start/on_epoch/on_batch/on_trial_end``).
- **Memory**: the driver's resident set (RSS, ``/proc/self/statm``) after every trial.
- **Open times**: ``hpo show`` (the whole command, and ``hpo.show.render`` alone after the imports)
  and a ``--resume`` (from ``Tuner.run()`` to the first trial's start: open, lock, read, the
  backend's restore, the weights keeper's sweep) at ``N/10`` and at ``N`` trials.

The study runs in two processes: trials ``0 .. N/10`` (``--split``), then a resume to ``N``, so the
second process is itself the resume at ``N/10``. After it a copy of the study is resumed to
``N + 1`` for the resume at ``N``.

Targets (issue 28, item 3): the driver's CPU per trial at the last window at most 1.5x that at the
first, once the backend's own ``ask``/``tell`` time is subtracted; RSS flat-ish (a few KiB per
trial: the study's records, held once); ``hpo show`` in about a second.

Writes ``results.json`` (every number, the per-trial rows, the machine) and ``report.md`` into
``--out``. The per-trial rows of each run are in ``<backend>.<phase>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo import TunerCallback

from .machine import machine_info

if TYPE_CHECKING:
    from hpo import Study, TrialRecord, TuneConfig, TuneResult

__all__ = ["TARGET_RATIO", "windows_for", "window_cost", "run_scale", "scale_report", "main"]

#: The target: CPU per trial at the last window / at the first window (backend's own time subtracted).
TARGET_RATIO = 1.5
SIMULATED = "hpo.simulate:simulated_trainer"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


def windows_for(n: int) -> list[tuple[int, int]]:
    """The measurement windows of an ``n``-trial study: ``[n/100, 2n/100)``, ``[9n/100, n/10)``,
    ``[99n/100, n)`` (100-200, 900-1000, 9,900-10,000 for n = 10,000), at least one trial wide."""

    def w(a: float, b: float) -> tuple[int, int]:
        hi = min(n, max(2, int(round(n * b))))
        return (max(1, min(int(round(n * a)), hi - 1)), hi)

    return [w(0.01, 0.02), w(0.09, 0.10), w(0.99, 1.0)]


def wide_windows_for(n: int) -> list[tuple[int, int]]:
    """Two wide windows, less noisy on a shared machine: ``[n/100, n/10)`` and ``[9n/10, n)``
    (100-1,000 and 9,000-10,000 for n = 10,000)."""
    return [(max(1, n // 100), max(2, n // 10)), (n - n // 10, n)]


# --- the child: one study run with a probe --------------------------------------------------------
class _Acc:
    """CPU seconds spent inside wrapped methods (``time.thread_time`` of the calling thread)."""

    def inside(self) -> bool:
        """Whether the calling thread is inside a wrapped method."""
        return getattr(self._depth, "n", 0) > 0

    def __init__(self) -> None:
        self.s = 0.0
        self._lock = threading.Lock()
        self._depth = threading.local()

    def wrap(self, cls: type, name: str) -> None:
        orig = getattr(cls, name, None)
        if orig is None:
            return
        acc, local, lock = self, self._depth, self._lock

        def timed(self_: Any, *a: Any, **k: Any) -> Any:
            depth = getattr(local, "n", 0)
            local.n = depth + 1
            t = time.thread_time()
            try:
                return orig(self_, *a, **k)
            finally:
                local.n = depth
                if depth == 0:  # nested wrapped calls are counted once
                    with lock:
                        acc.s += time.thread_time() - t

        setattr(cls, name, timed)


class _GcClock:
    """CPU seconds the cyclic garbage collector ran (``gc.callbacks``), and the part of them that
    ran inside the backend's wrapped methods (its own allocations trigger most of it)."""

    def __init__(self, backend_acc: _Acc):
        self.s = 0.0
        self.in_backend_s = 0.0
        self.backend_acc = backend_acc
        self._t = threading.local()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t.start = time.thread_time()
            return
        spent = time.thread_time() - getattr(self._t, "start", time.thread_time())
        self.s += spent
        if self.backend_acc.inside():
            self.in_backend_s += spent


class _Probe(TunerCallback):
    """A Tuner observer that records, after each finished trial: the study's finished count, wall
    and CPU seconds since the process started, RSS, and the wrapped methods' CPU."""

    def __init__(self, backend_acc: _Acc, record_acc: _Acc, gc_clock: _GcClock, t0: float):
        self.backend_acc, self.record_acc, self.gc_clock, self.t0 = backend_acc, record_acc, gc_clock, t0
        self.rows: list[tuple[int, float, float, int, float, float, float, float]] = []
        self.before = 0
        self.n = 0
        self.run_called: float | None = None
        self.first_start: float | None = None
        self.study_start: float | None = None
        self._lock = threading.Lock()

    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        self.before = study.finished_count()
        self.study_start = time.perf_counter() - self.t0

    def on_trial_start(self, record: TrialRecord) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter() - self.t0

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        pass

    def on_trial_end(self, record: TrialRecord) -> None:
        with self._lock:
            self.n += 1
            self.rows.append(
                (
                    self.before + self.n,
                    time.perf_counter() - self.t0,
                    time.process_time(),
                    _rss(),
                    self.backend_acc.s,
                    self.record_acc.s,
                    self.gc_clock.s,
                    self.gc_clock.in_backend_s,
                )
            )

    def on_study_end(self, study: Study, result: TuneResult | None) -> None:
        pass


def _observer_classes() -> list[type]:
    """Every loaded :class:`hpo.TunerCallback` subclass but the probe (the observers of the run)."""
    out: list[type] = []
    todo: list[type] = list(TunerCallback.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not _Probe and cls not in out:
            out.append(cls)
    return out


def _child(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from hpo import Study, Tuner
    from hpo.plugins import get_backend

    backend_acc, record_acc = _Acc(), _Acc()
    gc_clock = _GcClock(backend_acc)
    gc.callbacks.append(gc_clock)
    probe = _Probe(backend_acc, record_acc, gc_clock, t0)
    options: dict[str, Any] = json.loads(args.options) if args.options else {}
    tuner = Tuner(
        backend=args.backend,
        model="yolov8n-cls.yaml",
        data=args.data,
        iterations=args.iterations,
        epochs=args.epochs,
        output=args.output,
        name=args.name,
        resume=args.resume,
        seed=0,
        plots=False,
        mlflow=False,
        trainer=SIMULATED,
        trainer_options={},
        backend_options=options,
        callbacks=[probe],
    )
    cls = get_backend(tuner.config.backend)
    for name in ("ask", "tell", "should_prune"):
        if name in vars(cls):
            backend_acc.wrap(cls, name)
    for name in ("append", "write_best", "save_settings"):  # the study's writes
        record_acc.wrap(Study, name)
    for observer in _observer_classes():  # the observers built for this run (plugins' too)
        for name in ("on_trial_start", "on_epoch", "on_batch", "on_trial_end"):
            if name in vars(observer):
                record_acc.wrap(observer, name)
    probe.run_called = time.perf_counter() - t0
    cpu_run = time.process_time()
    rc = 0
    try:
        tuner.run()
    except BaseException as e:  # noqa: BLE001 - the rows so far are still worth writing
        rc = 1
        print(f"trial_cost child: {type(e).__name__}: {e}", file=sys.stderr)
    with open(args.rows, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["finished", "wall_s", "cpu_s", "rss_bytes", "backend_cpu_s", "record_cpu_s", "gc_s", "gc_in_backend_s"])
        w.writerows(probe.rows)
    summary = {
        "rc": rc,
        "run_called_s": probe.run_called,
        "study_start_s": probe.study_start,
        "first_trial_start_s": probe.first_start,
        "cpu_before_run_s": cpu_run,
        "finished_before": probe.before,
        "trials_run": probe.n,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time(),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    Path(args.rows).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return rc


def _time_show(study: str) -> int:
    """Print ``{"render_wall_s", "render_cpu_s", "import_s"}`` of ``hpo.show.render(study)``."""
    t = time.perf_counter()
    from hpo.show import render

    imported = time.perf_counter() - t
    w, c = time.perf_counter(), time.process_time()
    text = render(study, width=120)
    print(
        json.dumps(
            {
                "import_s": imported,
                "render_wall_s": time.perf_counter() - w,
                "render_cpu_s": time.process_time() - c,
                "lines": len(text.splitlines()),
                "importance_note": next((ln.strip() for ln in text.splitlines() if ln.startswith("importance:")), None),
            }
        )
    )
    return 0


# --- the parent ------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HPO_PLOTS"] = "0"
    env.pop("MLFLOW_TRACKING_URI", None)
    env["COLUMNS"] = "120"
    return env


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_child(
    backend: str, *, data: Path, output: Path, name: str, iterations: int, resume: bool, rows: Path, options: str, log: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "hpo_bench.trial_cost",
        "child",
        "--backend",
        backend,
        "--data",
        str(data),
        "--output",
        str(output),
        "--name",
        name,
        "--iterations",
        str(iterations),
        "--rows",
        str(rows),
        "--options",
        options,
    ] + (["--resume"] if resume else [])
    t, c = time.perf_counter(), _children_cpu()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), check=False).returncode
    summary = json.loads(rows.with_suffix(".json").read_text()) if rows.with_suffix(".json").is_file() else {}
    summary.update({"exit_code": rc, "command_wall_s": time.perf_counter() - t, "command_cpu_s": _children_cpu() - c})
    return summary


def _read_rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def window_cost(rows: list[dict[str, float]], lo: int, hi: int) -> dict[str, float] | None:
    """CPU seconds per trial between the ``lo``-th and the ``hi``-th finished trial of one process
    (``None`` if the rows do not hold both): ``driver`` (the whole process), ``backend`` (inside
    ``ask``/``tell``/``should_prune``), ``record`` (inside hpo's recording), ``gc`` (the garbage
    collector, anywhere) and ``gc_in_backend`` (its part inside the backend), ``driver_less_backend``,
    and ``wall``."""
    by = {int(r["finished"]): r for r in rows}
    if lo not in by or hi not in by or hi <= lo:
        return None
    a, b, n = by[lo], by[hi], hi - lo
    out = {
        "driver": (b["cpu_s"] - a["cpu_s"]) / n,
        "backend": (b["backend_cpu_s"] - a["backend_cpu_s"]) / n,
        "record": (b["record_cpu_s"] - a["record_cpu_s"]) / n,
        "gc": (b.get("gc_s", 0.0) - a.get("gc_s", 0.0)) / n,
        "gc_in_backend": (b.get("gc_in_backend_s", 0.0) - a.get("gc_in_backend_s", 0.0)) / n,
        "wall": (b["wall_s"] - a["wall_s"]) / n,
    }
    out["driver_less_backend"] = out["driver"] - out["backend"]
    return out


def _time_show_cmd(study: Path) -> dict[str, Any]:
    t, c = time.perf_counter(), _children_cpu()
    r = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "show", str(study)], capture_output=True, text=True, env=_env(), check=False
    )
    out: dict[str, Any] = {
        "command_wall_s": time.perf_counter() - t,
        "command_cpu_s": _children_cpu() - c,
        "exit_code": r.returncode,
    }
    lines = r.stdout.splitlines()
    note = [ln.strip() for ln in lines if ln.startswith("importance:")] or [ln.strip() for ln in lines if "importance" in ln]
    out["importance_note"] = note[0] if note else None
    r2 = subprocess.run(
        [sys.executable, "-m", "hpo_bench.trial_cost", "time-show", str(study)],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    if r2.returncode == 0 and r2.stdout.strip():
        out.update(json.loads(r2.stdout.strip().splitlines()[-1]))
    else:
        out["render_error"] = (r2.stderr or r2.stdout)[-500:]
    return out


def run_scale(
    backend: str,
    *,
    trials: int,
    out: Path,
    work: Path,
    data: Path,
    split: int | None = None,
    windows: list[tuple[int, int]] | None = None,
    options: dict[str, Any] | None = None,
    resume_check: bool = True,
    label: str | None = None,
) -> dict[str, Any]:
    """One backend's study of ``trials`` trials: the run to ``split`` (default ``trials // 10``),
    ``hpo show`` there, the resume to ``trials``, ``hpo show`` and a resume of a copy at ``trials``.

    Returns:
        ``backend``, ``trials``, ``windows`` (each ``{lo, hi, driver, backend, record, wall,
        driver_less_backend}`` in CPU seconds per trial), ``ratio`` (last/first window of
        ``driver_less_backend``) and ``ratio_driver``, ``rss`` (bytes), ``show`` and ``resume``
        (per trial count), ``runs`` (each child's summary), ``wall_s``.
    """
    split = trials // 10 if split is None else split
    windows = windows or windows_for(trials)
    opts = json.dumps(options or {})
    label = label or backend
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", label)  # file and study names
    name = f"scale-{tag}"
    t0 = time.perf_counter()
    phases = [(min(split, trials), False)] + ([(trials, True)] if split < trials else [])
    runs, rows_by_phase = [], []
    show: dict[str, Any] = {}
    resume: dict[str, Any] = {}
    for k, (n, is_resume) in enumerate(phases, 1):
        rows = out / f"{tag}.{k}.csv"
        summary = _run_child(
            backend,
            data=data,
            output=work,
            name=name,
            iterations=n,
            resume=is_resume,
            rows=rows,
            options=opts,
            log=out / f"{tag}.{k}.log",
        )
        summary["phase"] = k
        summary["iterations"] = n
        runs.append(summary)
        rows_by_phase.append(_read_rows(rows) if rows.is_file() else [])
        print(f"{label} phase {k}: {json.dumps(summary)}", flush=True)
        if is_resume and summary.get("first_trial_start_s") is not None:
            resume[str(summary["finished_before"])] = {
                "open_s": summary["first_trial_start_s"] - summary["run_called_s"],
                "process_start_to_first_trial_s": summary["first_trial_start_s"],
            }
        show[str(n)] = _time_show_cmd(work / name)
        print(f"{label} show at {n}: {json.dumps(show[str(n)])}", flush=True)
    if resume_check and split < trials:
        # a copy under the same name (the backend's own state may hold it, e.g. Optuna's study name)
        copy = work / "resumed" / name
        shutil.rmtree(copy.parent, ignore_errors=True)
        shutil.copytree(work / name, copy, symlinks=True)
        rows = out / f"{tag}.resume.csv"
        summary = _run_child(
            backend,
            data=data,
            output=copy.parent,
            name=name,
            iterations=trials + 1,
            resume=True,
            rows=rows,
            options=opts,
            log=out / f"{tag}.resume.log",
        )
        summary["phase"] = "resume"
        runs.append(summary)
        if summary.get("first_trial_start_s") is not None:
            resume[str(summary["finished_before"])] = {
                "open_s": summary["first_trial_start_s"] - summary["run_called_s"],
                "process_start_to_first_trial_s": summary["first_trial_start_s"],
            }
        shutil.rmtree(copy.parent, ignore_errors=True)

    def measure(spans: list[tuple[int, int]]) -> list[dict[str, Any]]:
        out_ = []
        for lo, hi in spans:
            cost = None
            for rows_ in rows_by_phase:
                cost = window_cost(rows_, lo, hi)
                if cost is not None:
                    break
            out_.append({"lo": lo, "hi": hi, **(cost or {})})
        return out_

    def ratio_of(ws: list[dict[str, Any]], key: str) -> float | None:
        return ws[-1][key] / ws[0][key] if key in ws[0] and key in ws[-1] and ws[0][key] > 0 else None

    measured = measure(windows)
    wide = measure(wide_windows_for(trials)) if split < trials else []
    ratio = ratio_of(measured, "driver_less_backend")
    ratio_driver = ratio_of(measured, "driver")
    rss: dict[str, Any] = {}
    if rows_by_phase and rows_by_phase[-1]:
        last_rows = rows_by_phase[-1]
        rss = {
            "at_split": int(rows_by_phase[0][-1]["rss_bytes"]) if rows_by_phase[0] else None,
            "first_of_last_run": int(last_rows[0]["rss_bytes"]),
            "end": int(last_rows[-1]["rss_bytes"]),
            "trials_in_last_run": int(last_rows[-1]["finished"] - last_rows[0]["finished"]),
        }
        span = rss["trials_in_last_run"]
        rss["bytes_per_trial"] = round((rss["end"] - rss["first_of_last_run"]) / span) if span > 0 else None
    return {
        "backend": label,
        "backend_name": backend,
        "trials": trials,
        "split": split,
        "options": options or {},
        "windows": measured,
        "ratio": ratio,
        "ratio_driver": ratio_driver,
        "wide_windows": wide,
        "ratio_wide": ratio_of(wide, "driver_less_backend") if wide else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": None if ratio is None else ratio <= TARGET_RATIO,
        "rss": rss,
        "show": show,
        "resume": resume,
        "runs": runs,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def scale_report(results: dict[str, Any]) -> str:
    """The Markdown report of a :func:`main` run's ``results``."""
    m = results["machine"]
    lines = [
        "# Cost per trial as the study grows",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {(m['ram_bytes'] or 0) / 2**30:.1f} GiB, "
        f"{', '.join(m['gpus']) or 'no GPU'}; hpo {m['versions'].get('hpo')}, Ultralytics {m['versions'].get('ultralytics')}, "
        f"Optuna {m['versions'].get('optuna')}, Ray {m['versions'].get('ray')}, Python {m['versions'].get('python')}; "
        f"{results['date']}; load average (1 min) {results['load_avg']} at the start, {results.get('load_avg_end')} at the end"
        + (f". {results['note']}" if results.get("note") else "."),
        "",
        f"Command (wall time {results['wall_s']:.0f} s): `{results['command']}`",
        "",
        "Simulated trainer (`hpo.simulate:simulated_trainer`), 3 epochs, Ultralytics' default space (26 keys), "
        "`yolov8n-cls.yaml` on digits-cls (not trained), one trial at a time, no plots, no MLflow, `--keep-weights top-3`. "
        "CPU is the driver process's (`time.process_time`, every thread), in milliseconds per trial; *backend* is the "
        "part inside the backend's own `ask`/`tell`/`should_prune` (its sampler and pruner; empty for ray, whose loop is "
        "Ray Tune's own), *record* the part inside hpo's recording (the study's writes and the observers), "
        "*GC* the cyclic garbage collector's anywhere (in brackets: inside the backend). "
        f"Target: driver less backend at the last window <= {TARGET_RATIO}x the first. The last two rows of each "
        "backend are wide windows (N/100-N/10 and 9N/10-N), less noisy on a shared machine.",
        "",
        "| backend | trials | window | driver ms | backend ms | record ms | GC ms (in backend) | driver less backend ms | wall ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        for w in [*r["windows"], *r.get("wide_windows", [])]:
            gc_ = "-" if w.get("gc") is None else f"{_ms(w.get('gc'))} ({_ms(w.get('gc_in_backend'))})"
            lines.append(
                f"| {r['backend']} | {r['trials']} | {w['lo']}-{w['hi']} | {_ms(w.get('driver'))} | {_ms(w.get('backend'))} | "
                f"{_ms(w.get('record'))} | {gc_} | {_ms(w.get('driver_less_backend'))} | {_ms(w.get('wall'))} |"
            )
    lines += [
        "",
        "| backend | last/first window, driver less backend | same, wide windows | last/first, whole driver | meets target | RSS at split MiB | RSS at end MiB | RSS growth per trial |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        rss = r.get("rss") or {}
        mib = lambda b: "-" if b is None else f"{b / 2**20:.0f}"
        per = rss.get("bytes_per_trial")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        ratio_driver = "-" if r["ratio_driver"] is None else f"{r['ratio_driver']:.2f}"
        ratio_wide = "-" if r.get("ratio_wide") is None else f"{r['ratio_wide']:.2f}"
        growth = "-" if per is None else f"{per / 1024:.1f} KiB"
        lines.append(
            f"| {r['backend']} | {ratio} | {ratio_wide} | {ratio_driver} | {r['meets_target']} | "
            f"{mib(rss.get('at_split'))} | {mib(rss.get('end'))} | {growth} |"
        )
    lines += [
        "",
        "Open times: `hpo show STUDY` (the whole command; *render*: `hpo.show.render` after the imports) and a "
        "`--resume` (*open*: from `Tuner.run()` to the first trial's start, in the resumed process).",
        "",
        "| backend | trials | show command s | show CPU s | render s | resume open s | importance shown |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        counts = sorted({int(k) for k in r["show"]} | {int(k) for k in r["resume"]})
        for n in counts:
            s = r["show"].get(str(n), {})
            o = r["resume"].get(str(n), {})

            def f(x: Any) -> str:
                return "-" if x is None else f"{x:.2f}"

            lines.append(
                f"| {r['backend']} | {n} | {f(s.get('command_wall_s'))} | {f(s.get('command_cpu_s'))} | "
                f"{f(s.get('render_wall_s'))} | {f(o.get('open_s'))} | {s.get('importance_note') or '-'} |"
            )
    return "\n".join(lines) + "\n"


def _parse_windows(text: str | None) -> list[tuple[int, int]] | None:
    if not text:
        return None
    out = []
    for item in text.split(","):
        lo, _, hi = item.strip().partition("-")
        if not lo.isdigit() or not hi.isdigit() or int(hi) <= int(lo):
            raise ValueError(f"--windows: '{item}' is not LO-HI with LO < HI (e.g. 100-200,900-1000)")
        out.append((int(lo), int(hi)))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m hpo_bench scale`` (also ``python -m hpo_bench.trial_cost``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        ap = argparse.ArgumentParser(prog="python -m hpo_bench.trial_cost child")
        for a in ("--backend", "--data", "--output", "--name", "--rows", "--options"):
            ap.add_argument(a, required=a != "--options", default="")
        ap.add_argument("--iterations", type=int, required=True)
        ap.add_argument("--epochs", type=int, default=3)
        ap.add_argument("--resume", action="store_true")
        return _child(ap.parse_args(argv[1:]))
    if argv[:1] == ["time-show"]:
        return _time_show(argv[1])
    ap = argparse.ArgumentParser(prog="python -m hpo_bench scale", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="report folder (results.json, report.md, per-trial CSVs, logs)")
    ap.add_argument("--trials", type=int, default=10_000, help="trials per study (default 10000)")
    ap.add_argument(
        "--backends",
        default="ultralytics,optuna,ray",
        help="comma-separated runs (default ultralytics,optuna,ray); a run may add backend options: "
        "optuna+sampler=random runs optuna with --sampler random",
    )
    ap.add_argument(
        "--backend-trials",
        action="append",
        default=[],
        metavar="BACKEND=N",
        help="another trial count for one run (e.g. ray=1000 or optuna=2000, when N trials would take hours); repeatable",
    )
    ap.add_argument("--split", type=int, default=None, help="the first process stops here, the resume goes on (default N/10)")
    ap.add_argument("--windows", default=None, help="windows LO-HI,... (default N/100-2N/100, 9N/100-N/10, 99N/100-N)")
    ap.add_argument("--no-resume-check", action="store_true", help="skip the resume of a copy at N")
    ap.add_argument("--work", type=Path, default=None, help="study folder (default a new temporary one, removed after)")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. 'preliminary: a shared machine')")
    args = ap.parse_args(argv)
    try:
        windows = _parse_windows(args.windows)
        per = {}
        for item in args.backend_trials:
            b, _, n = item.partition("=")
            if not n.isdigit() or int(n) < 30:
                raise ValueError(f"--backend-trials: '{item}' is not BACKEND=N with N >= 30")
            per[b.strip()] = int(n)
        for label in args.backends.split(","):
            if any("=" not in pair for pair in label.split("+")[1:]):
                raise ValueError(f"--backends: '{label}' is not BACKEND or BACKEND+OPTION=VALUE (e.g. optuna+sampler=random)")
        if args.trials < 30:
            raise ValueError("--trials: must be >= 30")
    except ValueError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="hpo-scale-")) if own_work else args.work
    work.mkdir(parents=True, exist_ok=True)
    from hpo.datasets import make_dataset

    data = work / "digits-cls"
    if not data.exists():
        data = make_dataset("digits-cls", data, seed=0)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m hpo_bench scale " + " ".join(argv),
        "load_avg": round(os.getloadavg()[0], 2),
        "note": args.note,
        "runs": [],
    }
    try:
        for label in [b.strip() for b in args.backends.split(",") if b.strip()]:
            backend, *pairs = label.split("+")
            n = per.get(label, args.trials)
            results["runs"].append(
                run_scale(
                    backend,
                    label=label,
                    options=dict(p.split("=", 1) for p in pairs),
                    trials=n,
                    out=args.out,
                    work=work,
                    data=data,
                    split=args.split if args.split is not None else None,
                    windows=windows if n == args.trials else None,
                    resume_check=not args.no_resume_check,
                )
            )
            results["wall_s"] = time.perf_counter() - t0
            results["load_avg_end"] = round(os.getloadavg()[0], 2)
            (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - t0
    results["load_avg_end"] = round(os.getloadavg()[0], 2)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = scale_report(results)
    (args.out / "report.md").write_text(report)
    print(report)
    return 0 if all(r["runs"] and all(x.get("exit_code") == 0 for x in r["runs"]) for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
