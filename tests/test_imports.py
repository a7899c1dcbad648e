"""The import graph of hpo/: no cycle, and the core imports no optional package of this repository.

Every module of ``hpo/`` is read with :mod:`ast` (nothing is imported); its imports of other
``hpo`` modules are collected, every one of them: at module level, inside functions and classes,
and under ``if TYPE_CHECKING:`` (an annotation that needs a module above is a layering fault too).
``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count as imports too.
A cycle is printed as ``a -> b -> a``.

The layers, bottom up (README "Development"): plain settings and result types (settings, config,
result, study, space, data, trial, values, final), the contracts (backend, callbacks, hookspecs),
the plugin registry (plugins) with hpo's own observer plugins below it, validation (validate), the
study loop (ledger, scheduler, resume), the Tuner, the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Top-level packages the core (hpo/) must never import: the KFP package, the benchmarks, and the
#: backend plugins (they register through entry points; the core finds them with pluggy).
FORBIDDEN = ("hpo_kfp", "hpo_bench", "pipelines", "benchmarks", "hpo_optuna", "hpo_ray", "hpo_ultralytics")
#: Cycles known to pass through modules being rewritten, as sorted module lists (strongly connected
#: components); the test fails on any other cycle and xfails while one of these is left. Empty: none.
KNOWN_CYCLES: list[list[str]] = []


def modules(package_dir: Path) -> dict[str, Path]:
    """``{"hpo.x": path}`` for every ``.py`` file under ``package_dir`` (``hpo`` for its ``__init__``)."""
    out = {}
    for p in sorted(package_dir.rglob("*.py")):
        parts = p.relative_to(package_dir.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """Absolute module names that module ``name`` (file ``path``) imports; a ``from pkg import x``
    names ``pkg.x`` when that is a module in ``known``, else ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def absolute(module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node.module, node.level)
            subs = {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known}
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(module)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in ("import_module", "__import__"):
                found.add(node.args[0].value)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def import_graph(package_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(graph, all_imports)``: imports between the package's modules, and every import of each."""
    mods = modules(package_dir)
    everything = {n: imported_names(n, p, set(mods)) for n, p in mods.items()}
    graph = {n: {m for m in imps if m in mods and m != n} for n, imps in everything.items()}
    return graph, everything


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> str:
    """A readable cycle ``a -> b -> ... -> a`` inside a strongly connected component."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(m for m in graph[path[-1]] if m in members)
        back = [m for m in nxt if m in seen]
        if back:
            path.append(back[0])
            return " -> ".join(path[path.index(back[0]) :])
        path.append(nxt[0])
        seen.add(nxt[0])


def test_the_checker_finds_a_cycle_through_a_function_and_through_type_checking(tmp_path):
    """The checker itself, on a small package: a cycle through an import inside a function is found,
    one that exists only under ``if TYPE_CHECKING:`` too, and so is a forbidden import."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text(
        "def f():\n    from .a import x\n    import importlib\n    importlib.import_module('hpo_kfp.cli')\n"
    )
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import T\n")
    (pkg / "d.py").write_text("from pkg import c\n")
    graph, everything = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    assert one_cycle(graph, ["pkg.a", "pkg.b"]) == "pkg.a -> pkg.b -> pkg.a"
    assert "hpo_kfp.cli" in everything["pkg.b"]


def test_the_core_imports_no_optional_package_of_the_repository():
    _, everything = import_graph(ROOT / "hpo")
    bad = sorted(f"{mod} imports {imp}" for mod, imps in everything.items() for imp in imps if imp.split(".")[0] in FORBIDDEN)
    assert not bad, "the core (hpo/) must not import these (contribute through a pluggy hook instead):\n" + "\n".join(bad)


def test_the_import_graph_of_hpo_has_no_cycle():
    graph, _ = import_graph(ROOT / "hpo")
    found = cycles(graph)
    unknown = [c for c in found if c not in KNOWN_CYCLES]
    text = "\n".join(one_cycle(graph, c) for c in found)
    print("import cycles in hpo/:\n" + (text or "none"))
    assert not unknown, "import cycles in hpo/ (break them: move the shared part to its own module):\n" + "\n".join(
        one_cycle(graph, c) for c in unknown
    )
    if found:
        pytest.xfail("known cycles through modules being rewritten:\n" + text)


def test_the_driver_starts_the_trial_forkserver_before_importing_torch(digits_cls, tmp_path):
    """A regression caught by the cpu-small benchmark (a study 1.21x its trainings back to back):
    checking the default trainer imported ``hpo._worker`` (torch, Ultralytics: 3-4 s) in the driver
    before the forkserver started, so the forkserver's own preload ran after it instead of beside it.
    A fresh interpreter builds a real Tuner; the real ``start_workers`` runs, watched."""
    import json
    import subprocess
    import sys

    code = f"""
import json, sys
import hpo.tuner as tu
seen = {{}}
real = tu.start_workers
def watched():
    seen["torch_at_start"] = "torch" in sys.modules
    real()
tu.start_workers = watched
from hpo import Tuner
Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data={str(digits_cls)!r}, iterations=2, epochs=1,
      train_args={{"imgsz": 32}}, output={str(tmp_path)!r}, name="s")
print(json.dumps({{"started": "torch_at_start" in seen, "torch_at_start": seen.get("torch_at_start"),
                  "worker_in_driver": "hpo._worker" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"started": True, "torch_at_start": False, "worker_in_driver": False}
    assert not (tmp_path / "s").exists()  # building a Tuner writes nothing
