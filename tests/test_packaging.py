"""The built wheel as a KFP user installs it: import names that cannot clash with a user's own
``pipelines/`` package, the light ``kfp`` install (no torch, Ultralytics, Ray or MLflow), the
manifests shipped in the wheel, and one-line errors naming the extra that is missing.

Real installs: the wheel is built from this checkout and installed with its ``kfp`` extra into a
fresh venv (no system site-packages) by pip, from the package index / pip's cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ultralytics", "ray", "mlflow", "optuna", "cv2")  # kfp itself imports the kubernetes client


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import shutil

    # built from a copy of the repository's files (git's view), so no stale build/ output can slip in
    src = tmp_path_factory.mktemp("src") / "hpo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("hpo_yolo-*.whl")
    return whl


@pytest.fixture(scope="module")
def kfp_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with ``hpo-yolo[kfp]`` installed from the wheel."""
    venv = tmp_path_factory.mktemp("venv") / "kfp-only"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[kfp]"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def _user_repo(tmp_path: Path) -> Path:
    """A user's KFP repository with its own ``pipelines/`` package, outside the checkout."""
    repo = tmp_path / "my-kfp-repo"
    (repo / "pipelines").mkdir(parents=True)
    (repo / "pipelines" / "__init__.py").write_text("USER_PACKAGE = True\n")
    return repo


def _run(venv: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HPO_IMAGE")}
    full.update(env, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    return subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def test_wheel_has_unambiguous_top_level_names_and_the_manifests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"hpo", "hpo_kfp", "hpo_bench", "hpo_optuna", "hpo_ray", "hpo_ultralytics"}
    for f in (
        "hpo/manifests/kustomization.yaml",
        "hpo/manifests/pvc.yaml",
        "hpo/manifests/pv-hostpath.yaml",
        "hpo/manifests/secret-template.yaml",
        "hpo/manifests/nfs/kustomization.yaml",
        "hpo/manifests/nfs/pvc-rwx.yaml",
        "hpo_kfp/components.py",
        "hpo_kfp/report.py",
        "hpo_bench/__main__.py",
    ):
        assert f in names, f
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert "Name: hpo-yolo" in meta
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    base = [ln for ln in requires if "extra ==" not in ln]
    assert not any(h in ln for ln in base for h in ("torch", "ultralytics", "ray", "mlflow", "kfp", "optuna", "kubernetes"))
    for extra in ("yolo", "optuna", "ray", "mlflow", "kfp", "k8s", "postgres", "all", "test"):
        assert f"Provides-Extra: {extra}" in meta, extra


@pytest.mark.slow  # a fresh venv: pip installs kfp and its dependencies (about 3 min here)
def test_kfp_install_beside_a_users_pipelines_package(kfp_venv, tmp_path):
    """The issue's 'done when': a repo with its own pipelines/ imports hpo's component and compiles a pipeline."""
    repo = _user_repo(tmp_path)
    code = textwrap.dedent(
        """
        import json, sys
        import pipelines                                   # the user's own package
        from kfp import compiler, dsl
        from hpo_kfp import configure_tuning_task, make_tune_component
        from hpo_kfp.step import run_tune_step, whole_numbers   # helpers the component uses
        from hpo_kfp.report import study_report_html
        hpo_tune = make_tune_component(image="registry.example.com/team/hpo:0.1.0")

        @dsl.pipeline(name="user")
        def p(pvc_name: str = "my-pvc") -> None:
            t = hpo_tune(model="yolov8n.yaml", data="coco8/data.yaml", iterations=4, epochs=2)
            configure_tuning_task(t, pvc_name=pvc_name, accelerator_count=1, memory="8Gi", shm_size="1Gi")

        compiler.Compiler().compile(p, "p.yaml")
        print(json.dumps({"user": pipelines.USER_PACKAGE, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
    """
        % (HEAVY,)
    )
    r = _run(kfp_venv, ["python", "-c", code], repo)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"user": True, "loaded": []}  # no torch, ultralytics, ray, mlflow, optuna, cv2
    docs = list(yaml.safe_load_all((repo / "p.yaml").read_text()))
    container = docs[0]["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]
    assert container["image"] == "registry.example.com/team/hpo:0.1.0"
    assert container["resources"]["resourceMemoryRequest"] == "9216Mi" and container["resources"]["cpuRequest"] == 4
    pvc = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-hpo-tune"]["pvcMount"][0]
    assert pvc["pvcNameParameter"] == {"componentInputParameter": "pvc_name"} and pvc["mountPath"] == "/mnt/hpo"
    # the CLI compiles too, with the user's image
    r = _run(kfp_venv, ["hpo", "pipelines", "compile", "out", "--image", "registry.example.com/team/hpo:0.1.0"], repo)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (repo / "out").iterdir()) == [
        "compare_backends.yaml",
        "hpo_tune_component.yaml",
        "joined_workers.yaml",
        "train_then_tune.yaml",
    ]


@pytest.mark.slow  # a fresh venv: pip installs kfp and its dependencies (about 3 min here)
def test_k8s_apply_dry_run_uses_the_installed_manifests(kfp_venv, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    r = _run(kfp_venv, ["hpo", "k8s", "apply", "--dry-run", "--namespace", "team-a"], scratch)
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.startswith("# hpo k8s apply --dry-run: 2 objects from ")
        and "site-packages/hpo/manifests" in r.stdout.splitlines()[0]
    )
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [d["kind"] for d in docs] == ["PersistentVolume", "PersistentVolumeClaim"]
    assert docs[1]["metadata"]["namespace"] == "team-a"
    r = _run(kfp_venv, ["hpo", "k8s", "apply", "manifests/nfs", "--dry-run"], scratch)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [d["kind"] for d in docs] == ["PersistentVolume", "PersistentVolumeClaim"]
    assert docs[1]["spec"]["accessModes"] == ["ReadWriteMany"] and docs[1]["metadata"]["name"] == "hpo-data-rwx"


@pytest.mark.slow  # a fresh venv: pip installs kfp and its dependencies (about 3 min here)
def test_a_missing_extra_is_one_line_naming_it(kfp_venv, tmp_path):
    cases = [
        (["hpo", "tune", "--backend", "optuna", "--model", "yolov8n-cls.yaml", "--data", "d", "--output", "o"], "[yolo]"),
        (["hpo", "datasets", "make", "digits-cls", "o"], "[yolo]"),  # Pillow and scikit-learn
        (["hpo", "datasets", "make", "digits-det", "o"], "[yolo]"),
        (["hpo", "demo", "--out", "o"], "[yolo]"),
        (["hpo", "plot", "o"], "[plots]"),  # matplotlib
        (["hpo", "plot", "o", "--no-html"], "[plots]"),
    ]
    for args, extra in cases:
        r = _run(kfp_venv, args, tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("hpo: error: ") and f"pip install 'hpo-yolo{extra}'" in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()  # nothing written
    # hpo backends: each backend's library version or that it is not installed, and the extra it needs
    r = _run(kfp_venv, ["hpo", "backends", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    found = {b["name"]: b for b in json.loads(r.stdout)}
    assert {n: (b["version"], b["usable"], b["install"].split(" (")[0]) for n, b in found.items()} == {
        "optuna": (None, False, "pip install 'hpo-yolo[yolo,optuna]'"),
        "ray": (None, False, "pip install 'hpo-yolo[yolo,ray]'"),
        "ultralytics": (None, False, "pip install 'hpo-yolo[yolo]'"),
    }


def test_a_backend_whose_library_is_missing_names_its_extra(tmp_path):
    """A backend plugin whose library is not installed: one line, exit 2, before anything is written."""
    plugin = tmp_path / "plugin" / "hpo_missing_lib_backend.py"
    plugin.parent.mkdir()
    plugin.write_text(
        textwrap.dedent("""
        from hpo import Backend, Suggestion, hookimpl

        class NeedsLib(Backend):
            name = "needs-optuna-like"
            library = "hpo_test_library_that_is_not_installed"
            def ask(self): return Suggestion({})
            def tell(self, record): pass

        @hookimpl
        def hpo_register_backends():
            return [NeedsLib]
    """)
    )
    code = textwrap.dedent("""
        import sys
        import hpo_missing_lib_backend as m
        from hpo.plugins import backends, get_plugin_manager
        get_plugin_manager().register(m); backends.cache_clear()
        from hpo.cli import main
        sys.argv = ["hpo", "tune", "--backend", "needs-optuna-like", "--model", "yolov8n-cls.yaml", "--data", "d", "--output", "o"]
        main()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        "hpo: error: backend 'needs-optuna-like': needs the Python package 'hpo_test_library_that_is_not_installed', "
        "which is not installed; pip install 'hpo-yolo[all]' (in a checkout: pip install -e '.[all]')\n"
    )
    assert not (tmp_path / "o").exists()


def test_extras_name_each_feature():
    from hpo.extras import EXTRA_OF, MissingExtra, require

    require("yaml")  # installed: nothing happens
    with pytest.raises(
        MissingExtra, match=r"^MLflow tracking: needs the Python package 'hpo_no_such_mlflow'.*pip install 'hpo-yolo\[mlflow\]'"
    ):
        require("hpo_no_such_mlflow", "mlflow", "MLflow tracking")
    assert MissingExtra("x").exit_code == 2
    assert EXTRA_OF["optuna"] == "optuna" and EXTRA_OF["ultralytics"] == "yolo" and EXTRA_OF["kubernetes"] == "k8s"
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in set(EXTRA_OF.values()):
        assert f"\n{extra} = [" in pyproject, extra


def test_the_plots_extra_installs_what_the_plots_import():
    """A ``[yolo,plots]`` install draws every plot: the ``plots`` extra lists each library hpo/plots.py
    imports (matplotlib, plotly, optuna.visualization), and scikit-learn, which Optuna's fANOVA
    importance fits its forests with."""
    import ast
    import re
    import sys

    line = re.search(r"^plots = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml has no one-line plots extra"
    extra = ast.literal_eval(line.group(1))
    listed = {req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for req in extra}
    source = (ROOT / "hpo" / "plots.py").read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            imported.add(node.module.split(".")[0])
    # numpy (main_effects) comes with the base install (pandas depends on it)
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("hpo", "numpy")}
    assert third_party == {"matplotlib", "plotly", "optuna"}, third_party
    assert "FanovaImportanceEvaluator" in source
    assert third_party | {"scikit-learn"} <= listed, listed
