"""Pre-flight checks run inside a pod before a study starts (``hpo preflight``, the KFP component).

Each check returns a :class:`Check` (``ok``, ``warn`` or ``fail`` with a one-line message). A
``fail`` means the step cannot run (the CLI exits 2 before anything is trained); a ``warn`` means
hpo changed something on the user's behalf (e.g. fewer data-loader workers for a small ``/dev/shm``).
torch is imported only when GPUs are requested.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Check", "PreflightReport", "run_preflight", "check_mount_path", "SHM_PER_WORKER_BYTES", "SHM_PATH", "SYSTEM_FOLDERS"]

#: ``/dev/shm`` bytes assumed per data-loader worker. PyTorch's DataLoader passes every batch of a
#: worker process through shared memory and keeps ``prefetch_factor`` (2) batches in flight; 512 MiB
#: covers a 640 px detection batch of 16 with room to spare. Container runtimes default to 64 MiB,
#: which is why the KFP step mounts an in-memory emptyDir at ``/dev/shm``.
SHM_PER_WORKER_BYTES = 512 * 1024**2
SHM_PATH = "/dev/shm"


#: Folders of a Linux container image that a volume must not be mounted over: mounting there hides
#: what the image's programs need (its libraries, binaries, configuration, Python in ``/usr/local``
#: of the official ``python`` images) or the runtime's own file systems.
SYSTEM_FOLDERS = frozenset(
    {
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/proc",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
        "/usr/local",
        "/var",
    }
)
#: Kernel and device file systems the container runtime mounts itself: nothing may be mounted
#: under them (``/dev/shm`` is the task's own in-memory emptyDir, :data:`SHM_PATH`).
_RUNTIME_TREES = ("/proc", "/sys", "/dev")


def check_mount_path(value: Any, field: str = "mount_path") -> str:
    """Refuse a volume mount path Kubernetes or the container would choke on; return it unchanged.

    Kubernetes' API documents a ``volumeMounts[].mountPath`` as a path in the container that must
    not contain ``:``; the container runtime needs it absolute (a relative one fails only when the
    pod starts, on the cluster). hpo also refuses what would break the pod even where it starts:
    the container's root ``/``, a ``..`` segment, a control character, a folder of
    :data:`SYSTEM_FOLDERS` and anything under ``/proc``, ``/sys`` or ``/dev``.

    Args:
        value: the mount path (``/mnt/hpo``).
        field: the setting's name in the message (``mount_path``, ``--mount-path``, ``--mount``).

    Raises:
        hpo.errors.ConfigError: one line naming ``field``, the value and the fix.
    """
    import posixpath

    from .errors import ConfigError

    fix = "give an absolute folder of its own, e.g. /mnt/hpo"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{field}: {value!r} is not a path; {fix}")
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{field}: {value!r} holds whitespace at an end or a control character; {fix}")
    if not value.startswith("/"):
        raise ConfigError(
            f"{field}: '{value}' is relative; Kubernetes mounts a volume at an absolute path in the container: {fix}"
        )
    if ":" in value:
        raise ConfigError(f"{field}: '{value}' contains ':', which a Kubernetes mountPath must not; {fix}")
    if ".." in value.split("/"):
        raise ConfigError(f"{field}: '{value}' has a '..' segment; {fix}")
    norm = posixpath.normpath(value)
    if norm.startswith("//"):  # POSIX keeps a leading '//'
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise ConfigError(f"{field}: '{value}' is the container's root; a volume there hides the whole image: {fix}")
    if norm in SYSTEM_FOLDERS or any(norm.startswith(t + "/") for t in _RUNTIME_TREES):
        raise ConfigError(
            f"{field}: '{value}' is a system folder of the container; a volume there hides what the image needs: {fix}"
        )
    return value


@dataclass
class Check:
    """One pre-flight check.

    Attributes:
        name: ``mount``, ``output``, ``data``, ``gpu`` or ``shm``.
        status: ``ok``, ``warn`` or ``fail``.
        message: one line saying what was found and, on ``fail``/``warn``, what to do.
    """

    name: str
    status: str
    message: str


@dataclass
class PreflightReport:
    """All checks and the settings the step should use.

    Attributes:
        checks: every check in order.
        workers: data-loader workers to pass to Ultralytics (``workers`` train arg), possibly
            lowered to fit ``/dev/shm``; ``None`` if the caller gave none.
        output: the absolute output folder.
        data: the absolute data path.
    """

    checks: list[Check] = field(default_factory=list)
    workers: int | None = None
    output: str = ""
    data: str = ""

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.status != "fail" for c in self.checks)

    def failures(self) -> list[Check]:
        """The failed checks."""
        return [c for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``ok``, ``workers``, ``output``, ``data``, ``checks``."""
        return {
            "ok": self.ok,
            "workers": self.workers,
            "output": self.output,
            "data": self.data,
            "checks": [asdict(c) for c in self.checks],
        }


def _under(mount: Path | None, p: str | os.PathLike) -> Path:
    q = Path(str(p)).expanduser()
    if not q.is_absolute() and mount is not None:
        q = mount / q
    return q.resolve()


def _check_mount(mount: Path) -> Check:
    if not mount.exists():
        return Check(
            "mount", "fail", f"mount: '{mount}' does not exist; mount the PVC there (kfp.kubernetes.mount_pvc) or fix mount_path"
        )
    if not mount.is_dir():
        return Check("mount", "fail", f"mount: '{mount}' is not a folder; mount the PVC there or fix mount_path")
    kind = "a mount point" if os.path.ismount(mount) else "a folder (not a separate mount point)"
    return Check("mount", "ok", f"mount: '{mount}' exists, {kind}")


def _check_output(output: Path) -> Check:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".hpo-write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        return Check(
            "output",
            "fail",
            f"output: cannot write to '{output}' ({e.strerror or e}); mount the PVC read-write or choose another output dir",
        )
    free = shutil.disk_usage(output).free
    return Check("output", "ok", f"output: '{output}' is writable ({free / 1024**3:.1f} GiB free)")


def _check_data(data: Path, model: str | None) -> Check:
    from .data import resolve_data
    from .errors import ConfigError

    if model:
        try:
            from .ultra import resolve_model

            task = resolve_model(model)[1]
        except ConfigError as e:
            return Check("data", "fail", str(e).splitlines()[0])
    else:
        task = "classify" if data.is_dir() else "detect"
    try:
        resolved = resolve_data(data, task)
    except ConfigError as e:
        return Check("data", "fail", str(e).splitlines()[0])
    root = Path(resolved.source) if resolved.kind == "folder" else Path(resolved.content["path"])
    if not os.access(root, os.R_OK | os.X_OK):
        return Check(
            "data", "fail", f"data: '{root}' is not readable by uid {os.getuid()}; fix the volume's permissions (fsGroup)"
        )
    return Check("data", "ok", f"data: '{data}' is readable ({task}, {resolved.kind})")


def _check_gpus(gpus: int) -> Check:
    if gpus <= 0:
        return Check("gpu", "ok", "gpu: none requested")
    try:
        import torch
    except ImportError:
        return Check("gpu", "fail", f"gpu: {gpus} requested but torch is not installed in this image")
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("NVIDIA_VISIBLE_DEVICES") or "unset"
    if seen < gpus:
        return Check(
            "gpu",
            "fail",
            f"gpu: {gpus} requested but torch sees {seen} (CUDA_VISIBLE_DEVICES={visible}); request them with "
            "set_accelerator_limit/set_accelerator_type and schedule on a GPU node (node selector, toleration)",
        )
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
    return Check("gpu", "ok", f"gpu: {seen} visible to torch ({names})")


def _check_shm(workers: int | None, shm_path: str, per_worker: int) -> tuple[Check, int | None]:
    if workers is None or workers <= 0:
        return Check("shm", "ok", f"shm: no data-loader workers requested ({shm_path} not needed)"), workers
    try:
        total = shutil.disk_usage(shm_path).total
    except OSError:
        return Check(
            "shm",
            "warn",
            f"shm: '{shm_path}' is missing; workers lowered from {workers} to 0 (mount an in-memory emptyDir at /dev/shm)",
        ), 0
    need = workers * per_worker
    if total >= need:
        return Check("shm", "ok", f"shm: {shm_path} has {total / 1024**2:.0f} MiB, enough for {workers} workers"), workers
    fit = int(total // per_worker)
    return (
        Check(
            "shm",
            "warn",
            f"shm: {shm_path} has {total / 1024**2:.0f} MiB, {workers} data-loader workers need "
            f"{need / 1024**2:.0f} MiB; workers lowered to {fit} (mount a larger in-memory emptyDir at /dev/shm: shm_size)",
        ),
        fit,
    )


def run_preflight(
    *,
    mount: str | os.PathLike | None = None,
    output: str | os.PathLike = "runs/hpo",
    data: str | os.PathLike | None = None,
    model: str | None = None,
    gpus: int = 0,
    workers: int | None = None,
    shm_path: str = SHM_PATH,
    shm_per_worker: int = SHM_PER_WORKER_BYTES,
) -> PreflightReport:
    """Check that a pod can run a study. Creates ``output`` if missing; trains nothing.

    Args:
        mount: the PVC mount path (``None``: not checked). Relative ``output``/``data`` are taken
            under it.
        output: the folder of studies; created if missing and probed with a write.
        data: data YAML or classification folder (``None``: not checked); checked with
            :func:`hpo.data.resolve_data` for the task of ``model``.
        model: model name, to know the task (``None``: folder means classify, file detect).
        gpus: GPUs the step requested; torch must see at least that many (0: not checked).
        workers: data-loader workers (Ultralytics ``workers`` train arg, default 8 there);
            lowered to what ``/dev/shm`` holds.
        shm_path: the shared-memory mount (default ``/dev/shm``).
        shm_per_worker: bytes of ``/dev/shm`` per worker (default :data:`SHM_PER_WORKER_BYTES`).

    Returns:
        :class:`PreflightReport`; ``report.ok`` is False when a check failed.

    Raises:
        hpo.errors.ConfigError: ``mount`` is no usable mount path (:func:`check_mount_path`).
    """
    report = PreflightReport()
    if mount not in (None, ""):
        check_mount_path(os.fspath(mount), "mount")
    mount_p = Path(str(mount)).expanduser().resolve() if mount not in (None, "") else None
    if mount_p is not None:
        report.checks.append(_check_mount(mount_p))
    out = _under(mount_p, output)
    report.output = str(out)
    if mount_p is None or report.ok:
        report.checks.append(_check_output(out))
    if data not in (None, ""):
        d = _under(mount_p, data)
        report.data = str(d)
        report.checks.append(_check_data(d, model))
    report.checks.append(_check_gpus(int(gpus)))
    check, report.workers = _check_shm(workers, shm_path, shm_per_worker)
    report.checks.append(check)
    return report
