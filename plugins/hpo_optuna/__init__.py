"""hpo backend ``optuna``: Optuna's samplers and pruners, run through hpo's core.

``hpo tune --backend optuna`` (or ``Tuner(backend="optuna")``): TPE (multivariate, seeded by
``--seed``) by default, Hyperband pruning on the per-epoch objective, the Optuna study stored as
a journal file in the study directory (``<study>/optuna/journal.log``), ``--concurrent-trials N`` trials at
once, and more processes or pods on the same volume with ``--join``; ``--storage
postgresql://...`` needs the ``postgres`` extra (psycopg 3). See ``docs/optuna.md`` and ``docs/scaling.md``.

Importing this package does not import optuna; the backend imports it when a study starts.
"""

from __future__ import annotations

from hpo import Backend, hookimpl

from ._backend import JOURNAL, OptunaBackend, OptunaOptions, distributions, resolve_storage

__all__ = ["OptunaBackend", "OptunaOptions", "distributions", "resolve_storage", "JOURNAL", "hpo_register_backends"]


@hookimpl
def hpo_register_backends() -> list[type[Backend]]:
    """Register the optuna backend."""
    return [OptunaBackend]
