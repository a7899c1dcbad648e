"""Chaos for the engines hpo scales out on (issue 31 item 5): random faults during real studies,
then the totals checked. Opt-in, outside the test suite's time budget::

    python tests/chaos.py --kinds joined,ray-node,postgres,mlflow --faults 3 --trials 16 \\
        --seed 0 --out benchmarks/results/chaos

Each kind runs one study on the real engine of this machine (tests/engines.py), with simulated
trials (``hpo.simulate``, ``--epoch-s`` seconds per epoch: the engine is the point, not training),
injects ``--faults`` faults at random moments drawn from ``--seed``, and checks what a user is owed:

- ``joined``: an optuna study (journal storage on the volume) with a writer and two ``--join``
  processes; a fault SIGKILLs one joined process (its process group) and starts it again with the
  same command, as a KFP retry of a preempted pod does.
- ``ray-node``: the ray backend on a two-node Ray (a head with no CPUs, a worker node where every
  trial runs); a fault SIGKILLs every process of the worker node (a preempted GPU node) and joins
  a fresh node.
- ``postgres``: an optuna study on the test's own PostgreSQL 15 server, a writer and one ``--join``;
  a fault restarts the server (``pg_ctl restart -m fast``) or stops it for 1-4 s.
- ``mlflow``: an optuna study tracked by a real ``mlflow server``; a fault SIGKILLs the server's
  process group and starts a new server on the same store after 1-3 s.

Checked after each study (``ok`` when all hold): every process exited 0; exactly ``--trials``
finished trials, none left running (ids are unique by construction; an id that a killed process
had reserved and not yet recorded is skipped, never reused, and listed); every complete trial has its params and a
finite objective; each id has one finished record in the files (never finished twice); for
``postgres`` also Optuna's table: one non-failed Optuna trial per hpo trial, none left running.
Results: ``<out>/chaos.json`` (every fault with its time, every check) and ``<out>/report.md``
with the machine (``hpo_bench.machine``) and its load. Exit 0 when every kind is ``ok``, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engines.py, test_tracking.py

KINDS = ("joined", "ray-node", "postgres", "mlflow")
SPACE = json.dumps({"lr0": [1e-4, 1e-1], "momentum": [0.6, 0.98]})
FINISHED = ("complete", "pruned", "failed")


def _args(backend: str, data: Path, out: Path, n: int, epochs: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hpo.cli",
        "tune",
        "--backend",
        backend,
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(data),
        "--iterations",
        str(n),
        "--epochs",
        str(epochs),
        "--output",
        str(out),
        "--name",
        "s",
        "--space",
        SPACE,
        "--concurrent-trials",
        "2",
        "--quiet",
        "--no-plots",
        *extra,
        "imgsz=32",
        "optimizer=SGD",
    ]


def _env(epoch_s: float, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "RAY_", "MLFLOW_"))}
    env.update(
        PYTHONUNBUFFERED="1",
        HPO_TRAINER="hpo.simulate:simulated_trainer",
        HPO_TRAINER_OPTIONS=json.dumps({"epoch_s": epoch_s}),
        HPO_PLOTS="0",
        **extra,
    )
    return env


class _Proc:
    """A study process (its own session, so a fault kills its whole group), restartable."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, tag: str):
        self.args, self.env, self.cwd, self.tag = args, env, cwd, tag
        self.runs: list[dict[str, Any]] = []
        self.p: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.cwd / f"{self.tag}.{len(self.runs)}.log", "w")
        self.p = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.runs.append({"start": time.time(), "log": log.name})

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.p is not None
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            self.runs[-1]["killed"] = True

    def wait(self, timeout: float) -> int | None:
        assert self.p is not None
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        self.runs[-1]["rc"] = rc
        return rc


def _snapshots(study: Path, pattern: str = "trials*.jsonl") -> Iterator[dict[str, Any]]:
    """Every snapshot the study's records files (``pattern``) hold as written, file by file, line by
    line; a torn or damaged line is skipped (the study's reader decides what it means)."""
    for f in study.glob(pattern):
        for ln in f.read_text(errors="replace").splitlines():
            try:
                d = json.loads(ln)
            except ValueError:
                continue
            if isinstance(d, dict) and "id" in d:
                yield d


def _finished(study: Path) -> int:
    return len({d["id"] for d in _snapshots(study) if d.get("status") in FINISHED})


def _running(study: Path, pid: int | None = None) -> bool:
    """Some trial is mid-way (a running record with at least one epoch): a fault now hits a trial.
    ``pid``: a trial of that process (its records file, ``trials.<host>-<pid>.jsonl``)."""
    latest = {d["id"]: d for d in _snapshots(study, "trials*.jsonl" if pid is None else f"trials.*-{pid}.jsonl")}
    return any(d.get("status") == "running" and d.get("epochs") for d in latest.values())


def check_study(study: Path, n: int) -> dict[str, Any]:
    """The totals a user is owed by a study of ``n`` trials (see the module docstring)."""
    from hpo import Study

    final_lines: dict[int, int] = {}
    for d in _snapshots(study):
        if d.get("status") in FINISHED:
            final_lines[d["id"]] = final_lines.get(d["id"], 0) + 1
    records = Study.open(study).records() if (study / "study.json").is_file() else {}
    statuses: dict[str, int] = {}
    for r in records.values():
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
    finished = [r for r in records.values() if r.status.finished]
    bad_complete = [
        r.id
        for r in finished
        if r.status.value == "complete" and (not r.params or r.objective is None or not math.isfinite(r.objective))
    ]
    out = {
        "expected": n,
        "finished": len(finished),
        "statuses": statuses,
        "left_running": sorted(r.id for r in records.values() if not r.status.finished),
        # an id a killed process had reserved but not yet recorded is skipped, never reused: a gap, not a loss
        "ids_skipped": sorted(set(range(max(records, default=-1) + 1)) - set(records)),
        "finished_twice": sorted(i for i, k in final_lines.items() if k > 1),
        "complete_without_params_or_objective": bad_complete,
    }
    out["ok"] = out["finished"] == n and not out["left_running"] and not out["finished_twice"] and not bad_complete
    return out


def _optuna_check(storage: str, study: Path) -> dict[str, Any]:
    import optuna

    from hpo import Study

    records = Study.open(study).records()
    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    fail = optuna.trial.TrialState.FAIL
    kept: dict[int, int] = {}
    for t in trials:
        tid = t.user_attrs.get("hpo_trial_id")
        if tid in records and t.state is not fail:
            kept[tid] = kept.get(tid, 0) + 1
    out = {
        "optuna_trials": len(trials),
        "optuna_unfinished": [t.number for t in trials if not t.state.is_finished()],
        "optuna_one_per_hpo_trial": sorted(kept) == sorted(records) and all(v == 1 for v in kept.values()),
    }
    out["ok"] = not out["optuna_unfinished"] and out["optuna_one_per_hpo_trial"]
    return out


def _inject(
    rng: random.Random,
    faults: int,
    study: Path,
    procs: list[_Proc],
    n: int,
    fault: Callable[[int], dict[str, Any]],
    timeout: float,
) -> list[dict[str, Any]]:
    """``faults`` faults, each at a random moment (1-4 s after the last, while a trial is mid-way
    and the study is not done), by ``fault(k)``; returns their records."""
    done: list[dict[str, Any]] = []
    deadline = time.time() + timeout
    t_last = time.time()
    while len(done) < faults and time.time() < deadline:
        wait_s = rng.uniform(1.0, 4.0)
        while time.time() < t_last + wait_s or not _running(study):
            if _finished(study) >= n or not any(p.alive() for p in procs):
                return done
            time.sleep(0.1)
        t = time.time()
        rec = {"at_finished": _finished(study), "time": t, **fault(len(done))}
        done.append(rec)
        t_last = time.time()
    return done


def run_joined(work: Path, data: Path, rng: random.Random, faults: int, n: int, epochs: int, epoch_s: float) -> dict:
    out = work / "studies"
    env = _env(epoch_s)
    writer = _Proc(_args("optuna", data, out, n, epochs, "--seed", "0"), env, work, "writer")
    while not (out / "s" / "study.json").is_file():
        time.sleep(0.1)
    joined = [_Proc(_args("optuna", data, out, n, epochs, "--join"), env, work, f"joined{k}") for k in range(2)]

    def fault(k: int) -> dict[str, Any]:
        deadline = time.time() + 30  # a joined process with a trial mid-way (else any live one)
        busy: list[_Proc] = []
        while not busy and time.time() < deadline:
            busy = [p for p in joined if p.alive() and p.p is not None and _running(out / "s", p.p.pid)]
            time.sleep(0.05)
        victim = rng.choice(busy or [p for p in joined if p.alive()] or joined)
        victim.kill()
        time.sleep(rng.uniform(0.5, 2.0))
        victim.start()  # the retry: the same command
        return {"fault": "SIGKILL of a joined process, then the same command again", "process": victim.tag}

    injected = _inject(rng, faults, out / "s", [writer, *joined], n, fault, 600)
    rcs = [writer.wait(600)] + [p.wait(600) for p in joined]
    return {"faults": injected, "exit_codes": rcs, "check": check_study(out / "s", n)}


def run_ray_node(work: Path, data: Path, rng: random.Random, faults: int, n: int, epochs: int, epoch_s: float) -> dict:
    from engines import RayHead, RayNode

    head = RayHead(num_cpus=0).start()
    nodes = [RayNode(head, num_cpus=2, tag="n0").start()]
    try:
        out = work / "studies"
        env = _env(epoch_s, RAY_AUTH_TOKEN=head.token, HOME=str(work / "home"))
        (work / "home").mkdir(exist_ok=True)
        args = _args("ray", data, out, n, epochs, "--ray-address", head.address, "--scheduler", "fifo", "--seed", "0")
        driver = _Proc(args, env, work, "driver")

        def fault(k: int) -> dict[str, Any]:
            pids = nodes[-1].kill()
            time.sleep(rng.uniform(0.5, 2.0))
            nodes.append(RayNode(head, num_cpus=2, tag=f"n{k + 1}").start())
            return {"fault": "SIGKILL of every process of the worker node, then a new node", "pids": len(pids)}

        injected = _inject(rng, faults, out / "s", [driver], n, fault, 900)
        rcs = [driver.wait(900)]
        return {"faults": injected, "exit_codes": rcs, "check": check_study(out / "s", n)}
    finally:
        for node in nodes:
            node.stop()
        head.stop()


def run_postgres(work: Path, data: Path, rng: random.Random, faults: int, n: int, epochs: int, epoch_s: float) -> dict:
    from engines import PostgresServer

    server = PostgresServer().start()
    try:
        url = server.database("chaos")
        out = work / "studies"
        env = _env(epoch_s)
        writer = _Proc(_args("optuna", data, out, n, epochs, "--storage", url, "--seed", "0"), env, work, "writer")
        while not (out / "s" / "study.json").is_file():
            time.sleep(0.1)
        joined = _Proc(_args("optuna", data, out, n, epochs, "--storage", url, "--join"), env, work, "joined")

        def fault(k: int) -> dict[str, Any]:
            if rng.random() < 0.5:
                server.restart()
                return {"fault": "pg_ctl restart -m fast"}
            down = rng.uniform(1.0, 4.0)
            server.pause()
            time.sleep(down)
            server.resume()
            return {"fault": f"pg_ctl stop -m fast, {down:.1f} s down, start"}

        injected = _inject(rng, faults, out / "s", [writer, joined], n, fault, 600)
        rcs = [writer.wait(600), joined.wait(600)]
        check = check_study(out / "s", n)
        optuna_check = _optuna_check(url, out / "s")
        check.update(optuna_check, ok=check["ok"] and optuna_check["ok"])
        return {"faults": injected, "exit_codes": rcs, "check": check}
    finally:
        server.stop()


def run_mlflow(work: Path, data: Path, rng: random.Random, faults: int, n: int, epochs: int, epoch_s: float) -> dict:
    from test_tracking import MlflowServer

    servers = [MlflowServer(work / "mlflow").start()]
    try:
        out = work / "studies"
        env = _env(epoch_s, MLFLOW_TRACKING_URI=servers[0].uri)
        args = _args("optuna", data, out, n, epochs, "--mlflow", "--seed", "0")
        study = _Proc(args, env, work, "study")

        def fault(k: int) -> dict[str, Any]:
            srv = servers[-1]
            assert srv.proc is not None
            os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait()
            down = rng.uniform(1.0, 3.0)
            time.sleep(down)
            new = MlflowServer(work / "mlflow")
            new.port, new.uri = srv.port, srv.uri  # the same address, the same store
            servers.append(new.start())
            return {"fault": f"SIGKILL of the mlflow server's process group, {down:.1f} s down, started again"}

        injected = _inject(rng, faults, out / "s", [study], n, fault, 600)
        rcs = [study.wait(600)]
        log = Path(study.runs[-1]["log"]).read_text(errors="replace")
        check = check_study(out / "s", n)
        check["mlflow_warning_lines"] = sum(1 for ln in log.splitlines() if "mlflow" in ln.lower() and "warning" in ln)
        return {"faults": injected, "exit_codes": rcs, "check": check}
    finally:
        for srv in servers:
            srv.stop()


RUNNERS = {"joined": run_joined, "ray-node": run_ray_node, "postgres": run_postgres, "mlflow": run_mlflow}


def _report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Engine chaos (issue 31 item 5)",
        "",
        f"`{results['command']}` on {m.get('cpu', '?')} ({m.get('cores', '?')} cores), "
        f"{results['started']} UTC, {results['wall_s'] / 60:.1f} min; seed {results['seed']}, "
        f"{results['trials']} trials of {results['epochs']} simulated epochs of {results['epoch_s']} s per study. "
        "Every number below is as measured.",
        "",
        "| kind | faults injected (a study that ends first takes fewer) | trials expected | finished | left running | finished twice | ids skipped (reserved by a killed process, never reused) | exit codes | ok | load start -> end | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results["kinds"].items():
        c = r["check"]
        lines.append(
            f"| {kind} | {len(r['faults'])} of {results['faults']} | {c['expected']} | {c['finished']} | {len(c['left_running'])} | "
            f"{len(c['finished_twice'])} | {', '.join(map(str, c['ids_skipped'])) or '-'} | "
            f"{', '.join(str(x) for x in r['exit_codes'])} | {'yes' if c['ok'] and r['ok'] else '**NO**'} | "
            f"{r['load_start']:.1f} -> {r['load_end']:.1f} | {r['wall_s']:.0f} s |"
        )
    lines += ["", "Faults, in order:", ""]
    for kind, r in results["kinds"].items():
        for f in r["faults"]:
            lines.append(f"- {kind}: {f['fault']} (with {f['at_finished']} trials finished)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--faults", type=int, default=3, help="faults per kind (default 3)")
    ap.add_argument("--trials", type=int, default=16, help="trials per study (default 16)")
    ap.add_argument("--epochs", type=int, default=3, help="simulated epochs per trial (default 3)")
    ap.add_argument("--epoch-s", type=float, default=1.0, help="seconds per simulated epoch (default 1.0)")
    ap.add_argument("--seed", type=int, default=0, help="draws the faults' moments and choices (default 0)")
    ap.add_argument("--out", type=Path, required=True, help="folder for chaos.json and report.md")
    a = ap.parse_args(argv)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in RUNNERS]
    if unknown or a.faults < 0 or a.trials < 1:
        print(f"chaos: error: --kinds {', '.join(unknown)} unknown (choose from {', '.join(KINDS)})" if unknown else
              "chaos: error: --faults >= 0 and --trials >= 1", file=sys.stderr)  # fmt: skip
        return 2
    from hpo.datasets import make_digits_cls
    from hpo_bench.machine import machine_info

    rng = random.Random(a.seed)
    t0 = time.time()
    results: dict[str, Any] = {
        "command": "python tests/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)),
        "seed": a.seed,
        "faults": a.faults,
        "trials": a.trials,
        "epochs": a.epochs,
        "epoch_s": a.epoch_s,
        "machine": machine_info(),
        "kinds": {},
    }
    with tempfile.TemporaryDirectory(prefix="hpo-chaos-") as tmp:
        data = make_digits_cls(Path(tmp) / "digits-cls", seed=0)
        for kind in kinds:
            work = Path(tmp) / kind
            work.mkdir()
            start, load0 = time.time(), os.getloadavg()[0]
            r = RUNNERS[kind](work, data, rng, a.faults, a.trials, a.epochs, a.epoch_s)
            r.update(
                wall_s=time.time() - start,
                load_start=load0,
                load_end=os.getloadavg()[0],
                ok=bool(r["check"]["ok"]) and all(rc == 0 for rc in r["exit_codes"]) and len(r["faults"]) == a.faults,
            )
            results["kinds"][kind] = r
            print(f"chaos: {kind}: {len(r['faults'])} faults, {json.dumps(r['check'])}, exit {r['exit_codes']}", file=sys.stderr)
    results["wall_s"] = time.time() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "chaos.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (a.out / "report.md").write_text(_report(results))
    print(a.out / "report.md")
    return 0 if all(r["ok"] for r in results["kinds"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
