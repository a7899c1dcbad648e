"""hpo's benchmark suite: the backends compared at equal budget, with hpo's own overhead measured.

Run ``python -m benchmarks run --suite cpu-small`` (or ``--quick``); see ``benchmarks/README.md``.
"""
