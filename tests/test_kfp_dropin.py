"""hpo's KFP step dropped into a pipeline written by others, with no glue written by hand.

The pipeline below has the shape of the public ``alpha-hack-program/yolo-uno-cards`` pipeline
(``pipeline/train_yolo.py``): a data step that puts the images on a PVC, a training component
that takes its hyperparameters as its own typed scalar inputs (``learning_rate: float,
momentum: float, weight_decay: float``, ``image_size: int``, ``optimizer: str``) and trains from
pretrained ``yolov8n`` weights, and a reporting step that records the same values. hpo's step
goes between the data and the training; ``make_pick_component`` hands the tuned values to the
training and the reporting step's inputs. Also: the pick component's errors, and the step's
opt-in pretrained weights on the volume.
"""

import json
from pathlib import Path

import pytest
import yaml

kfp = pytest.importorskip("kfp")
from kfp import compiler, dsl  # noqa: E402

from hpo_kfp import configure_tuning_task, make_pick_component, make_tune_component  # noqa: E402

IMAGE = "registry.example.com/team/hpo:0.1.0"
hpo_tune = make_tune_component(IMAGE)

#: the public pipeline's training inputs that hpo tunes or fixes, by the Ultralytics train arg
UNO_INPUTS = {
    "learning_rate": ("lr0", float),
    "momentum": ("momentum", float),
    "weight_decay": ("weight_decay", float),
    "optimizer": ("optimizer", str),
    "image_size": ("imgsz", int),
}


# --- the pipeline's own components (trivial stand-ins with the public signatures' shape)


@dsl.component(install_kfp_package=False)
def get_images_dataset(root_mount_path: str, images_datasets_root_folder: str, images_dataset_name: str) -> str:
    """The data step: puts the images on the volume (the public one unzips them from S3)."""
    import os

    from hpo.datasets import make_digits_cls

    folder = os.path.join(images_datasets_root_folder, images_dataset_name)
    make_digits_cls(os.path.join(root_mount_path, folder), seed=0, imgsz=8)
    return folder


@dsl.component(install_kfp_package=False)
def train_yolo(
    model_name: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    root_mount_path: str,
    images_dataset_name: str,
) -> str:
    """The training step, trivial: records what it was given and each value's type (the public one
    calls YOLO(model_name).train(lr0=learning_rate, momentum=momentum, ...))."""
    import json

    given = dict(
        model_name=model_name,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    return json.dumps({k: [v, type(v).__name__] for k, v in given.items()})


@dsl.component(install_kfp_package=False)
def create_serialized_labels(learning_rate: float, momentum: float, weight_decay: float, image_size: int) -> str:
    """The reporting step: the labels the model is registered with."""
    import json

    return json.dumps(
        {"learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay, "image_size": image_size}
    )


def uno_cards_pipeline(mount: str, gpus: int = 1):
    """The public pipeline's shape with hpo's step inserted (``mount``: the PVC's mount path;
    ``gpus``: the tuning task's GPU request, which its pre-flight checks)."""
    pick = make_pick_component(UNO_INPUTS)

    @dsl.pipeline(name="train-yolo-tuned")
    def pipeline(
        model_name: str = "yolov8n-cls",
        epochs: int = 1,
        batch_size: int = 16,
        iterations: int = 3,
        images_dataset_name: str = "uno-cards",
        images_datasets_root_folder: str = "datasets",
        images_dataset_pvc_name: str = "images-datasets-pvc",
    ) -> None:
        data = get_images_dataset(
            root_mount_path=mount,
            images_datasets_root_folder=images_datasets_root_folder,
            images_dataset_name=images_dataset_name,
        )
        tune = hpo_tune(
            model="yolov8n-cls.pt",  # the graph's pretrained weights, fetched onto the volume (download_weights)
            data=data.outputs["Output"],
            backend="optuna",
            iterations=iterations,
            epochs=epochs,
            space=json.dumps({"lr0": [1e-4, 1e-2], "momentum": [0.6, 0.98], "weight_decay": [0.0, 0.001]}),
            mount_path=mount,
            train_args={"imgsz": 32, "batch": 16, "optimizer": "AdamW", "workers": 0},
            download_weights=True,
            seed=0,
        )
        configure_tuning_task(tune, pvc_name=images_dataset_pvc_name, mount_path=mount, accelerator_count=gpus)
        chosen = pick(tuned_train_args_json=tune.outputs["tuned_train_args_json"])
        train = train_yolo(
            model_name=model_name,
            image_size=chosen.outputs["image_size"],
            epochs=epochs,
            batch_size=batch_size,
            optimizer=chosen.outputs["optimizer"],
            learning_rate=chosen.outputs["learning_rate"],
            momentum=chosen.outputs["momentum"],
            weight_decay=chosen.outputs["weight_decay"],
            root_mount_path=mount,
            images_dataset_name=images_dataset_name,
        )
        create_serialized_labels(
            learning_rate=chosen.outputs["learning_rate"],
            momentum=chosen.outputs["momentum"],
            weight_decay=chosen.outputs["weight_decay"],
            image_size=chosen.outputs["image_size"],
        ).after(train)

    return pipeline


def _seed_pretrained(folder: Path) -> Path:
    """What ``download_weights`` leaves on the volume (this machine cannot reach Ultralytics'
    release assets): a real YOLOv8n-cls checkpoint at ``<output>/pretrained/yolov8n-cls.pt``."""
    from ultralytics import YOLO

    folder.mkdir(parents=True, exist_ok=True)
    YOLO("yolov8n-cls.yaml").save(str(folder / "yolov8n-cls.pt"))
    return folder / "yolov8n-cls.pt"


def test_the_public_pipelines_shape_compiles_with_no_adapter(tmp_path):
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(uno_cards_pipeline("/opt/app-root/src"), str(out))
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"get-images-dataset", "hpo-tune", "hpo-pick", "train-yolo", "create-serialized-labels"}
    assert tasks["hpo-pick"]["inputs"]["parameters"]["tuned_train_args_json"] == {
        "taskOutputParameter": {"outputParameterKey": "tuned_train_args_json", "producerTask": "hpo-tune"}
    }
    for consumer in ("train-yolo", "create-serialized-labels"):
        params = tasks[consumer]["inputs"]["parameters"]
        for name in ("learning_rate", "momentum", "weight_decay", "image_size"):
            assert params[name] == {"taskOutputParameter": {"outputParameterKey": name, "producerTask": "hpo-pick"}}
    outs = spec["components"]["comp-hpo-pick"]["outputDefinitions"]["parameters"]
    assert outs == {
        "learning_rate": {"parameterType": "NUMBER_DOUBLE"},
        "momentum": {"parameterType": "NUMBER_DOUBLE"},
        "weight_decay": {"parameterType": "NUMBER_DOUBLE"},
        "optimizer": {"parameterType": "STRING"},
        "image_size": {"parameterType": "NUMBER_INTEGER"},
    }
    container = spec["deploymentSpec"]["executors"]["exec-hpo-pick"]["container"]
    assert container["image"] == "python:3.11-slim"  # a plain Python image: no hpo there
    script = "\n".join(container["command"])
    assert "hpo" not in script.replace("hpo_pick", "").replace("hpo-pick", "").replace("hpo_kfp.make_pick_component", "")
    assert tasks["hpo-tune"]["inputs"]["parameters"]["download_weights"] == {"runtimeValue": {"constant": True}}
    assert tasks["hpo-tune"]["inputs"]["parameters"]["gpus"] == {"runtimeValue": {"constant": 1}}


def test_the_public_pipelines_shape_runs_under_kfp_local(tmp_path, monkeypatch):
    """Data step -> hpo's step (optuna, 3 simulated trials, pretrained weights on the volume) ->
    pick -> the training and reporting steps get the tuned values, typed, under their own names."""
    from kfp import local

    from hpo import Study

    mnt = tmp_path / "pvc"
    weights = _seed_pretrained(mnt / "studies" / "pretrained")
    monkeypatch.setenv("HPO_TRAINER", "hpo.simulate:simulated_trainer")
    monkeypatch.setenv("HPO_PLOTS", "0")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    uno_cards_pipeline(str(mnt), gpus=0)()

    study = Study.open(mnt / "studies" / "uno-cards-optuna")
    best = study.best()
    assert len(study.finished()) == 3 and set(best.params) == {"lr0", "momentum", "weight_decay"}
    assert study.settings["model"] == str(weights)  # trained from the pretrained weights on the volume
    run_dir = next((tmp_path / "root").glob("train-yolo-tuned-*"))

    def output(task: str) -> dict:
        values = json.loads((run_dir / task / "executor_output.json").read_text())["parameterValues"]
        return json.loads(values["Output"])

    got = output("train-yolo")
    assert got["learning_rate"] == [pytest.approx(best.params["lr0"]), "float"]
    assert got["momentum"] == [pytest.approx(best.params["momentum"]), "float"]
    assert got["weight_decay"] == [pytest.approx(best.params["weight_decay"]), "float"]
    assert got["image_size"] == [32, "int"] and got["optimizer"] == ["AdamW", "str"]
    assert got["epochs"] == [1, "int"] and got["model_name"] == ["yolov8n-cls", "str"]
    labels = output("create-serialized-labels")
    assert labels == {
        "learning_rate": pytest.approx(best.params["lr0"]),
        "momentum": pytest.approx(best.params["momentum"]),
        "weight_decay": pytest.approx(best.params["weight_decay"]),
        "image_size": 32,
    }


def test_pick_component_refuses_bad_mappings_and_bad_values(tmp_path):
    from kfp import local

    from hpo.errors import ConfigError

    for bad, match in (
        ({}, r"^outputs: \{\} names no output"),
        ({"learning-rate": ("lr0", float)}, r"^outputs: 'learning-rate' is not an output name"),
        ({"tuned_train_args_json": ("lr0", float)}, r"is the component's input"),
        ({"lr": "lr0"}, r"^outputs: lr='lr0' is not \(train_arg, type\)"),
        ({"lr": ("lr0", list)}, r"type <class 'list'> is not one of float, int, str, bool"),
        ({"size": ("imgsz", int, 32.5)}, r"the default 32.5 is not a int"),
    ):
        with pytest.raises(ConfigError, match=match):
            make_pick_component(bad)
    with pytest.raises(ConfigError, match=r"^name: 'my pick'"):
        make_pick_component({"lr": ("lr0", float)}, name="my pick")

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pick = make_pick_component({"image_size": ("imgsz", int), "cos": ("cos_lr", bool, False), "lr": ("lr0", float)})
    task = pick(tuned_train_args_json=json.dumps({"imgsz": 640.0, "lr0": 1}))
    assert task.outputs == {"image_size": 640, "cos": False, "lr": 1.0}
    assert type(task.outputs["image_size"]) is int and type(task.outputs["lr"]) is float
    with pytest.raises(RuntimeError, match="FAILURE"):  # a missing key without a default fails the step
        pick(tuned_train_args_json=json.dumps({"lr0": 0.01}))
    with pytest.raises(RuntimeError, match="FAILURE"):  # imgsz 640.5 is no int
        pick(tuned_train_args_json=json.dumps({"imgsz": 640.5, "lr0": 0.01}))


@pytest.mark.slow
def test_step_trains_from_pretrained_weights_on_the_volume_only_when_asked(tmp_path, monkeypatch):
    """``download_weights``: official weights named by ``model`` are fetched once into
    ``<output>/pretrained`` on the volume and every trial trains from that file (here the file an
    earlier fetch left: this machine cannot reach Ultralytics' assets). Without the opt-in the
    step stops before anything is written, saying how to opt in."""
    from hpo import Study
    from hpo.datasets import make_digits_cls
    from hpo.errors import ConfigError
    from hpo_kfp.step import run_tune_step

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0)
    args = dict(
        model="yolov8n-cls.pt",
        data="digits",
        iterations=1,
        epochs=1,
        mount_path=str(mnt),
        space=json.dumps({"lr0": [1e-3, 1e-2]}),
        train_args={"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"},
        seed=0,
    )
    monkeypatch.delenv("HPO_DOWNLOAD_WEIGHTS", raising=False)
    monkeypatch.setenv("HPO_PLOTS", "0")
    with pytest.raises(
        ConfigError, match=r"model: 'yolov8n-cls.pt' is not a local file; hpo never downloads weights unless asked"
    ):
        run_tune_step(**args)
    assert not (mnt / "studies" / "digits-ultralytics").exists()
    weights = _seed_pretrained(mnt / "studies" / "pretrained")
    r = run_tune_step(**args, download_weights=True)
    study = Study.open(r.study_dir)
    assert study.settings["model"] == str(weights) and r.metrics["complete"] == 1
    trial_args = yaml.safe_load((Path(r.study_dir) / "trials" / "0" / "args.yaml").read_text())
    assert trial_args["model"] == str(weights)  # Ultralytics' own record: the trial loaded the pretrained file
