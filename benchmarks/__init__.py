"""hpo's benchmark suite: the backends compared at equal budget, with hpo's own overhead measured.

Run ``python -m hpo_bench run --suite cpu-small`` (or ``--quick``); see ``benchmarks/README.md``.
"""
