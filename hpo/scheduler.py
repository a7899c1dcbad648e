"""The ask/tell scheduler: :class:`AskTellScheduler` drives a :class:`hpo.Backend` through the
study's ledger, ``ask -> train -> tell``, with ``concurrent_trials`` threads.

Asking, taking the id and recording the new trial happen under the ledger's lock and the study's
cross-process reservation (:meth:`hpo.study.Study.reserving`), so processes joined to the study
(``--join``) together start exactly the trials the total needs; training runs in parallel (one
worker process per running trial, :mod:`hpo.runner`); telling is serialised again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from . import clock
from .backend import Backend
from .errors import EngineError, VolumeError
from .files import volume_errors
from .ledger import StudyLedger
from .runner import TrialRunner
from .study import TrialRecord
from .values import gpu_indices

__all__ = ["AskTellScheduler", "LOST_TRIAL_POLL_S"]

#: Seconds between the writer's looks for lost trials while other processes' trials run and no
#: trial is left to start (:meth:`AskTellScheduler.run`).
LOST_TRIAL_POLL_S = 1.0


class AskTellScheduler:
    """Runs the trials of a :class:`hpo.Backend` until the study has ``iterations`` finished trials.

    Args:
        ledger: the study's ledger (its records, ids, budget and observers).
        runner: what trains a trial (default: a :class:`hpo.runner.TrialRunner` with the study's
            ``trial_timeout``).
    """

    def __init__(self, ledger: StudyLedger, runner: TrialRunner | None = None) -> None:
        self.ledger = ledger
        self.config = ledger.config
        self.runner = runner or TrialRunner(timeout_s=self.config.trial_timeout)
        #: the GPUs ``device`` lists; with several, each concurrent trial gets its own
        self.gpus = [str(g) for g in gpu_indices(self.config.train_args.get("device"))]

    @property
    def stopping(self) -> bool:
        """Whether the run is stopping (an interrupt or a volume failure): no new trial starts."""
        return self.runner.stopping

    def run_trial(self, trial_id: int, params: dict[str, Any], *, backend: Backend | None = None, slot: int = 0) -> TrialRecord:
        """Train one trial in a worker process, record it, and return its finished record.

        Args:
            trial_id: from :meth:`StudyLedger.reserve_id` (or a retried id).
            params: values for every key of the space (validated against it).
            backend: asked ``should_prune`` after each epoch, if given.
            slot: the worker slot (0..concurrent_trials-1); picks the GPU when ``device`` lists several.

        Raises:
            hpo.VolumeError: the volume failed (the trial is recorded ``interrupted``; the other
                running trials are stopped too).
            hpo.EngineError: an engine stayed unreachable past its bound, e.g. the backend's
                storage in ``should_prune`` (recorded ``interrupted``, like a volume failure).
            KeyboardInterrupt: the run was interrupted (the trial is recorded ``interrupted``).
        """
        ledger = self.ledger
        worker = f"{socket.gethostname()}:{os.getpid()}"
        spec = ledger.trial_spec(trial_id, params)
        if len(self.gpus) > 1:
            spec.env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
            spec.train_args["device"] = "0"
            worker += f" gpu{spec.env['CUDA_VISIBLE_DEVICES']}"
        record = ledger.trial_started(trial_id, params, worker=worker)
        spec.params = dict(record.params)
        try:

            def on_epoch(row: dict[str, float]) -> bool:
                ledger.trial_epoch(record, row)
                stop = bool(backend.should_prune(record, row)) if backend is not None else False
                return stop or ledger.stop_for_budget(record, row)

            began = clock.monotonic()
            outcome = self.runner.run(spec, on_epoch, lambda p: ledger.trial_batch(record, p))
            ledger.note_clock(trial_id, clock.monotonic() - began)  # the study's clock (a simulation's too)
        except BaseException as e:
            ledger.release(trial_id)
            if isinstance(e, (KeyboardInterrupt, VolumeError, EngineError)):
                ledger.trial_interrupted(record, e)
            raise
        try:
            return ledger.trial_finished(record, outcome)
        except VolumeError:
            self.runner.abort()  # the other running trials stop too: resumable, not failed
            raise

    def run(self, backend: Backend) -> None:
        """The core loop: ``ask -> run -> tell`` until the study has ``iterations`` finished trials.

        With ``concurrent_trials > 1``, that many threads each run this loop; asking and telling are
        serialised, training runs in parallel (one worker process per running trial). Queued
        retries (:meth:`StudyLedger.queue_retry`) run first, then lost trials
        (:meth:`StudyLedger.claim_lost`: an interrupted trial of a resumed study, the trial of a
        joined process that died), each with its id and params. A new trial's id is the backend's
        :attr:`hpo.Suggestion.trial_id`, else the ledger's own.

        A joined process (``--join``) returns when nothing is left to start or take over. The
        writer returns only once the study has its ``iterations`` finished trials (or its time
        budget is spent): while other processes' trials run it polls every
        :data:`LOST_TRIAL_POLL_S` seconds, and re-runs any of them whose process is proven gone. So
        a study whose joined process was killed still ends with exactly ``iterations`` finished
        trials, without a ``--resume``.

        Raises:
            hpo.VolumeError: the volume failed (it explains the interrupts it caused).
            hpo.EngineError: an engine stayed unreachable past its bound (the backend's storage:
                running trials are stopped and recorded ``interrupted``, as for a volume failure).
            KeyboardInterrupt: the run was interrupted (running trials are recorded ``interrupted``).
            Exception: the first error of a thread (a backend's, a trial's recording).
        """
        ledger = self.ledger
        study = ledger.study
        errors: list[BaseException] = []
        done = [threading.Event() for _ in range(max(1, self.config.workers))]

        def worker(slot: int) -> None:
            try:
                while True:
                    with ledger.lock, study.reserving():
                        if self.stopping or ledger.budget_spent():
                            return
                        ledger.volume.check_space()
                        retry = ledger.next_retry()
                        lost = None if retry is not None else ledger.claim_lost()
                        if retry is not None:
                            tid, params = retry
                            ledger.in_flight(tid)
                        elif lost is not None:  # a trial whose process is gone: recorded here, run again
                            tid, params = lost
                        elif ledger.remaining() > 0:
                            suggestion = backend.ask()
                            tid = ledger.take_id(suggestion.trial_id)
                            params = self.config.space.validate_params(suggestion.params)
                            # recorded at once, under the reservation lock: joined processes count it
                            ledger.reserve_trial(tid, params)
                        elif not self.config.join and ledger.missing() > 0 and ledger.others_running():
                            tid = -1  # the writer stays until the study has its total (see run())
                        else:
                            return
                    if tid < 0:
                        time.sleep(LOST_TRIAL_POLL_S)
                        continue
                    record = self.run_trial(tid, params, backend=backend, slot=slot)
                    with ledger.lock, volume_errors(study.path):
                        backend.tell(record)
            except BaseException as e:  # noqa: BLE001
                if isinstance(e, (VolumeError, EngineError)):
                    self.runner.abort()  # stop the other trials at once: resumable, not failed
                errors.append(e)
            finally:
                done[slot].set()

        # no more threads than trials left to start (--concurrent-trials 100000 for 3 trials: 3 threads)
        n = max(1, min(self.config.workers, ledger.remaining() + ledger.retries() + len(study.unfinished())))
        if n == 1:
            worker(0)
        else:
            threads = [threading.Thread(target=worker, args=(k,), name=f"hpo-worker-{k}", daemon=True) for k in range(n)]
            for t in threads:
                t.start()
            # Wait on each worker's own event, not Thread.join: a KeyboardInterrupt (SIGINT/SIGTERM)
            # raised inside join() can leave a live thread reported stopped (seen on CPython 3.11:
            # is_alive() False while it still trained), and the study then exited before that
            # thread recorded its trial 'interrupted'.
            try:
                while not all(d.wait(0.2) for d in done[:n]):  # short waits: signals reach the main thread promptly
                    pass
            except BaseException:
                self.runner.abort()  # stop running trials: each thread records its trial 'interrupted'
                for d in done[:n]:
                    d.wait(30)
                raise
        if errors:
            # a volume failure explains the interrupts it caused; a crash beats an interrupt
            volume = [e for e in errors if isinstance(e, (VolumeError, EngineError))]
            real = [e for e in errors if not isinstance(e, KeyboardInterrupt)]
            raise (volume or real or errors)[0]
