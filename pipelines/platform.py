"""Kubernetes settings of a KFP v2 task, applied with ``kfp-kubernetes`` in one call.

:func:`configure_tuning_task` mounts the PVC, requests GPUs, places the pod on GPU nodes, gives
it an in-memory ``/dev/shm``, turns caching off, sets retries (the tuning step resumes its study)
and passes MLflow/S3 credentials from a Kubernetes Secret. No credential ever appears in code or
in the compiled pipeline: only the Secret's name and key names do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

from kfp import dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineChannel

__all__ = [
    "configure_tuning_task",
    "GPUS_INPUT",
    "STORAGE_ENV",
    "memory_bytes",
    "ACCELERATOR_COUNTS",
    "SECRET_ENV_KEYS",
    "GPU_TOLERATION",
]

#: GPU counts KFP accepts for ``set_accelerator_limit``.
ACCELERATOR_COUNTS = (0, 1, 2, 4, 8, 16)

#: The Secret key (and environment variable) holding the storage URL of a study shared by several
#: pods (a ``postgresql://`` URL with user and password): read by the tuning component's ``storage_env``.
STORAGE_ENV = "HPO_STORAGE"

#: Keys read from the Secret, each exposed as the environment variable of the same name (what
#: MLflow and boto3 read). Every key is optional: a Secret may hold only the MLflow ones.
SECRET_ENV_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    STORAGE_ENV,
)

#: The taint the NVIDIA GPU operator and most clouds put on GPU nodes.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

Channel = Any  # a kfp PipelineChannel (a pipeline parameter)

_UNITS = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+)(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


def memory_bytes(field: str, quantity: str) -> int:
    """A Kubernetes memory quantity (``"16Gi"``, ``"512M"``, ``"1000"``) in bytes.

    Raises:
        ValueError: not a whole number with one of the suffixes K, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei
            (the message names ``field``).
    """
    m = _QUANTITY.match(str(quantity).strip())
    if not m:
        raise ValueError(f"{field}: {quantity!r} is not a memory quantity; use e.g. 16Gi or 512Mi")
    return int(m.group(1)) * _UNITS[m.group(2) or ""]


def _mib(n_bytes: int) -> str:
    return f"{-(-n_bytes // 2**20)}Mi"  # rounded up to whole MiB


def _check_count(count: Union[int, str, Channel], field: str = "accelerator_count") -> Union[int, Channel]:
    if isinstance(count, PipelineChannel):
        return count
    try:
        n = int(count)
    except (TypeError, ValueError):
        n = None
    if n is None or isinstance(count, bool) or n not in ACCELERATOR_COUNTS or str(n) != str(count).strip():
        raise ValueError(
            f"{field}: {count!r} is not a GPU count KFP accepts; use one of {', '.join(map(str, ACCELERATOR_COUNTS))}"
        )
    return n


#: The input of hpo's components (``hpo_tune``, ``check_environment``) that their pre-flight checks
#: against the GPUs torch sees: :func:`configure_tuning_task` keeps it equal to the GPU request.
GPUS_INPUT = "gpus"


def _same(a: Any, b: Any) -> bool:
    """Two task arguments are the same value: equal constants, or the same pipeline channel."""
    if isinstance(a, PipelineChannel) or isinstance(b, PipelineChannel):
        return isinstance(a, PipelineChannel) and isinstance(b, PipelineChannel) and a.pattern == b.pattern
    return a == b and not isinstance(a, bool) and not isinstance(b, bool)


def _set_input(task: dsl.PipelineTask, name: str, value: Any) -> None:
    """Give ``task`` the argument ``name=value`` after it was created: KFP has no call for it, but
    the compiler (and so ``kfp.local``) builds the task's arguments from its public ``inputs``
    mapping; a channel is registered with :meth:`~kfp.dsl.PipelineTask.register_pipeline_channels`."""
    from kfp.dsl.types import type_utils

    type_utils.verify_type_compatibility(
        given_value=value,
        expected_spec=task.component_spec.inputs[name],
        error_message_prefix=f"accelerator_count: cannot pass {value!r} to the task's input {name!r}: ",
    )
    task.inputs[name] = value
    if isinstance(value, PipelineChannel):
        task.register_pipeline_channels([value])


def _gpu_count(task: dsl.PipelineTask, accelerator_count: Union[int, str, Channel, None]) -> Union[int, Channel]:
    """One GPU count for the request and the step's pre-flight (the task's ``gpus`` input).

    ``accelerator_count`` ``None``: the task's ``gpus`` argument (0 when it has none). A count given
    here and no ``gpus`` argument: the task gets ``gpus`` = the count. Both given and different:
    ``ValueError`` (the step would check for another number of GPUs than the pod gets).
    """
    inputs = getattr(task.component_spec, "inputs", None) or {}
    has_gpus = GPUS_INPUT in inputs
    given = task.inputs.get(GPUS_INPUT) if has_gpus else None
    if accelerator_count is None:
        return 0 if given is None else _check_count(given, f"{GPUS_INPUT} (the GPU count of the task, also its request)")
    count = _check_count(accelerator_count)
    if not has_gpus:
        return count
    if given is None:
        _set_input(task, GPUS_INPUT, count)
    elif not _same(given, count):
        raise ValueError(
            f"accelerator_count: {accelerator_count!r} but the task was given {GPUS_INPUT}={given!r}, which its pre-flight "
            f"checks torch against; give the GPU count once: {GPUS_INPUT}=N on the task, or "
            f"configure_tuning_task(accelerator_count=N), which passes it on"
        )
    return count


def _refuse_secrets(task: dsl.PipelineTask) -> None:
    """Refuse a task argument given as a constant that holds a credential: KFP writes constants
    into the compiled pipeline and shows them in its UI. Pipeline parameters (channels) are values
    given when a run is submitted and are not seen here."""
    from hpo import ConfigError, has_secret, mask_secrets

    for name, value in (getattr(task, "inputs", None) or {}).items():
        if isinstance(value, PipelineChannel) or not has_secret(value):
            continue
        raise ConfigError(
            f"{name}: {mask_secrets(value)} holds a credential that the compiled pipeline would keep in plain text; "
            f"put it in a Kubernetes Secret (configure_tuning_task(secret_name=...)), e.g. a storage URL as its key "
            f"{STORAGE_ENV} with storage_env='{STORAGE_ENV}'"
        )


def configure_tuning_task(
    task: dsl.PipelineTask,
    *,
    pvc_name: Union[str, Channel],
    mount_path: str = "/mnt/hpo",
    accelerator_type: Union[str, Channel] = "nvidia.com/gpu",
    accelerator_count: Union[int, str, Channel, None] = None,
    node_selector: Mapping[str, str] | None = None,
    toleration: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    shm_size: str | None = "2Gi",
    cpu: str | None = "4",
    memory: str | None = "12Gi",
    cpu_limit: str | None = None,
    memory_limit: str | None = None,
    secret_name: Union[str, Channel, None] = None,
    secret_keys: Sequence[str] = SECRET_ENV_KEYS,
    retries: int = 2,
    retry_backoff: str = "30s",
    caching: bool = False,
    timeout_s: int | None = None,
) -> dsl.PipelineTask:
    """Apply the Kubernetes settings a tuning (or training) task needs; returns ``task``.

    Args:
        task: the task (e.g. ``hpo_tune(...)``) inside a ``@dsl.pipeline`` function.
        pvc_name: the existing PersistentVolumeClaim to mount, usually a pipeline parameter.
        mount_path: where it is mounted in the container; pass the same value as the
            component's ``mount_path``. Default ``/mnt/hpo``.
        accelerator_type: the GPU resource name (default ``nvidia.com/gpu``).
        accelerator_count: GPUs per pod, one of :data:`ACCELERATOR_COUNTS` (0: no GPU request).
            A pipeline parameter is passed through unchecked. One count for the request and the
            step: on a task with a ``gpus`` input (``hpo_tune``, ``check_environment``, whose
            pre-flight fails when torch sees fewer GPUs), ``None`` (default) requests the task's
            ``gpus`` argument (0 when not given), and a count given here is passed on as the task's
            ``gpus`` when the task was given none. On another task, ``None`` is 0.
        node_selector: node labels the pod must match, e.g. ``{"nvidia.com/gpu.present": "true"}``.
        toleration: one toleration (``key``, ``operator``, ``value``, ``effect``,
            ``toleration_seconds``) or a list; e.g. :data:`GPU_TOLERATION`.
        shm_size: size limit of the in-memory emptyDir mounted at ``/dev/shm`` (Kubernetes
            quantity, default ``2Gi``; it counts against the pod's memory). ``None`` for no limit.
        cpu: CPU request (Kubernetes quantity, ``"4"`` or ``"500m"``; default ``4``: a trainer and
            its data-loader workers). ``None``: no CPU request or limit.
        memory: memory the training needs (Kubernetes quantity, default ``12Gi``), *without*
            ``/dev/shm``: the pod's request is ``memory + shm_size``, because an in-memory emptyDir
            counts against the container's memory. ``None``: no memory request or limit.
        cpu_limit: CPU limit (default: ``cpu``).
        memory_limit: memory limit, ``/dev/shm`` included (default: the request, ``memory + shm_size``);
            refused when smaller than the request.
        secret_name: a Secret holding any of ``secret_keys`` (see ``manifests/secret-template.yaml``);
            ``None`` passes no credentials.
        secret_keys: keys exposed as same-named environment variables (default :data:`SECRET_ENV_KEYS`).
        retries: times KFP re-runs a failed pod (>= 0); the tuning step resumes its study.
        retry_backoff: wait before a retry (KFP duration, default ``30s``).
        caching: KFP caching; off by default (a study on a volume is not a pure function of inputs).
        timeout_s: seconds before Kubernetes stops the pod (``None``: none).

    Returns:
        ``task``, configured.

    Raises:
        ValueError: ``accelerator_count`` (or the task's ``gpus``) not in :data:`ACCELERATOR_COUNTS`;
            ``accelerator_count`` and the task's ``gpus`` both given and different; ``retries < 0``, a
            toleration that is not a mapping, a memory quantity that does not parse, or a memory
            limit below the request.
        hpo.errors.ConfigError (a ``ValueError``): ``mount_path`` is no mount path Kubernetes and
            the container accept (:func:`hpo.preflight.check_mount_path`); or an argument of
            ``task`` given as a constant holds a credential (a URL with a password, a token:
            :func:`hpo.redact.has_secret`), which the compiled pipeline would keep in plain text.
    """
    from hpo.preflight import check_mount_path

    check_mount_path(mount_path)
    _refuse_secrets(task)
    count = _gpu_count(task, accelerator_count)
    if memory is not None:
        request = memory_bytes("memory", memory) + (memory_bytes("shm_size", shm_size) if shm_size else 0)
        limit = memory_bytes("memory_limit", memory_limit) if memory_limit else request
        if limit < request:
            raise ValueError(
                f"memory_limit: {memory_limit!r} is below the request {_mib(request)} (memory {memory} + "
                f"/dev/shm {shm_size}); raise it or lower memory/shm_size"
            )
        task.set_memory_request(_mib(request))
        task.set_memory_limit(_mib(limit))
    if cpu is not None:
        task.set_cpu_request(str(cpu))
        task.set_cpu_limit(str(cpu_limit or cpu))
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries: {retries!r} must be a whole number >= 0")
    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=mount_path)
    if isinstance(count, PipelineChannel) or count > 0:
        task.set_accelerator_type(accelerator_type)
        task.set_accelerator_limit(count)
    for key, value in (node_selector or {}).items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    tolerations = [toleration] if isinstance(toleration, Mapping) else list(toleration or [])
    for t in tolerations:
        if not isinstance(t, Mapping):
            raise ValueError(f"toleration: {t!r} must be a mapping with key, operator, value, effect")
        kubernetes.add_toleration(task, **dict(t))
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=shm_size)
    if secret_name:
        kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env={k: k for k in secret_keys}, optional=True)
    task.set_caching_options(caching)
    if retries:
        task.set_retry(num_retries=retries, backoff_duration=retry_backoff)
    if timeout_s:
        kubernetes.set_timeout(task, seconds=int(timeout_s))
    return task
