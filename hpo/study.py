"""The study directory on the volume: settings, append-only trial records, best, lock.

Layout of ``<output>/<name>/``::

    study.json          settings, space, backend, versions, created/updated (UTC ISO 8601)
    trials.jsonl        one JSON snapshot of a trial per line, append-only and fsync'd;
                        the last snapshot of an id wins (the source of truth)
    trials.<w>.jsonl    the same, written by an extra worker process joining the study
    best.yaml           best params and objective (rewritten atomically)
    lock                host, pid and start time of the one writer; its mtime is a heartbeat
    data.yaml           the data YAML with every path absolute
    trials/<id>/        the trial's Ultralytics run folder (args.yaml, results.csv, weights/, train.log)
    weights/best.pt     a copy of the best trial's weights
    <backend>/          the backend's own state

A torn last line (the process was killed mid-write) is skipped on read; every complete line is
kept, so a killed run never loses a finished trial.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .errors import StudyError, StudyLocked

__all__ = [
    "TrialStatus",
    "TrialRecord",
    "Study",
    "StudyLock",
    "atomic_write_text",
    "utcnow",
]

#: A lock whose heartbeat is older than this (seconds) belongs to a dead writer on another host.
LOCK_STALE_AFTER_S = 120.0
#: How often the lock holder refreshes the heartbeat (seconds).
LOCK_HEARTBEAT_S = 15.0


def utcnow() -> str:
    """Current time, UTC ISO 8601 with seconds precision (``2026-11-29T08:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file atomically (temp file beside ``dst``, then rename)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class TrialStatus(str, enum.Enum):
    """State of a trial. ``RUNNING`` is the only unfinished state."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"

    @property
    def finished(self) -> bool:
        return self is not TrialStatus.RUNNING


@dataclass
class TrialRecord:
    """One trial, as stored in ``trials.jsonl``.

    Attributes:
        id: trial id (int, unique in the study, from 0).
        params: the sampled values, ``{train arg: value}``.
        status: :class:`TrialStatus`.
        applied: the values the trainer actually used for the space's keys (read back from it).
        epochs: per-epoch metrics, ``[{"epoch": 1, "metrics/mAP50-95(B)": 0.1, "train/box_loss": ...}, ...]``.
        objective: the objective value (``None`` unless ``complete`` or ``pruned``); never a
            stand-in for a failure.
        final_metrics: metrics of the final validation (best weights), if the trial completed.
        epochs_completed: training epochs finished (the fidelity consumed).
        start, end: UTC ISO 8601 timestamps.
        duration_s: wall time in seconds, from the driver's view (worker start to result).
        train_s: seconds spent inside Ultralytics' ``train()`` in the worker.
        error: error text (``failed``) or the prune reason (``pruned``).
        weights: path of the trial's best weights, if any.
        worker: which driver process ran it (host:pid) and, if set, its device.
    """

    id: int
    params: dict[str, Any]
    status: TrialStatus = TrialStatus.RUNNING
    applied: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)
    objective: float | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    epochs_completed: int = 0
    start: str | None = None
    end: str | None = None
    duration_s: float | None = None
    train_s: float | None = None
    error: str | None = None
    weights: str | None = None
    worker: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialRecord:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["status"] = TrialStatus(known.get("status", "running"))
        return cls(**known)


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, enum.Enum):
        return x.value
    return str(x)


def _finite_or_none(x: Any) -> Any:
    """Replace NaN/inf floats (anywhere in dicts/lists) by ``None``: JSON has no NaN."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return x


class StudyLock:
    """The single-writer lock ``<study>/lock``.

    The holder's host, pid and start time are written in the file; a background thread touches it
    every :data:`LOCK_HEARTBEAT_S` seconds. Acquiring fails fast if another live writer holds it.
    A lock is *stale*, and taken over with a warning, when its holder is a dead process on this
    host or its heartbeat is older than :data:`LOCK_STALE_AFTER_S` seconds (a killed pod).
    ``Study.break_lock`` (``hpo unlock``) removes it explicitly.
    """

    def __init__(self, path: Path, *, stale_after_s: float = LOCK_STALE_AFTER_S):
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict[str, Any] | None = None

    def holder(self) -> dict[str, Any] | None:
        """The current holder's info (host, pid, started, age_s of heartbeat) or ``None``."""
        try:
            info = json.loads(self.path.read_text())
            info["age_s"] = time.time() - self.path.stat().st_mtime
            return info
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {"host": "?", "pid": -1, "started": "?", "age_s": float("inf")}

    def _is_stale(self, info: dict[str, Any]) -> bool:
        if info.get("host") == socket.gethostname():
            pid = int(info.get("pid", -1))
            if pid == os.getpid():
                return False
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except (PermissionError, OSError):
                return False
            return False
        return info.get("age_s", 0) > self.stale_after_s

    def acquire(self) -> None:
        """Take the lock or raise :class:`StudyLocked` naming the holder."""
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": utcnow()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue
                if self._is_stale(info):
                    self.took_over = info
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                raise StudyLocked(
                    f"study: '{self.path.parent}' is locked by host {info.get('host')} pid {info.get('pid')} "
                    f"(since {info.get('started')}, heartbeat {info.get('age_s', 0):.0f} s ago); wait for it to finish, "
                    f"or if that process is gone run: hpo unlock {self.path.parent}"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(mine)
                f.flush()
                os.fsync(f.fileno())
            self._thread = threading.Thread(target=self._beat, name="hpo-lock-heartbeat", daemon=True)
            self._thread.start()
            return
        raise StudyLocked(f"study: could not take the lock '{self.path}' (it keeps changing); retry")

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Release the lock (only if this process holds it)."""
        self._stop.set()
        info = self.holder()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class Study:
    """A study directory: its settings and trial records.

    Create with :meth:`create` (new study) or :meth:`open` (existing; read-only unless
    ``writer=True``). Only a writer may :meth:`append`.

    Args:
        path: the study directory ``<output>/<name>``.
        settings: the contents of ``study.json``.
        records_file: the file this process appends to (``trials.jsonl``, or
            ``trials.<worker>.jsonl`` for a joining worker).
    """

    SETTINGS = "study.json"
    RECORDS = "trials.jsonl"

    def __init__(self, path: Path, settings: dict[str, Any], *, records_file: str = RECORDS):
        self.path = Path(path)
        self.settings = settings
        self.records_file = self.path / records_file
        self.lock: StudyLock | None = None
        self._append_lock = threading.Lock()

    # --- creation / opening
    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """Whether ``path`` holds a study (``study.json``)."""
        return (Path(path) / cls.SETTINGS).is_file()

    @classmethod
    def create(cls, path: str | Path, settings: dict[str, Any]) -> Study:
        """Create a new study directory, take its lock and write ``study.json``.

        Raises:
            StudyError: a study already exists at ``path``, or the folder cannot be written.
        """
        path = Path(path)
        if cls.exists(path):
            raise StudyError(f"study: '{path}' already exists; pass --resume to continue it or choose another --name")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StudyError(f"output: cannot create '{path}': {e.strerror}; choose a writable --output") from None
        study = cls(path, dict(settings))
        study.lock = StudyLock(path / "lock")
        study.lock.acquire()
        now = utcnow()
        study.settings.setdefault("created", now)
        study.settings["updated"] = now
        study.save_settings()
        return study

    @classmethod
    def open(cls, path: str | Path, *, writer: bool = False, worker: str | None = None) -> Study:
        """Open an existing study.

        Args:
            path: the study directory.
            writer: take the single-writer lock (for resuming).
            worker: for a process joining a running study (backends that allow it, e.g. optuna),
                a worker name; its records go to ``trials.<worker>.jsonl`` and no lock is taken.

        Raises:
            StudyError: no study at ``path`` or ``study.json`` is unreadable.
            StudyLocked: ``writer=True`` and a live process holds the lock.
        """
        path = Path(path)
        f = path / cls.SETTINGS
        if not f.is_file():
            raise StudyError(f"study: no study at '{path}' (no {cls.SETTINGS}); check --output/--name")
        try:
            settings = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StudyError(f"study: '{f}' is unreadable ({e}); restore it or start a new study") from None
        records_file = f"trials.{worker}.jsonl" if worker else cls.RECORDS
        study = cls(path, settings, records_file=records_file)
        if writer and not worker:
            study.lock = StudyLock(path / "lock")
            study.lock.acquire()
        return study

    @staticmethod
    def break_lock(path: str | Path) -> dict[str, Any] | None:
        """Remove a study's lock whoever holds it; returns the holder's info (or ``None``)."""
        lock = StudyLock(Path(path) / "lock")
        info = lock.holder()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock.path)
        return info

    def close(self) -> None:
        """Release the lock if held."""
        if self.lock:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- settings
    def save_settings(self) -> None:
        """Rewrite ``study.json`` atomically (``updated`` set to now)."""
        self.settings["updated"] = utcnow()
        atomic_write_text(self.path / self.SETTINGS, json.dumps(self.settings, indent=2, default=_json_default) + "\n")

    # --- records
    @contextlib.contextmanager
    def reserving(self):
        """Hold the study's cross-process reservation lock ``<study>/.reserve.lock`` (``flock``).

        The core loop holds it while it counts the trials still to start, reserves a trial id
        and records the new trial as ``running``, so that processes joined to one study
        (``--join``) neither start more trials than the study's total nor reuse an id. Advisory
        and short (milliseconds); a no-op where ``fcntl`` is missing (Windows).
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        with open(self.path / ".reserve.lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def append(self, record: TrialRecord) -> None:
        """Append a snapshot of ``record`` to this process's records file (one line, fsync'd)."""
        line = json.dumps(_finite_or_none(record.to_json()), default=_json_default, allow_nan=False, separators=(",", ":"))
        with self._append_lock:
            with open(self.records_file, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> dict[int, TrialRecord]:
        """All trials, by id, folded from every ``trials*.jsonl`` (last snapshot of an id wins).

        A torn final line (a writer killed mid-append) is skipped.
        """
        snapshots: list[tuple[str, TrialRecord]] = []
        for f in sorted(self.path.glob("trials*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    rec = TrialRecord.from_json(json.loads(line))
                except (ValueError, TypeError, KeyError):
                    if n >= len(lines) - 2:  # torn last line of a killed writer
                        continue
                    raise StudyError(f"study: '{f}' line {n + 1} is corrupt; remove that line to continue") from None
                snapshots.append((rec.end or rec.start or "", rec))
        out: dict[int, TrialRecord] = {}
        for _, rec in snapshots:  # files are append-only: later lines are newer
            prev = out.get(rec.id)
            if prev is None or not (prev.status.finished and not rec.status.finished):
                out[rec.id] = rec
        return dict(sorted(out.items()))

    def finished(self) -> list[TrialRecord]:
        """Finished trials (complete, failed, pruned), by id."""
        return [r for r in self.records().values() if r.status.finished]

    # --- best
    @property
    def direction(self) -> str:
        return self.settings.get("direction", "maximize")

    def best(self, records: list[TrialRecord] | None = None) -> TrialRecord | None:
        """The complete trial with the best finite objective, or ``None``."""
        records = self.finished() if records is None else records
        done = [
            r for r in records
            if r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective)
        ]
        if not done:
            return None
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(done, key=lambda r: (sign * r.objective, -r.id))

    def ranked(self, records: list[TrialRecord] | None = None) -> list[TrialRecord]:
        """Trials best first (the leaderboard order): complete trials by objective in the study's
        direction, then every other trial; ties and the rest by id. Default: all records."""
        records = list(self.records().values()) if records is None else records
        sign = -1.0 if self.direction == "maximize" else 1.0

        def key(r: TrialRecord) -> tuple:
            scored = r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective)
            return (not scored, sign * r.objective if scored else 0.0, r.id)

        return sorted(records, key=key)

    def write_best(self, best: TrialRecord) -> None:
        """Write ``best.yaml`` and copy the trial's weights to ``weights/best.pt`` (both atomic)."""
        doc = {
            "trial": best.id,
            "objective": best.objective,
            "metric": self.settings.get("metric"),
            "direction": self.direction,
            "params": best.params,
            "weights": None,
        }
        if best.weights and Path(best.weights).is_file():
            atomic_copy(best.weights, self.path / "weights" / "best.pt")
            doc["weights"] = str(self.path / "weights" / "best.pt")
        atomic_write_text(self.path / "best.yaml", yaml.safe_dump(doc, sort_keys=False))

    def trial_dir(self, trial_id: int) -> Path:
        """``<study>/trials/<id>``: the trial's Ultralytics run folder."""
        return self.path / "trials" / str(trial_id)
