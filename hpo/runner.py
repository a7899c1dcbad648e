"""The trial runner: runs ONE trial in an isolated worker process.

Each trial is a fresh process, forked from a *forkserver* that preloaded torch and Ultralytics
once (:mod:`hpo._worker`): trials share no state, and the 3-4 s import is paid once per study
instead of once per trial (measured in ``benchmarks/``). The forkserver never touches CUDA, so a
trial may still pick its GPU with ``CUDA_VISIBLE_DEVICES`` (``TrialSpec.env``).

The worker streams per-epoch metrics; after each epoch the driver answers ``continue`` or
``stop`` (a backend's pruning decision), so a pruned trial computes no further epoch. A trial that
outlives ``timeout_s`` is killed and reported as failed. Set ``HPO_START_METHOD=spawn`` to use a
fresh interpreter per trial instead (slower; for debugging).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["TrialSpec", "TrialOutcome", "TrialRunner", "TrialInterrupted", "start_workers"]


class TrialInterrupted(KeyboardInterrupt):
    """The driver is stopping (SIGINT/SIGTERM): the trial was killed and is NOT a result.

    Its record stays ``running``, so ``--resume`` re-runs it with the same id and params.
    """

_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        method = os.environ.get("HPO_START_METHOD", "forkserver")
        if method not in mp.get_all_start_methods():
            method = "spawn"
        ctx = mp.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["hpo._worker"])
        _CONTEXT = ctx
    return _CONTEXT


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _no_main_reimport() -> Any:
    """Start worker processes without re-running the user's ``__main__`` in them.

    ``multiprocessing`` (forkserver and spawn) re-imports the parent's main script in every child so
    that targets defined there can be found. hpo's target lives in this module, so that re-import is
    never needed, and it would re-run a user script's top-level ``Tuner(...).run()`` (a script
    without an ``if __name__ == "__main__":`` guard) inside each trial. Hiding ``__main__``'s
    ``__file__`` and ``__spec__`` while a worker starts stops it.
    """
    main = sys.modules.get("__main__")
    with _START_LOCK:
        saved = {a: main.__dict__[a] for a in ("__file__", "__spec__") if main is not None and a in main.__dict__}
        try:
            if main is not None:
                main.__dict__.pop("__file__", None)
                main.__dict__["__spec__"] = None
            yield
        finally:
            if main is not None:
                main.__dict__.pop("__spec__", None)
                main.__dict__.update(saved)


def start_workers() -> None:
    """Start the forkserver that trial workers fork from, now rather than at the first trial.

    The forkserver's preload (torch, Ultralytics, :mod:`hpo._worker`: ~3.5 s on a 2-core CPU) then
    runs while the driver validates its settings and imports Ultralytics itself (~1.5 s), on
    another core, instead of after it (measured in ``benchmarks/``). Idempotent and thread-safe; a
    no-op under ``HPO_START_METHOD=spawn``. The server exits when this process does (it watches a
    pipe); started from a process that then fails validation, it finishes its preload first.
    """
    ctx = _context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    with _no_main_reimport():  # the server would otherwise import the user's main script too
        forkserver.ensure_running()


def _child_main(spec: dict[str, Any], conn: Any) -> None:
    from hpo._worker import run_in_child  # preloaded in the forkserver: free

    run_in_child(spec, conn)


@dataclass
class TrialSpec:
    """What one trial trains (picklable; crosses the process boundary).

    Attributes:
        trial_id: the study's trial id.
        model: model YAML name or absolute ``.pt`` path.
        task: Ultralytics task.
        data: absolute data YAML path or classification folder.
        params: sampled values ``{train arg: value}``.
        train_args: fixed Ultralytics train args (``imgsz``, ``batch``, ``device``...).
        epochs: epochs to train (the full fidelity).
        run_dir: the trial's Ultralytics run folder (``<study>/trials/<id>``).
        env: environment variables set in the worker before training (e.g. ``CUDA_VISIBLE_DEVICES``).
        integrations: Ultralytics integration settings to leave on (default: none).
    """

    trial_id: int
    model: str
    task: str
    data: str
    params: dict[str, Any]
    train_args: dict[str, Any]
    epochs: int
    run_dir: str
    env: dict[str, str] = field(default_factory=dict)
    integrations: tuple[str, ...] = ()

    def to_worker(self) -> dict[str, Any]:
        run_dir = Path(self.run_dir)
        return {
            "model": self.model,
            "task": self.task,
            "data": self.data,
            "params": self.params,
            "train_args": self.train_args,
            "epochs": self.epochs,
            "project": str(run_dir.parent),
            "name": run_dir.name,
            "env": self.env,
            "integrations": list(self.integrations),
            "log_file": str(run_dir / "train.log"),
        }


@dataclass
class TrialOutcome:
    """What came back from a trial.

    Attributes:
        status: ``"complete"``, ``"pruned"`` or ``"failed"``.
        epochs: per-epoch metric rows, ``[{"epoch": 1, ...}, ...]``.
        final_metrics: metrics of the final validation of the best weights (complete trials).
        applied: the values of the space's keys as the trainer applied them.
        train_s: seconds inside Ultralytics' ``train()``.
        duration_s: seconds from starting the worker to its result (the driver's view).
        weights: best (else last) weights path, if any.
        error: error text of a failed trial.
    """

    status: str
    epochs: list[dict[str, float]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    train_s: float | None = None
    duration_s: float = 0.0
    weights: str | None = None
    error: str | None = None


def _log_tail(run_dir: str, n: int = 8) -> str:
    path = Path(run_dir) / "train.log"
    if not path.is_file():
        return ""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-1500:]


class TrialRunner:
    """Runs trials in worker processes, one at a time per call (thread-safe: one call per thread).

    Args:
        timeout_s: wall-clock limit per trial in seconds (``None``: no limit). A trial past it is
            killed (SIGKILL) and reported as failed.
    """

    def __init__(self, *, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self._stopping = threading.Event()
        self._procs: set[Any] = set()
        self._procs_lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`abort` was called: no new trial starts, running ones raise :class:`TrialInterrupted`."""
        return self._stopping.is_set()

    def abort(self) -> None:
        """Kill every running trial worker; their ``run`` calls raise :class:`TrialInterrupted`."""
        self._stopping.set()
        with self._procs_lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.is_alive():
                proc.kill()

    def run(
        self,
        spec: TrialSpec,
        on_epoch: Callable[[dict[str, float]], bool] | None = None,
        on_batch: Callable[[dict[str, int]], None] | None = None,
    ) -> TrialOutcome:
        """Train ``spec`` in a fresh worker process and return its outcome (never raises for a failed trial).

        Args:
            spec: the trial.
            on_epoch: called in the driver with each epoch's metric row; return ``True`` to prune.
            on_batch: called in the driver with the worker's batch progress
                (``{"epoch": n, "batch": i, "batches": nb}``, about once a second while training).
        """
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        ctx = _context()
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_child_main, args=(spec.to_worker(), child), name=f"hpo-trial-{spec.trial_id}")
        t0 = time.perf_counter()
        if self._stopping.is_set():
            raise TrialInterrupted(f"trial {spec.trial_id} not started: the study is stopping")
        with _no_main_reimport():
            proc.start()
        with self._procs_lock:
            self._procs.add(proc)
        child.close()
        deadline = t0 + self.timeout_s if self.timeout_s else None
        epochs: list[dict[str, float]] = []
        try:
            while True:
                if self._stopping.is_set():
                    raise TrialInterrupted(f"trial {spec.trial_id} interrupted: the study is stopping")
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.perf_counter()))
                if deadline is not None and time.perf_counter() >= deadline:
                    self._kill(proc)
                    return TrialOutcome(
                        "failed", epochs=epochs, duration_s=time.perf_counter() - t0,
                        error=f"timed out after {self.timeout_s:g} s (trial_timeout); killed",
                    )
                try:
                    ready = parent.poll(wait)
                except (EOFError, OSError):
                    ready = True
                if not ready:
                    if not proc.is_alive():
                        # the pipe may still hold a last message
                        if parent.poll(0):
                            continue
                        return self._died(proc, spec, epochs, t0)
                    continue
                try:
                    kind, payload = parent.recv()
                except (EOFError, OSError):
                    proc.join(5)
                    return self._died(proc, spec, epochs, t0)
                if kind == "batch":
                    if on_batch is not None:
                        with contextlib.suppress(Exception):  # a display error never fails a trial
                            on_batch(payload)
                    continue
                if kind == "epoch":
                    epochs.append(payload)
                    stop = bool(on_epoch(payload)) if on_epoch else False
                    try:
                        parent.send("stop" if stop else "continue")
                    except (BrokenPipeError, OSError):
                        pass
                    continue
                proc.join(30)
                out = TrialOutcome(
                    status={"done": "complete", "pruned": "pruned", "error": "failed"}[kind],
                    epochs=payload.get("epochs", epochs),
                    final_metrics=payload.get("final_metrics", {}),
                    applied=payload.get("applied", {}),
                    train_s=payload.get("train_s"),
                    weights=payload.get("weights"),
                    error=payload.get("error"),
                    duration_s=time.perf_counter() - t0,
                )
                return out
        finally:
            parent.close()
            if proc.is_alive():
                self._kill(proc)
            with self._procs_lock:
                self._procs.discard(proc)

    @staticmethod
    def _kill(proc: Any) -> None:
        proc.kill()
        proc.join(10)

    def _died(self, proc: Any, spec: TrialSpec, epochs: list, t0: float) -> TrialOutcome:
        if self._stopping.is_set():  # killed by abort(): not a result
            raise TrialInterrupted(f"trial {spec.trial_id} interrupted: the study is stopping")
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        tail = _log_tail(spec.run_dir)
        return TrialOutcome(
            "failed", epochs=epochs, duration_s=time.perf_counter() - t0,
            error=f"worker died ({how}){': ' + tail if tail else ''}",
        )
