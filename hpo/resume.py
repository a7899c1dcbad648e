"""Opening a study: a new one, a resumed one (``--resume``) or a joined one (``--join``), with the
rules of each (:func:`open_study`).

A resume must keep the study's model, space, metric, epochs and backend; its data (path and
content), train args (but :data:`SILENT_TRAIN_ARGS`) and trainer too unless ``allow_changes``,
which records them as a new settings version. A joined process needs a live writer and every
stored setting. Each refusal is one line with the diff and the fix; nothing is written.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

from . import ultra
from .config import TuneConfig
from .errors import SettingsChangedError, StudyError
from .files import volume_errors
from .plugins import backends, get_backend
from .study import Study, settings_versions, utcnow
from .trial import ULTRALYTICS_TRAINER
from .values import format_duration

__all__ = ["open_study", "SILENT_TRAIN_ARGS"]

_log = logging.getLogger("hpo.tuner")

#: Ultralytics train args that may change between the runs of one study without a word: they change
#: where and how fast a trial trains, or what it prints, not what it measures. A change of any other
#: train arg (``imgsz``, ``batch``, ``classes``, ``fraction``, ``amp``, ``seed``, ...), of the data
#: (its path or its YAML's content: names, splits) or of the trainer is refused on resume unless
#: ``allow_changes`` (CLI ``--allow-changes``), and always refused for a joined process.
SILENT_TRAIN_ARGS = frozenset({"workers", "device", "cache", "verbose", "plots"})


def open_study(cfg: TuneConfig, *, allow_changes: bool = False) -> Study:
    """Open the study of ``cfg``: create it, resume it (``cfg.resume``) or join it (``cfg.join``).

    Raises:
        StudyError: the study exists without ``resume``, is missing with ``resume`` or ``join``,
            or a resume or join breaks the rules (one line with the diff and the fix; nothing written).
        hpo.StudyLockedError: another live process writes the study.
        VolumeError: the volume refused a write.
    """
    path = cfg.study_dir
    if cfg.join:
        if not Study.exists(path):
            raise StudyError(f"join: there is no study at '{path}' to join; start it first without --join (same --output/--name)")
        worker = re.sub(r"[^A-Za-z0-9._-]", "_", f"{socket.gethostname()}-{os.getpid()}")
        study = Study.open(path, worker=worker)
        fixed = {k: v for k, v in cfg.identity().items() if k != "data"}  # the data: with _measured_changes
        diff = "; ".join(
            x
            for x in (
                _changed(study.settings, {**fixed, "options": cfg.options.model_dump(mode="json")}),
                *_measured_changes(study.settings, cfg),
            )
            if x
        )
        if diff:
            raise StudyError(f"join: the running study's settings differ ({diff}); join with the stored settings")
        _check_join(study, cfg)
        # its proof of life, held until the study is closed: a trial of a process that lost it is
        # taken over by a live process of the study (hpo.ledger.StudyLedger.claim_lost)
        study.hold_process_lock()
        return study
    if Study.exists(path):
        if not cfg.resume:
            raise StudyError(f"study: '{path}' already exists; pass --resume to continue it or choose another --name")
        study = Study.open(path, writer=True)
        dead = study.lock.took_over if study.lock else None
        if dead:
            _log.warning(
                f"took over the lock of a writer that is gone (host {dead.get('host')} pid "
                f"{dead.get('pid')}, heartbeat {dead.get('age_s', 0):.0f} s ago)"
            )
        try:
            _resume_settings(study, cfg, allow_changes=allow_changes)
        except BaseException:
            study.close()
            raise
        return study
    if cfg.resume:
        raise StudyError(f"resume: there is no study at '{path}' to resume; drop --resume to start it")
    settings = cfg.to_settings()
    settings["versions"] = _versions(cfg)
    study = Study.create(path, settings)
    cfg.data.write(path)
    return study


def _resume_settings(study: Study, cfg: TuneConfig, *, allow_changes: bool) -> None:
    """Check a resume's settings against the stored ones and record what it changes.

    The model, space, metric, epochs and backend must match; the data (path and content), the
    train args other than :data:`SILENT_TRAIN_ARGS` and the trainer must match unless
    ``allow_changes``, which makes them a new settings version (``resumes[]`` gets
    ``settings`` and ``allowed_changes``). ``<study>/data.yaml`` is rewritten from the data as
    checked. An ``iterations`` below the study's finished trials leaves the stored total as it
    is (the run has nothing to do).

    Raises:
        SettingsChangedError: a refused change (one line with the diff and the fix; nothing written).
        VolumeError: the volume refused a write.
    """
    stored = study.settings
    fixed = {k: v for k, v in cfg.identity().items() if k != "data"}
    detail = _changed(stored, fixed)
    if detail:
        raise SettingsChangedError(
            f"resume: the study's settings changed ({detail}); resume with the stored settings or start a new --name",
            detail,
        )
    ran_by = _run_by_other_backend(study, cfg.backend)  # the stored backend is the given one here
    if ran_by:
        raise StudyError(
            f"resume: study.json names backend '{cfg.backend}', but {ran_by} (was study.json edited?); "
            "put back the backend that ran the study and resume with it, or start a new --name"
        )
    measured = "; ".join(_measured_changes(stored, cfg))
    if measured and not allow_changes:
        raise SettingsChangedError(
            f"resume: settings that change what a trial measures differ from the study's ({measured}); start a new "
            "study (another --name), or pass --allow-changes to continue this one with them (hpo show then marks "
            "each trial's settings)",
            measured,
        )
    changes = {k: v for k, v in cfg.to_settings().items() if k not in cfg.identity() and stored.get(k) != v}
    if "iterations" in changes and cfg.iterations is not None and cfg.iterations < len(study.finished()):
        del changes["iterations"]  # the stored total never drops below the finished trials: nothing to do
    entry: dict[str, Any] = {"at": utcnow(), "changed": changes}
    if measured:
        if _normal(stored.get("data")) != _normal(cfg.data.source):
            changes["data"] = cfg.data.source
        entry.update(settings=max(settings_versions(stored), default=0) + 1, allowed_changes=measured)
    with volume_errors(study.path):
        # the trials from now on train on what study.json says (also heals a study whose data.yaml an
        # older hpo left behind its recorded data_resolved)
        cfg.data.write(study.path)
    stored.setdefault("resumes", []).append(entry)
    stored.update(changes)
    study.save_settings()


def _run_by_other_backend(study: Study, backend: str) -> str | None:
    """What in the study's own files shows that another backend ran it, or ``None``: its stored
    ``options`` are not this backend's options, or it has trials, no ``<study>/<backend>/`` state
    folder and the state folder of another installed backend (each built-in backend keeps its state
    in ``<study>/<name>/``). Resuming with the wrong backend would start from an empty state
    (Optuna would hand out trial ids the study already holds)."""
    installed = backends()
    cls = installed.get(backend)
    stored = study.settings.get("options")
    if cls is not None and isinstance(stored, dict) and stored and not set(stored) <= set(cls.Options.model_fields):
        owner = [n for n, c in installed.items() if n != backend and set(stored) <= set(c.Options.model_fields)]
        whose = f"the options of backend '{owner[0]}'" if owner else f"no options of backend '{backend}'"
        return f"its stored options ({', '.join(sorted(stored))}) are {whose}"
    if study.records() and not (study.path / backend).is_dir():
        others = [n for n in installed if n != backend and (study.path / n).is_dir()]
        if others:
            return f"'{study.path / others[0]}' holds the state of backend '{others[0]}' and there is no '{study.path / backend}'"
    return None


def _changed(stored: dict[str, Any], given: dict[str, Any]) -> str:
    """``"key: stored X != given Y; ..."`` for the keys of ``given`` whose stored value differs; ``""`` if none."""
    diff = [k for k in given if _normal(stored.get(k)) != _normal(given[k])]
    return "; ".join(f"{k}: stored {_short(stored.get(k))} != given {_short(given[k])}" for k in diff)


def _check_join(study: Study, cfg: TuneConfig) -> None:
    """A joined process needs a live writer (the study's lock, :meth:`hpo.lock.StudyLock.live_holder`)
    and the running study's ``iterations`` and ``time_budget``. A finished study that nobody writes
    is let through with the same totals: the run has nothing to do (a late KFP worker).

    Raises:
        StudyError: no live writer (the fix: ``--resume``), or other totals (the fix: the stored ones).
    """
    from .lock import StudyLock

    stored = study.settings
    asked = {"iterations": cfg.iterations, "time_budget": cfg.time_budget}
    mismatch = _changed(stored, asked)
    total, budget = stored.get("iterations"), stored.get("time_budget")
    if StudyLock(study.path / "lock").live_holder() is None:
        done = len(study.finished())
        finished = (total is not None and done >= total) or (
            budget is not None and float(stored.get("elapsed_s") or 0.0) >= float(budget)
        )
        if finished and not mismatch:
            return
        raise StudyError(
            f"join: no process is running the study '{study.path}' ({done} of {total if total is not None else 'uncapped'} "
            "trials finished, its lock is free); --join adds a process to a running study: continue this one with --resume"
        )
    if mismatch:
        want = f"--iterations {total}" if total is not None else "no --iterations"
        want += f" --time-budget {format_duration(float(budget))}" if budget is not None else ""
        raise StudyError(f"join: the running study's totals differ ({mismatch}); join with {want}")


#: How a train arg or data key that one side does not set is shown in a diff.
_UNSET = "(unset)"


def _measured_changes(stored: dict[str, Any], cfg: TuneConfig) -> list[str]:
    """``"field: stored X != given Y"`` for each setting that changes what a trial measures and
    differs between the stored study (``study.json``) and ``cfg``: the data's path, the data YAML's
    content (names, splits, ...), a classification folder's classes (``data_classes``: a class
    folder renamed, added or removed; studies from before it was stored skip it), every train arg
    but :data:`SILENT_TRAIN_ARGS`, the trainer."""
    out = []
    if _normal(stored.get("data")) != _normal(cfg.data.source):
        out.append(f"data: stored {_short(stored.get('data'))} != given {_short(cfg.data.source)}")
    old_data, new_data = stored.get("data_resolved"), cfg.data.content or cfg.data.source
    if isinstance(old_data, dict) and isinstance(new_data, dict):  # a folder's is its path: compared above
        a, b = _normal(old_data), _normal(new_data)
        for key in [*a, *(k for k in b if k not in a)]:
            if key == "names" and a.get(key) != b.get(key):
                out += _names_changes(a.get(key), b.get(key))
            elif a.get(key) != b.get(key):
                out.append(f"data {key}: stored {_short(a.get(key, _UNSET))} != given {_short(b.get(key, _UNSET))}")
    old_classes, new_classes = stored.get("data_classes"), cfg.data.classes
    if isinstance(old_classes, list) and new_classes and old_classes != new_classes:  # a folder's classes
        out += _names_changes(old_classes, new_classes)
    old_args, new_args = _normal(stored.get("train_args") or {}), _normal(cfg.train_args)
    for key in sorted(set(old_args) | set(new_args)):
        if key not in SILENT_TRAIN_ARGS and old_args.get(key, _UNSET) != new_args.get(key, _UNSET):
            out.append(
                f"train arg {key}: stored {_short(old_args.get(key, _UNSET))} != given {_short(new_args.get(key, _UNSET))}"
            )
    old_trainer = stored.get("trainer") or ULTRALYTICS_TRAINER
    if old_trainer != cfg.trainer:
        out.append(f"trainer: stored {old_trainer} != given {cfg.trainer}")
    return out


def _names_changes(old: Any, new: Any) -> list[str]:
    """The class names that differ: a changed count, else up to three changed names."""

    def by_index(names: Any) -> dict[str, Any]:
        if isinstance(names, list):
            return {str(i): n for i, n in enumerate(names)}
        if not isinstance(names, dict):
            return {}
        return {
            str(k): names[k]
            for k in sorted(names, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k)))
        }

    def text(m: dict[str, Any]) -> str:
        return f"{len(m)} classes ({', '.join(str(v) for v in list(m.values())[:3])}{', ...' if len(m) > 3 else ''})"

    a, b = by_index(old), by_index(new)
    if len(a) != len(b):
        return [f"data names: stored {text(a)} != given {text(b)}"]
    changed = [k for k in a if a[k] != b.get(k)]
    out = [f"data names[{k}]: stored {a[k]!r} != given {b.get(k)!r}" for k in changed[:3]]
    return out + ([f"{len(changed) - 3} more names differ"] if len(changed) > 3 else [])


def _normal(x: Any) -> Any:
    """``x`` as stored in ``study.json``: JSON values, credentials masked. So a resumed or joined
    study compares the masked forms: the same storage URL with another password (a rotated one)
    is the same setting, and a stored setting from before masking matches the given one."""
    import json

    from .redact import mask_secrets

    return json.loads(json.dumps(mask_secrets(x), sort_keys=True, default=str))


def _short(x: Any) -> str:
    import json

    text = json.dumps(x, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _versions(cfg: TuneConfig) -> dict[str, str]:
    import importlib.metadata
    import platform

    out = {"python": platform.python_version(), "ultralytics": ultra.version()}
    library = get_backend(cfg.backend).library
    for key, dist in (("hpo", "hpo-yolo"), ("torch", "torch"), *(((library, library),) if library else ())):
        if dist:
            try:
                out[key] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return out
