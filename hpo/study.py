"""The study directory on the volume: settings, append-only trial records, best, lock.

Layout of ``<output>/<name>/``::

    study.json          settings, space, backend, versions, created/updated (UTC ISO 8601)
    trials.jsonl        one JSON snapshot of a trial per line, append-only and fsync'd;
                        the last snapshot of an id wins (the source of truth); at the end of
                        a run, a large file is compacted (Study.compact_records)
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
import re
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .errors import StudyError
from .files import _fsync_dir, append_line, atomic_copy, atomic_write_text, file_mode, repair_jsonl, volume_errors
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


class _StoredRecord(TrialRecord):
    """A trial record as the study holds it in memory: shared by every caller, so read-only.

    Setting an attribute raises ``AttributeError``; ``copy.copy``, ``copy.deepcopy`` and pickling
    give a plain (mutable) :class:`TrialRecord`. Its ``params``, ``epochs`` and other containers are
    shared too (``applied`` may be the very dict ``params`` is): change a ``copy.deepcopy`` of the
    record, never the record in place.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_sealed"):
            raise AttributeError(
                f"trial {self.id}'s record is the study's stored snapshot and read-only; change a copy (copy.deepcopy(record))"
            )
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get("_sealed"):
            raise AttributeError(f"trial {self.id}'s record is the study's stored snapshot and read-only")
        super().__delattr__(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrialRecord):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in TrialRecord.__dataclass_fields__)

    __hash__ = None  # type: ignore[assignment]  # as TrialRecord: mutable in general

    def __repr__(self) -> str:
        return "TrialRecord" + TrialRecord.__repr__(self)[len(type(self).__qualname__) :]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_plain_record, ({f: getattr(self, f) for f in TrialRecord.__dataclass_fields__},))


def _plain_record(fields: dict[str, Any]) -> TrialRecord:
    if fields.get("applied") is fields.get("params"):  # shared in memory (_compact): not in a copy
        fields["applied"] = dict(fields["params"])
    return TrialRecord(**fields)


#: Lines of records files parsed by every :class:`Study` of this process, and bytes read (for
#: tests and benchmarks: :func:`record_read_stats`).
_STATS = {"lines_parsed": 0, "bytes_read": 0, "file_reads": 0}


def record_read_stats() -> dict[str, int]:
    """How much this process has read of records files so far, over every :class:`Study`:
    ``lines_parsed`` (JSON lines decoded into records), ``bytes_read`` and ``file_reads`` (reads of
    new bytes). A copy; the counters only grow."""
    return dict(_STATS)


def _parse_record(line: str | bytes) -> TrialRecord | None:
    """A record from one line, or the last whole record glued after a tear (``{"id":...`` onward).

    Returns a read-only :class:`_StoredRecord`, or ``None`` when nothing in the line parses.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    _STATS["lines_parsed"] += 1
    candidates = [line]
    glued = line.rfind('{"id":')
    if glued > 0:
        candidates.append(line[glued:])
    for text in candidates:
        try:
            doc = json.loads(text)
            if isinstance(doc, dict) and "id" in doc:
                return _stored(_compact(doc))
        except (ValueError, TypeError, KeyError):
            continue
    return None


_FIELDS = TrialRecord.__dataclass_fields__
_DEFAULTS = {n: f.default for n, f in _FIELDS.items() if f.default is not MISSING}
_FACTORIES = {n: f.default_factory for n, f in _FIELDS.items() if f.default_factory is not MISSING}
_STATUS_OF = {s.value: s for s in TrialStatus}


def _stored(doc: dict[str, Any]) -> _StoredRecord:
    """The sealed, read-only record of a decoded snapshot, built without the dataclass's
    ``__init__`` (one ``__dict__`` update instead of a guarded ``__setattr__`` per field: 3x faster
    over the 10,000 records of a large study); the same fields, defaults and checks as
    :meth:`TrialRecord.from_json`.

    Raises:
        TypeError: ``id`` or ``params`` is missing (as the dataclass's ``__init__`` would).
        ValueError: an unknown ``status``.
    """
    if "id" not in doc or "params" not in doc:
        raise TypeError("a trial record needs 'id' and 'params'")
    values = dict(_DEFAULTS)
    for name, make in _FACTORIES.items():
        if name not in doc:
            values[name] = make()
    values.update((k, v) for k, v in doc.items() if k in _FIELDS)
    status = values["status"]
    values["status"] = status if isinstance(status, TrialStatus) else _STATUS_OF.get(status) or TrialStatus(status)
    rec = object.__new__(_StoredRecord)
    rec.__dict__.update(values)
    rec.__dict__["_sealed"] = True
    return rec


#: Snapshots decoded together in one ``json.loads`` (:func:`_decode_many`).
_BATCH = 256


def _decode_many(snaps: list[_Snap]) -> None:
    """Decode the raw snapshots ``snaps`` (lines in hpo's own form) in batches of :data:`_BATCH`,
    one ``json.loads`` of a JSON array per batch: the decoder then shares each key string across
    the batch (what :func:`_compact` does with ``sys.intern`` for a single line) and the per-call
    cost is paid once. A batch that does not decode as exactly its lines (a damaged line among
    them) is left to the one-line decoder (:meth:`Study._decode`), which names the damaged line."""
    for i in range(0, len(snaps), _BATCH):
        group = snaps[i : i + _BATCH]
        try:
            docs = json.loads(b"[" + b",".join(x.raw or b"null" for x in group) + b"]")
        except ValueError:
            continue
        if not isinstance(docs, list) or len(docs) != len(group):
            continue
        recs: list[TrialRecord] = []
        for x, doc in zip(group, docs, strict=True):
            if not isinstance(doc, dict) or doc.get("status") != x.status.decode():
                break
            if "applied" in doc and doc["applied"] == doc.get("params"):
                doc["applied"] = doc["params"]
            try:
                recs.append(_stored(doc))
            except (ValueError, TypeError, KeyError, AttributeError):
                break
        else:
            _STATS["lines_parsed"] += len(group)
            for x, rec in zip(group, recs, strict=True):
                x.rec, x.raw = rec, None


def _compact(doc: dict[str, Any]) -> dict[str, Any]:
    """A decoded snapshot, held in less memory: its keys interned (every trial repeats the same
    parameter and metric names), and ``applied`` the very dict ``params`` is when they are equal
    (the usual case). From about 6 to 3 KiB per trial of a 26-parameter space."""
    intern = sys.intern
    for name in ("params", "applied", "final_metrics"):
        d = doc.get(name)
        if isinstance(d, dict):
            doc[name] = {intern(k): v for k, v in d.items()}
    rows = doc.get("epochs")
    if isinstance(rows, list):
        doc["epochs"] = [{intern(k): v for k, v in r.items()} if isinstance(r, dict) else r for r in rows]
    if "applied" in doc and doc["applied"] == doc.get("params"):
        doc["applied"] = doc["params"]
    return doc


def _combine(prev: TrialRecord | None, rec: TrialRecord) -> TrialRecord:
    """The fold of a trial's snapshots: a later snapshot wins, except that a finished one is never
    replaced by an unfinished one. Associative, so files and chunks fold apart and then together."""
    if prev is None or not (prev.status.finished and not rec.status.finished):
        return rec
    return prev


def _scored(r: TrialRecord) -> bool:
    return r.status is TrialStatus.COMPLETE and r.objective is not None and math.isfinite(r.objective)


# A snapshot line as hpo writes it starts with its id and its params, a flat object, and holds its
# status after them (``{"id":3,"params":{"lr0":0.01},"status":"complete",...``): enough to fold the
# lines of a file without decoding the snapshots a later one replaces. A line that does not look so
# (another writer's spacing, nested params, a tear with a record glued after it) is decoded in full.
# On Python >= 3.11 with possessive quantifiers: runs of plain bytes are taken whole and never
# backtracked into, 2.6x faster over the 60,000 snapshot lines of a 10,000-trial study (0.44 -> 0.17 s;
# the same matches on every line); Python 3.10 has no possessive quantifiers.
_HEAD = re.compile(
    rb'\{"id":\s*(-?\d+)\s*,\s*"params":\s*(\{(?:[^{}\[\]"]++|"(?:[^"\\]++|\\.)*+")*+\})\s*,'
    if sys.version_info >= (3, 11)
    else rb'\{"id":\s*(-?\d+)\s*,\s*"params":\s*(\{(?:[^{}\[\]"]|"(?:[^"\\]|\\.)*")*\})\s*,'
)
_STATUS = re.compile(rb'"status":\s*"([a-z]+)"')
# hpo's own compact form, recognised without a regex over the params: the id, then the params
# object up to its first ``}``, taken when nothing in it could nest or hide a brace in a string
# (no ``{``, ``[`` or backslash inside, an even number of quotes) and a comma follows; any other
# line goes to :data:`_HEAD`. 3.5x faster than :data:`_HEAD` over the 60,000 lines of a
# 10,000-trial study (0.35 -> 0.10 s with the status), the same id and params bytes.
_ID = re.compile(rb'\{"id":(-?\d+),"params":\{')
_STATUS_AT = b'"status":"'


def _head(line: bytes) -> tuple[int, bytes, bytes | None] | None:
    """The id, params bytes and status bytes (``None`` when not found) of a snapshot line in
    hpo's form (:data:`_HEAD`), or ``None`` when the line is not in that form."""
    m = _ID.match(line)
    if m is not None:
        start = m.end() - 1
        stop = line.find(b"}", start) + 1
        params = line[start:stop]
        if (
            stop
            and line[stop : stop + 1] == b","
            and params.find(b"{", 1) < 0
            and b"[" not in params
            and b"\\" not in params
            and not params.count(b'"') & 1
        ):
            if line.startswith(_STATUS_AT, stop + 1):
                at = stop + 1 + len(_STATUS_AT)
                end = line.find(b'"', at)
                return int(m.group(1)), params, (line[at:end] if end > 0 else None)
            st = _STATUS.search(line, stop + 1)
            return int(m.group(1)), params, (None if st is None else st.group(1))
    h = _HEAD.match(line)
    if h is None:
        return None
    st = _STATUS.search(line, h.end())
    return int(h.group(1)), h.group(2), (None if st is None else st.group(1))


_GLUE = b'{"id":'
_FINISHED_B = frozenset(s.value.encode() for s in TrialStatus if s.finished)
_KNOWN_B = frozenset(s.value.encode() for s in TrialStatus)
#: Bytes read from a records file at once.
_CHUNK = 4 << 20
#: Bytes before the read position kept to recognise a file that was rewritten under the reader.
_TAIL = 64


class _Group:
    """One run of consecutive snapshots of a trial with the same params, as the compaction walks
    a records file (:func:`_needed_lines`): the line numbers (0-based) the fold needs of it."""

    __slots__ = ("pkey", "first", "run", "pick", "pick_done", "run_pick", "run_done")

    def __init__(self, pkey: bytes, k: int):
        self.pkey, self.first = pkey, k
        self.run: int | None = None
        self.pick, self.pick_done = k, False
        self.run_pick, self.run_done = k, False

    def add(self, k: int, status: bytes) -> None:
        """Take the snapshot at line ``k`` (the same trial and params)."""
        finished = status in _FINISHED_B
        if status == b"running" and self.run is None:
            self.run, self.run_pick, self.run_done = k, k, False
        if finished or not self.pick_done:
            self.pick, self.pick_done = k, finished
        if self.run is not None and (finished or not self.run_done):
            self.run_pick, self.run_done = k, finished

    def needed(self) -> set[int]:
        """The group's first snapshot, its first ``running`` one and the two that win the fold
        (over the group, and from that ``running`` one on): the fold of these alone is the fold of
        the group (:func:`_pick` on a subsequence that holds the winner is the winner)."""
        out = {self.first, self.pick}
        if self.run is not None:
            out |= {self.run, self.run_pick}
        return out


def _needed_lines(path: Path) -> tuple[set[int], int] | None:
    """The line numbers (0-based) of the records file ``path`` that :meth:`Study.records` needs,
    and its number of lines; ``None`` when the file is not all whole lines in hpo's own form (a
    torn end, a damaged or foreign line: then it is left as it is, and read as it is).

    Per trial, each run of consecutive snapshots with the same params (what the reader folds into
    one :class:`_Seg`) keeps its first snapshot, its first ``running`` one, and the snapshots that
    win the fold over it and from that ``running`` one on: usually the ``running`` snapshot written
    before the trial trained and its finished one. The per-epoch ``running`` snapshots between them
    (each repeats every earlier epoch's row) are dropped."""
    groups: dict[int, _Group] = {}
    needed: set[int] = set()
    n = 0
    with open(path, "rb") as fh:
        for k, line in enumerate(fh):
            n = k + 1
            if not line.endswith(b"\n"):
                return None  # a torn last line: a writer's repair decides about it
            line = line[:-1]
            head = _head(line)
            if head is None or line.find(_GLUE, 1) >= 0:
                return None
            tid, pkey, status = head
            if status is None or status not in _KNOWN_B:
                return None
            g = groups.get(tid)
            if g is not None and g.pkey != pkey and json.loads(g.pkey) != json.loads(pkey):
                needed |= g.needed()  # other params: a new run of snapshots
                g = None
            if g is None:
                g = groups[tid] = _Group(pkey, k)
            g.add(k, status)
    for g in groups.values():
        needed |= g.needed()
    return needed, n


class _Snap:
    """One snapshot line of a trial, not yet decoded (``raw``) or decoded (``rec``)."""

    __slots__ = ("line", "pkey", "status", "raw", "rec")

    def __init__(self, line: int, pkey: bytes, status: bytes, raw: bytes | None, rec: TrialRecord | None):
        self.line, self.pkey, self.status, self.raw, self.rec = line, pkey, status, raw, rec

    def params(self) -> Any:
        return self.rec.params if self.rec is not None else json.loads(self.pkey)


def _pick(snaps: list[_Snap]) -> _Snap:
    """The snapshot that wins the fold of ``snaps`` (one trial, one params): the last finished one,
    else the last."""
    return next((x for x in reversed(snaps) if x.status in _FINISHED_B), snaps[-1])


class _Seg:
    """Consecutive snapshots of one trial in one file with the same params, folded: ``all`` over
    them all, ``run`` from the first ``running`` one on (what a restart of an unfinished trial with
    other params keeps), with their 1-based line numbers. Holding these instead of every snapshot
    keeps the fold exact (:meth:`Study.records`) at one or two records per trial."""

    __slots__ = ("pkey", "all", "run", "line", "run_line")

    def __init__(self, pkey: bytes, all_: TrialRecord, run: TrialRecord | None, line: int, run_line: int | None):
        self.pkey, self.all, self.run, self.line, self.run_line = pkey, all_, run, line, run_line

    def same(self, other: _Seg) -> bool:
        return self.pkey == other.pkey or self.all.params == other.all.params

    def then(self, other: _Seg) -> _Seg:
        """This segment followed by ``other`` (the same params)."""
        if self.run is not None:
            return _Seg(self.pkey, _combine(self.all, other.all), _combine(self.run, other.all), self.line, self.run_line)
        return _Seg(self.pkey, _combine(self.all, other.all), other.run, self.line, other.run_line)


class _RecordFile:
    """What a :class:`Study` has read of one records file: the bytes consumed (whole lines only),
    the lines counted, each trial's segments (:class:`_Seg`), and the file's identity."""

    __slots__ = ("path", "offset", "lines", "fold", "ident", "tail")

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.lines = 0
        self.fold: dict[int, list[_Seg]] = {}
        self.ident: tuple[int, int] | None = None
        self.tail = b""


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
        #: a joined process's proof of life, ``<study>/joined/<worker>.lock`` (:meth:`hold_process_lock`)
        self.process_lock: StudyLock | None = None
        self.repairs: list[str] = []
        self._warned: set[str] = set()
        self._append_lock = threading.Lock()
        # --- the records, read once and then kept up to date (see records())
        self._cache_lock = threading.RLock()
        self._files: dict[str, _RecordFile] = {}  # by file name
        self._names: list[str] = []  # the records files, as last listed
        self._listed: int | None = None  # the folder's mtime (ns) when they were listed
        self._merged: dict[int, TrialRecord] = {}  # the fold over every file, by id
        self._in_order = True  # _merged's keys are in id order
        self._max_id = -1
        self._fin_ids: list[int] = []  # finished trials, by id
        self._fin: list[TrialRecord] = []  # their records, in the same order
        self._fin_log: list[int] = []  # ids in the order they became finished (finished_since)
        self._open: set[int] = set()  # ids whose record is unfinished (running, interrupted)
        self._best: TrialRecord | None = None
        self._best_direction: str | None = None  # the direction _best is for; None: recompute
        self._pending: list[str] = []  # warnings about the records, logged by the next read

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
        """Compact this process's records file when it is large (:meth:`compact_records`), then
        release the lock (and the space reserve) if held, and a joined process's
        :attr:`process_lock` (its file is removed: the process is gone)."""
        try:
            if self.lock or self.process_lock:
                self.compact_records()
        finally:
            if self.process_lock:
                self.process_lock.release()
                self.process_lock = None
            if self.lock:
                self.release_reserve()
                self.lock.release()
                self.lock = None

    # --- which process writes which records file, and whether it is gone
    JOINED = "joined"

    def hold_process_lock(self) -> None:
        """Take this joined process's proof of life: an ``flock`` on ``<study>/joined/<worker>.lock``
        (a :class:`hpo.lock.StudyLock`, with its heartbeat where ``flock`` proves nothing across
        hosts), held until :meth:`close`. The study's writer needs none: the study lock ``<study>/lock``
        is its proof. Other processes read it with :meth:`process_gone`. A no-op for the writer.

        Raises:
            StudyLockedError: a live process already holds it (the same host name and pid).
            VolumeError: the volume refused the file.
        """
        if self.records_file.name == self.RECORDS or self.process_lock is not None:
            return
        worker = self.records_file.name[len("trials.") : -len(".jsonl")]
        folder = self.path / self.JOINED
        with volume_errors(folder):
            folder.mkdir(exist_ok=True)
            lock = StudyLock(folder / f"{worker}.lock")
            lock.acquire()
        self.process_lock = lock

    def process_gone(self, records_file: str) -> bool:
        """Whether the process that appends to the records file named ``records_file`` is proven gone.

        ``trials.jsonl`` is the writer's: gone when the study lock ``<study>/lock`` has no live holder;
        ``trials.<worker>.jsonl`` a joined process's: gone when ``<study>/joined/<worker>.lock`` has
        none (no file: it ended, or it ran an hpo that kept no such file, as every process did
        before ``--resume`` took over its trials); any other name is no process's. The proof is the study lock's
        (:meth:`hpo.lock.StudyLock.live_holder`): a free ``flock``, or, on a filesystem where
        ``flock`` proves nothing across hosts, a heartbeat of another host older than
        :data:`LOCK_STALE_AFTER_S`. Never true for this process's own records file.
        """
        if records_file == self.records_file.name:
            return False
        if records_file == self.RECORDS:
            return StudyLock(self.path / "lock").live_holder() is None
        if not (records_file.startswith("trials.") and records_file.endswith(".jsonl")):
            return True  # not named by hpo (a copy made by hand): no process appends to it
        worker = records_file[len("trials.") : -len(".jsonl")]
        return StudyLock(self.path / self.JOINED / f"{worker}.lock").live_holder() is None

    #: A records file smaller than this is left as written by :meth:`compact_records` (little to
    #: gain: about 200 trials of 3 epochs; a 10,000-trial study's file is about 50 MiB).
    COMPACT_MIN_BYTES = 1 << 20

    def compact_records(self, *, min_bytes: int | None = None) -> int | None:
        """Rewrite this process's own records file with only the snapshots that
        :meth:`records` needs, so that a later reader (``hpo show``, ``--resume``, a joined
        process) reads a third of the bytes. Called by :meth:`close` at the end of a run, by the
        process that appends to the file (the writer holds the study lock, a joined process its
        own lock), and only when the file has at least ``min_bytes`` (default
        :data:`COMPACT_MIN_BYTES`).

        Kept per trial: each run of snapshots with one params keeps its first snapshot, its first
        ``running`` one and the ones that win the fold (usually the ``running`` snapshot written
        before the trial trained and its finished one); dropped: the per-epoch ``running``
        snapshots between them, which :meth:`records` never shows once the trial has finished.
        What :meth:`records` returns is unchanged; only line numbers in its warnings change.

        Safe: the kept lines go to a hidden temp file ``.<file>.compact.tmp`` (a name no reader
        takes for a records file), which is fsync'd and read back; only when its fold equals the
        fold of the file (every trial's segments, record for record) does it replace the file
        (``os.replace``, atomic; a reader that has the old file open reads it whole, the next
        read sees a new file and reads it from its start). A kill at any point leaves the old file
        or the new one, and at most the temp file (removed by the next compaction). A file that is
        not all whole lines in hpo's own form (a torn end, a damaged or foreign line) is left as it
        is. Never raises: a full volume or any other error leaves the file as it was (logged at
        debug level).

        Returns:
            The bytes saved, or ``None`` when the file was left as it was.
        """
        path = self.records_file
        tmp = path.with_name(f".{path.name}.compact.tmp")
        try:
            with self._append_lock, self._cache_lock:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # a compaction killed before its rename
                size = os.stat(path).st_size
                if size < (self.COMPACT_MIN_BYTES if min_bytes is None else min_bytes):
                    return None
                found = _needed_lines(path)
                if found is None or len(found[0]) == found[1]:
                    return None
                needed = found[0]
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, file_mode())
                try:
                    with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                        out.writelines(line for k, line in enumerate(src) if k in needed)
                        out.flush()
                        os.fsync(out.fileno())
                    if not self._same_fold(path, tmp):
                        _log.debug("'%s' left as written: its compacted copy does not fold the same", path)
                        os.unlink(tmp)
                        return None
                    if os.stat(path).st_size != size:  # appended to meanwhile (not by hpo): leave it
                        os.unlink(tmp)
                        return None
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
                _fsync_dir(path.parent)
                return size - os.stat(path).st_size
        except (OSError, ValueError) as e:
            _log.debug("'%s' left as written: compaction failed (%s)", path, e)
            return None

    def _same_fold(self, a: Path, b: Path) -> bool:
        """Whether the records files ``a`` and ``b`` fold to the same segments, trial by trial
        (records and whether each segment has a restart), read by a reader of their own."""
        folds = []
        for f in (a, b):
            reader = Study(self.path, self.settings, records_file=f.name)
            fs = _RecordFile(f)
            reader._read(fs)
            if reader._pending or fs.offset != os.stat(f).st_size:
                return False  # a warning (damaged line) or a line left unread: do not touch the file
            folds.append({tid: [(seg.all, seg.run) for seg in segs] for tid, segs in fs.fold.items()})
        return folds[0] == folds[1]

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

        The study's records in memory take the snapshot at once (no re-read of the file); later
        changes to ``record`` do not reach them.

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
                start = append_line(self.records_file, line)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.release_reserve():
                    raise
                start = append_line(self.records_file, line)  # the record is safe; the study must stop anyway
                self._appended(start, line)
                raise
            self._appended(start, line)

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

    # --- the records in memory: read once, then only what was appended since
    def records(self) -> dict[int, TrialRecord]:
        """All trials, by id, folded from every ``trials*.jsonl`` (last snapshot of an id wins,
        except that a finished snapshot is never replaced by an unfinished one).

        The files are read once; each later call reads only the bytes appended since (by this
        process, which knows them without reading, or by joined processes) and the files that
        appeared, so a call costs the same at trial 10 and at trial 10,000. A file rewritten under
        the reader (cut back by a writer's repair, replaced) is read again from its start.

        Returns a new dict (the caller may change it); its records are the study's shared,
        read-only snapshots (:class:`_StoredRecord`: setting an attribute raises; change a
        ``copy.deepcopy``).

        A trial's params never change while it trains: hpo writes a ``running`` snapshot with the
        params it trains with before it starts, and only such a snapshot may bring other params,
        when the id's record is unfinished (an interrupted trial re-run: the core keeps its params,
        the ray backend may give its id to a new trial). So the snapshot that started the current
        run of an id is authoritative for its params: any other later one with other params (a
        finished id's params changed, a hand-edited or foreign line) is ignored, with one warning
        naming the id and both lines, since the trial's folder (``trials/<id>/args.yaml``, its
        weights, ``weights/best.pt``) belongs to the first. (In memory each file holds, per trial,
        its runs of snapshots with one params, folded: :class:`_Seg`.)

        Never fails on content: a torn final line is skipped until it is completed; a damaged line
        in the middle (a torn record that a version without repair appended onto) is salvaged when
        a whole record follows the tear, else skipped; both with one warning (the ``hpo.study`` logger) per file and
        problem.
        """
        with self._cache_lock:
            self._refresh()
            if not self._in_order:
                self._merged = dict(sorted(self._merged.items()))
                self._in_order = True
            return dict(self._merged)

    def finished(self) -> list[TrialRecord]:
        """Finished trials (complete, failed, pruned), by id (a new list of the shared records)."""
        with self._cache_lock:
            self._refresh()
            return list(self._fin)

    def record(self, trial_id: int) -> TrialRecord | None:
        """Trial ``trial_id``'s record (the shared, read-only snapshot), or ``None``."""
        with self._cache_lock:
            self._refresh()
            return self._merged.get(trial_id)

    def trial_count(self, also: Iterable[int] = ()) -> int:
        """How many trial ids the study holds (any status), plus those of ``also`` it does not hold
        (e.g. ids a process has reserved but not yet recorded)."""
        with self._cache_lock:
            self._refresh()
            return len(self._merged) + sum(1 for t in set(also) if t not in self._merged)

    def unfinished(self) -> list[TrialRecord]:
        """Trials without a result (``running`` or ``interrupted``), by id (the shared records)."""
        with self._cache_lock:
            self._refresh()
            return [self._merged[i] for i in sorted(self._open) if i in self._merged]

    def record_files(self, trial_id: int) -> list[str]:
        """The names of the records files holding snapshots of trial ``trial_id`` (name order)."""
        with self._cache_lock:
            self._refresh()
            return [n for n in sorted(self._files) if trial_id in self._files[n].fold]

    def finished_count(self) -> int:
        """How many trials are finished (complete, failed, pruned)."""
        with self._cache_lock:
            self._refresh()
            return len(self._fin)

    def finished_since(self, cursor: int = 0) -> tuple[list[TrialRecord], int]:
        """Trials that finished (or whose finished record changed) since ``cursor``, and the cursor
        to pass next time: for observers that keep their own state up to date trial by trial
        (e.g. :class:`hpo.weights.WeightsKeeper`). ``cursor=0``: every finished trial.

        Returns:
            ``(records, cursor)``: the current record of each such trial (an id at most once, in
            the order they finished), and the new cursor.
        """
        with self._cache_lock:
            self._refresh()
            ids = dict.fromkeys(self._fin_log[cursor:])
            return [self._merged[i] for i in ids if i in self._merged], len(self._fin_log)

    def _refresh(self, *, own: bool = False) -> None:
        """Read what is new in every records file (caller holds ``_cache_lock``).

        This process's own file is left alone while one of its threads appends to it (``own``:
        read it anyway): the appender takes its line in without reading it back."""
        try:
            listed = os.stat(self.path).st_mtime_ns
            if listed != self._listed:  # a file appeared or went: list the folder again
                self._names = sorted(
                    e.name for e in os.scandir(self.path) if e.name.startswith("trials") and e.name.endswith(".jsonl")
                )
                # a change within the filesystem's timestamp granularity leaves the mtime as it
                # was: trust a listing only once the folder has been still for a second
                self._listed = listed if time.time_ns() - listed > 1_000_000_000 else None
        except OSError:
            self._names, self._listed = [], None
        names = self._names
        changed: set[int] = set()
        for gone in [n for n in self._files if n not in names]:  # removed (by hand): its trials go too
            changed |= set(self._files.pop(gone).fold)
        busy = not own and self._append_lock.locked()
        for name in names:
            fs = self._files.get(name)
            if fs is None:
                fs = self._files[name] = _RecordFile(self.path / name)
            if busy and name == self.records_file.name and fs.ident is not None:
                continue
            changed |= self._read(fs)
        self._remerge(changed)
        if not own:
            self._flush_warnings()

    def _read(self, fs: _RecordFile) -> set[int]:
        """Fold the whole lines appended to ``fs`` since the last read; return the ids changed."""
        changed: set[int] = set()
        try:
            with open(fs.path, "rb") as fh:  # an open (not a stat): NFS revalidates on open
                st = os.fstat(fh.fileno())
                ident = (st.st_dev, st.st_ino)
                if fs.ident is not None and (ident != fs.ident or st.st_size < fs.offset):
                    changed |= self._reset(fs)  # replaced, or cut back under us
                if st.st_size == fs.offset:
                    fs.ident = ident
                    return changed
                if fs.tail:  # the bytes before our position must still be those we read
                    fh.seek(fs.offset - len(fs.tail))
                    if fh.read(len(fs.tail)) != fs.tail:
                        changed |= self._reset(fs)
                        fh.seek(0)
                fs.ident = ident
                _STATS["file_reads"] += 1
                pending = b""
                data = fh.read(_CHUNK)
                while data:
                    _STATS["bytes_read"] += len(data)
                    following = fh.read(_CHUNK)
                    pending += data
                    cut = pending.rfind(b"\n") + 1
                    if cut:
                        used, ids = self._fold_lines(fs, pending[:cut], last=not following)
                        changed |= ids
                        pending = pending[used:]
                    data = following
        except FileNotFoundError:
            return changed | self._reset(fs)
        except OSError as e:
            self._warn_once(f"{fs.path}:read", f"cannot read '{fs.path}' ({e.strerror}); its trials are not shown")
        return changed

    def _reset(self, fs: _RecordFile) -> set[int]:
        """Forget what was read of ``fs`` (rewritten or gone); return its ids."""
        ids = set(fs.fold)
        fs.offset, fs.lines, fs.fold, fs.ident, fs.tail = 0, 0, {}, None, b""
        return ids

    def _fold_lines(self, fs: _RecordFile, block: bytes, *, last: bool) -> tuple[int, set[int]]:
        """Fold ``block`` (whole lines, the next ones of ``fs``) into ``fs.fold``; return the bytes
        consumed and the ids changed. All bytes are consumed except a damaged final line of the
        file (``last``), left for the next read: a writer's repair may cut it, or a version
        without repair may append after it (then it is a damaged middle line)."""
        lines = block.split(b"\n")[:-1]
        by_id: dict[int, list[_Snap]] = {}
        damaged: list[int] = []
        n0 = fs.lines
        for k, line in enumerate(lines):
            head = _head(line)
            if head is not None and head[2] in _KNOWN_B and line.find(_GLUE, 1) < 0:
                by_id.setdefault(head[0], []).append(_Snap(n0 + k + 1, head[1], head[2], line, None))
                continue
            if not line.strip():
                continue
            rec = _parse_record(line)  # not in hpo's own form: decode it in full (salvages a glued record)
            if rec is None:
                damaged.append(k)
            else:
                pkey = json.dumps(rec.params, separators=(",", ":"), default=str).encode()
                by_id.setdefault(rec.id, []).append(_Snap(n0 + k + 1, pkey, rec.status.value.encode(), None, rec))
        keep = len(lines)
        if damaged and last and damaged[-1] == max((k for k, ln in enumerate(lines) if ln.strip()), default=-1):
            keep = damaged.pop()  # the file's last line: torn, not (yet) damaged
        for k in damaged:
            self._warn_once(f"{fs.path}:{n0 + k}", f"'{fs.path}' line {n0 + k + 1} is damaged and was skipped")
        if len(by_id) > 1:  # a block of many trials (a first read): decode the snapshots that win together
            _decode_many([x for x in (_pick(snaps) for snaps in by_id.values()) if x.raw is not None and x.line <= n0 + keep])
        changed: set[int] = set()
        for tid, snaps in by_id.items():
            snaps = [x for x in snaps if x.line <= n0 + keep]
            segs = self._segments(fs, snaps)
            if not segs:
                continue
            have = fs.fold.setdefault(tid, [])
            if have and have[-1].same(segs[0]):
                have[-1] = have[-1].then(segs.pop(0))
            have += segs
            changed.add(tid)
        used = sum(len(ln) + 1 for ln in lines[:keep])
        fs.offset += used
        fs.lines += keep
        if used:
            fs.tail = (fs.tail + block[max(0, used - _TAIL) : used])[-_TAIL:]
        return used, changed

    def _segments(self, fs: _RecordFile, snaps: list[_Snap]) -> list[_Seg]:
        """One trial's snapshots of a block as segments, decoding only the snapshots that win
        (per segment: the last finished one, else the last; the same from its first ``running``
        one on); a snapshot that turns out damaged is skipped with a warning."""
        groups: list[list[_Snap]] = []
        for x in snaps:
            if groups and (groups[-1][0].pkey == x.pkey or groups[-1][0].params() == x.params()):
                groups[-1].append(x)
            else:
                groups.append([x])
        out: list[_Seg] = []
        for g in groups:
            first_run = next((i for i, x in enumerate(g) if x.status == b"running"), None)
            all_ = self._fold_snaps(fs, g)
            if all_ is None:
                continue
            run = None if first_run is None else self._fold_snaps(fs, g[first_run:])
            seg = _Seg(g[0].pkey, all_, run, g[0].line, None if first_run is None else g[first_run].line)
            if out and out[-1].same(seg):  # a damaged snapshot split nothing: join them
                out[-1] = out[-1].then(seg)
            else:
                out.append(seg)
        return out

    def _fold_snaps(self, fs: _RecordFile, snaps: list[_Snap]) -> TrialRecord | None:
        """The fold of snapshots with the same params (a later one wins, a finished one is never
        replaced by an unfinished one): the last finished, else the last, decoded alone; all of
        them in order when that one turns out damaged."""
        pick = _pick(snaps)
        rec = self._decode(pick)
        if rec is not None and rec.status.value.encode() == pick.status:
            return rec
        out: TrialRecord | None = None
        for x in snaps:
            r = self._decode(x)
            if r is None:
                self._warn_once(f"{fs.path}:{x.line - 1}", f"'{fs.path}' line {x.line} is damaged and was skipped")
                continue
            out = _combine(out, r)
        return out

    @staticmethod
    def _decode(x: _Snap) -> TrialRecord | None:
        if x.rec is None and x.raw is not None:
            x.rec, x.raw = _parse_record(x.raw), None
        return x.rec

    def _appended(self, start: int, line: str) -> None:
        """Take the snapshot this process just appended at byte ``start`` of its records file into
        memory, without reading the file (caller holds ``_append_lock``)."""
        data = (line + "\n").encode("utf-8")
        with self._cache_lock:
            fs = self._files.get(self.records_file.name)
            if fs is None or fs.ident is None or fs.offset != start:
                if fs is None or fs.offset < start or fs.ident is None:
                    self._refresh(own=True)  # not read up to here yet (e.g. the first append): read it
                return  # (offset > start: a concurrent read got it already)
            self._remerge(self._fold_lines(fs, data, last=False)[1])

    def _remerge(self, ids: set[int]) -> None:
        """Fold the files' records of ``ids`` together (files in name order) and update the
        finished list, the best trial and the feed of :meth:`finished_since`."""
        if not ids:
            return
        files = [self._files[n] for n in sorted(self._files)]
        for tid in sorted(ids):
            rec = self._replay(tid, files)
            old = self._merged.get(tid)
            if rec is old or (rec is not None and old is not None and rec == old):
                continue  # (equal: a file rewritten by its compaction, read again)
            if rec is None or rec.status.finished:
                self._open.discard(tid)
            else:
                self._open.add(tid)
            if rec is None:
                del self._merged[tid]
            else:
                self._merged[tid] = rec
                if old is None and tid < self._max_id:
                    self._in_order = False
                self._max_id = max(self._max_id, tid)
            if old is not None and old.status.finished:
                i = bisect_left(self._fin_ids, tid)
                del self._fin_ids[i], self._fin[i]
            if rec is not None and rec.status.finished:
                i = bisect_left(self._fin_ids, tid)
                self._fin_ids.insert(i, tid)
                self._fin.insert(i, rec)
                self._fin_log.append(tid)
            best = self._best
            if best is not None and old is not None and best.id == tid:
                self._best_direction = None  # the best trial's record changed: recompute when asked
            elif self._best_direction is not None and rec is not None and _scored(rec):
                sign = 1.0 if self._best_direction == "maximize" else -1.0
                if best is None or (sign * float(rec.objective or 0.0), -rec.id) > (
                    sign * float(best.objective or 0.0),
                    -best.id,
                ):
                    self._best = rec

    def _replay(self, tid: int, files: list[_RecordFile]) -> TrialRecord | None:
        """Trial ``tid``'s record: its segments in file-name order, then line order. A segment
        with the current record's params folds into it; one with other params starts the trial
        again from its first ``running`` snapshot if the current record is unfinished, and is
        otherwise ignored with one warning (see :meth:`records`)."""
        rec: TrialRecord | None = None
        pkey = b""
        started: tuple[Path, int] = (Path(), 0)  # where the current run of the trial began
        for fs in files:
            for seg in fs.fold.get(tid, ()):
                if rec is None:
                    rec, pkey, started = seg.all, seg.pkey, (fs.path, seg.line)
                elif seg.pkey == pkey or seg.all.params == rec.params:
                    rec = _combine(rec, seg.all)
                elif not rec.status.finished and seg.run is not None and seg.run_line is not None:
                    if seg.run_line != seg.line:  # its snapshots before the restart are ignored
                        self._warn_params(tid, fs.path, seg.line, seg.all.params, started, rec.params)
                    rec, pkey, started = seg.run, seg.pkey, (fs.path, seg.run_line)
                else:
                    self._warn_params(tid, fs.path, seg.line, seg.all.params, started, rec.params)
        return rec

    def _warn_params(
        self, tid: int, f: Path, at: int, params: dict[str, Any], started: tuple[Path, int], first: dict[str, Any]
    ) -> None:
        self._warn_once(
            f"params:{tid}:{f}:{at}",
            f"trial {tid} has other params at '{f}' line {at} ({_brief(params)}) than at "
            f"'{started[0]}' line {started[1]} ({_brief(first)}), where it started; the later record "
            "is ignored (the trial's folder and weights belong to the first): remove the wrong line",
        )

    def _warn_once(self, key: str, text: str) -> None:
        """A warning about the records, once per study and key; logged when the caller's read
        returns (an append that brings a wrong line is reported by the next read, as on a read)."""
        if key not in self._warned:
            self._warned.add(key)
            self._pending.append(text)

    def _flush_warnings(self) -> None:
        pending, self._pending = self._pending, []
        for text in pending:
            _log.warning(text)

    # --- best
    @property
    def direction(self) -> str:
        return self.settings.get("direction", "maximize")

    def best(self, records: list[TrialRecord] | None = None) -> TrialRecord | None:
        """The complete trial with the best finite objective (ties: the lowest id), or ``None``.

        Without ``records``, of the whole study (kept up to date as records arrive, not searched
        on every call)."""
        if records is None:
            with self._cache_lock:
                self._refresh()
                if self._best_direction != self.direction:
                    self._best = self._best_of(self._fin)
                    self._best_direction = self.direction
                return self._best
        return self._best_of(records)

    def _best_of(self, records: list[TrialRecord]) -> TrialRecord | None:
        done = [r for r in records if _scored(r)]
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
