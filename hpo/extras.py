"""Optional parts of hpo and the extra that installs each: a missing one is one line, exit 2.

The base install (``pip install hpo-yolo``) holds the core, the CLI and the study files; training
(``yolo``), the backends (``optuna``, ``ray``), MLflow (``mlflow``), the KFP component (``kfp``),
``hpo k8s apply`` (``k8s``), PostgreSQL storage (``postgres``) and the study's plots (``plots``:
matplotlib, plotly, Optuna's plots and fANOVA) are extras; ``all`` is every one. The demo datasets
(``hpo datasets make``, ``hpo demo``) need Pillow and scikit-learn, which the ``yolo`` extra installs.
"""

from __future__ import annotations

import importlib.util
import sys

from .errors import ConfigError

__all__ = ["DISTRIBUTION", "EXTRA_OF", "MissingExtra", "require", "install_hint", "missing_extra", "installed"]

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
    "PIL": "yolo",
    "matplotlib": "plots",
    "plotly": "plots",
}


class MissingExtra(ConfigError):
    """A feature's library is not installed (exit 2); the message names the extra to install."""


def install_hint(extra: str) -> str:
    """``pip install 'hpo-yolo[EXTRA]'`` (``pip install -e '.[EXTRA]'`` in a checkout)."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: pip install -e '.[{extra}]')"


def installed(module: str) -> bool:
    """Whether ``module`` (an import name, e.g. ``"kfp.kubernetes"``) can be imported; it is not imported.

    A module that ``sys.modules`` holds as ``None`` (Python's mark of "not importable") counts as missing.
    """
    if module in sys.modules and sys.modules[module] is None:
        return False
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
    if installed(module):
        return
    extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
    raise MissingExtra(f"{feature or module}: needs the Python package '{module}', which is not installed; {install_hint(extra)}")


def missing_extra(error: ImportError) -> MissingExtra | None:
    """The :class:`MissingExtra` for an ``ImportError`` of a library that an extra installs, else ``None``.

    The command line's safety net: a command that imported a missing optional library without
    :func:`require` still ends with the one line naming the extra (exit 2).

    Args:
        error: the ``ImportError`` (``ModuleNotFoundError``) raised by an import.

    Returns:
        ``MissingExtra`` naming the module and its extra (:data:`EXTRA_OF`), or ``None`` when the
        module is not one an extra installs, or its top-level package is installed (a bug or a
        broken install: not the user's input).
    """
    name = getattr(error, "name", None) or ""
    top = name.split(".")[0]
    if top not in EXTRA_OF or installed(top):  # an installed library's own broken import is not a missing extra
        return None
    return MissingExtra(f"{name}: needs the Python package '{top}', which is not installed; {install_hint(EXTRA_OF[top])}")
