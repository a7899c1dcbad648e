"""Example KFP v2 pipelines built from hpo's components.

* :func:`train_then_tune`: the tutorial's flow on one PVC: check the environment (GPU, mount,
  data), train a baseline, tune.
* :func:`compare_backends`: one study per backend, in parallel (``dsl.ParallelFor``), on the same
  volume, compared in a final step.

:func:`compile_all` writes the IR YAML of each (and the component YAML); ``hpo pipelines compile``
calls it.
"""


from pathlib import Path

from kfp import compiler, dsl

from .components import PUBLISHED_IMAGE, check_environment, compare_studies, hpo_tune, make_tune_component, train_baseline
from .platform import GPU_TOLERATION, configure_tuning_task

__all__ = ["train_then_tune", "compare_backends", "PIPELINES", "COMPONENT_YAML", "compile_all", "compile_component"]

#: The checked-in component YAML (image :data:`PUBLISHED_IMAGE`; kept in sync with the Python
#: definition by tests/test_pipelines.py; regenerate with ``python -m pipelines.examples``).
COMPONENT_YAML = Path(__file__).with_name("hpo_tune_component.yaml")

MOUNT = "/mnt/hpo"


@dsl.pipeline(name="hpo-train-then-tune", description="Check the GPU, train a baseline, tune: all on one PVC.")
def train_then_tune(
    pvc_name: str = "hpo-data",
    model: str = "yolov8n.yaml",
    data: str = "datasets/coco8/data.yaml",
    train_epochs: int = 10,
    iterations: int = 20,
    epochs: int = 10,
    backend: str = "ultralytics",
    train_args: dict = {"imgsz": 640, "batch": 16, "workers": 4},
    secret_name: str = "hpo-credentials",
    accelerator_type: str = "nvidia.com/gpu",
    gpus: int = 1,
) -> None:
    """The tutorial's pipeline in KFP v2: every step mounts the PVC ``pvc_name`` at /mnt/hpo and
    requests ``gpus`` GPUs of ``accelerator_type``; the first step fails early if torch cannot see them."""
    check = check_environment(mount_path=MOUNT, output_dir="studies", data=data, model=model, gpus=gpus, workers=4)
    configure_tuning_task(check, pvc_name=pvc_name, mount_path=MOUNT, accelerator_type=accelerator_type,
                          accelerator_count=gpus, toleration=GPU_TOLERATION, retries=0)
    train = train_baseline(model=model, data=data, epochs=train_epochs, mount_path=MOUNT, output_dir="train",
                           train_args=train_args).after(check)
    configure_tuning_task(train, pvc_name=pvc_name, mount_path=MOUNT, accelerator_type=accelerator_type,
                          accelerator_count=gpus, toleration=GPU_TOLERATION, secret_name=secret_name, retries=1)
    tune = hpo_tune(model=model, data=data, backend=backend, iterations=iterations, epochs=epochs,
                    mount_path=MOUNT, output_dir="studies", train_args=train_args, gpus=gpus).after(train)
    configure_tuning_task(tune, pvc_name=pvc_name, mount_path=MOUNT, accelerator_type=accelerator_type,
                          accelerator_count=gpus, toleration=GPU_TOLERATION, secret_name=secret_name, retries=2)


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
    mount_path: str = MOUNT,
    output_dir: str = "studies",
    secret_name: str = "hpo-credentials",
) -> None:
    """One study per backend (``<data>-<backend>``) in ``output_dir`` on the PVC; a final step ranks them.

    The PVC must be ReadWriteMany (manifests/nfs) when the parallel pods land on several nodes.
    ``mount_path`` is a parameter too, so ``kfp.local`` (which ignores mounts) can run it on a folder.
    """
    with dsl.ParallelFor(backends, parallelism=0) as backend:
        tune = hpo_tune(model=model, data=data, backend=backend, iterations=iterations, epochs=epochs, space=space,
                        mount_path=mount_path, output_dir=output_dir, train_args=train_args, gpus=gpus)
        configure_tuning_task(tune, pvc_name=pvc_name, mount_path=MOUNT, accelerator_count=gpus,
                              toleration=GPU_TOLERATION, secret_name=secret_name, retries=2)
    compare = compare_studies(study_dirs=dsl.Collected(tune.outputs["study_dir"]))
    configure_tuning_task(compare, pvc_name=pvc_name, mount_path=MOUNT, accelerator_count=0, retries=0, shm_size=None)


#: Every example pipeline by file stem.
PIPELINES = {"train_then_tune": train_then_tune, "compare_backends": compare_backends}


def compile_component(path: "str | Path" = COMPONENT_YAML, image: "str | None" = None) -> Path:
    """Write the tuning component's YAML (loadable with ``kfp.components.load_component_from_file``).

    Args:
        path: target file (default: the checked-in ``pipelines/hpo_tune_component.yaml``).
        image: component image (default: that of :data:`pipelines.hpo_tune`, i.e. ``HPO_IMAGE``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    component = hpo_tune if image is None else make_tune_component(image)
    compiler.Compiler().compile(component, str(path))
    return path


def compile_all(out_dir: "str | Path") -> "list[Path]":
    """Write ``<name>.yaml`` (IR) for every example pipeline and ``hpo_tune_component.yaml`` into ``out_dir``.

    Args:
        out_dir: target folder (created if missing).

    Returns:
        The written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        target = out / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(target))
        written.append(target)
    written.append(compile_component(out / COMPONENT_YAML.name))
    return written


if __name__ == "__main__":  # regenerate the checked-in component YAML
    print(compile_component(COMPONENT_YAML, image=PUBLISHED_IMAGE))
