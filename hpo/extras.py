"""Optional parts of hpo and the extra that installs each: a missing one is one line, exit 2.

The base install (``pip install hpo-yolo``) holds the core, the CLI and the study files; training
(``yolo``), the backends (``optuna``, ``ray``), MLflow (``mlflow``), the KFP component (``kfp``),
``hpo k8s apply`` (``k8s``) and PostgreSQL storage (``postgres``) are extras; ``all`` is every one.
"""

from __future__ import annotations

import importlib.util

from .errors import ConfigError

__all__ = ["DISTRIBUTION", "EXTRA_OF", "MissingExtra", "require", "install_hint"]

#: hpo's distribution name on PyPI ("hpo" there is an unrelated project).
DISTRIBUTION = "hpo-yolo"

#: The extra that installs a library (top-level import name -> extra).
EXTRA_OF = {
    "ultralytics": "yolo",
    "torch": "yolo",
    "sklearn": "yolo",
    "optuna": "optuna",
    "ray": "ray",
    "mlflow": "mlflow",
    "kfp": "kfp",
    "kubernetes": "k8s",
    "psycopg": "postgres",
}


class MissingExtra(ConfigError):
    """A feature's library is not installed (exit 2); the message names the extra to install."""


def install_hint(extra: str) -> str:
    """``pip install 'hpo-yolo[EXTRA]'`` (``pip install -e '.[EXTRA]'`` in a checkout)."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: pip install -e '.[{extra}]')"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def require(module: str, extra: str | None = None, feature: str | None = None) -> None:
    """Fail with :class:`MissingExtra` unless ``module`` can be imported (it is not imported here).

    Args:
        module: import name, e.g. ``"optuna"`` or ``"kfp.kubernetes"``.
        extra: the extra that installs it (default: :data:`EXTRA_OF` of its top-level name).
        feature: what needs it, for the message (default: ``module``).

    Raises:
        MissingExtra: ``module`` is not installed.
    """
    if _installed(module):
        return
    extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
    raise MissingExtra(f"{feature or module}: needs the Python package '{module}', which is not installed; {install_hint(extra)}")
