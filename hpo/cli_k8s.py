"""``hpo preflight`` and ``hpo k8s apply``: the Kubernetes commands.

:func:`register` adds them to the main ``hpo`` app (one line in :mod:`hpo.cli`). This module does
not import :mod:`hpo.cli`, so ``python -m hpo.cli`` registers them on the app that runs. The
kubernetes client (extra ``k8s``) is imported inside the commands only; a missing extra is one
line naming it, exit 2. The manifests ship with hpo (:func:`bundled_manifests`).
``hpo pipelines compile`` is not here: the KFP package ``hpo_kfp`` contributes it as a plugin
(``hpo_kfp.cli``, hook :func:`hpo.hookspecs.hpo_cli_commands`); the core never imports it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import ConfigError, HpoError

__all__ = ["register", "bundled_manifests", "manifests_folder", "load_manifests", "apply_manifests", "set_node", "K8sError"]


def register(app: typer.Typer, handle_errors: Callable[[Callable], Callable]) -> None:
    """Add ``preflight`` and ``k8s apply`` to ``app``.

    Args:
        app: the ``hpo`` typer app.
        handle_errors: :func:`hpo.cli.handle_errors` (one-line errors and exit codes).
    """
    app.command("preflight")(handle_errors(preflight))
    k8s_app = typer.Typer(help="Kubernetes: apply hpo's PV/PVC manifests.", no_args_is_help=True)
    k8s_app.command("apply")(handle_errors(k8s_apply))
    app.add_typer(k8s_app, name="k8s")


class K8sError(HpoError):
    """The cluster cannot be reached or refused a manifest (exit 1)."""


def preflight(
    mount: Optional[str] = typer.Option(
        None, "--mount", help="Where the PVC is mounted (checked to exist); relative --output/--data are under it."
    ),
    output: str = typer.Option("studies", "--output", "-o", help="Folder of studies (created and probed with a write)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data YAML or classification folder (checked readable)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, to know the task (default: folder = classify)."),
    gpus: int = typer.Option(0, "--gpus", help="GPUs the pod requested; torch must see at least that many."),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Data-loader workers (Ultralytics 'workers'); checked against /dev/shm."
    ),
    shm_path: str = typer.Option("/dev/shm", "--shm-path", help="The shared-memory mount."),
    shm_per_worker_mib: int = typer.Option(512, "--shm-per-worker-mib", help="MiB of /dev/shm needed per data-loader worker."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Check a pod before tuning: mount, writable output, data, GPUs, /dev/shm. Exit 2 when something is missing."""
    from .preflight import run_preflight

    report = run_preflight(
        mount=mount,
        output=output,
        data=data,
        model=model,
        gpus=gpus,
        workers=workers,
        shm_path=shm_path,
        shm_per_worker=shm_per_worker_mib * 1024**2,
    )
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for c in report.checks:
            print(f"{c.status:<4} {c.message}")
        if report.workers is not None and report.workers != workers:
            print(f"use workers={report.workers}")
    if not report.ok:
        raise ConfigError("preflight: " + "; ".join(c.message for c in report.failures()))


# --- manifests


def bundled_manifests() -> Path:
    """The manifests folder shipped with hpo (``hpo/manifests`` in the wheel, ``manifests/`` in a checkout).

    Raises:
        ConfigError: neither exists (a broken install).
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "manifests", here.parent / "manifests"):
        if (candidate / "kustomization.yaml").is_file():
            return candidate
    raise ConfigError("manifests: hpo's bundled manifests are missing; reinstall hpo-yolo")


def manifests_folder(directory: str | Path | None) -> Path:
    """``directory`` if it is a folder; ``None``, ``manifests`` or ``manifests/SUB`` (``nfs``) name
    the bundled manifests (:func:`bundled_manifests`) when no such local folder exists."""
    if directory is None:
        return bundled_manifests()
    d = Path(directory)
    if d.is_dir() or d.is_absolute():
        return d
    parts = d.parts[1:] if d.parts[:1] == ("manifests",) else d.parts
    candidate = bundled_manifests().joinpath(*parts)
    return candidate if candidate.is_dir() else d


def load_manifests(directory: str | Path, namespace: Optional[str] = None) -> list[dict[str, Any]]:
    """Read the manifests of a folder in apply order.

    The files are those listed under ``resources`` in ``kustomization.yaml`` (in order), or every
    ``*.yaml`` file but the kustomization. The kustomization's ``namespace`` (or ``namespace``)
    is set on namespaced objects.

    Args:
        directory: the manifests folder (e.g. ``manifests`` or ``manifests/nfs``).
        namespace: overrides the kustomization's namespace.

    Returns:
        The Kubernetes objects (dicts).

    Raises:
        ConfigError: the folder, a listed file or a document is missing or not a Kubernetes object.
    """
    import yaml

    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"manifests: '{d}' is not a folder; give the manifests folder (e.g. manifests or manifests/nfs)")
    kfile = d / "kustomization.yaml"
    kust: dict[str, Any] = {}
    if kfile.is_file():
        kust = yaml.safe_load(kfile.read_text()) or {}
        files = [d / r for r in kust.get("resources", [])]
    else:
        files = sorted(p for p in d.glob("*.yaml"))
    ns = namespace or kust.get("namespace")
    docs: list[dict[str, Any]] = []
    for f in files:
        if f.is_dir():
            raise ConfigError(f"manifests: '{f}' is a folder; apply it on its own (hpo k8s apply {f})")
        if not f.is_file():
            raise ConfigError(f"manifests: '{f}' listed in {kfile} does not exist")
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is None:
                continue
            if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
                raise ConfigError(f"manifests: a document in '{f}' has no kind/apiVersion")
            if ns and doc["kind"] not in ("PersistentVolume", "Namespace", "StorageClass"):
                doc.setdefault("metadata", {})["namespace"] = ns
            docs.append(doc)
    if not docs:
        raise ConfigError(f"manifests: nothing to apply in '{d}'")
    return docs


def set_node(docs: list[dict[str, Any]], node: str) -> int:
    """Pin every PersistentVolume with a ``kubernetes.io/hostname`` node affinity to ``node``.

    Returns:
        The number of PersistentVolumes changed.
    """
    changed = 0
    for doc in docs:
        if doc.get("kind") != "PersistentVolume":
            continue
        terms = doc.get("spec", {}).get("nodeAffinity", {}).get("required", {}).get("nodeSelectorTerms", [])
        for term in terms:
            for expr in term.get("matchExpressions", []):
                if expr.get("key") == "kubernetes.io/hostname":
                    expr["values"] = [node]
                    changed += 1
    return changed


def _load_kube_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
        return
    except config.ConfigException:
        pass
    try:
        config.load_kube_config()
    except (config.ConfigException, FileNotFoundError, TypeError) as e:
        raise K8sError(
            f"kubernetes: no cluster configuration ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "set KUBECONFIG or write ~/.kube/config (or run inside a pod), or use --dry-run"
        ) from None


def apply_manifests(docs: list[dict[str, Any]], *, wait_timeout_s: float = 120.0, poll_s: float = 2.0) -> list[str]:
    """Apply objects with server-side apply and wait until every PersistentVolumeClaim is Bound.

    Args:
        docs: Kubernetes objects (from :func:`load_manifests`).
        wait_timeout_s: seconds to wait for the PVCs to be Bound (0: do not wait).
        poll_s: seconds between status reads.

    Returns:
        One line per object applied and per PVC bound.

    Raises:
        K8sError: no cluster configuration, the API refused an object, or a PVC not Bound in time
            (the message names it and its phase).
    """
    from .extras import require

    require("kubernetes", "k8s", "hpo k8s apply")
    from kubernetes import client, dynamic
    from kubernetes.client.rest import ApiException

    _load_kube_config()
    try:
        dyn = dynamic.DynamicClient(client.ApiClient())
    except Exception as e:  # noqa: BLE001  (urllib3 connection errors, API discovery errors)
        raise K8sError(f"kubernetes: cannot reach the API server ({str(e).splitlines()[0]})") from None
    lines = []
    for doc in docs:
        meta = doc.get("metadata", {})
        name, ns = meta.get("name"), meta.get("namespace")
        try:
            res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            kwargs = {"namespace": ns or "default"} if res.namespaced else {}
            res.server_side_apply(body=doc, name=name, field_manager="hpo", force_conflicts=True, **kwargs)
        except ApiException as e:
            raise K8sError(f"kubernetes: {doc['kind']} {name}: {e.status} {e.reason}") from None
        lines.append(f"applied {doc['kind']}/{name}" + (f" in {ns or 'default'}" if doc["kind"] != "PersistentVolume" else ""))
    core = client.CoreV1Api()
    for doc in docs:
        if doc["kind"] != "PersistentVolumeClaim" or wait_timeout_s <= 0:
            continue
        name, ns = doc["metadata"]["name"], doc["metadata"].get("namespace") or "default"
        deadline = time.monotonic() + wait_timeout_s
        phase = "?"
        while True:
            phase = core.read_namespaced_persistent_volume_claim(name, ns).status.phase
            if phase == "Bound":
                lines.append(f"PersistentVolumeClaim/{name} is Bound")
                break
            if time.monotonic() >= deadline:
                raise K8sError(
                    f"kubernetes: PersistentVolumeClaim {name} in {ns} is {phase} after {wait_timeout_s:.0f} s; "
                    "check its storageClassName, accessModes and size against the PV (kubectl describe pvc), "
                    "or a WaitForFirstConsumer class binds only when a pod uses it"
                )
            time.sleep(poll_s)
    return lines


def k8s_apply(
    directory: Optional[Path] = typer.Argument(
        None,
        help="Manifests folder with kustomization.yaml (default: the manifests shipped with hpo; manifests/nfs or nfs: its RWX variant).",
    ),
    namespace: Optional[str] = typer.Option(
        None, "--namespace", "-n", help="Namespace of the PVC/Secret (default: the kustomization's)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be applied (YAML) and touch no cluster."),
    wait_timeout: float = typer.Option(120.0, "--wait-timeout", help="Seconds to wait for the PVC to be Bound (0: do not wait)."),
    node: Optional[str] = typer.Option(None, "--node", help="Node name for the hostPath PV's node affinity (kubectl get nodes)."),
) -> None:
    """Apply the PV/PVC manifests with the kubernetes client and wait until the PVC is Bound."""
    directory = manifests_folder(directory)
    docs = load_manifests(directory, namespace)
    if node:
        set_node(docs, node)
    if dry_run:
        import yaml

        print(f"# hpo k8s apply --dry-run: {len(docs)} objects from {directory} (nothing was sent)")
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")
        return
    for line in apply_manifests(docs, wait_timeout_s=wait_timeout):
        print(line)
