"""The one place this plugin touches Ultralytics' private API (``ultralytics.engine.tuner.Tuner``).

The native genetic tuner has no public "propose one configuration" call, so hpo builds its
``Tuner`` without running ``__init__`` (no model build, no callbacks: only the proposal state) and
calls its private methods, all of Ultralytics 8.4.x (``ultralytics/engine/tuner.py``):

- ``Tuner._constrain(hyp)``: a configuration rounded and clipped as the native tuner does;
- ``Tuner._mutate(n, sigma)``: one proposal, a fitness-weighted parent among the ``n`` best rows
  of ``tune_results.ndjson``, mutated (raises ``RuntimeError`` after 200 tries without an
  untried configuration);
- ``Tuner._result_record(...)``, ``Tuner._save_local_result(row)``, ``Tuner._json_default``: the
  native ``tune_results.ndjson`` rows, so users find the files they know;
- ``Tuner._load_local_results()`` and ``Tuner._local_results_to_array(results)``, which
  ``_mutate`` calls to read the whole ``tune_results.ndjson`` back on every proposal: replaced on
  this instance by the rows held in memory (the same rows the file holds, as JSON gives them
  back) and their array, grown a row at a time, so a proposal does not re-read and re-parse the
  file (what is left of its cost, the native sort and duplicate check over every row, is the
  algorithm's own).

A change of these in a new Ultralytics release breaks here and only here
(``tests/test_backend_ultralytics.py`` runs them for real).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["NativeProposals"]


class NativeProposals:
    """Ultralytics' native proposal state for one study.

    Args:
        space: the native space ``{key: (low, high)}`` (:meth:`hpo.SearchSpace.to_ultralytics`).
        train_args: the study's fixed train args (the native tuner keeps them in ``args``).
        tune_dir: where ``tune_results.ndjson`` lives (``<study>/ultralytics``).
        int_keys: the space's integer keys. The native tuner rounds only its module's
            ``CFG_INT_KEYS`` (in ``_constrain`` and ``_mutate``'s resolution), which lack ``batch`` and
            ``imgsz`` (:func:`hpo.ultra.integer_args`); for its calls here the module sees these too.
    """

    def __init__(
        self, space: dict[str, Any], train_args: dict[str, Any], tune_dir: Path, *, int_keys: frozenset[str] = frozenset()
    ):
        from ultralytics.cfg import get_cfg
        from ultralytics.engine.tuner import Tuner as NativeTuner
        from ultralytics.utils import colorstr

        native = NativeTuner.__new__(NativeTuner)
        native.space = space
        native.args = get_cfg(overrides=dict(train_args))
        native.tune_dir = tune_dir
        native.tune_file = tune_dir / "tune_results.ndjson"
        native.mongodb = None
        native.prefix = colorstr("Tuner: ")
        self._tuner = native
        self.tune_file: Path = native.tune_file
        import numpy as np

        self._np = np
        self._rows: list[dict[str, Any]] = []  # the file's rows, as json.loads gives them
        self._history = np.zeros((0, 1 + len(space)))  # _local_results_to_array of the rows, with spare rows
        self._n = 0
        native._load_local_results = lambda: list(self._rows)  # type: ignore[method-assign]
        native._local_results_to_array = lambda results: self._history[: self._n] if self._n else None  # type: ignore[method-assign]
        self._int_keys = frozenset(int_keys)

    @contextlib.contextmanager
    def _integers(self) -> Iterator[None]:
        """The native tuner module's ``CFG_INT_KEYS`` with the space's integer keys, for one call."""
        import ultralytics.engine.tuner as module

        original = module.CFG_INT_KEYS
        module.CFG_INT_KEYS = original | self._int_keys
        try:
            yield
        finally:
            module.CFG_INT_KEYS = original

    def mutate(self, parents: int, sigma: float, *, seed: int | None, draw: int) -> dict[str, Any]:
        """One native proposal (``Tuner._mutate(n=parents, sigma=sigma)``).

        With ``seed``, the native code's ``np.random.default_rng()`` is seeded with ``[seed, draw]``.

        Raises:
            RuntimeError: the native tuner found no untried configuration.
        """
        import numpy as np

        if seed is None:
            with self._integers():
                return dict(self._tuner._mutate(n=parents, sigma=sigma))
        original = np.random.default_rng
        np.random.default_rng = lambda *a, **k: original([seed, draw])
        try:
            with self._integers():
                return dict(self._tuner._mutate(n=parents, sigma=sigma))
        finally:
            np.random.default_rng = original

    def uniform(self, *, seed: int | None, draw: int, attempt: int = 0) -> dict[str, Any]:
        """One configuration drawn uniformly from the space, through the native ``Tuner._constrain``
        (floats rounded to 5 decimals, integer keys to whole numbers, clipped to the bounds).

        With ``seed``, drawn from ``np.random.default_rng([seed, draw, attempt])``.
        """
        import numpy as np

        rng = np.random.default_rng(None if seed is None else [seed, draw, attempt])
        hyp = {k: float(b[0] + rng.random() * (b[1] - b[0])) for k, b in self._tuner.space.items()}
        with self._integers():
            return dict(self._tuner._constrain(hyp))

    def result_record(
        self, iteration: int, fitness: float, params: dict[str, Any], metrics: dict[str, Any], save_dirs: dict[str, str]
    ) -> dict[str, Any]:
        """A native ``tune_results.ndjson`` row (``Tuner._result_record``)."""
        return dict(self._tuner._result_record(iteration, fitness, params, metrics, save_dirs))

    def save_result(self, row: dict[str, Any]) -> None:
        """Append a row to ``tune_results.ndjson`` (``Tuner._save_local_result``) and to the rows in memory."""
        self._tuner._save_local_result(row)
        self._add(row)

    def set_results(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``tune_results.ndjson`` with ``rows`` (atomic) and hold them in memory."""
        from hpo.files import atomic_write_text

        atomic_write_text(self.tune_file, "".join(self.dumps(r) + "\n" for r in rows))
        self._rows, self._n = [], 0
        for r in rows:
            self._add(r)

    def _add(self, row: dict[str, Any]) -> None:
        """Hold ``row`` as the file does (a JSON round trip) and its ``_local_results_to_array`` row."""
        np = self._np
        row = json.loads(self.dumps(row))
        self._rows.append(row)
        args, space = self._tuner.args, self._tuner.space
        values = [row.get("fitness", 0.0)] + [row.get("hyperparameters", {}).get(k, getattr(args, k)) for k in space]
        if self._n == len(self._history):  # grow by doubling: amortised O(1) per row
            grown = np.zeros((max(16, 2 * len(self._history)), self._history.shape[1]))
            grown[: self._n] = self._history[: self._n]
            self._history = grown
        self._history[self._n] = np.asarray(values, dtype=float)
        self._n += 1

    def dumps(self, row: dict[str, Any]) -> str:
        """A row as one JSON line, as the native tuner writes it (``Tuner._json_default``)."""
        return json.dumps(row, default=self._tuner._json_default)
