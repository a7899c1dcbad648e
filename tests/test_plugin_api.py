"""Plugins, the KFP package and the benchmarks use only hpo's public API, and wrap their libraries'
private parts in one place.

Walks every module of ``plugins/`` (and the example third-party backend of docs/backends.md), of
``pipelines/`` (``hpo_kfp``) and of ``benchmarks/`` (``hpo_bench``) with ``ast`` and fails on:

- an import of a name that ``hpo`` does not export (``hpo.__all__``), or of an ``hpo`` submodule
  that is not one of :data:`PUBLIC_MODULES` (``hpo.study``, ``hpo.runner``, ``hpo._worker``...),
  or of a name such a public submodule does not export (its ``__all__``);
- a private module or name of another package (``from optuna.x import _y``, ``hpo_optuna._storage``,
  ``obj._attr`` on anything but ``self``/``cls``) outside the package's ``_native.py``, the one
  module per plugin that wraps and documents its library's private API. A package's own modules
  (``from ._native import ...``, ``hpo_kfp.step`` inside ``pipelines/``) are its own business.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import hpo

ROOT = Path(__file__).resolve().parents[1]
#: The packages held to the rule: folder -> import name (plugins are found by folder name).
PACKAGES = {"plugins": None, "pipelines": "hpo_kfp", "benchmarks": "hpo_bench"}
MODULES = (
    sorted((ROOT / "plugins").rglob("*.py"))
    + [ROOT / "tests" / "plugins" / "hpo_median_random.py"]
    + sorted((ROOT / "pipelines").rglob("*.py"))
    + sorted(p for p in (ROOT / "benchmarks").rglob("*.py") if "results" not in p.parts)
)
WRAPPER = "_native.py"
#: Documented standard-library names that merely start with an underscore.
STDLIB = {("os", "_exit")}
#: hpo's submodules whose ``__all__`` is public API besides ``hpo.__all__`` (listed in hpo's
#: module docstring, README "Development" and docs/backends.md).
PUBLIC_MODULES = (
    "hpo.settings",
    "hpo.plugins",
    "hpo.testing",
    "hpo.report",
    "hpo.show",
    "hpo.files",
    "hpo.extras",
    "hpo.preflight",
    "hpo.pretrained",
    "hpo.data",
    "hpo.ultra",
    "hpo.datasets",
    "hpo.simulate",
    "hpo.clock",
)


def _own_package(path: Path) -> str:
    """The import name of the package ``path`` belongs to (``hpo_kfp``, ``hpo_optuna``, ...)."""
    rel = path.relative_to(ROOT).parts
    if rel[0] == "plugins":
        return rel[1] if len(rel) > 2 else rel[1].removesuffix(".py")
    if rel[0] == "tests":
        return path.stem
    return PACKAGES.get(rel[0]) or rel[0]


def _public_names(module: str) -> set[str]:
    return set(getattr(importlib.import_module(module), "__all__", ()))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level for n in n.names}
    package = _own_package(path) if path.is_relative_to(ROOT) else ""
    out = []

    def hpo_module(module: str, where: str, names: list[str] | None) -> None:
        if module not in PUBLIC_MODULES:
            out.append(f"{where}: {module} is a core submodule (import from hpo or a public submodule)")
        elif names is not None:
            out.extend(f"{where}: {module}.{n} is not exported by {module}" for n in names if n not in _public_names(module))

    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hpo."):
                    hpo_module(alias.name, where, None)
                elif alias.name.split(".")[0] == package:
                    continue
                elif path.name != WRAPPER and any(_private(part) for part in alias.name.split(".")):
                    out.append(f"{where}: import {alias.name} (a private module)")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [a.name for a in node.names]
            if node.module.startswith("hpo."):
                hpo_module(node.module, where, names)
            elif node.module == "hpo":
                out += [
                    f"{where}: hpo.{n} is not exported by hpo"
                    for n in names
                    if n not in hpo.__all__ and f"hpo.{n}" not in PUBLIC_MODULES
                ]
            elif node.module.split(".")[0] == package:
                continue
            elif path.name != WRAPPER:
                if any(_private(part) for part in node.module.split(".")):
                    out.append(f"{where}: from {node.module} import ... (a private module)")
                out += [f"{where}: from {node.module} import {n} (private)" for n in names if _private(n)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and path.name != WRAPPER:
            base = node.value
            if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in own or (base.id, node.attr) in STDLIB):
                continue
            out.append(f"{where}: .{node.attr} (a private attribute of another library's object)")
    return out


def test_plugins_kfp_and_benchmarks_use_only_the_public_api():
    assert len(MODULES) >= 30, MODULES
    found = [v for m in MODULES for v in violations(m)]
    assert not found, "\n".join(found)


def test_the_check_finds_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from hpo.study import atomic_write_text\nimport hpo._worker\nfrom hpo import Tuner, _secret\n"
        "from optuna.trial import _frozen\nx = trial._trial_id\nself._ok = 1\nfrom ray._raylet import GcsClient\n"
        "from hpo.files import atomic_write_text, _umask\nfrom hpo import atomic_write_text, StudyLoop, RunFailed\n"
        "from hpo_optuna._storage import display_url\nfrom hpo.report import study_summary\nfrom hpo import plugins\n"
    )
    found = violations_of(bad)
    assert len(found) == 11, "\n".join(found)


def violations_of(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return violations(path)
    finally:
        ROOT = saved


def test_the_docs_example_backend_is_the_tested_one():
    """docs/backends.md shows tests/plugins/hpo_median_random.py verbatim (the conformance suite runs it)."""
    doc = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    example = (ROOT / "tests" / "plugins" / "hpo_median_random.py").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in doc
    assert len(example.splitlines()) <= 50


def test_the_public_submodules_are_documented_and_have_an_all():
    doc = hpo.__doc__ or ""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for module in PUBLIC_MODULES:
        assert _public_names(module), f"{module} has no __all__"
        assert f":mod:`{module}`" in doc, f"hpo's docstring does not list {module}"
        assert f"`{module}`" in readme, f"README does not list {module}"
    leaked = {"StudyLoop", "atomic_write_text", "repair_jsonl", "volume_error", "WRITE_ERRNOS", "RunFailed", "StudyLocked"}
    assert not leaked & set(hpo.__all__)
    contract = {
        "TuneSettings",
        "TuneConfig",
        "StudyView",
        "TrialRecorder",
        "TuneResult",
        "TunerCallback",
        "Backend",
        "Controller",
    }
    assert contract <= set(hpo.__all__)
