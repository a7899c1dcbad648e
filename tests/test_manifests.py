"""manifests/ against the Kubernetes schema (offline), ``hpo k8s apply`` (dry run and error paths),
the Dockerfile, and a scan of the repository for credentials."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
HPO = [str(Path(sys.executable).parent / "hpo")]
#: A Kubernetes release whose schema kubernetes-validate ships (v1.32 is supported upstream until 2026).
K8S_VERSION = "1.32.0"


def _manifest_files() -> list[Path]:
    # raycluster.yaml is a KubeRay custom resource: tests/test_manifests_ray.py validates its pod templates
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name not in ("kustomization.yaml", "raycluster.yaml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_is_valid_kubernetes(path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError


def test_validator_catches_a_typo():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = _docs(MANIFESTS / "pvc.yaml")[0]
    doc["spec"]["accessMode"] = doc["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_expected_objects():
    pv = _docs(MANIFESTS / "pv-hostpath.yaml")[0]
    pvc = _docs(MANIFESTS / "pvc.yaml")[0]
    assert pv["kind"] == "PersistentVolume" and pv["spec"]["hostPath"]["path"]
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["key"] == "kubernetes.io/hostname" and len(term["values"]) == 1
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == "hpo-data"
    assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"]
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == pv["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == pv["spec"]["capacity"]["storage"]
    nfs_pv = _docs(MANIFESTS / "nfs" / "pv-nfs.yaml")[0]
    nfs_pvc = _docs(MANIFESTS / "nfs" / "pvc-rwx.yaml")[0]
    assert nfs_pv["spec"]["nfs"]["server"] and nfs_pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert nfs_pvc["spec"]["accessModes"] == ["ReadWriteMany"] and nfs_pvc["spec"]["volumeName"] == nfs_pv["metadata"]["name"]
    secret = _docs(MANIFESTS / "secret-template.yaml")[0]
    from hpo_kfp.platform import SECRET_ENV_KEYS

    assert secret["kind"] == "Secret" and set(secret["stringData"]) == set(SECRET_ENV_KEYS)
    assert all(v == "" for v in secret["stringData"].values())  # a template: no values at all


@pytest.mark.parametrize("folder", ["", "nfs"])
def test_kustomizations_list_existing_files(folder):
    k = yaml.safe_load((MANIFESTS / folder / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization" and k["resources"]
    for r in k["resources"]:
        assert (MANIFESTS / folder / r).is_file(), r
    assert "secret-template.yaml" not in k["resources"]


def test_k8s_apply_dry_run(tmp_path):
    r = subprocess.run(
        [*HPO, "k8s", "apply", str(MANIFESTS), "--dry-run", "--namespace", "team-a", "--node", "gpu-7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# hpo k8s apply --dry-run: 2 objects")
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [d["kind"] for d in docs] == ["PersistentVolume", "PersistentVolumeClaim"]  # kustomization order
    assert "namespace" not in docs[0]["metadata"]  # PVs are cluster-scoped
    assert docs[1]["metadata"]["namespace"] == "team-a"
    assert docs[0]["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["gpu-7"]
    r = subprocess.run([*HPO, "k8s", "apply", str(MANIFESTS / "nfs"), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert docs[1]["metadata"] == {
        "name": "hpo-data-rwx",
        "labels": {"app.kubernetes.io/part-of": "hpo"},
        "namespace": "kubeflow",
    }


def test_k8s_apply_without_a_cluster_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    env["HOME"] = str(tmp_path)
    r = subprocess.run([*HPO, "k8s", "apply", str(MANIFESTS)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1
    assert r.stderr.startswith("hpo: error: kubernetes: no cluster configuration") and "--dry-run" in r.stderr
    assert "Traceback" not in r.stderr
    # a kubeconfig whose API server does not answer (nothing listens on port 9)
    (tmp_path / "kubeconfig").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9", "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    env["KUBECONFIG"] = str(tmp_path / "kubeconfig")
    r = subprocess.run([*HPO, "k8s", "apply", str(MANIFESTS)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and r.stderr.startswith("hpo: error: kubernetes: cannot reach the API server"), r.stderr
    r = subprocess.run([*HPO, "k8s", "apply", str(tmp_path / "missing"), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "is not a folder" in r.stderr


def test_dockerfile_installs_the_project_offline():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert re.fullmatch(r"FROM python:3\.\d+\.\d+-slim-\w+", lines[0]), lines[0]  # a pinned base image
    copied = " ".join(ln for ln in lines if ln.startswith("COPY"))
    for part in ("pyproject.toml", "image-constraints.txt", "hpo", "plugins", "pipelines", "benchmarks", "manifests"):
        assert part in copied, part
    assert re.search(r'pip install --constraint image-constraints\.txt "\.\[all\]"', text), "the project, every extra, pinned"
    assert "YOLO_OFFLINE=1" in text
    assert "torch.version.cuda" in text  # the build fails on a CPU-only torch
    # every package pinned exactly, torch with its CUDA runtime wheels among them
    pins = [ln for ln in (ROOT / "image-constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", ln) for ln in pins), [ln for ln in pins if "==" not in ln]
    names = {ln.split("==")[0].lower() for ln in pins}
    assert {"torch", "ultralytics", "kfp", "kfp-kubernetes", "optuna", "ray", "mlflow"} <= names
    assert any(n.startswith("nvidia-cuda-runtime") for n in names)
    # a non-root user (uid 1000, group 0) that owns the default mount point
    user = [ln for ln in lines if ln.startswith("USER")]
    assert user == ["USER 1000:0"] and lines.index(user[0]) > max(i for i, ln in enumerate(lines) if ln.startswith("RUN"))
    assert "useradd --uid 1000 --gid 0" in text and "chown 1000:0 /mnt/hpo" in text
    entry = [ln for ln in lines if ln.startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["hpo"]']
    # KFP runs the lightweight components with `python3 -m kfp.dsl.executor_main` and imports the
    # component's module: the image must have hpo_kfp, and needs no pip at run time.
    from hpo_kfp import make_tune_component

    command = make_tune_component("registry.example.com/team/hpo:0.1.0").component_spec.implementation.container.command
    assert not command[0].startswith("pip") and "pip install" not in " ".join(command)
    for word in ("ARG ", "ENV "):
        for ln in (ln for ln in lines if ln.startswith(word)):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)", ln, re.I), ln
    # the packages the image imports are those pyproject installs
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'hpo_kfp = "pipelines"' in pyproject and '"hpo.manifests" = "manifests"' in pyproject


# --- credentials

_Q = "[\"']"
#: (name, pattern) of what a leaked credential looks like. Split so this file does not match itself.
PATTERNS = [
    ("AWS access key id", re.compile("AK" + r"IA[0-9A-Z]{16}")),
    ("private key", re.compile("-----BEGIN [A-Z ]*PRIVATE" + " KEY-----")),
    ("GitHub token", re.compile("gh" + r"[pousr]_[A-Za-z0-9]{30,}")),
    ("Slack token", re.compile("xox" + r"[abpr]-[A-Za-z0-9-]{10,}")),
    ("MinIO default credentials", re.compile("minio" + r"(admin|123)\b", re.I)),
    (
        "a secret-like name assigned a literal",
        re.compile(
            r"(?i)\b[\w.-]*(password|passwd|secret_access_key|secret[_-]?key|api[_-]?key|token)[\w.-]*\b"
            r"[\"'\]]*\s*[:=]\s*" + _Q + r"([^\"'\s<>${}]{4,})" + _Q
        ),
    ),
    (
        "a secret-like key with an unquoted value (YAML, .env)",
        re.compile(
            r"(?i)^\s*[\w.-]*(password|passwd|secret_access_key|secret[_-]?key|api[_-]?key|token)[\w.-]*"
            r"\s*[:=]\s*([A-Za-z0-9/+_.-]{6,})\s*(#.*)?$"
        ),
    ),
    ("credentials in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^/\s:@'\"]{3,})@[\w.-]+")),
]
#: Values that are no credential: placeholders, hpo's own mask (``user:***@host``), and a password
#: written as an upper-case placeholder word (``scheme://user:PASSWORD@host``)
_ALLOWED_VALUES = {"change-me", "set-me", "<set-me>", "example", "placeholder", "***", "password"}


def _repo_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [ROOT / f for f in out.splitlines() if (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]


def find_credentials(files: list[Path]) -> list[str]:
    """Every line of ``files`` that looks like a credential, as ``path:line: kind``."""
    hits = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for kind, pattern in PATTERNS:
                m = pattern.search(line)
                value = m.group(m.lastindex) if m and m.lastindex else ""
                # an f-string or shell placeholder ({pw}, $PGPASSWORD) is no committed value
                if m and not (value.lower() in _ALLOWED_VALUES or value.startswith(("{", "$"))):
                    hits.append(f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}:{n}: {kind}")
    return hits


def test_scanner_finds_planted_credentials(tmp_path):
    # synthetic values made at run time: nothing credential-shaped is committed
    fake = "Zq9" * 10
    key_id = "AK" + "IA" + "Q" * 16
    planted = tmp_path / "leak.py"
    planted.write_text(
        f"aws_secret_access_key = '{fake}'\n"
        + f"key_id = '{key_id}'\n"
        + f"os.environ['MLFLOW_TRACKING_PASSWORD'] = \"{fake[:8]}\"\n"
        + f"url = 'https://user:{fake[:6]}@minio.local'\n"
        + "ok_placeholder = {'password': ''}\n"
        + f"  AWS_SECRET_ACCESS_KEY: {fake[:12]}\n"
        + '  AWS_SECRET_ACCESS_KEY: ""   # placeholder\n'
        + "masked = 'postgresql://user:***@db/optuna'  # hpo's own mask\n"
        + "doc = 'scheme://user:PASSWORD@host'\n"
        + "url = f'postgresql://u:{pw}@db/o'  # an f-string placeholder\n"
    )
    hits = find_credentials([planted])
    assert [h.split(":")[1] for h in hits] == ["1", "2", "3", "4", "6"], hits


def test_no_credentials_in_the_repository():
    files = _repo_files()
    assert any(f.name == "secret-template.yaml" for f in files)
    assert find_credentials(files) == []


def test_k8s_commands_keep_help_light():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom hpo.cli import app\n"
        "for args in (['--help'], ['preflight', '--help'], ['pipelines', 'compile', '--help'], ['k8s', 'apply', '--help']):\n"
        "    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output\n"
        "print('HEAVY', [m for m in ('torch', 'ultralytics', 'kfp', 'kubernetes') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "HEAVY []" in out.stdout
