"""Example KFP v2 pipelines built from hpo's components, for your image and mount path.

:func:`make_pipelines` builds them (the image and the PVC's mount path are compile-time settings:
KFP mounts a volume at a fixed path):

* ``train_then_tune``: the tutorial's flow on one PVC: check the environment (GPU, mount, data),
  train a baseline, tune, train the final model with the best hyperparameters, and validate the
  tuning step's best Model.
* ``compare_backends``: one study per backend, in parallel (``dsl.ParallelFor``), on the same
  volume, compared in a final step.
* ``joined_workers``: one optuna study worked on by several pods at once (a first task creates it,
  a ``ParallelFor`` of ``join=True`` tasks joins it); the storage URL comes from a Kubernetes Secret.

:func:`compile_all` writes the IR YAML of each (and the tuning component's YAML); ``hpo pipelines
compile --image REGISTRY/NAME:TAG DIR`` calls it.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl

from .components import make_components
from .platform import GPU_TOLERATION, STORAGE_ENV, configure_tuning_task

__all__ = ["MOUNT", "PIPELINE_NAMES", "make_pipelines", "compile_component", "compile_all"]

#: The default mount path of the PVC in every pod.
MOUNT = "/mnt/hpo"
#: The example pipelines, by file stem.
PIPELINE_NAMES = ("train_then_tune", "compare_backends", "joined_workers")


def make_pipelines(image: str, mount_path: str = MOUNT) -> dict[str, Callable[..., Any]]:
    """The example pipelines for your image, by name (:data:`PIPELINE_NAMES`).

    Args:
        image: the hpo image (``REGISTRY/NAME:TAG``, built from the ``Dockerfile``).
        mount_path: where every task mounts the PVC and finds the data and studies (default
            ``/mnt/hpo``; under ``kfp.local``, which ignores mounts, a local folder).

    Raises:
        hpo.errors.ConfigError: no image, or not an image reference; a ``mount_path`` Kubernetes
            or the container would refuse (relative, ``/``, a system folder:
            :func:`hpo.preflight.check_mount_path`).
    """
    from hpo.preflight import check_mount_path

    check_mount_path(mount_path)
    c = make_components(image)
    hpo_tune, check_environment, train_model = c["hpo_tune"], c["check_environment"], c["train_model"]
    validate_model, compare_studies = c["validate_model"], c["compare_studies"]

    @dsl.pipeline(
        name="hpo-train-then-tune",
        description="Check the GPU, train a baseline, tune, train with the best hyperparameters: all on one PVC.",
    )
    def train_then_tune(
        pvc_name: str = "hpo-data",
        model: str = "yolov8n.yaml",
        data: str = "datasets/coco8/data.yaml",
        train_epochs: int = 10,
        iterations: int = 20,
        epochs: int = 10,
        final_epochs: int = 30,
        backend: str = "ultralytics",
        space: str = "",
        train_args: dict = {"imgsz": 640, "batch": 16, "workers": 4},
        secret_name: str = "hpo-credentials",
        accelerator_type: str = "nvidia.com/gpu",
        gpus: int = 1,
        seed: int = -1,
    ) -> None:
        """The tutorial's pipeline in KFP v2: every step mounts the PVC ``pvc_name`` and requests
        ``gpus`` GPUs of ``accelerator_type``; the first step fails early if torch cannot see them.
        The final training consumes the tuning step's ``best_hyperparameters``; ``validate-model``
        consumes its ``best_model`` (Model)."""
        gpu: dict[str, Any] = dict(
            pvc_name=pvc_name,
            mount_path=mount_path,
            accelerator_type=accelerator_type,
            accelerator_count=gpus,
            toleration=GPU_TOLERATION,
        )
        check = check_environment(mount_path=mount_path, output_dir="studies", data=data, model=model, gpus=gpus, workers=4)
        configure_tuning_task(check, **gpu, retries=0, cpu="1", memory="2Gi")
        train = train_model(
            model=model,
            data=data,
            epochs=train_epochs,
            mount_path=mount_path,
            output_dir="train",
            name="baseline",
            train_args=train_args,
        ).after(check)
        train.set_display_name("train-baseline")
        configure_tuning_task(train, **gpu, secret_name=secret_name, retries=1)
        tune = hpo_tune(
            model=model,
            data=data,
            backend=backend,
            iterations=iterations,
            epochs=epochs,
            space=space,
            mount_path=mount_path,
            output_dir="studies",
            train_args=train_args,
            gpus=gpus,
            seed=seed,
        ).after(train)
        configure_tuning_task(tune, **gpu, secret_name=secret_name, retries=2)
        final = train_model(
            model=model,
            data=data,
            epochs=final_epochs,
            mount_path=mount_path,
            output_dir="train",
            name="final",
            train_args=train_args,
            hyperparameters=tune.outputs["best_hyperparameters"],
        )
        final.set_display_name("train-final")
        configure_tuning_task(final, **gpu, secret_name=secret_name, retries=1)
        check_best = validate_model(weights=tune.outputs["best_model"], data=data, mount_path=mount_path, train_args=train_args)
        configure_tuning_task(check_best, **gpu, retries=0)

    @dsl.pipeline(name="hpo-compare-backends", description="Tune with several backends in parallel on one volume; compare.")
    def compare_backends(
        pvc_name: str = "hpo-data",
        backends: list = ["ultralytics", "optuna", "ray"],
        model: str = "yolov8n.yaml",
        data: str = "datasets/coco8/data.yaml",
        iterations: int = 20,
        epochs: int = 10,
        train_args: dict = {"imgsz": 640, "batch": 16, "workers": 4},
        space: str = "",
        gpus: int = 1,
        output_dir: str = "studies",
        secret_name: str = "hpo-credentials",
    ) -> None:
        """One study per backend (``<data>-<backend>``) in ``output_dir`` on the PVC; a final step ranks them.

        The PVC must be ReadWriteMany (manifests/nfs) when the parallel pods land on several nodes.
        """
        with dsl.ParallelFor(backends, parallelism=0) as backend:
            tune = hpo_tune(
                model=model,
                data=data,
                backend=backend,
                iterations=iterations,
                epochs=epochs,
                space=space,
                mount_path=mount_path,
                output_dir=output_dir,
                train_args=train_args,
                gpus=gpus,
            )
            configure_tuning_task(
                tune,
                pvc_name=pvc_name,
                mount_path=mount_path,
                accelerator_count=gpus,
                toleration=GPU_TOLERATION,
                secret_name=secret_name,
                retries=2,
            )
        compare = compare_studies(study_dirs=dsl.Collected(tune.outputs["study_dir"]))
        configure_tuning_task(
            compare,
            pvc_name=pvc_name,
            mount_path=mount_path,
            accelerator_count=0,
            retries=0,
            shm_size=None,
            cpu="500m",
            memory="1Gi",
        )

    @dsl.pipeline(
        name="hpo-joined-workers", description="Several pods work on one optuna study; the storage URL comes from a Secret."
    )
    def joined_workers(
        pvc_name: str = "hpo-data-rwx",
        workers: list = [1, 2, 3],
        model: str = "yolov8n.yaml",
        data: str = "datasets/coco8/data.yaml",
        iterations: int = 40,
        epochs: int = 10,
        study_name: str = "coco8-joined",
        space: str = "",
        train_args: dict = {"imgsz": 640, "batch": 16, "workers": 4},
        gpus: int = 1,
        secret_name: str = "hpo-credentials",
        storage_env: str = STORAGE_ENV,
    ) -> None:
        """A first task creates the optuna study ``study_name`` and works on it; every item of
        ``workers`` is one more pod that joins it (``hpo tune --join``). Together they finish
        ``iterations`` trials. The Optuna storage URL (e.g. ``postgresql://...``) is read from the
        environment variable ``storage_env``, which ``configure_tuning_task`` fills from the Secret
        ``secret_name`` (key ``HPO_STORAGE``); ``storage_env=""`` keeps the journal file in the study
        directory, which needs a ReadWriteMany PVC whose file locks hold across pods (docs/kfp.md).
        """
        settings: dict[str, Any] = dict(
            pvc_name=pvc_name,
            mount_path=mount_path,
            accelerator_count=gpus,
            toleration=GPU_TOLERATION,
            secret_name=secret_name,
            retries=2,
        )
        study: dict[str, Any] = dict(
            model=model,
            data=data,
            backend="optuna",
            iterations=iterations,
            epochs=epochs,
            space=space,
            mount_path=mount_path,
            output_dir="studies",
            study_name=study_name,
            train_args=train_args,
            gpus=gpus,
            storage_env=storage_env,
        )
        configure_tuning_task(hpo_tune(**study), **settings)  # creates the study
        with dsl.ParallelFor(workers, parallelism=0):
            configure_tuning_task(hpo_tune(**study, join=True), **settings)  # join it

    return {"train_then_tune": train_then_tune, "compare_backends": compare_backends, "joined_workers": joined_workers}


def compile_component(path: str | Path, image: str) -> Path:
    """Write the tuning component's YAML (loadable with ``kfp.components.load_component_from_file``).

    Args:
        path: target file.
        image: component image, ``REGISTRY/NAME:TAG``.

    Raises:
        hpo.errors.ConfigError: bad image, or ``path`` cannot be written (a file in the way, read-only).
    """
    path = Path(path)
    _prepare(path.parent)
    _write(lambda: compiler.Compiler().compile(make_components(image)["hpo_tune"], str(path)), path)
    return path


def _prepare(folder: Path) -> None:
    from hpo import ConfigError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"output: '{folder}' is a file (or under one); give a folder for the YAML files") from None
    except OSError as e:
        raise ConfigError(f"output: cannot create '{folder}' ({e.strerror}); give a writable folder") from None


def _write(fn: Callable[[], Any], target: Path) -> None:
    from hpo import ConfigError

    try:
        fn()
    except (IsADirectoryError, NotADirectoryError):
        raise ConfigError(f"output: cannot write '{target}': a folder or file is in the way; give another folder") from None
    except OSError as e:
        raise ConfigError(f"output: cannot write '{target}' ({e.strerror}); give a writable folder") from None


def compile_all(out_dir: str | Path, image: str, mount_path: str = MOUNT) -> list[Path]:
    """Write ``<name>.yaml`` (IR) for every example pipeline and ``hpo_tune_component.yaml`` into ``out_dir``.

    Args:
        out_dir: target folder (created if missing).
        image: the hpo image, ``REGISTRY/NAME:TAG``.
        mount_path: the PVC's mount path in every task (default ``/mnt/hpo``).

    Returns:
        The written files.

    Raises:
        hpo.errors.ConfigError: no or bad image; a bad ``mount_path`` (see :func:`make_pipelines`);
            ``out_dir`` is a file or not writable.
    """
    out = Path(out_dir)
    pipelines = make_pipelines(image, mount_path)
    _prepare(out)
    written = []
    for name, pipeline in pipelines.items():
        target = out / f"{name}.yaml"
        _write(functools.partial(compiler.Compiler().compile, pipeline, str(target)), target)
        written.append(target)
    written.append(compile_component(out / "hpo_tune_component.yaml", image))
    return written
