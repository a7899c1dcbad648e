"""The exceptions hpo raises.

Every error derives from :class:`HpoError`. Errors of bad input (:class:`ConfigError` and its
subclasses) are raised before any trial starts and before anything is written; the CLI turns
them into one line on stderr and exit code 2. :class:`StudyError` (and :class:`StudyLockedError`)
is not bad input but a study directory that cannot be used as asked; its exit code is 2 too.
:class:`RunFailedError` means the study ran but produced no usable result (exit code 1). The CLI
exits with the error's ``exit_code``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

__all__ = [
    "HpoError",
    "ConfigError",
    "SpaceError",
    "DataError",
    "BackendNotFoundError",
    "StudyLockedError",
    "SettingsChangedError",
    "StudyError",
    "RunFailedError",
    "VolumeError",
    "EngineError",
    "TrialLostError",
    "HpoWarning",
    "closest",
]


class HpoError(Exception):
    """Base class of every error raised by hpo.

    Its message never holds a credential: a password or token in it (a URL a database driver or
    MLflow echoed) is masked when the error is made (:func:`hpo.redact.mask_text`).
    """

    exit_code = 1

    def __init__(self, *args: object) -> None:
        from .redact import mask_text

        super().__init__(*(mask_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(HpoError, ValueError):
    """Bad input: a setting, argument or file that cannot be used. Exit code 2."""

    exit_code = 2


class SpaceError(ConfigError):
    """A search-space entry is invalid (unknown key, inverted bounds, wrong type, ...)."""


class DataError(ConfigError):
    """The dataset (data YAML or folder) is missing or unreadable."""


class BackendNotFoundError(ConfigError):
    """No installed backend has the requested name. Exit code 2."""


class StudyError(HpoError):
    """The study directory cannot be created, resumed or read as asked. Exit code 2.

    Not a :class:`ConfigError`: the settings may be valid while the study directory is not (it
    exists without ``--resume``, is locked, or its ``study.json`` is damaged).
    """

    exit_code = 2


class StudyLockedError(StudyError):
    """Another live process holds the study's lock. Exit code 2."""


class SettingsChangedError(StudyError):
    """A resume gives settings that differ from the study's where a change is refused (the model,
    space, metric, epochs, backend; or, without ``allow_changes``, the data, train args or trainer).
    Exit code 2; nothing is written.

    Attributes:
        detail: what differs, ``"key: stored X != given Y; ..."``.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class RunFailedError(HpoError):
    """The study ran but every trial failed (or the run broke). Exit code 1."""

    exit_code = 1


class VolumeError(HpoError):
    """The output volume refused a write (full, over quota, read-only or an I/O error). Exit code 1.

    The study stops at once and stays readable: every finished trial is kept and the trials that
    were running are re-run by ``--resume`` once the volume is fixed.
    """

    exit_code = 1


class EngineError(HpoError):
    """An engine the study scales out on stayed unreachable past its bound (e.g. the optuna
    backend's database storage, ``--storage-wait``). Exit code 1.

    Like :class:`VolumeError`, the study stops at once and stays resumable: every finished trial is
    kept, the trials that were running are recorded ``interrupted``, and ``--resume`` re-runs them
    once the engine is back. The message names the engine (credentials masked).
    """

    exit_code = 1


class TrialLostError(HpoError):
    """A trial's worker went away (its process or node): the backend records the trial
    ``interrupted`` with this reason, not as a result, and runs it again itself under its id with its
    params, later in the same run if the run goes on (else ``--resume`` does), up to the backend's
    limit (the ray backend's lost Ray workers: a trial lost a fourth time is ``failed``). The record's
    error says so."""


class HpoWarning(UserWarning):
    """Input that is valid but risky (a read-only dataset, ``val=False``): the study runs, worse.

    :func:`hpo.validate.build_config` issues one per finding with :func:`warnings.warn` (so the
    Python API shows it on stderr) and lists them in ``TuneConfig.warnings``; the CLI prints
    those as ``hpo: warning: ...`` lines instead.
    """


def closest(word: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice to ``word``, or ``""``.

    Args:
        word: the unknown name the user gave.
        choices: the valid names.
        aliases: known other names for a choice (``{"lr": "lr0"}``), tried before the spelling
            match (difflib, cutoff 0.6).
    """
    valid = list(choices)
    alias = (aliases or {}).get(word.strip().lower())
    if alias in valid:
        return f" (did you mean '{alias}'?)"
    match = difflib.get_close_matches(word.strip(), valid, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
