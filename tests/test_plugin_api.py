"""Plugins use only the core's public API and wrap their libraries' private parts in one place.

Walks every module of ``plugins/`` (and the example third-party backend of docs/backends.md) with
``ast`` and fails on:

- an import of an ``hpo`` submodule (``hpo.study``, ``hpo.runner``, ``hpo._worker``...) or of a name
  that ``hpo`` does not export (``hpo.__all__``);
- a private name of another library (``from optuna.x import _y``, ``obj._attr`` on anything but
  ``self``/``cls``) outside the plugin's ``_native.py``, the one module per plugin that wraps and
  documents its library's private API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hpo

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "plugins").rglob("*.py")) + [ROOT / "tests" / "plugins" / "hpo_median_random.py"]
WRAPPER = "_native.py"
#: Documented standard-library names that merely start with an underscore.
STDLIB = {("os", "_exit")}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level for n in n.names}
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hpo."):
                    out.append(f"{where}: import {alias.name} (a core submodule; import from hpo)")
                elif path.name != WRAPPER and any(_private(part) for part in alias.name.split(".")):
                    out.append(f"{where}: import {alias.name} (a private module)")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.startswith("hpo."):
                out.append(f"{where}: from {node.module} import ... (a core submodule; import from hpo)")
            elif node.module == "hpo":
                out += [f"{where}: hpo.{a.name} is not exported by hpo" for a in node.names if a.name not in hpo.__all__]
            elif path.name != WRAPPER:
                if any(_private(part) for part in node.module.split(".")):
                    out.append(f"{where}: from {node.module} import ... (a private module)")
                out += [f"{where}: from {node.module} import {a.name} (private)" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and path.name != WRAPPER:
            base = node.value
            if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in own or (base.id, node.attr) in STDLIB):
                continue
            out.append(f"{where}: .{node.attr} (a private attribute of another library's object)")
    return out


def test_plugins_use_only_the_public_api():
    assert len(MODULES) >= 8, MODULES
    found = [v for m in MODULES for v in violations(m)]
    assert not found, "\n".join(found)


def test_the_check_finds_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from hpo.study import atomic_write_text\nimport hpo._worker\nfrom hpo import Tuner, _secret\n"
        "from optuna.trial import _frozen\nx = trial._trial_id\nself._ok = 1\nfrom ray._raylet import GcsClient\n"
    )
    found = violations_of(bad)
    assert len(found) == 6, found


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
