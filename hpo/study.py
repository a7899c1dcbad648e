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

Writes go through :mod:`hpo.files`: atomic, with the umask's modes, and an append that fails
(full volume, I/O error, interrupt) is truncated back. A torn last record (a writer killed
mid-append) is skipped on read and cut off (with a warning) when a writer opens the study, before
anything is appended after it; a record that is damaged in the middle is salvaged where it can be
and skipped otherwise, with a warning, never an error. So a killed run never loses a finished
trial, and ``hpo show`` reads a damaged study. A write the volume refuses raises
:class:`hpo.errors.VolumeError` (exit 1: the study stops, resumable).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .errors import StudyError
from .files import append_line, atomic_copy, atomic_write_text, repair_jsonl, volume_errors
from .lock import LOCK_HEARTBEAT_S, LOCK_STALE_AFTER_S, StudyLock
from .redact import mask_secrets, mask_text

#: Warnings of reading and repairing study files (the ``hpo`` logger, :mod:`hpo.log`).
_log = logging.getLogger("hpo.study")

__all__ = [
    "TrialStatus",
    "TrialRecord",
    "Study",
    "settings_versions",
    "StudyLock",
    "atomic_write_text",
    "atomic_copy",
    "utcnow",
    "LOCK_STALE_AFTER_S",
    "LOCK_HEARTBEAT_S",
]


def utcnow() -> str:
    """Current time, UTC ISO 8601 with seconds precision (``2026-11-29T08:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class TrialStatus(str, enum.Enum):
    """State of a trial.

    ``RUNNING`` and ``INTERRUPTED`` are unfinished: ``--resume`` re-runs such a trial with its id
    and params. ``INTERRUPTED`` is written when the run was stopped (Ctrl-C, SIGTERM, a full
    volume) while the trial trained; a trial whose process was SIGKILLed stays ``RUNNING``.
    """

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"

    @property
    def finished(self) -> bool:
        """Whether the trial has a result (complete, failed or pruned)."""
        return self not in (TrialStatus.RUNNING, TrialStatus.INTERRUPTED)


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
        settings: which of the study's settings it trained under: 0 as the study was created, ``k``
            after a resume that changed settings a trial measures with ``allow_changes``
            (``study.json`` ``resumes[].settings``; see :func:`settings_versions`). Stored only when
            not 0.
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
    settings: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        if not d["settings"]:
            del d["settings"]  # the study's first settings: records as before allow_changes existed
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialRecord:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["status"] = TrialStatus(known.get("status", "running"))
        return cls(**known)


def settings_versions(settings: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The settings versions of a study from its ``study.json`` contents: ``{k: resume entry}`` for
    every resume that changed settings a trial measures with ``allow_changes`` (``resumes[]`` entries
    holding ``settings: k`` and ``allowed_changes``, the diff as one line). Empty for a study whose
    trials all share one set of settings (version 0)."""
    out: dict[int, dict[str, Any]] = {}
    for entry in settings.get("resumes") or []:
        if isinstance(entry, dict) and isinstance(entry.get("settings"), int) and entry["settings"] > 0:
            out[entry["settings"]] = entry
    return out


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, enum.Enum):
        return x.value
    return str(x)


def _parse_record(line: str) -> TrialRecord | None:
    """A record from one line, or the last whole record glued after a tear (``{"id":...`` onward)."""
    candidates = [line]
    glued = line.rfind('{"id":')
    if glued > 0:
        candidates.append(line[glued:])
    for text in candidates:
        try:
            doc = json.loads(text)
            if isinstance(doc, dict) and "id" in doc:
                return TrialRecord.from_json(doc)
        except (ValueError, TypeError, KeyError):
            continue
    return None


def _brief(params: dict[str, Any]) -> str:
    """``params`` as short JSON for a message (at most 100 characters)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def _finite_or_none(x: Any) -> Any:
    """Replace NaN/inf floats (anywhere in dicts/lists) by ``None``: JSON has no NaN."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return x


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
    #: A file of :data:`RESERVE_BYTES` the writer keeps allocated, and frees when the volume fills up,
    #: so that the records of the trials that were running when it did can still be written.
    RESERVE = ".space-reserve"
    RESERVE_BYTES = 2 << 20
    #: Seconds after which the lock of a writer on another host counts as gone (:mod:`hpo.lock`).
    LOCK_STALE_AFTER_S = LOCK_STALE_AFTER_S
    #: Seconds between a writer's lock heartbeats (:mod:`hpo.lock`).
    LOCK_HEARTBEAT_S = LOCK_HEARTBEAT_S

    def __init__(self, path: Path, settings: dict[str, Any], *, records_file: str = RECORDS):
        self.path = Path(path)
        self.settings = settings
        self.records_file = self.path / records_file
        self.lock: StudyLock | None = None
        self.repairs: list[str] = []
        self._warned: set[str] = set()
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
            StudyLockedError: another process is creating the same study right now.
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
        try:
            study.lock.acquire()
        except OSError as e:
            raise StudyError(f"output: cannot write in '{path}': {e.strerror}; choose a writable --output") from None
        try:
            if cls.exists(path):  # another process created it between our check and our lock
                raise StudyError(f"study: '{path}' already exists; pass --resume to continue it or choose another --name")
            now = utcnow()
            study.settings.setdefault("created", now)
            study.settings["updated"] = now
            study.save_settings()
        except BaseException:
            study.close()
            raise
        return study

    @classmethod
    def open(cls, path: str | Path, *, writer: bool = False, worker: str | None = None) -> Study:
        """Open an existing study.

        Args:
            path: the study directory.
            writer: take the single-writer lock (for resuming). The writer cuts a torn last
                record off ``trials.jsonl`` (a warning on stderr; :attr:`repairs` lists it).
            worker: for a process joining a running study (backends that allow it, e.g. optuna),
                a worker name; its records go to ``trials.<worker>.jsonl`` and no lock is taken.

        Raises:
            StudyError: no study at ``path``, or ``study.json`` is unreadable or not a JSON object.
            StudyLockedError: ``writer=True`` and a live process holds the lock.
            VolumeError: the repair of a torn record could not be written.
        """
        path = Path(path)
        f = path / cls.SETTINGS
        if not f.is_file():
            what = "a file, not a study directory" if path.is_file() else f"no {cls.SETTINGS}"
            raise StudyError(f"study: no study at '{path}' ({what}); check --output/--name or the path")
        try:
            settings = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise StudyError(f"study: '{f}' is unreadable ({why}); restore it from a backup or start a new study") from None
        if not isinstance(settings, dict):
            raise StudyError(
                f"study: '{f}' holds a JSON {type(settings).__name__}, not the study's settings object; "
                "restore it from a backup or start a new study"
            )
        records_file = f"trials.{worker}.jsonl" if worker else cls.RECORDS
        study = cls(path, settings, records_file=records_file)
        if writer and not worker:
            study.lock = StudyLock(path / "lock")
            study.lock.acquire()
            try:
                study.repair()
            except BaseException:
                study.close()
                raise
        return study

    def repair(self) -> list[str]:
        """Cut a torn last record off this process's records file (writer only); return the warnings.

        Each warning is also printed to stderr and kept in :attr:`repairs`.

        Raises:
            VolumeError: the file cannot be truncated (I/O error, read-only volume).
        """
        with volume_errors(self.records_file):
            cut = repair_jsonl(self.records_file)
        if cut:
            self._warn(
                f"'{self.records_file}' ended in a torn record ({cut} bytes, a write cut short by a kill or a full "
                "volume); removed it, every complete record is kept"
            )
        return self.repairs

    def _warn(self, text: str) -> None:
        self.repairs.append(text)
        _log.warning(text)

    @staticmethod
    def break_lock(path: str | Path, *, force: bool = False) -> dict[str, Any] | None:
        """Remove a study's lock whose writer is gone (``hpo unlock``); return the holder's record.

        Args:
            path: the study directory.
            force: also remove a lock held by another host that hpo cannot prove dead (a
                filesystem without cross-host locks, heartbeat still fresh).

        Raises:
            StudyLockedError: the writer is alive (never removed), or may be and ``force`` is false.
        """
        return StudyLock(Path(path) / "lock").break_stale(force=force)

    def close(self) -> None:
        """Release the lock (and the space reserve) if held."""
        if self.lock:
            self.release_reserve()
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- settings
    def save_settings(self) -> None:
        """Rewrite ``study.json`` atomically (``updated`` set to now).

        Raises:
            VolumeError: the volume refused the write (``study.json`` is unchanged).
        """
        self.settings["updated"] = utcnow()
        text = json.dumps(mask_secrets(self.settings), indent=2, default=_json_default)
        with volume_errors(self.path):
            atomic_write_text(self.path / self.SETTINGS, text + "\n")

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
        """Append a snapshot of ``record`` to this process's records file (one line, fsync'd; all or nothing).

        A credential in ``record.error`` (a trainer's exception that echoed a URL) is masked first,
        in the record itself (:func:`hpo.redact.mask_text`).

        Raises:
            VolumeError: the volume refused the write (the file is as before).
        """
        if record.error:
            record.error = mask_text(record.error)
        line = json.dumps(_finite_or_none(record.to_json()), default=_json_default, allow_nan=False, separators=(",", ":"))
        with self._append_lock, volume_errors(self.records_file):
            try:
                append_line(self.records_file, line)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.release_reserve():
                    raise
                append_line(self.records_file, line)  # the record is safe; the study must stop anyway
                raise

    def keep_reserve(self) -> None:
        """Allocate the space reserve ``<study>/.space-reserve`` (writer only; idempotent).

        Raises:
            VolumeError: the volume has not even :data:`RESERVE_BYTES` free.
        """
        path = self.path / self.RESERVE
        with volume_errors(self.path, needed=self.RESERVE_BYTES):
            if path.is_file() and path.stat().st_size >= self.RESERVE_BYTES:
                return
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.RESERVE_BYTES)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        os.close(fd)
                        fd = -1
                        os.unlink(path)
                        raise
                    os.ftruncate(fd, 0)  # no fallocate here (e.g. some NFS): write zeros instead
                    os.write(fd, bytes(self.RESERVE_BYTES))
                os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)

    def release_reserve(self) -> bool:
        """Free the space reserve; ``True`` if there was one."""
        try:
            os.unlink(self.path / self.RESERVE)
        except FileNotFoundError:
            return False
        return True

    def records(self) -> dict[int, TrialRecord]:
        """All trials, by id, folded from every ``trials*.jsonl`` (last snapshot of an id wins,
        except that a finished snapshot is never replaced by an unfinished one).

        A trial's params never change while it trains: hpo writes a ``running`` snapshot with the
        params it trains with before it starts, and only such a snapshot may bring other params,
        when the id's record is unfinished (an interrupted trial re-run: the core keeps its params,
        the ray backend may give its id to a new trial). So the snapshot that started the current
        run of an id is authoritative for its params: any other later one with other params (a
        finished id's params changed, a hand-edited or foreign line) is ignored, with one warning
        naming the id and both lines, since the trial's folder (``trials/<id>/args.yaml``, its
        weights, ``weights/best.pt``) belongs to the first.

        Never fails on content: a torn final line is skipped; a damaged line in the middle (a torn
        record that a version without repair appended onto) is salvaged when a whole record follows
        the tear, else skipped; both with one warning on stderr per file and problem.
        """
        snapshots: list[tuple[TrialRecord, Path, int]] = []
        for f in sorted(self.path.glob("trials*.jsonl")):
            try:
                with open(f, encoding="utf-8", errors="replace") as fh:
                    lines = fh.read().split("\n")
            except OSError as e:
                self._warn_once(f"{f}:read", f"cannot read '{f}' ({e.strerror}); its trials are not shown")
                continue
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                rec = _parse_record(line)
                if rec is None:
                    if n < len(lines) - 2:  # not the torn tail of a killed writer
                        self._warn_once(f"{f}:{n}", f"'{f}' line {n + 1} is damaged and was skipped")
                    continue
                snapshots.append((rec, f, n + 1))
        out: dict[int, TrialRecord] = {}
        started: dict[int, tuple[Path, int]] = {}  # where the current run of each id began
        for rec, f, at in snapshots:  # files are append-only: later lines are newer
            prev = out.get(rec.id)
            if prev is None or (rec.params != prev.params and not prev.status.finished and rec.status is TrialStatus.RUNNING):
                started[rec.id] = (f, at)  # a new trial, or an unfinished one started again
            elif rec.params != prev.params:
                first_file, first_line = started[rec.id]
                self._warn_once(
                    f"params:{rec.id}:{f}:{at}",
                    f"trial {rec.id} has other params at '{f}' line {at} ({_brief(rec.params)}) than at "
                    f"'{first_file}' line {first_line} ({_brief(prev.params)}), where it started; the later record "
                    "is ignored (the trial's folder and weights belong to the first): remove the wrong line",
                )
                continue
            if prev is None or not (prev.status.finished and not rec.status.finished):
                out[rec.id] = rec
        return dict(sorted(out.items()))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning(text)

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
        done = [r for r in records if r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective)]
        if not done:
            return None
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(done, key=lambda r: (sign * float(r.objective or 0.0), -r.id))

    def ranked(self, records: list[TrialRecord] | None = None) -> list[TrialRecord]:
        """Trials best first (the leaderboard order): complete trials by objective in the study's
        direction, then every other trial; ties and the rest by id. Default: all records."""
        records = list(self.records().values()) if records is None else records
        sign = -1.0 if self.direction == "maximize" else 1.0

        def key(r: TrialRecord) -> tuple:
            scored = r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective)
            return (not scored, sign * float(r.objective or 0.0) if scored else 0.0, r.id)

        return sorted(records, key=key)

    def write_best(self, best: TrialRecord) -> None:
        """Write ``best.yaml`` and copy the trial's weights to ``weights/best.pt`` (both atomic).

        Raises:
            VolumeError: the volume refused a write (the previous files stay as they were).
        """
        doc = {
            "trial": best.id,
            "objective": best.objective,
            "metric": self.settings.get("metric"),
            "direction": self.direction,
            "params": best.params,
            "weights": None,
        }
        with volume_errors(self.path):
            if best.weights and Path(best.weights).is_file():
                atomic_copy(best.weights, self.path / "weights" / "best.pt")
                doc["weights"] = str(self.path / "weights" / "best.pt")
            atomic_write_text(self.path / "best.yaml", yaml.safe_dump(doc, sort_keys=False))

    def trial_dir(self, trial_id: int) -> Path:
        """``<study>/trials/<id>``: the trial's Ultralytics run folder."""
        return self.path / "trials" / str(trial_id)
