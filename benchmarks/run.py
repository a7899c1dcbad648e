"""Runs a suite: every (problem, seed, contender) study in its own process, then the default
reference, retrains and back-to-back baselines; collects everything into ``results.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from .suite import CONTENDERS, Contender, Problem, build_data

__all__ = ["run_suite", "run_process", "check_run"]


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_process(
    mode: str, spec: dict[str, Any], *, work: Path, tag: str, cap_s: float | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python -m hpo_bench._child MODE`` in a new process group, killed at ``cap_s`` seconds.

    Returns:
        ``{"rc", "wall_s", "capped", "t0", "log"}``; ``t0`` is the launch time (epoch seconds).
    """
    work.mkdir(parents=True, exist_ok=True)
    spec_file = work / f"{tag}.json"
    spec_file.write_text(json.dumps(spec, indent=1, default=str))
    log = work / f"{tag}.log"
    root = Path(__file__).resolve().parent.parent
    child_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "False",
        "MPLBACKEND": "Agg",
        **(env or {}),
    }
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo_bench._child", mode, str(spec_file)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=str(work),
            start_new_session=True,
        )
        capped = False
        try:
            rc = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            capped = True
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = proc.returncode if proc.returncode is not None else -9
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    wall = time.time() - t0
    try:  # leftovers of the group (trial workers) must not outlive the study
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return {"rc": rc, "wall_s": wall, "capped": capped, "t0": t0, "log": str(log)}


def _epoch_seconds(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def _hpo_trials(study_dir: Path, t0: float) -> list[dict[str, Any]]:
    from hpo import Study

    if not Study.exists(study_dir):
        return []
    rows = []
    for r in Study.open(study_dir).records().values():
        if not r.status.finished:
            continue
        end = _epoch_seconds(r.end)
        rows.append(
            {
                "trial": r.id,
                "status": r.status.value,
                "objective": r.objective,
                "epochs": r.epochs_completed,
                "end_s": None if end is None else end - t0,
                "duration_s": r.duration_s,
                "train_s": r.train_s,
                "params": r.params,
                "error": r.error,
            }
        )
    return sorted(rows, key=lambda x: (x["end_s"] is None, x["end_s"] or 0))


def _native_trials(tune_dir: Path, times_file: Path, metric: str, t0: float) -> list[dict[str, Any]]:
    if not (tune_dir / "tune_results.ndjson").is_file():
        return []
    results = [json.loads(ln) for ln in (tune_dir / "tune_results.ndjson").read_text().splitlines() if ln.strip()]
    times = {}
    if times_file.is_file():
        times = {d["iteration"]: d for d in (json.loads(ln) for ln in times_file.read_text().splitlines() if ln.strip())}
    rows, prev = [], None
    for res in results:
        it = res["iteration"]
        tm = times.get(it, {})
        metrics = next(iter((res.get("datasets") or {}).values()), None) or {}
        failed = bool(res.get("failed_datasets")) or metric not in metrics
        end = tm.get("t")
        start = prev if prev is not None else tm.get("t_start")
        rows.append(
            {
                "trial": it - 1,
                "status": "failed" if failed else "complete",
                "objective": None if failed else float(metrics[metric]),
                "epochs": tm.get("epochs", 0),
                "end_s": None if end is None else end - t0,
                "duration_s": None if end is None or start is None else end - start,
                "train_s": tm.get("train_loop_s"),
                "params": res.get("hyperparameters", {}),
                "error": None,
            }
        )
        prev = end
    return rows


def _save(results: dict[str, Any], out: Path) -> None:
    """Write ``out/results.json`` atomically (a killed run leaves the previous copy, never half of one)."""
    from hpo.files import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))


def _ended_by(trial: dict[str, Any], budget_s: float) -> bool:
    """Whether ``trial`` ended within ``budget_s`` seconds of its study's launch."""
    return trial.get("end_s") is not None and float(trial["end_s"]) <= budget_s


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [r for r in rows if r["status"] == "complete" and r["objective"] is not None]
    return max(done, key=lambda r: r["objective"]) if done else None


def _train_job(
    problem: Problem,
    data: str,
    params: dict[str, Any],
    *,
    seed: int,
    device: str,
    epochs: int,
    project: Path,
    name: str,
    tag: str,
    model: str | None = None,
) -> dict[str, Any]:
    return {
        "tag": tag,
        "model": model or problem.model,
        "task": problem.task,
        "data": data,
        "params": params,
        "train_args": problem.fixed_args(seed, device),
        "epochs": epochs,
        "project": str(project),
        "name": name,
        "metric": problem.metric,
        "integrations": [],
    }


def _warm_start(problem: Problem, data: str, project: Path, work: Path, device: str) -> tuple[str, dict[str, Any]]:
    """Train ``problem.model`` once from scratch (``warm_start_epochs``); return its weights and a summary."""
    job = _train_job(
        problem,
        data,
        dict(problem.warm_start_params),
        seed=0,
        device=device,
        epochs=problem.warm_start_epochs,
        project=project,
        name="model",
        tag="warm-start",
    )
    out = work / "warm-start.jsonl"
    proc = run_process("train", {"jobs": [job], "out": str(out)}, work=work, tag="warm-start", cap_s=None)
    rows, _ = _read_trainings(out)
    row = rows.get("warm-start", {})
    found = sorted(project.glob("*/weights/best.pt"))
    weights = found[0] if found else project / "model" / "weights" / "best.pt"
    if proc["rc"] != 0 or not weights.is_file():
        raise RuntimeError(f"warm-start training of {problem.name} failed: {row.get('error')} (log {proc['log']})")
    _log(f"  warm start: {problem.warm_start_epochs} epochs from scratch -> {problem.metric} {row.get('objective')}")
    return str(weights), {
        "epochs": problem.warm_start_epochs,
        "params": problem.warm_start_params,
        "objective": row.get("objective"),
        "wall_s": row.get("wall_s"),
        "weights": str(weights),
    }


def _read_trainings(out: Path) -> tuple[dict[str, dict[str, Any]], float | None]:
    rows, start = {}, None
    if out.is_file():
        for ln in out.read_text().splitlines():
            d = json.loads(ln)
            if d.get("event") == "start":
                start = d["t"]
            elif "tag" in d:
                rows[d["tag"]] = d
    return rows, start


def _initial_weights(problem: Problem, seed: int, folder: Path, work: Path) -> str:
    """The seed's shared initial weights (:attr:`Problem.shared_init`), made once in ``folder``.

    Raises:
        RuntimeError: the weights could not be built (its log named).
    """
    weights = folder / f"{Path(problem.model).stem}-seed{seed}.pt"
    if not weights.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        spec = {"model": problem.model, "task": problem.task, "seed": seed, "out": str(weights)}
        proc = run_process("init", spec, work=work, tag=f"init-s{seed}", cap_s=300)
        if proc["rc"] != 0 or not weights.is_file():
            raise RuntimeError(f"initial weights of {problem.name} seed {seed} failed (log {proc['log']})")
    return str(weights)


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _problem_record(problem: Problem, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """The recorded results of ``problem`` in a run being continued, or ``None`` if it has none.

    Raises:
        ValueError: the problem's settings differ from the recorded ones (naming the fields).
    """
    pres = (previous or {}).get("problems", {}).get(problem.name)
    if pres is None:
        return None
    now, then = _as_json(asdict(problem)), pres["problem"]
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if changed:
        raise ValueError(
            f"--resume: {problem.name}'s {', '.join(changed)} differ from the recorded run; "
            "resume with the same suite and --set items, or start a new --out"
        )
    return pres


def check_run(problems: list[Problem], contenders: list[str], out: Path, *, resume: bool) -> dict[str, Any] | None:
    """Every check of a run before anything is built or written; returns the recorded results of a
    run being continued (``resume`` and ``out/results.json`` present), else ``None``.

    Raises:
        ValueError: an unknown contender; an equal-wall-clock problem without ``ultralytics-native``
            (its time is the budget); with ``resume``, a problem whose settings differ from the
            recorded run's (naming the fields).
    """
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        raise ValueError(f"--contenders: unknown {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    timed = [p.name for p in problems if p.budget == "wallclock"]
    if timed and not any(CONTENDERS[c].kind == "native" for c in contenders):
        raise ValueError(
            f"--contenders: {', '.join(timed)} run at equal wall clock, whose budget is model.tune's time: "
            "add ultralytics-native to --contenders"
        )
    if not (resume and (out / "results.json").is_file()):
        return None
    previous = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for problem in problems:
        _problem_record(problem, previous)
    return previous


def run_suite(
    *,
    problems: list[Problem],
    contenders: list[str],
    seeds: list[int],
    out: Path,
    device: str,
    b2b_seeds: int,
    b2b_contenders: list[str] | None = None,
    suite_name: str,
    argv: list[str],
    retrain: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the whole suite into ``out`` and return the collected results (also ``out/results.json``).

    ``retrain``: also train each study's best configuration again with a new seed (the retrain
    column); the equal-wall-clock suites skip it to spend their time on seeds.

    ``resume``: continue the run recorded in ``out/results.json`` (a run stopped part way, or more
    seeds for it): every study already recorded is kept, the others run (a study cut off by the
    stop is run again from its start, its leftovers deleted); at equal wall clock, a seed whose
    ``model.tune`` study is not recorded runs all its studies again (its time is their budget).
    ``results.json`` is rewritten after every study, so a stop loses at most the study running.

    Raises:
        ValueError: from :func:`check_run`, before anything is written.
    """
    import shutil

    from hpo import SearchSpace

    from .machine import machine_info

    previous = check_run(problems, contenders, out, resume=resume)
    b2b_contenders = list(contenders if b2b_contenders is None else b2b_contenders)
    command = " ".join(["python -m hpo_bench", *argv])
    out.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        results = previous
        results["seeds"] = sorted({*results["seeds"], *seeds})
        results.setdefault("resumed", []).append({"command": command, "at": time.time(), "machine": machine_info()})
        results.pop("finished", None)
    else:
        results = {
            "suite": suite_name,
            "command": command,
            "device": device,
            "seeds": seeds,
            "machine": machine_info(),
            "problems": {},
            "skipped": {},
            "contenders": {},
            "started": time.time(),
        }
    active: list[Contender] = []
    for name in contenders:
        c = CONTENDERS[name]
        ok, why = c.available()
        if ok:
            active.append(c)
            results["contenders"][c.name] = c.description
        else:
            results["skipped"][c.name] = why
            _log(f"skipping contender {c.name}: {why}")
    for problem in problems:
        _log(f"problem {problem.name}: {problem.trials} trials x {problem.epochs} epochs, cap {problem.time_cap_s:g} s")
        pdir = out / "runs" / problem.name
        work = pdir / "work"
        data = build_data(problem, out / "data" / problem.name)
        space = SearchSpace.parse(problem.space)
        defaults = space.defaults()
        wallclock = problem.budget == "wallclock"
        recorded = _problem_record(problem, previous)
        pres: dict[str, Any] = recorded or {
            "problem": _as_json(asdict(problem)),
            "metric": problem.metric,
            "task": problem.task,
            "defaults": defaults,
            "reference": {},
            "studies": [],
            "b2b": [],
        }
        if wallclock:
            pres.setdefault("budgets_s", {})
            # a seed without its model.tune study has no budget: its other studies run again
            pres["studies"] = [st for st in pres["studies"] if str(st["seed"]) in pres["budgets_s"]]
        results["problems"][problem.name] = pres
        done = {(st["contender"], st["seed"]) for st in pres["studies"]}
        warm = pres.get("warm_start")
        if problem.warm_start_epochs and not (warm and Path(warm["weights"]).is_file()):
            _, pres["warm_start"] = _warm_start(problem, data, pdir / "warm-start", work, device)
            _save(results, out)

        def model_for(seed: int, problem: Problem = problem, pres: dict[str, Any] = pres, pdir: Path = pdir) -> str:
            if problem.warm_start_epochs:
                return str(pres["warm_start"]["weights"])
            if problem.shared_init:
                return _initial_weights(problem, seed, pdir / "init", pdir / "work")
            return problem.model

        # 1. the studies, each in its own process under the wall-clock cap; at equal wall clock
        # model.tune runs first and its wall time is the seed's budget for everyone else
        order = sorted(active, key=lambda c: c.kind != "native") if wallclock else active
        for seed in seeds:
            budget_s: float | None = None
            model = model_for(seed)
            for c in order:
                tag = f"{c.name}-s{seed}"
                if (c.name, seed) in done:
                    if wallclock and c.kind == "native":
                        budget_s = float(pres["budgets_s"][str(seed)])
                    _log(f"  {tag}: recorded, kept")
                    continue
                study: dict[str, Any] = {"contender": c.name, "seed": seed, "model": model}
                args = problem.fixed_args(seed, device)
                if c.kind == "hpo":
                    shutil.rmtree(pdir / "studies" / tag, ignore_errors=True)  # a run cut off by a stop
                    spec = {
                        "backend": c.backend,
                        "backend_options": dict(c.options),
                        "model": model,
                        "data": data,
                        "space": problem.space,
                        "iterations": problem.max_trials if wallclock else problem.trials,
                        "time_budget": budget_s,
                        "epochs": problem.epochs,
                        "train_args": args,
                        "output": str(pdir / "studies"),
                        "name": tag,
                        "seed": seed,
                    }
                    # at equal wall clock the study stops itself at its budget; the cap only guards
                    # a hung study (its last epoch, final validation and exit come after the budget)
                    cap = problem.time_cap_s if budget_s is None else 1.5 * budget_s + 60
                    proc = run_process("study", spec, work=work, tag=tag, cap_s=cap, env={"HPO_PLOTS": "0"})
                    trials = _hpo_trials(pdir / "studies" / tag, proc["t0"])
                else:
                    project = pdir / "native" / tag
                    shutil.rmtree(project, ignore_errors=True)
                    spec = {
                        "model": model,
                        "task": problem.task,
                        "data": data,
                        "space": problem.space,
                        "iterations": problem.trials,
                        "epochs": problem.epochs,
                        "train_args": args,
                        "project": str(project),
                        "name": "tune",
                        "seed": seed,
                    }
                    env = {"YOLO_CONFIG_DIR": str(project / "ultralytics-config")}
                    proc = run_process("native", spec, work=work, tag=tag, cap_s=problem.time_cap_s, env=env)
                    trials = _native_trials(project / "tune", project / "bench_times.jsonl", problem.metric, proc["t0"])
                    if wallclock:
                        budget_s = float(proc["wall_s"])
                        pres["budgets_s"][str(seed)] = budget_s
                        if proc["capped"]:
                            _log(f"  {tag}: model.tune hit the cap {problem.time_cap_s:g} s; the budget is the cap")
                best = _best(trials if budget_s is None else [t for t in trials if _ended_by(t, budget_s)])
                study.update(
                    rc=proc["rc"],
                    wall_s=proc["wall_s"],
                    capped=proc["capped"],
                    log=proc["log"],
                    trials=trials,
                    best_objective=best["objective"] if best else None,
                    best_params=best["params"] if best else None,
                )
                if budget_s is not None:
                    study["budget_s"] = budget_s
                pres["studies"].append(study)
                counts = {s: sum(t["status"] == s for t in trials) for s in ("complete", "pruned", "failed")}
                _log(
                    f"  {tag}: best {study['best_objective']} {counts} wall {proc['wall_s']:.0f} s"
                    f"{' CAPPED' if proc['capped'] else ''} rc {proc['rc']}"
                )
                _save(results, out)
        # 2. one process, trainings back to back: (a) Ultralytics' default hyperparameters once per seed,
        # the reference score; (b) the retrain check: each study's best params with a new training seed
        # for the full epochs (only what a continued run has not recorded yet)
        ref_seeds = [s for s in seeds if str(s) not in pres["reference"]]
        jobs = [
            _train_job(
                problem,
                data,
                defaults,
                seed=s,
                device=device,
                epochs=problem.epochs,
                project=pdir / "reference",
                name=f"seed{s}",
                tag=f"ref-s{s}",
                model=model_for(s),
            )
            for s in ref_seeds
        ]
        to_retrain = [st for st in pres["studies"] if "retrain_objective" not in st]
        jobs += [
            _train_job(
                problem,
                data,
                st["best_params"],
                seed=1000 + st["seed"],
                device=device,
                epochs=problem.epochs,
                project=pdir / "retrain",
                name=f"{st['contender']}-s{st['seed']}",
                tag=f"retrain-{st['contender']}-s{st['seed']}",
                model=model_for(st["seed"]),
            )
            for st in to_retrain
            if st["best_params"] and retrain
        ]
        rows: dict[str, dict[str, Any]] = {}
        if jobs:
            train_out = work / "trainings.jsonl"
            train_out.unlink(missing_ok=True)
            proc = run_process("train", {"jobs": jobs, "out": str(train_out)}, work=work, tag="trainings", cap_s=None)
            rows, _ = _read_trainings(train_out)
            _log(f"  trainings: {len(rows)} of {len(jobs)} (rc {proc['rc']})")
        for s in ref_seeds:
            r = rows.get(f"ref-s{s}", {})
            pres["reference"][str(s)] = {"objective": r.get("objective"), "wall_s": r.get("wall_s"), "error": r.get("error")}
        _log(f"  reference (defaults): {[pres['reference'][str(s)]['objective'] for s in seeds]}")
        for st in to_retrain:
            rt = rows.get(f"retrain-{st['contender']}-s{st['seed']}")
            st["retrain_objective"] = rt.get("objective") if rt else None
            st["retrain_seed"] = 1000 + st["seed"] if retrain else None
        _log(f"  retrains: {[(st['contender'], st.get('retrain_objective')) for st in pres['studies']]}")
        # 3. the back-to-back baseline: a study's trainings replayed (same params, same epochs) one after
        # another in a process of their own, without isolation; its wall time, from launch to exit, is
        # measured exactly as the study's
        replayed = {(b["contender"], b["seed"]) for b in pres["b2b"]}
        replays = [
            st
            for st in pres["studies"]
            if st["seed"] in seeds[:b2b_seeds]
            and st["contender"] in b2b_contenders
            and (st["contender"], st["seed"]) not in replayed
        ]
        for st in replays:
            tag = f"b2b-{st['contender']}-s{st['seed']}"
            jobs = [
                _train_job(
                    problem,
                    data,
                    t["params"],
                    seed=st["seed"],
                    device=device,
                    epochs=t["epochs"],
                    project=pdir / "b2b" / f"{st['contender']}-s{st['seed']}",
                    name=str(t["trial"]),
                    tag=f"{tag}-{t['trial']}",
                    model=model_for(st["seed"]),
                )
                for t in st["trials"]
                if t["params"] and t["epochs"] >= 1
            ]
            if not jobs:
                continue
            b2b_out = work / f"{tag}.jsonl"
            b2b_out.unlink(missing_ok=True)
            shutil.rmtree(pdir / "b2b" / f"{st['contender']}-s{st['seed']}", ignore_errors=True)
            proc = run_process("train", {"jobs": jobs, "out": str(b2b_out)}, work=work, tag=tag, cap_s=None)
            mine, started = _read_trainings(b2b_out)
            if proc["rc"] != 0 or len(mine) != len(jobs):
                _log(f"  back to back {tag}: failed (rc {proc['rc']}, log {proc['log']})")
                continue
            last_end = max(r["end"] for r in mine.values())
            pres["b2b"].append(
                {
                    "contender": st["contender"],
                    "seed": st["seed"],
                    "trainings": len(mine),
                    "epochs": sum(int(r.get("epochs") or 0) for r in mine.values()),
                    "wall_s": proc["wall_s"],
                    "startup_s": (started - proc["t0"]) if started else None,
                    "exit_s": proc["t0"] + proc["wall_s"] - last_end,
                    "train_s": sum((r.get("train_s") or 0.0) for r in mine.values()),
                    "study_wall_s": st["wall_s"],
                    # both up to the end of their last training, i.e. without either process's exit
                    "to_last_s": last_end - proc["t0"],
                    "study_to_last_s": max((t["end_s"] for t in st["trials"] if t.get("end_s") is not None), default=None),
                }
            )
            _log(
                f"  back to back {st['contender']}-s{st['seed']}: {proc['wall_s']:.0f} s in one process vs study {st['wall_s']:.0f} s"
            )
        _save(results, out)
    results["finished"] = time.time()
    _save(results, out)
    return results
