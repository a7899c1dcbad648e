"""Live progress of a study on stderr (``hpo tune`` unless ``--quiet``; ``Tuner(verbose=True)``).

On a terminal: a ``rich`` display, one bar of finished/total trials with elapsed time, ETA and
the best objective so far, and one line per running trial with its epoch and batch progress;
finished trials are printed above it as a log. Elsewhere (KFP logs, CI, ``| tee``): plain lines
per trial start, epoch and end, plus a heartbeat (running trials' epoch, batch and elapsed time)
whenever nothing was printed for :data:`HEARTBEAT_S` seconds, so a long epoch never leaves the log
silent.

The ETA counts finished trials plus the fraction of each running trial done (epochs and batches),
at the rate this run has made so far, plus the final stage when the study has one
(``final_epochs``): its runs (``final_top`` x ``final_seeds``, one after another) at the seconds
per epoch the complete trials took. A time budget caps it (the final stage gets what the search
leaves of it).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from .callbacks import TunerCallback
from .fmt import count_of, format_value
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .config import TuneConfig
    from .study import Study, TrialRecord

__all__ = ["ProgressDisplay", "HEARTBEAT_S", "clock", "hpo_study_observers"]

#: Longest silence (seconds) of the plain-line display while trials run.
HEARTBEAT_S = 30.0


def clock(s: float | None) -> str:
    """Seconds as ``42s``, ``3m05s``, ``2h07m``; ``-`` for ``None``."""
    if s is None or s != s or s == float("inf"):
        return "-"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class _Running:
    __slots__ = ("id", "start", "epoch", "batch", "batches", "last")

    def __init__(self, trial_id: int):
        self.id = trial_id
        self.start = time.monotonic()
        self.epoch = 0  # epochs finished
        self.batch = 0
        self.batches = 0
        self.last: float | None = None  # last epoch's objective


class ProgressDisplay(TunerCallback):
    """The progress observer (a :class:`hpo.TunerCallback`).

    Args:
        stream: where to write (default ``sys.stderr``).
        live: ``True`` rich display, ``False`` plain lines, ``None`` (default) rich when ``stream``
            is a terminal.
        heartbeat_s: longest silence of the plain display, seconds (default :data:`HEARTBEAT_S`).
    """

    def __init__(self, *, stream: IO[str] | None = None, live: bool | None = None, heartbeat_s: float = HEARTBEAT_S):
        from rich.console import Console

        # live=True asks for the rich display even on a stream that is no terminal (a test's buffer)
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True, force_terminal=live or None)
        self.live = self.console.is_terminal if live is None else live
        self.heartbeat_s = heartbeat_s
        self._lock = threading.RLock()
        self._running: dict[int, _Running] = {}
        self._tasks: dict[int, Any] = {}
        self._progress: Any = None
        self._overall: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_line = time.monotonic()
        self.total: int | None = 1
        self.epochs = 1
        self.budget: float | None = None  # the study's time budget, seconds
        self._elapsed_before = 0.0  # seconds the study ran before this run
        self.metric, self.direction = "", "maximize"
        self.best: tuple[float, int] | None = None
        self.done = self._done_at_start = 0
        self.final_epochs = 0  # epochs of the final stage's runs, all together (0: no final stage)
        self._final_done = 0  # of them, trained
        self._epoch_s: list[float] = [0.0, 0.0]  # complete trials' seconds and epochs, summed
        self._t0 = time.monotonic()

    # --- numbers
    def _fraction(self, r: _Running) -> float:
        inner = r.batch / r.batches if r.batches else 0.0
        return min(1.0, (r.epoch + (inner if r.batch and r.epoch < self.epochs else 0.0)) / max(1, self.epochs))

    def budget_left_s(self) -> float | None:
        """Seconds of the study's time budget left (``None``: no budget)."""
        if self.budget is None:
            return None
        return max(0.0, self.budget - self._elapsed_before - (time.monotonic() - self._t0))

    def final_s(self) -> float | None:
        """Seconds the final stage will take: its epochs not trained yet at the seconds per epoch of
        this run's complete trials (0 without a final stage; ``None`` before a trial completed)."""
        if not self.final_epochs:
            return 0.0
        seconds, epochs = self._epoch_s
        return None if epochs <= 0 else max(0, self.final_epochs - self._final_done) * seconds / epochs

    def eta_s(self) -> float | None:
        """Seconds to the study's end: at this run's rate so far for the trials left, plus the final
        stage (:meth:`final_s`), capped by the time budget left (``None`` before any progress,
        without a budget)."""
        budget_left = self.budget_left_s()
        if self.total is None:
            return budget_left
        with self._lock:
            units = (self.done - self._done_at_start) + sum(self._fraction(r) for r in self._running.values())
        elapsed = time.monotonic() - self._t0
        left = self.total - self.done - sum(self._fraction(r) for r in self._running.values())
        final = self.final_s()
        if units <= 0.01 or elapsed <= 0 or final is None:
            return budget_left
        eta = max(0.0, left) * elapsed / units + final
        return eta if budget_left is None else min(eta, budget_left)

    def _of(self, n: int) -> str:
        return f"{n}/{self.total}" if self.total is not None else str(n)

    def _count_text(self) -> str:
        text = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        if self.budget is not None:
            used = self._elapsed_before + time.monotonic() - self._t0
            text += f" trials, {clock(used)} of the {clock(self.budget)} budget"
        return text

    def _best_text(self) -> str:
        return f"best {format_value(self.best[0])} (trial {self.best[1]})" if self.best else "best -"

    def _summary(self) -> str:
        trials = "" if self.budget is not None else " trials"
        return (
            f"{self._count_text()}{trials}, elapsed {clock(time.monotonic() - self._t0)}, "
            f"ETA {clock(self.eta_s())}, {self._best_text()}"
        )

    def _trial_text(self, r: _Running, *, with_id: bool = True) -> str:
        """``trial 3 epoch 2/5 batch 7/40 accuracy_top1=0.61234 (12s)``; a live row (``with_id=False``)
        leaves out the id its description already shows."""
        text = f"{f'trial {r.id} ' if with_id else ''}epoch {min(r.epoch + 1, self.epochs)}/{self.epochs}"
        if r.batches and r.epoch < self.epochs:
            text += f" batch {r.batch}/{r.batches}"
        if r.last is not None:
            text += f" {self.metric.rsplit('/', 1)[-1]}={format_value(r.last)}"
        return text + f" ({clock(time.monotonic() - r.start)})"

    def _update_best(self, record: Any) -> None:
        if record.status.value == "complete" and record.objective is not None:
            sign = 1 if self.direction == "maximize" else -1
            if self.best is None or sign * record.objective > sign * self.best[0]:
                self.best = (record.objective, record.id)

    # --- output
    def _line(self, text: str) -> None:
        """Print a line: on the live display folded by rich at spaces to the terminal's width (a
        terminal would break a long line mid-word); plain lines stay whole (one line per event in a log)."""
        self._last_line = time.monotonic()
        self.console.print(text, markup=False, soft_wrap=not self.live)

    def _refresh(self) -> None:
        if self._progress is None:
            return
        if self.total is None and self.budget is not None:  # a time budget alone: the bar is time
            completed = min(self.budget, self._elapsed_before + time.monotonic() - self._t0)
        else:
            completed = self.done + sum(self._fraction(r) for r in self._running.values())
        self._progress.update(
            self._overall,
            completed=completed,
            info=f"{self._count_text()}  elapsed {clock(time.monotonic() - self._t0)}  ETA {clock(self.eta_s())}  {self._best_text()}",
        )
        for tid, r in self._running.items():
            if tid in self._tasks:
                self._progress.update(self._tasks[tid], completed=self._fraction(r), info=self._trial_text(r, with_id=False))

    def _beat(self) -> None:
        while not self._stop.wait(1.0 if self.live else min(5.0, self.heartbeat_s / 3)):
            with self._lock:
                if self.live:
                    self._refresh()  # elapsed and ETA move between events
                elif time.monotonic() - self._last_line >= self.heartbeat_s:
                    running = "; ".join(self._trial_text(r) for r in self._running.values()) or "no trial running"
                    self._line(f"hpo: {self._summary()}; {running}")

    # --- TunerCallback
    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        """Print the study's header and start the display."""
        with self._lock:
            self.total, self.epochs = config.iterations, config.epochs  # total None: a time budget alone
            self.budget = config.time_budget
            if config.final_epochs and not config.join:  # a joined process runs no final stage
                self.final_epochs = int(config.final_epochs) * config.final_top * config.final_seeds
            self._elapsed_before = float(study.settings.get("elapsed_s") or 0.0)
            self.metric, self.direction = config.metric, config.direction
            finished = study.finished()
            self.done = self._done_at_start = len(finished)
            for r in finished:
                self._update_best(r)
            self._t0 = time.monotonic()
            trials = count_of(config.iterations, "trial") if config.iterations is not None else "trials"
            budget = f" in {clock(config.time_budget)}" if config.time_budget is not None else ""
            if self.final_epochs:
                runs = config.final_top * config.final_seeds
                budget += f", then {runs} final run{'s' if runs != 1 else ''} x {config.final_epochs} epochs"
            self._line(
                f"hpo study {study.path} ({config.backend}, {trials} x {count_of(config.epochs, 'epoch')}{budget}, "
                f"{self.metric} {self.direction})"
            )
            if self.live:
                from rich.progress import BarColumn, Progress, TextColumn

                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(bar_width=24),
                    TextColumn("{task.fields[info]}"),
                    console=self.console,
                    transient=False,
                    auto_refresh=True,
                    refresh_per_second=4,
                )
                by_time = self.total is None and self.budget is not None
                self._overall = self._progress.add_task(
                    "time" if by_time else "trials",
                    total=self.budget if by_time else self.total,
                    completed=self.done,
                    info="",
                )
                self._progress.start()
                self._refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="hpo-progress", daemon=True)
        self._thread.start()

    def on_trial_start(self, record: TrialRecord) -> None:
        """A line (plain) or a row (rich) for the new trial."""
        with self._lock:
            r = self._running[record.id] = _Running(record.id)
            if self._progress is not None:
                self._tasks[record.id] = self._progress.add_task(
                    f"  trial {record.id}", total=1.0, info=self._trial_text(r, with_id=False)
                )
            else:
                self._line(f"trial {record.id} started ({self._of(self.done + len(self._running))})")

    def on_batch(self, record: TrialRecord, progress: dict[str, int]) -> None:
        """Batch progress of a running trial (shown live; in plain mode by the heartbeat)."""
        with self._lock:
            r = self._running.get(record.id)
            if r is not None:
                r.batch, r.batches = int(progress.get("batch", 0)), int(progress.get("batches", 0))
                r.epoch = max(r.epoch, int(progress.get("epoch", 1)) - 1)

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """An epoch line (plain) or the trial's row updated (rich)."""
        with self._lock:
            r = self._running.get(record.id)
            value = row.get(self.metric)
            if r is not None:
                r.epoch, r.batch = int(row.get("epoch", r.epoch + 1)), 0
                r.last = value if isinstance(value, float) else r.last
            if self._progress is None:
                shown = format_value(value) if isinstance(value, float) else "-"
                self._line(
                    f"  trial {record.id} epoch {int(row.get('epoch', 0))}/{self.epochs} {self.metric}={shown}"
                    f" ({clock(time.monotonic() - r.start) if r else '-'})"
                )
            else:
                self._refresh()

    def on_trial_end(self, record: TrialRecord) -> None:
        """The trial's result line, with the study's counts, ETA and best so far."""
        with self._lock:
            self._running.pop(record.id, None)
            self.done += 1
            self._update_best(record)
            if record.status.value == "complete" and record.duration_s and record.epochs_completed:
                self._epoch_s[0] += record.duration_s
                self._epoch_s[1] += record.epochs_completed
            if record.id in self._tasks and self._progress is not None:
                self._progress.remove_task(self._tasks.pop(record.id))
            obj = format_value(record.objective)
            extra = f" error: {record.error}" if record.status.value == "failed" and record.error else ""
            dur = f" {record.duration_s:.1f} s" if record.duration_s else ""
            self._line(
                f"trial {record.id} {record.status.value} objective={obj}{dur} [{self._of(self.done)}] "
                f"{self._best_text()}, elapsed {clock(time.monotonic() - self._t0)}, ETA {clock(self.eta_s())}{extra}"
            )
            self._refresh()

    def on_final_start(self, record: Any) -> None:
        """A line for a final-model run that starts (:mod:`hpo.final`)."""
        with self._lock:
            origin = f"trial {record.source_trial}, " if record.source_trial is not None else ""
            self._line(f"final run {record.id} started ({origin}seed {record.seed}, {count_of(record.epochs, 'epoch')})")

    def on_final_epoch(self, record: Any, row: dict[str, float]) -> None:
        """An epoch line of a final run."""
        with self._lock:
            self._final_done += 1
            value = row.get(self.metric)
            shown = format_value(value) if isinstance(value, float) else "-"
            self._line(f"  final run {record.id} epoch {int(row.get('epoch', 0))}/{record.epochs} {self.metric}={shown}")

    def on_final_end(self, record: Any) -> None:
        """The final run's result line: its validation value and its score on the split."""
        from .final import split_label

        with self._lock:
            val, test = format_value(record.objective_val), format_value(record.objective_test)
            extra = f" ({record.error})" if record.error else ""
            self._line(f"final run {record.id} {record.status.value}: val {val}, {split_label(record.split)} {test}{extra}")

    def on_study_end(self, study: Study, result: Any) -> None:
        """Stop the display (the heartbeat thread and the rich live region)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._progress is not None:
                self._refresh()
                self._progress.stop()
                self._progress = None


@hookimpl(tryfirst=True)
def hpo_study_observers(settings: Mapping[str, Any]) -> list[TunerCallback]:
    """hpo's own plugin (:data:`hpo.plugins.DEFAULT_PLUGINS`): the progress display of a study whose
    setting ``verbose`` is on (``hpo tune`` unless ``--quiet``), called before every other observer."""
    return [ProgressDisplay()] if settings.get("verbose") else []
