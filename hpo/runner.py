"""The trial runner: runs ONE trial in an isolated worker process.

Each trial is a fresh process, forked from a *forkserver* that preloaded torch and Ultralytics
once (:mod:`hpo._worker`): trials share no state, and the 3-4 s import is paid once per study
instead of once per trial (measured in ``benchmarks/``). The forkserver never touches CUDA, so a
trial may still pick its GPU with ``CUDA_VISIBLE_DEVICES`` (``TrialSpec.env``).

The worker streams per-epoch metrics; after each epoch the driver answers ``continue`` or
``stop`` (a backend's pruning decision), so a pruned trial computes no further epoch. A trial that
outlives ``timeout_s`` is killed and reported as failed. A trainer marked ``in_process`` (a
simulation, :func:`hpo.testing.simulated_trainer`) runs in the calling thread instead. Set ``HPO_START_METHOD=spawn`` to use a
fresh interpreter per trial instead (slower; for debugging).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .study import TrialStatus
from .trial import TrialOutcome, TrialSpec, train_trial

__all__ = ["TrialSpec", "TrialOutcome", "TrialRunner", "TrialInterrupted", "start_workers"]


class TrialInterrupted(KeyboardInterrupt):
    """The driver is stopping (SIGINT/SIGTERM): the trial was killed and is NOT a result.

    Its record stays ``running``, so ``--resume`` re-runs it with the same id and params.
    """


class _TimedOut(KeyboardInterrupt):
    """An in-process trial passed its timeout (a ``KeyboardInterrupt`` so no trainer catches it)."""


class _DriverFailed(KeyboardInterrupt):
    """The driver's own ``on_epoch`` raised in an in-process trial (e.g. the backend's storage was
    lost): carried through the trainer as a ``KeyboardInterrupt`` (which no trainer turns into a
    failed trial), then re-raised as the original error, as a worker-process trial raises it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


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
        saved: dict[str, Any] = {a: main.__dict__[a] for a in ("__file__", "__spec__") if main is not None and a in main.__dict__}
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


def _child_main(spec: TrialSpec, conn: Any) -> None:
    from hpo._worker import run_in_child  # preloaded in the forkserver: free

    run_in_child(spec, conn)


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
        if spec.in_process:
            return self._run_in_process(spec, on_epoch, on_batch)
        ctx = _context()
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_child_main, args=(spec, child), name=f"hpo-trial-{spec.trial_id}")
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
                        TrialStatus.FAILED,
                        epochs=epochs,
                        duration_s=time.perf_counter() - t0,
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
                outcome: TrialOutcome = payload  # kind == "outcome"
                outcome.epochs = outcome.epochs or epochs
                outcome.duration_s = time.perf_counter() - t0
                return outcome
        finally:
            parent.close()
            if proc.is_alive():
                self._kill(proc)
            with self._procs_lock:
                self._procs.discard(proc)

    def _run_in_process(
        self,
        spec: TrialSpec,
        on_epoch: Callable[[dict[str, float]], bool] | None,
        on_batch: Callable[[dict[str, int]], None] | None,
    ) -> TrialOutcome:
        """Run an ``in_process`` trainer (a simulation) in the calling thread: no worker process.

        The timeout and :meth:`abort` are honoured at epoch boundaries (a trainer that never
        reports cannot be stopped early)."""
        if self._stopping.is_set():
            raise TrialInterrupted(f"trial {spec.trial_id} not started: the study is stopping")
        t0 = time.perf_counter()
        deadline = t0 + self.timeout_s if self.timeout_s else None
        epochs: list[dict[str, float]] = []

        def report(row: dict[str, float]) -> bool:
            epochs.append(row)
            if self._stopping.is_set():
                raise TrialInterrupted(f"trial {spec.trial_id} interrupted: the study is stopping")
            if deadline is not None and time.perf_counter() >= deadline:
                raise _TimedOut()
            try:
                return bool(on_epoch(row)) if on_epoch else False
            except Exception as e:  # the driver's error, not the trial's: never a failed trial
                raise _DriverFailed(e) from e

        try:
            outcome = train_trial(spec, report, on_batch)
        except _DriverFailed as e:
            raise e.error from None
        except _TimedOut:
            outcome = TrialOutcome(
                TrialStatus.FAILED, epochs=epochs, error=f"timed out after {self.timeout_s:g} s (trial_timeout); killed"
            )
        outcome.duration_s = time.perf_counter() - t0
        return outcome

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
            TrialStatus.FAILED,
            epochs=epochs,
            duration_s=time.perf_counter() - t0,
            error=f"worker died ({how}){': ' + tail if tail else ''}",
        )
