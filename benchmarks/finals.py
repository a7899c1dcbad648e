"""Final trainings: a configuration trained for the full schedule with fresh seeds, scored on the test split.

Every score of the protocol goes through :func:`train_final_records`, for every contender's
incumbent (``model.tune``'s included), the noise floor and the fidelity experiment. It calls hpo's
public final-training function :func:`hpo.train_final` (issue 27 item 1): the same code that trains
trials, then Ultralytics' validation of ``best.pt`` on the test split. ``hpo.train_final`` is
resumable by itself: a seed whose run completed in ``output`` is reused, not trained again.

A record (one per seed, JSON-able): :class:`hpo.FinalRecord`'s fields (``seed``, ``status``,
``split`` (``test``, or ``val`` when the data has none), ``objective_val`` (the objective of
``best.pt`` on the validation split), ``objective_test`` (on ``split``), ``val_metrics``,
``test_metrics``, ``weights``, ``duration_s``, ``error``, ...) with ``epochs`` replaced by the
run's per-epoch validation rows (``final_epochs`` keeps the count), plus ``run_dir`` and ``impl``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["HPO_IMPL", "final_impl", "train_final_records", "read_results_csv"]

#: What produced every final record (recorded with each record and sitting).
HPO_IMPL = "hpo.train_final"


def final_impl() -> str:
    """The final-training function the protocol uses: :data:`HPO_IMPL`."""
    return HPO_IMPL


def read_results_csv(run_dir: Path) -> list[dict[str, float]]:
    """Ultralytics' per-epoch ``results.csv`` of a run folder as rows of floats (``[]`` if absent)."""
    f = Path(run_dir) / "results.csv"
    if not f.is_file():
        return []
    rows = []
    with open(f, encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row = {}
            for k, v in r.items():
                try:
                    row[k.strip()] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def train_final_records(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Train ``spec["params"]`` once per seed of ``spec["seeds"]`` by :func:`hpo.train_final` and score each run.

    Args:
        spec: ``model`` (YAML name or ``.pt``), ``data``, ``params``, ``train_args`` (fixed; the
            seed is set per run), ``epochs``, ``seeds`` (a list), ``output`` (folder; a re-run
            continues it), ``metric``; other keys (``task``, ``out``) are ignored here.

    Returns:
        One record per seed that has one (module docstring), in ``seeds`` order; a bad input
        (:class:`hpo.HpoError`) gives one ``failed`` record per seed with its one-line message.
    """
    import hpo

    try:
        result = hpo.train_final(
            model=spec["model"],
            data=spec["data"],
            params=dict(spec["params"]),
            train_args=dict(spec["train_args"]),
            epochs=int(spec["epochs"]),
            seeds=[int(s) for s in spec["seeds"]],
            output=spec["output"],
            metric=spec["metric"],
        )
    except hpo.HpoError as e:  # bad input: a failure with its one line, never a score
        return [
            {"seed": s, "status": "failed", "error": str(e), "objective_test": None, "split": None, "impl": HPO_IMPL}
            for s in spec["seeds"]
        ]
    out = []
    for r in result.records:
        d = r.to_json()
        run_dir = Path(r.weights).parent.parent if r.weights else None
        d["run_dir"] = str(run_dir) if run_dir else None
        d["final_epochs"] = d.pop("epochs")
        d["epochs"] = list(r.curve) or (read_results_csv(run_dir) if run_dir else [])
        d["impl"] = HPO_IMPL
        out.append(d)
    return out
