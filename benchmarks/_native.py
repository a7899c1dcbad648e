"""The one module of ``hpo_bench`` that reaches into a library's private API (the plugins' rule,
``tests/test_plugin_api.py``): timing the iterations of Ultralytics' own ``model.tune``.

Ultralytics 8.4's native tuner (``ultralytics/engine/tuner.py``) saves each iteration's result
with ``Tuner._save_local_result(result)``; the benchmark wraps it to note the time of every
iteration as it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["on_native_result"]


def on_native_result(callback: Callable[[dict[str, Any]], None]) -> None:
    """Call ``callback(result)`` after the native tuner saved each iteration's result (in this process).

    Args:
        callback: gets the iteration's result dict (``iteration``, ``save_dirs``, ...).
    """
    from ultralytics.engine import tuner as native

    original = native.Tuner._save_local_result

    def save_and_report(self: Any, result: dict[str, Any]) -> None:
        original(self, result)
        callback(result)

    native.Tuner._save_local_result = save_and_report  # type: ignore[method-assign]
