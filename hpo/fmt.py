"""One precision rule for the objectives and parameters hpo shows: :func:`format_value`.

Every view that shows an objective or a parameter value uses it: ``hpo show``, the leaderboard
(:mod:`hpo.report`), the progress lines (:mod:`hpo.progress`), the final stage's block
(:mod:`hpo.final`), the plots' labels and the report (:mod:`hpo.plots`) and the last lines of
``hpo tune``. Stored values (``trials.jsonl``, ``best.yaml``, ``--json``, ``--csv``) keep full
precision; only what is shown is rounded.

This module imports nothing of hpo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["format_value", "SIGNIFICANT_DIGITS", "count_of", "format_counts"]

#: Significant digits of a shown float: 5 tells apart objectives that differ in the 4th decimal
#: (mAP 0.43291 vs 0.43295 would both read 0.4329 at 4), and covers the 5 decimals Ultralytics'
#: own tuner rounds its proposals to (``ultralytics/engine/tuner.py``: ``round(v, 5)``) for values in [0.1, 1).
SIGNIFICANT_DIGITS = 5


def count_of(n: Any, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``, ``"0 trials"``: a count with its noun in the right number
    (English: the plural adds ``s``; ``n`` other than a number is shown as given with the plural)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_counts(counts: Mapping[str, int]) -> str:
    """Counts per status as every view shows them: ``"complete 6, pruned 2"``, zeros left out, in
    the mapping's order (``""`` when every count is 0)."""
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def format_value(value: Any) -> str:
    """How hpo shows an objective or a parameter value.

    Args:
        value: a float (``SIGNIFICANT_DIGITS`` significant digits, Python's ``g`` format:
            ``0.43291139602661133`` -> ``"0.43291"``, ``0.000123456`` -> ``"0.00012346"``,
            ``1e-07`` -> ``"1e-07"``, ``3.0`` -> ``"3"``; ``nan``/``inf`` as Python writes them),
            an int or any other value (``str``), or ``None`` (``"-"``).

    Returns:
        The text.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    try:  # numpy scalars
        import numbers

        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            return format_value(float(value))
    except ImportError:  # pragma: no cover - numbers is stdlib
        pass
    return str(value)
