"""manifests/ray: the KubeRay RayCluster (offline: its pod templates against the Kubernetes schema,
its fields against KubeRay's ray.io/v1 RayCluster spec) and the token Secret template."""

from __future__ import annotations

import pytest
import yaml
from test_manifests import K8S_VERSION, MANIFESTS

RAY = MANIFESTS / "ray"
#: Fields of KubeRay's ray.io/v1 RayCluster spec, head group and worker group (CRD of KubeRay 1.x).
SPEC_KEYS = {
    "rayVersion",
    "headGroupSpec",
    "workerGroupSpecs",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
    "gcsFaultToleranceOptions",
    "authOptions",
}
HEAD_KEYS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "suspend"}
WORKER_KEYS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "numOfHosts",
    "idleTimeoutSeconds",
    "suspend",
}


def _cluster() -> dict:
    (doc,) = [d for d in yaml.safe_load_all((RAY / "raycluster.yaml").read_text()) if d]
    return doc


def _templates(doc: dict) -> list[dict]:
    return [doc["spec"]["headGroupSpec"]["template"], *[g["template"] for g in doc["spec"]["workerGroupSpecs"]]]


def test_raycluster_fields_and_pod_templates_are_valid():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = _cluster()
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["spec"]) <= SPEC_KEYS and set(doc["spec"]["headGroupSpec"]) <= HEAD_KEYS
    for group in doc["spec"]["workerGroupSpecs"]:
        assert set(group) <= WORKER_KEYS, group.keys()
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    assert all(isinstance(v, str) for v in doc["spec"]["headGroupSpec"]["rayStartParams"].values())
    for template in _templates(doc):  # each pod template is a core/v1 PodTemplateSpec
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}, K8S_VERSION, strict=True
        )


def test_raycluster_study_volume_token_and_gpus():
    import ray

    doc = _cluster()
    assert doc["spec"]["rayVersion"] == ray.__version__  # the driver's Ray is the cluster's
    rwx = yaml.safe_load((MANIFESTS / "nfs" / "pvc-rwx.yaml").read_text())
    assert rwx["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = set()
    for template in _templates(doc):
        spec = template["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert list(claims.values()) == [rwx["metadata"]["name"]]
        (container,) = spec["containers"]
        mounts |= {m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims}
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hpo-ray-token", "key": "RAY_AUTH_TOKEN"}
        assert "value" not in env["RAY_AUTH_TOKEN"]
    assert mounts == {"/data"}  # the same path on the head and on every worker
    gpu = [
        g
        for g in doc["spec"]["workerGroupSpecs"]
        if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    ]
    assert gpu and gpu[0]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    secret = yaml.safe_load((RAY / "secret-ray-token-template.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["stringData"] == {"RAY_AUTH_TOKEN": ""}  # a template: no value
    k = yaml.safe_load((RAY / "kustomization.yaml").read_text())
    assert k["resources"] == ["raycluster.yaml"]


def test_raycluster_validator_catches_a_typo():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    template = _templates(_cluster())[1]
    template["spec"]["containers"][0]["volumeMount"] = template["spec"]["containers"][0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}, K8S_VERSION, strict=True
        )
