"""Runs the pre-registered protocol (:mod:`hpo_bench.protocol`) resumably, in several sittings.

A run folder holds ``results.json``: the protocol's text, hash and git commit, one entry per
sitting (command, machine, load average at its start and end) and one entry per finished *unit*:

- ``prep/<problem>``: the problem's starting checkpoint (a warm start or a pretraining on other classes);
- ``study/<condition>/<problem>/<seed>/<contender>``: one tuning study in its own process; the
  condition's ``model.tune`` baseline runs first on each seed and its wall time, launch to exit,
  is every other contender's ``--time-budget`` (only trials that end within it count);
- ``final/<condition>/<problem>/<seed>/<contender>``: the study's incumbent trained for the final
  schedule with the seed's fresh final seeds and scored on the test split (:mod:`hpo_bench.finals`);
- ``noise/<problem>/<seed>``: one training of the noise-floor configuration.

Every unit records its sitting, wall time, and the load average (1 min) at its start and end, and
is written at once (``results.json`` is rewritten atomically after each unit). A re-run with
``--resume`` keeps every recorded unit and runs the rest; a unit cut off by a kill is run again
from its start (its leftovers deleted). One process writes a run folder at a time (a lock).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .finals import final_impl
from .machine import machine_info, machine_key
from .protocol import (
    ConditionSpec,
    ContenderSpec,
    ProblemSpec,
    Protocol,
    final_seeds,
    noise_seeds,
    parse_seed_set,
    recorded_protocol,
)
from .run import run_process

__all__ = [
    "run_protocol",
    "check_protocol_run",
    "UNIT_KINDS",
    "protocol_provenance",
    "code_state",
    "hpo_environment",
    "plan_units",
]

UNIT_KINDS = ("prep", "study", "final", "noise")


def _log(msg: str) -> None:
    print(f"[protocol {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return os.getloadavg()[0]


def atomic_write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` through a temporary file, fsync'd, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=1, default=str))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def _writer_lock(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out: another protocol run is writing '{out}'; wait for it or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def protocol_provenance(path: Path, sha256: str) -> dict[str, Any]:
    """The protocol file's path, hash, text and git state (last commit touching it, its date, and
    whether the working copy differs from it); ``git`` is ``None`` outside a repository."""
    path = path.resolve()
    info: dict[str, Any] = {"path": str(path), "sha256": sha256, "text": path.read_text(encoding="utf-8"), "git": None}

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("log", "-1", "--format=%H %cI", "--", path.name)
    if commit is not None:
        sha, _, when = commit.partition(" ")
        status = git("status", "--porcelain", "--", path.name)
        info["git"] = {"commit": sha or None, "committed_at": when or None, "dirty": bool(status) or not sha}
    return info


def code_state(where: Path) -> dict[str, Any] | None:
    """The code a sitting runs: the repository's ``HEAD`` commit and whether tracked files of ``hpo/``,
    ``plugins/`` or ``benchmarks/`` differ from it (``dirty``; untracked files, such as the run's own
    results folder under ``benchmarks/results/``, do not count); ``None`` outside a git repository. The protocol says
    which code an evaluation must run (hpo's shipped defaults as committed), so every sitting records it."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None
    top = git("rev-parse", "--show-toplevel") or str(where)
    # tracked files only: the run's own results folder (benchmarks/results/...) is untracked while it runs
    changed = git("-C", top, "status", "--porcelain", "--untracked-files=no", "--", "hpo", "plugins", "benchmarks")
    return {"commit": head, "dirty": bool(changed)}


#: ``HPO_*`` variables the harness sets itself for every study (so an inherited value never reaches one).
HARNESS_ENV = {"HPO_PLOTS": "0"}


def hpo_environment() -> list[str]:
    """Names of the ``HPO_*`` environment variables of this process that every study would inherit
    (e.g. ``HPO_AUTO_OPTIMIZER``, ``HPO_TRAINER``; not those of :data:`HARNESS_ENV`). Names only:
    a value may hold a secret."""
    return sorted(k for k in os.environ if k.startswith("HPO_") and k not in HARNESS_ENV)


def _seed_set(protocol: Protocol, seeds: list[int]) -> str:
    ev, dev = set(protocol.evaluation_seeds()), set(protocol.development_seeds())
    if set(seeds) <= ev:
        return "evaluation"
    if set(seeds) <= dev:
        return "development"
    raise ValueError(
        f"--seeds: {seeds} mixes or leaves the protocol's sets; use evaluation seeds {protocol.seeds.evaluation} "
        f"or development seeds {protocol.seeds.development}, not both"
    )


def check_device(device: str) -> None:
    """Refuse a protocol that trains on CUDA devices torch does not see here, before anything runs.

    Args:
        device: the protocol's ``device``: CUDA indices such as ``"0"`` or ``"0,1"``.

    Raises:
        ValueError: one line naming the device, what torch sees and the fix.
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [d for d in (int(x) for x in device.split(",")) if d >= count]
    if missing:
        raise ValueError(
            f"device: the protocol trains on CUDA device {device}, but torch sees {count} CUDA device(s) here; "
            "run it on a machine with that GPU (its --dry-run there checks this too)"
        )


def check_protocol_run(
    protocol: Protocol,
    sha256: str,
    protocol_path: Path,
    out: Path,
    *,
    seeds: list[int],
    conditions: list[str],
    problems: list[str] | None,
    contenders: list[str] | None,
    resume: bool,
) -> dict[str, Any] | None:
    """Every check before anything is written; returns the recorded run when continuing one.

    Raises:
        ValueError: one line naming the option, the value and the fix: a GPU protocol where torch
            sees no such CUDA device (:func:`check_device`); an unknown condition, problem or
            contender; seeds outside the protocol's sets or mixing them; evaluation seeds with a protocol file that is not committed or differs from its commit, or with
            ``HPO_*`` variables in the environment (:func:`hpo_environment`); ``--out`` holding a run without ``--resume``, or a run
            of another protocol text or seed set.
    """
    for c in conditions:
        if c not in protocol.conditions:
            raise ValueError(f"--condition: unknown '{c}'; choose from {', '.join(protocol.conditions)}")
    for p in problems or []:
        if p not in protocol.problems:
            raise ValueError(f"--problems: unknown '{p}'; choose from {', '.join(protocol.problems)}")
    for c in contenders or []:
        if c not in protocol.contenders:
            raise ValueError(f"--contenders: unknown '{c}'; choose from {', '.join(protocol.contenders)}")
    if protocol.device != "cpu":
        check_device(protocol.device)
    seed_set = _seed_set(protocol, seeds)
    if seed_set == "evaluation":
        stray = hpo_environment()
        if stray:
            raise ValueError(
                f"environment: {', '.join(stray)} set in this shell would change hpo's shipped defaults for every "
                "contender; an evaluation sets only the protocol's per-contender env: unset it (or use development seeds)"
            )
        git = protocol_provenance(protocol_path, sha256)["git"]
        if not git or git["dirty"]:
            raise ValueError(
                f"--protocol: '{protocol_path}' is not committed as it is; evaluation seeds run only a protocol "
                "that git history shows before any result (commit it first, or use development seeds)"
            )
    results_file = out / "results.json"
    if not results_file.is_file():
        return None
    if not resume:
        raise ValueError(f"--out: '{out}' already holds a protocol run; continue it with --resume or choose a new folder")
    previous = json.loads(results_file.read_text(encoding="utf-8"))
    if previous.get("protocol", {}).get("sha256") != sha256:
        raise ValueError(
            f"--protocol: '{protocol_path}' differs from the protocol this run was started with "
            f"(sha256 {str(previous.get('protocol', {}).get('sha256'))[:12]}...); resume with that file or start a new --out"
        )
    if previous.get("seed_set") != seed_set:
        raise ValueError(f"--seeds: this run holds {previous.get('seed_set')} seeds; do not add {seed_set} seeds to it")
    return dict(previous)


class _Run:
    """One sitting's state: the results document and how to record a unit."""

    def __init__(self, out: Path, results: dict[str, Any], sitting: int, device: str, results_file: str = "results.json") -> None:
        self.out = out
        self.results = results
        self.sitting = sitting
        self.device = device
        self.results_file = results_file

    @property
    def units(self) -> dict[str, Any]:
        units: dict[str, Any] = self.results["units"]
        return units

    def save(self) -> None:
        s = self.results["sittings"][self.sitting]
        s["ended"] = time.time()
        s["load_end"] = _load()
        atomic_write_json(self.out / self.results_file, self.results)

    def done(self, uid: str) -> bool:
        return uid in self.units

    def record(self, uid: str, unit: dict[str, Any]) -> None:
        unit["id"] = uid
        unit["sitting"] = self.sitting
        self.units[uid] = unit
        self.results["sittings"][self.sitting]["units"].append(uid)
        self.save()

    def forget(self, uid: str) -> None:
        if self.units.pop(uid, None) is not None:
            _log(f"  {uid}: its baseline is not recorded; dropped, runs again")

    def event(self, uid: str, what: str) -> None:
        with open(self.out / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": time.time(), "unit": uid, "event": what, "sitting": self.sitting, "load": _load()}) + "\n")

    def process(
        self, uid: str, mode: str, spec: dict[str, Any], *, work: Path, cap_s: float | None, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run a child process for unit ``uid``; returns its run info with the unit's timing fields."""
        self.event(uid, "start")
        load0, t0 = _load(), time.time()
        proc = run_process(mode, spec, work=work, tag=uid.replace("/", "_"), cap_s=cap_s, env=env)
        info = {
            "t_start": t0,
            "t_end": time.time(),
            "wall_s": proc["wall_s"],
            "load_start": load0,
            "load_end": _load(),
            "rc": proc["rc"],
            "capped": proc["capped"],
            "log": os.path.relpath(proc["log"], self.out),
            "_t0": proc["t0"],
        }
        self.event(uid, f"end rc={proc['rc']}")
        return info


def drop_unfinished_seeds(results: dict[str, Any], protocol: Protocol, machine: dict[str, Any]) -> list[str]:
    """Before a sitting on ``machine``: take out the units of every condition, problem and seed whose
    studies are unfinished, so that the next ``--resume`` runs all of them again in one sitting.

    A budget is the baseline's wall time, measured in one sitting on one machine; a contender's
    study in another sitting would get a budget measured at another machine speed (protocol
    amendment 4; amendment 2 first said so for another CPU model, :func:`machine_key`, which the
    reason still names). Seeds whose planned studies are all recorded keep everything: their finals
    train a fixed number of epochs and may run anywhere. Each dropped record moves, with the reason,
    to ``results["dropped"]`` (kept, shown by the report).

    Args:
        results: a protocol run's ``results.json`` document, changed in place.
        protocol: the run's protocol.
        machine: :func:`machine_info` of the machine about to run the next sitting.

    Returns:
        The dropped unit ids, in the order dropped (empty when nothing had to go).
    """
    here = machine_key(machine)
    units = results["units"]
    gone: list[str] = []
    for u in [u for u in list(units.values()) if u.get("kind") == "study"]:
        cond = protocol.conditions.get(u["condition"])
        if cond is None or u["contender"] != cond.baseline or u["id"] not in units:
            continue
        there = machine_key(results["sittings"][int(u["sitting"])]["machine"])
        seed, key = int(u["seed"]), f"{u['condition']}/{u['problem']}/{u['seed']}"
        planned = [c for c in cond.contenders if c not in cond.contender_seeds or seed in parse_seed_set(cond.contender_seeds[c])]
        if all(f"study/{key}/{c}" in units for c in planned):
            continue
        if there != here:
            why = (
                f"protocol amendment 2: its seed's baseline study ran on {there} and its studies were unfinished when a sitting "
                f"on {here} began; every study of a condition, problem and seed runs on one machine, so they run again"
            )
        else:
            why = (
                f"protocol amendment 4: its seed's baseline study ran in sitting {u['sitting']} and its studies were unfinished "
                "when a new sitting began; every study of a condition, problem and seed runs in one sitting, so they run again"
            )
        for c in planned:
            for kind in ("study", "final"):
                uid = f"{kind}/{key}/{c}"
                if uid in units:
                    results.setdefault("dropped", []).append({"unit": units.pop(uid), "why": why, "t": time.time()})
                    gone.append(uid)
    return gone


def drop_before_sitting(out: Path, *, dry_run: bool = False) -> list[str]:
    """``python -m hpo_bench protocol before-sitting DIR`` (also ``new-machine``): :func:`drop_unfinished_seeds`
    for this machine on the run in ``out``, written atomically under the run's writer lock, each drop
    an event in ``events.jsonl``.

    Raises:
        ValueError: no ``results.json`` in ``out``, or a sitting is writing it now.
    """
    f = out / "results.json"
    if not f.is_file():
        raise ValueError(f"DIR: no results.json in '{out}'; give a protocol run folder")
    with _writer_lock(out):
        results = json.loads(f.read_text(encoding="utf-8"))
        protocol = recorded_protocol(results)
        gone = drop_unfinished_seeds(results, protocol, machine_info())
        if gone and not dry_run:
            atomic_write_json(f, results)
            by_id = {d["unit"]["id"]: d["why"] for d in results["dropped"]}
            with open(out / "events.jsonl", "a", encoding="utf-8") as ev:
                for uid in gone:
                    ev.write(
                        json.dumps(
                            {"t": time.time(), "unit": uid, "event": f"dropped: {by_id[uid]}", "sitting": None, "load": _load()}
                        )
                        + "\n"
                    )
    return gone


def _fixed_args(problem: ProblemSpec, condition: ConditionSpec | None, seed: int, device: str) -> dict[str, Any]:
    """The train args of every training of ``problem`` under ``condition`` (``seed``: the training seed).

    Only what the problem and the condition fix: no optimizer unless one of them sets it, as users
    run ``model.tune`` (which then sets ``AdamW`` itself: :func:`_optimizer_trained`; hpo's backends
    follow their ``auto_optimizer`` policy; a plain training gets Ultralytics' ``auto``).
    ``condition=None``: the problem's alone.
    """
    return {
        "imgsz": problem.imgsz,
        "batch": problem.batch,
        "workers": 0,
        "device": device,
        "seed": seed,
        "plots": False,
        **problem.train_args,
        **(condition.train_args if condition is not None else {}),
    }


def _objective(metrics: dict[str, Any], metric: str) -> float | None:
    v = metrics.get(metric)
    return float(v) if isinstance(v, (int, float)) else None


def _prepare(run: _Run, protocol: Protocol, name: str) -> tuple[str, str | None]:
    """Build ``name``'s data and its starting checkpoint (unit ``prep/<name>``); returns ``(data, checkpoint)``.

    Raises:
        RuntimeError: the starting checkpoint could not be trained (its log named).
    """
    from .problems import build_pretrain_data, build_problem_data

    problem = protocol.problems[name]
    pdir = run.out / "problems" / name
    data = build_problem_data(problem, run.out / "data" / name)
    digest_src = Path(data) if problem.dataset == "digits-cls" else Path(data).parent
    digest = json.loads((digest_src / "build.json").read_text())["digest"]
    run.results["data"][name] = {"data": os.path.relpath(data, run.out), "digest": digest}
    if problem.start != "warm-start":
        return data, None
    ws = problem.warm_start
    assert ws is not None
    uid = f"prep/{name}"
    if run.done(uid) and (run.out / run.units[uid]["weights"]).is_file():
        return data, str(run.out / run.units[uid]["weights"])
    run.units.pop(uid, None)
    train_data = build_pretrain_data(problem, run.out / "data" / f"{name}-pretrain") if ws.classes else data
    project = pdir / "warm-start"
    shutil.rmtree(project, ignore_errors=True)
    args = {**_fixed_args(problem, None, ws.seed, run.device), **ws.params}
    args.pop("seed")
    spec = {
        "model": problem.model,
        "task": problem.task,
        "data": train_data,
        "params": {},
        "train_args": args,
        "epochs": ws.epochs,
        "seeds": [ws.seed],
        "output": str(project),
        "metric": problem.metric,
        "out": str(pdir / "warm-start.json"),
    }
    _log(f"{uid}: training the starting checkpoint ({ws.epochs} epochs{', classes ' + str(ws.classes) if ws.classes else ''})")
    info = run.process(uid, "final", spec, work=pdir / "work", cap_s=None)
    recs = json.loads((pdir / "warm-start.json").read_text()) if (pdir / "warm-start.json").is_file() else []
    weights = recs[0].get("weights") if recs else None
    if info["rc"] != 0 or not weights or not Path(weights).is_file():
        raise RuntimeError(
            f"{uid}: the starting checkpoint failed: {recs[0].get('error') if recs else 'no record'} (log {info['log']})"
        )
    stable = pdir / "start.pt"
    shutil.copy2(weights, stable)
    info.pop("_t0")
    run.record(
        uid,
        {
            "kind": "prep",
            "problem": name,
            "status": "done",
            "weights": os.path.relpath(stable, run.out),
            "pretrain_data": os.path.relpath(train_data, run.out),
            "classes": ws.classes or problem.digits,
            "objective_val": recs[0].get("objective_val"),
            "epochs_curve": [r.get(problem.metric) for r in recs[0].get("epochs", [])],
            **info,
        },
    )
    _log(f"{uid}: {problem.metric} {recs[0].get('objective_val')} on its val split, {info['wall_s']:.0f} s")
    return data, str(stable)


def _start_model(run: _Run, protocol: Protocol, name: str, seed: int, checkpoint: str | None) -> str:
    """What every training of ``name`` on ``seed`` starts from: the checkpoint, the seed's shared
    initialisation, or the model YAML."""
    problem = protocol.problems[name]
    if problem.start == "warm-start":
        assert checkpoint is not None
        return checkpoint
    if problem.start == "scratch":
        return problem.model
    weights = run.out / "problems" / name / "init" / f"{Path(problem.model).stem}-seed{seed}.pt"
    if not weights.is_file():
        weights.parent.mkdir(parents=True, exist_ok=True)
        spec = {"model": problem.model, "task": problem.task, "seed": seed, "out": str(weights)}
        proc = run_process("init", spec, work=run.out / "problems" / name / "work", tag=f"init-s{seed}", cap_s=600)
        if proc["rc"] != 0 or not weights.is_file():
            raise RuntimeError(f"initial weights of {name} seed {seed} failed (log {proc['log']})")
    return str(weights)


def _hpo_incumbent(study_dir: Path, t0: float, budget_s: float | None, fixed: dict[str, Any]) -> dict[str, Any]:
    """The trials of an hpo study and its incumbent: the best complete trial that ended within the budget.

    The incumbent's configuration is what its training applied: its args.yaml (Ultralytics' record of
    every train arg) for the searched keys and ``optimizer`` (hpo may set one, e.g. when a space
    tunes ``lr0`` under ``optimizer=auto``); without an args.yaml, its sampled params.
    """
    import yaml

    from hpo import Study

    trials: list[dict[str, Any]] = []
    study = Study.open(study_dir) if Study.exists(study_dir) else None
    if study is not None:
        for r in study.records().values():
            if not r.status.finished:
                continue
            from datetime import datetime

            end = datetime.fromisoformat(r.end).timestamp() - t0 if r.end else None
            trials.append(
                {
                    "trial": r.id,
                    "status": r.status.value,
                    "objective": r.objective,
                    "epochs": r.epochs_completed,
                    "end_s": end,
                    "duration_s": r.duration_s,
                    "params": r.params,
                    "error": r.error,
                }
            )
    trials.sort(key=lambda t: (t["end_s"] is None, t["end_s"] or 0.0))
    eligible = [
        t
        for t in trials
        if t["status"] == "complete"
        and t["objective"] is not None
        and (budget_s is None or (t["end_s"] is not None and t["end_s"] <= budget_s))
    ]
    best = max(eligible, key=lambda t: t["objective"]) if eligible else None
    out: dict[str, Any] = {"trials": trials, "best_val": None, "incumbent": None, "incumbent_trial": None}
    if best is None:
        return out
    assert study is not None
    params = dict(best["params"])
    # the study's own train args: hpo may have set an optimizer (e.g. SGD when lr0 is searched under auto)
    applied = dict(study.settings.get("train_args") or {})
    args_file = study.trial_dir(int(best["trial"])) / "args.yaml"
    if args_file.is_file():
        applied.update(yaml.safe_load(args_file.read_text()) or {})
        params = {k: applied.get(k, v) for k, v in params.items()}
    if "optimizer" in applied and str(applied["optimizer"]) != str(fixed.get("optimizer", "auto")):
        params["optimizer"] = applied["optimizer"]
    out.update(best_val=best["objective"], incumbent=params, incumbent_trial=best["trial"])
    return out


def _optimizer_trained(project: Path) -> str | None:
    """The optimizer ``model.tune``'s trainings under ``project`` trained with, from their
    ``args.yaml`` (Ultralytics' record of every train arg): the first one found, ``None`` if none.

    Ultralytics' ``Model.tune`` sets ``optimizer="AdamW"`` itself when the user gives none and its
    space does not tune one (ultralytics 8.4.190, ``engine/model.py``: ``kwargs.setdefault("optimizer",
    "AdamW")``, for ``use_ray`` too), so its incumbent is a configuration measured under AdamW; the
    final training must use that optimizer too, or ``auto`` would drop its ``lr0`` and ``momentum``
    (protocol amendment 1)."""
    import yaml

    for f in sorted(project.rglob("args.yaml")):
        try:
            doc = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and doc.get("optimizer"):
            return str(doc["optimizer"])
    return None


def _with_optimizer(found: dict[str, Any], project: Path) -> dict[str, Any]:
    """``found`` with the optimizer its trainings used added to its incumbent, when model.tune's
    space did not tune one (:func:`_optimizer_trained`); ``incumbent_optimizer`` says where it came from."""
    incumbent = found.get("incumbent")
    if incumbent and "optimizer" not in incumbent:
        trained = _optimizer_trained(project)
        if trained is not None:
            found["incumbent"] = {**incumbent, "optimizer": trained}
            found["incumbent_optimizer"] = f"{trained}, as its trainings' args.yaml record (model.tune sets it)"
    return found


def _native_incumbent(tune_dir: Path, times_file: Path, metric: str, t0: float) -> dict[str, Any]:
    """model.tune's iterations and its incumbent: ``best_hyperparameters.yaml`` (what a user takes
    away); ``best_val`` is the best objective among its iterations."""
    import yaml

    from .run import _native_trials

    trials = _native_trials(tune_dir, times_file, metric, t0)
    done = [t for t in trials if t["status"] == "complete" and t["objective"] is not None]
    out: dict[str, Any] = {"trials": trials, "best_val": None, "incumbent": None, "incumbent_trial": None}
    if not done:
        return out
    best = max(done, key=lambda t: t["objective"])
    bh = tune_dir / "best_hyperparameters.yaml"
    incumbent = yaml.safe_load(bh.read_text()) if bh.is_file() else None
    out.update(best_val=best["objective"], incumbent=incumbent or dict(best["params"]), incumbent_trial=best["trial"])
    if incumbent:
        # the iteration whose params best_hyperparameters.yaml holds (Ultralytics picks by its fitness)
        match = [t for t in done if all(abs(float(t["params"].get(k, 1e99)) - float(v)) < 1e-9 for k, v in incumbent.items())]
        out["incumbent_trial"] = match[0]["trial"] if match else None
        out["incumbent_val"] = match[0]["objective"] if match else None
    return _with_optimizer(out, tune_dir.parent)


def _ray_incumbent(project: Path, metric: str, t0: float, budget_s: float | None) -> dict[str, Any]:
    """The trials of ``model.tune(use_ray=True)`` read from Ray Tune's experiment folder under
    ``project`` (each trial's ``result.json``: one JSON line per reported epoch, with its config and
    ``timestamp``), so that a study killed at its cap still yields the trials that ended; the
    incumbent is the best that ended within the budget."""
    rows: list[dict[str, Any]] = []
    for i, f in enumerate(sorted(project.rglob("result.json"))):
        lines = [ln for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
        last = json.loads(lines[-1]) if lines else {}
        obj = last.get(metric)
        end = last.get("timestamp")
        config = {k: v for k, v in (last.get("config") or {}).items() if k != "data"}
        rows.append(
            {
                "trial": i,
                "status": "complete" if isinstance(obj, (int, float)) else "failed",
                "objective": obj,
                "epochs": last.get("training_iteration"),
                "end_s": None if end is None else float(end) - t0,
                "params": config,
                "error": None,
            }
        )
    eligible = [r for r in rows if r["status"] == "complete" and (budget_s is None or (r["end_s"] or 1e18) <= budget_s)]
    best = max(eligible, key=lambda r: r["objective"]) if eligible else None
    found = {
        "trials": rows,
        "best_val": best["objective"] if best else None,
        "incumbent": dict(best["params"]) if best else None,
        "incumbent_trial": best["trial"] if best else None,
    }
    return _with_optimizer(found, project)


def _run_study(
    run: _Run,
    protocol: Protocol,
    cond_name: str,
    pname: str,
    seed: int,
    cname: str,
    *,
    data: str,
    model: str,
    budget_s: float | None,
) -> dict[str, Any]:
    problem = protocol.problems[pname]
    cond = protocol.conditions[cond_name]
    contender: ContenderSpec = protocol.contenders[cname]
    uid = f"study/{cond_name}/{pname}/{seed}/{cname}"
    base = run.out / "studies" / cond_name / pname / f"s{seed}"
    work = base / "work"
    fixed = _fixed_args(problem, cond, seed, run.device)
    env = {**contender.env, **HARNESS_ENV}
    unit: dict[str, Any] = {
        "kind": "study",
        "condition": cond_name,
        "problem": pname,
        "seed": seed,
        "contender": cname,
        "contender_kind": contender.kind,
        "train_args": fixed,
        "budget_s": budget_s,
    }
    if contender.kind == "hpo":
        folder = base / "hpo"
        shutil.rmtree(folder / cname, ignore_errors=True)  # a study cut off by a kill starts again
        spec = {
            "backend": contender.backend,
            "backend_options": dict(contender.options),
            "model": model,
            "data": data,
            "space": cond.space,
            "iterations": None,
            "time_budget": budget_s,
            "epochs": problem.trial_epochs,
            "train_args": fixed,
            "output": str(folder),
            "name": cname,
            "seed": seed,
        }
        unit["space"] = cond.space if cond.space is not None else "hpo default"
        cap = 1.5 * budget_s + 60 if budget_s is not None else problem.cap_s
        info = run.process(uid, "study", spec, work=work, cap_s=cap, env=env)
        found = _hpo_incumbent(folder / cname, info["_t0"], budget_s, fixed)
    elif contender.kind == "model.tune":
        project = base / "model-tune" / cname
        shutil.rmtree(project, ignore_errors=True)
        spec = {
            "model": model,
            "task": problem.task,
            "data": data,
            "space": cond.tune_space,
            "iterations": problem.iterations,
            "epochs": problem.trial_epochs,
            "train_args": fixed,
            "project": str(project),
            "name": "tune",
            "seed": seed,
        }
        unit["space"] = cond.tune_space or "model.tune default (26 keys)"
        env["YOLO_CONFIG_DIR"] = str(project / "ultralytics-config")
        info = run.process(uid, "native", spec, work=work, cap_s=problem.cap_s, env=env)
        found = _native_incumbent(project / "tune", project / "bench_times.jsonl", problem.metric, info["_t0"])
    else:
        project = base / "model-tune-ray" / cname
        shutil.rmtree(project, ignore_errors=True)
        project.mkdir(parents=True)
        spec = {
            "model": model,
            "task": problem.task,
            "data": data,
            "iterations": problem.iterations,
            "epochs": problem.trial_epochs,
            "train_args": {**fixed, "project": str(project)},
            "out": str(project / "trials.json"),
        }
        unit["space"] = "model.tune(use_ray=True) default"
        env["YOLO_CONFIG_DIR"] = str(project / "ultralytics-config")
        cap = 1.5 * budget_s + 60 if budget_s is not None else problem.cap_s
        info = run.process(uid, "native-ray", spec, work=work, cap_s=cap, env=env)
        found = _ray_incumbent(project, problem.metric, info["_t0"], budget_s)
        if info["rc"] != 0:
            found["error"] = _last_error_line(run.out / info["log"])
    info.pop("_t0")
    counts = {s: sum(t["status"] == s for t in found["trials"]) for s in ("complete", "pruned", "failed")}
    status = "done" if found["incumbent"] is not None else "no result"
    unit.update(status=status, counts=counts, **found, **info)
    if status != "done" and "error" not in unit:
        unit["error"] = _last_error_line(run.out / info["log"])
    run.record(uid, unit)
    _log(
        f"{uid}: best val {found['best_val']} {counts} wall {info['wall_s']:.0f} s load {info['load_start']:.1f}->"
        f"{info['load_end']:.1f}{' CAPPED' if info['capped'] else ''} rc {info['rc']}"
    )
    return unit


def _last_error_line(log: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    errs = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errs[-1] if errs else (lines[-1] if lines else ""))[:500] or None


def _run_final(
    run: _Run,
    uid: str,
    problem: ProblemSpec,
    *,
    model: str,
    data: str,
    params: dict[str, Any],
    fixed: dict[str, Any],
    seeds: list[int],
    folder: Path,
    extra: dict[str, Any],
    epochs: int | None = None,
) -> dict[str, Any]:
    epochs = problem.final_epochs if epochs is None else epochs
    folder.mkdir(parents=True, exist_ok=True)
    out_file = folder / "records.json"
    out_file.unlink(missing_ok=True)
    spec = {
        "model": model,
        "task": problem.task,
        "data": data,
        "params": params,
        "train_args": fixed,
        "epochs": epochs,
        "seeds": seeds,
        "output": str(folder),
        "metric": problem.metric,
        "out": str(out_file),
    }
    info = run.process(uid, "final", spec, work=folder / "work", cap_s=problem.final_cap_s)
    info.pop("_t0")
    recs: list[dict[str, Any]] = json.loads(out_file.read_text()) if out_file.is_file() else []
    complete = [r for r in recs if r.get("status") == "complete" and r.get("objective_test") is not None]
    score = sum(float(r["objective_test"]) for r in complete) / len(complete) if len(complete) == len(seeds) and seeds else None
    vals = [float(r["objective_val"]) for r in complete if r.get("objective_val") is not None]
    unit = {
        **extra,
        "status": "done" if score is not None else "no result",
        "params": params,
        "train_args": fixed,
        "final_epochs": epochs,
        "final_seeds": seeds,
        "score": score,
        "score_val": sum(vals) / len(vals) if vals and len(vals) == len(seeds) else None,
        "split": sorted({str(r.get("split")) for r in complete}) or None,
        "impl": sorted({str(r.get("impl")) for r in recs}) or [final_impl()],
        "records": [{k: v for k, v in r.items() if k not in ("epochs",)} | {"curve": _curve(r, problem.metric)} for r in recs],
        **info,
    }
    if score is None:
        unit["error"] = next((r.get("error") for r in recs if r.get("error")), None) or _last_error_line(run.out / info["log"])
    run.record(uid, unit)
    _log(f"{uid}: test {score} (val {unit['score_val']}) wall {info['wall_s']:.0f} s load {info['load_start']:.1f}")
    return unit


def _curve(rec: dict[str, Any], metric: str) -> list[float | None]:
    return [_objective(r, metric) for r in rec.get("epochs") or []]


def plan_units(
    protocol: Protocol,
    *,
    seeds: list[int],
    conditions: list[str],
    problems: list[str] | None = None,
    contenders: list[str] | None = None,
    units: list[str] | None = None,
) -> list[str]:
    """The ids of the units :func:`run_protocol` would run for these options, in its order (nothing runs).

    ``prep`` units are listed for problems with a starting checkpoint; the noise floor's units
    follow the studies and finals. Unknown names are not checked here (:func:`check_protocol_run`).
    """
    kinds = set(units or UNIT_KINDS)
    seed_set = _seed_set(protocol, seeds)
    cond_problems = {c: [p for p in protocol.conditions[c].problems if problems is None or p in problems] for c in conditions}
    noise_problems: list[str] = []
    if "noise" in kinds:
        nf = protocol.noise_floor
        noise_problems = [p for p in protocol.conditions[nf.condition].problems if problems is None or p in problems]
    needed = sorted({p for ps in cond_problems.values() for p in ps} | set(noise_problems))
    out = [f"prep/{p}" for p in needed if protocol.problems[p].start == "warm-start"] if "prep" in kinds else []
    for cond_name in conditions:
        cond = protocol.conditions[cond_name]
        cond_seeds = [s for s in seeds if seed_set == "development" or s in protocol.condition_seeds(cond_name)]
        who = [c for c in cond.contenders if contenders is None or c in contenders or c == cond.baseline]
        ordered = [cond.baseline, *[c for c in who if c != cond.baseline]]
        for seed in cond_seeds:
            mine = [
                c
                for c in ordered
                if seed_set == "development" or c not in cond.contender_seeds or seed in parse_seed_set(cond.contender_seeds[c])
            ]
            for pname in cond_problems[cond_name]:
                out += [f"{k}/{cond_name}/{pname}/{seed}/{c}" for k in ("study", "final") if k in kinds for c in mine]
    for pname in noise_problems:
        out += [f"noise/{pname}/{s}" for s in noise_seeds(protocol)]
    return out


def run_protocol(
    protocol: Protocol,
    sha256: str,
    protocol_path: Path,
    out: Path,
    *,
    seeds: list[int],
    conditions: list[str],
    problems: list[str] | None = None,
    contenders: list[str] | None = None,
    units: list[str] | None = None,
    resume: bool = False,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the chosen part of the protocol into ``out``; returns the results document.

    Order: each problem's data and starting checkpoint; per condition, seed and problem, the
    baseline ``model.tune`` study, then the other contenders' studies at its wall time, then every
    incumbent's final trainings; then the noise floor (the trainings of ``noise_floor``, on the
    problems of its condition).

    Args:
        protocol, sha256, protocol_path: from :func:`hpo_bench.protocol.load_protocol`.
        out: the run folder.
        seeds: protocol seeds to run (each condition keeps only its own; the noise floor ignores them).
        conditions: conditions to run.
        problems, contenders: subsets (``None``: all of the condition's).
        units: unit kinds to run (:data:`UNIT_KINDS`; ``None``: all).
        resume: continue the run recorded in ``out``.
        argv: the command line, recorded with the sitting.

    Raises:
        ValueError: from :func:`check_protocol_run`, before anything is written.
    """
    kinds = set(units or UNIT_KINDS)
    check = functools.partial(
        check_protocol_run,
        protocol,
        sha256,
        protocol_path,
        out,
        seeds=seeds,
        conditions=conditions,
        problems=problems,
        contenders=contenders,
        resume=resume,
    )
    check()  # before anything is written (the lock creates the folder); again under the lock
    with _writer_lock(out):
        previous = check()
        command = " ".join(["python -m hpo_bench protocol", *(argv or [])])
        results = previous or {
            "protocol": protocol_provenance(protocol_path, sha256),
            "name": protocol.name,
            "seed_set": _seed_set(protocol, seeds),
            "device": protocol.device,
            "started": time.time(),
            "sittings": [],
            "units": {},
            "data": {},
        }
        results["sittings"].append(
            {
                "command": command,
                "started": time.time(),
                "ended": None,
                "machine": machine_info(),
                "load_start": _load(),
                "load_end": None,
                "final_impl": final_impl(),
                "code": code_state(Path(__file__).resolve().parent),
                "hpo_env": hpo_environment(),
                "units": [],
            }
        )
        run = _Run(out, results, len(results["sittings"]) - 1, protocol.device)
        run.save()
        cond_problems = {c: [p for p in protocol.conditions[c].problems if problems is None or p in problems] for c in conditions}
        needed = sorted({p for ps in cond_problems.values() for p in ps})
        starts: dict[str, tuple[str, str | None]] = {}
        for pname in needed:
            starts[pname] = _prepare(run, protocol, pname)
        for cond_name in conditions:
            cond = protocol.conditions[cond_name]
            cond_seeds = [s for s in seeds if results["seed_set"] == "development" or s in protocol.condition_seeds(cond_name)]
            who = [c for c in cond.contenders if contenders is None or c in contenders or c == cond.baseline]
            ordered = [cond.baseline, *[c for c in who if c != cond.baseline]]
            for seed in cond_seeds:
                # a contender with its own seed subset runs only there (on evaluation seeds)
                mine = [
                    c
                    for c in ordered
                    if results["seed_set"] == "development"
                    or c not in cond.contender_seeds
                    or seed in parse_seed_set(cond.contender_seeds[c])
                ]
                for pname in cond_problems[cond_name]:
                    _seed_units(run, protocol, cond_name, pname, seed, mine, kinds, starts[pname])
        if "noise" in kinds:
            nf = protocol.noise_floor
            first = protocol.evaluation_seeds() if results["seed_set"] == "evaluation" else protocol.development_seeds()
            init_seed = nf.init_seed if nf.init_seed is not None else first[0]
            for pname in [p for p in protocol.conditions[nf.condition].problems if problems is None or p in problems]:
                if pname not in starts:
                    starts[pname] = _prepare(run, protocol, pname)
                _noise_units(run, protocol, pname, init_seed, starts[pname])
        run.save()
        return results


def _seed_units(
    run: _Run,
    protocol: Protocol,
    cond_name: str,
    pname: str,
    seed: int,
    ordered: list[str],
    kinds: set[str],
    start: tuple[str, str | None],
) -> None:
    data, checkpoint = start
    problem = protocol.problems[pname]
    cond = protocol.conditions[cond_name]
    base_uid = f"study/{cond_name}/{pname}/{seed}/{cond.baseline}"
    if not run.done(base_uid):  # without its baseline a seed has no budget: its other units run again
        for c in ordered:
            run.forget(f"study/{cond_name}/{pname}/{seed}/{c}")
            run.forget(f"final/{cond_name}/{pname}/{seed}/{c}")
    model = _start_model(run, protocol, pname, seed, checkpoint)
    if "study" in kinds:
        for cname in ordered:
            uid = f"study/{cond_name}/{pname}/{seed}/{cname}"
            if run.done(uid):
                continue
            budget = None
            if cname != cond.baseline:
                base = run.units.get(base_uid)
                if base is None or base["status"] != "done":
                    why = "its baseline study is not recorded" if base is None else "its baseline study has no result"
                    _log(f"{uid}: skipped, {why}")
                    continue
                budget = float(base["wall_s"]) if not base.get("capped") else float(problem.cap_s)
            _run_study(run, protocol, cond_name, pname, seed, cname, data=data, model=model, budget_s=budget)
    if "final" in kinds:
        fixed_base = _fixed_args(problem, cond, seed, run.device)
        for cname in ordered:
            uid = f"final/{cond_name}/{pname}/{seed}/{cname}"
            study = run.units.get(f"study/{cond_name}/{pname}/{seed}/{cname}")
            if run.done(uid) or study is None or study["status"] != "done":
                continue
            fixed = {k: v for k, v in fixed_base.items() if k != "seed"}
            params = dict(study["incumbent"])
            _run_final(
                run,
                uid,
                problem,
                model=model,
                data=data,
                params=params,
                fixed=fixed,
                seeds=final_seeds(seed, problem.final_seeds),
                folder=run.out / "finals" / cond_name / pname / f"s{seed}" / cname,
                extra={"kind": "final", "condition": cond_name, "problem": pname, "seed": seed, "contender": cname},
            )


def _noise_units(run: _Run, protocol: Protocol, pname: str, init_seed: int, start: tuple[str, str | None]) -> None:
    data, checkpoint = start
    problem = protocol.problems[pname]
    nf = protocol.noise_floor
    cond = protocol.conditions[nf.condition]
    model = _start_model(run, protocol, pname, init_seed, checkpoint)
    fixed = {k: v for k, v in _fixed_args(problem, cond, init_seed, run.device).items() if k != "seed"}
    for s in noise_seeds(protocol):
        uid = f"noise/{pname}/{s}"
        if run.done(uid):
            continue
        _run_final(
            run,
            uid,
            problem,
            model=model,
            data=data,
            params=dict(nf.params),
            fixed=fixed,
            seeds=[s],
            folder=run.out / "noise" / pname / f"seed{s}",
            extra={"kind": "noise", "problem": pname, "seed": s, "init_seed": init_seed, "condition": nf.condition},
        )
