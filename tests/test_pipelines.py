"""The KFP v2 step: compiled IR of every pipeline, the component YAML, the platform helper,
``hpo pipelines compile`` and a real ``kfp.local`` run of the tuning component on digits-cls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

kfp = pytest.importorskip("kfp")
from kfp import compiler, dsl  # noqa: E402

import hpo_kfp  # noqa: E402
from hpo_kfp import configure_tuning_task, make_components, make_tune_component  # noqa: E402
from hpo_kfp.examples import compile_component, make_pipelines  # noqa: E402
from hpo_kfp.platform import STORAGE_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HPO = [str(Path(sys.executable).parent / "hpo")]
#: A user's image (nothing is pulled: compile tests only read it back, kfp.local ignores it).
IMAGE = "registry.example.com/team/hpo:0.1.0"
hpo_tune = make_tune_component(IMAGE)
PIPELINES = make_pipelines(IMAGE)


@dsl.component(install_kfp_package=False)
def _user_train(tuned_train_args_json: str, hyperparameters: dict) -> str:
    """A user's training step: what it receives from the tuning step, with each value's type."""
    import json

    args = json.loads(tuned_train_args_json)
    return json.dumps(
        {
            "from_json": {k: [v, type(v).__name__] for k, v in args.items()},
            "from_dict": {k: [v, type(v).__name__] for k, v in hyperparameters.items()},
        }
    )


def _compile(pipeline, tmp_path: Path) -> tuple[dict, dict]:
    """Compile and return (pipeline spec, kubernetes platform spec)."""
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return spec, platform


def _component_inputs(spec: dict, name: str) -> dict:
    return spec["components"][name]["inputDefinitions"]["parameters"]


# --- the helper


def test_configure_refuses_accelerator_counts_kfp_does_not_accept():
    with pytest.raises(ValueError, match=r"accelerator_count: 3 .*0, 1, 2, 4, 8, 16"):

        @dsl.pipeline(name="bad")
        def bad(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="yolov8n.yaml", data="d.yaml"), pvc_name=pvc_name, accelerator_count=3)

    with pytest.raises(ValueError, match="retries"):

        @dsl.pipeline(name="bad2")
        def bad2(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="yolov8n.yaml", data="d.yaml"), pvc_name=pvc_name, retries=-1)


def test_one_gpu_count_for_the_request_and_the_preflight(tmp_path):
    """The pod's GPU request and the step's pre-flight ``gpus`` agree by construction: a count
    given only to configure_tuning_task reaches the step, a count given only to the step is
    requested, and two different counts are refused when the pipeline is built."""

    @dsl.pipeline(name="gpus")
    def p(pvc_name: str = "x", n: int = 2) -> None:
        only_request = hpo_tune(model="yolov8n.yaml", data="d.yaml")
        configure_tuning_task(only_request, pvc_name=pvc_name, accelerator_count=1)
        only_step = hpo_tune(model="yolov8n.yaml", data="d.yaml", gpus=n)
        configure_tuning_task(only_step, pvc_name=pvc_name)
        channel_request = hpo_tune(model="yolov8n.yaml", data="d.yaml")
        configure_tuning_task(channel_request, pvc_name=pvc_name, accelerator_count=n)
        both = hpo_tune(model="yolov8n.yaml", data="d.yaml", gpus=4)
        configure_tuning_task(both, pvc_name=pvc_name, accelerator_count=4)
        none = hpo_tune(model="yolov8n.yaml", data="d.yaml")
        configure_tuning_task(none, pvc_name=pvc_name)

    spec, _ = _compile(p, tmp_path)
    tasks, executors = spec["root"]["dag"]["tasks"], spec["deploymentSpec"]["executors"]

    def request(name: str):
        return executors[f"exec-{name}"]["container"].get("resources", {}).get("accelerator", {}).get("resourceCount")

    assert tasks["hpo-tune"]["inputs"]["parameters"]["gpus"] == {"runtimeValue": {"constant": 1}}
    assert request("hpo-tune") == "1"
    assert tasks["hpo-tune-2"]["inputs"]["parameters"]["gpus"] == {"componentInputParameter": "n"}
    assert request("hpo-tune-2") == "{{$.inputs.parameters['pipelinechannel--n']}}"
    assert tasks["hpo-tune-3"]["inputs"]["parameters"]["gpus"] == {"componentInputParameter": "n"}
    assert request("hpo-tune-3") == "{{$.inputs.parameters['pipelinechannel--n']}}"
    assert tasks["hpo-tune-4"]["inputs"]["parameters"]["gpus"] == {"runtimeValue": {"constant": 4}}
    assert request("hpo-tune-4") == "4"
    assert "gpus" not in tasks["hpo-tune-5"]["inputs"]["parameters"] and request("hpo-tune-5") is None

    with pytest.raises(ValueError, match=r"^accelerator_count: 1 but the task was given gpus=2, .*give the GPU count once"):

        @dsl.pipeline(name="two-counts")
        def two(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="m.yaml", data="d.yaml", gpus=2), pvc_name=pvc_name, accelerator_count=1)

    with pytest.raises(ValueError, match=r"^gpus \(the GPU count of the task, also its request\): 3 is not a GPU count"):

        @dsl.pipeline(name="odd-count")
        def odd(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="m.yaml", data="d.yaml", gpus=3), pvc_name=pvc_name)


def test_a_gpu_request_alone_reaches_the_preflight_under_kfp_local(tmp_path, capfd):
    """Only ``accelerator_count=1`` given: the check-environment step checks for 1 GPU (and fails on
    this machine, which has none) instead of checking for none."""
    from kfp import local

    from hpo.datasets import make_digits_cls

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0, imgsz=8)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    check_environment = make_components(IMAGE)["check_environment"]

    @dsl.pipeline(name="request-only")
    def request_only(pvc_name: str = "x", gpus: int = 1) -> None:
        check = check_environment(mount_path=str(mnt), data="digits", model="yolov8n-cls.yaml")
        configure_tuning_task(check, pvc_name=pvc_name, mount_path=str(mnt), accelerator_count=gpus, retries=0)

    with pytest.raises(RuntimeError, match="FAILURE"):
        request_only()
    assert "gpu: 1 requested but torch sees 0" in "".join(capfd.readouterr())
    request_only(gpus=0)  # the same pipeline asking for no GPU passes its pre-flight here
    assert "gpu: 1 requested" not in "".join(capfd.readouterr())


def test_user_pipeline_with_the_helper_compiles_every_setting(tmp_path):
    """What docs/kfp.md shows: an import and a few lines in an existing pipeline."""

    @dsl.pipeline(name="user-pipeline")
    def user_pipeline(pvc_name: str = "hpo-data", creds: str = "hpo-credentials") -> None:
        tune = hpo_tune(
            model="yolov8n.yaml",
            data="datasets/coco8/data.yaml",
            iterations=20,
            epochs=10,
            mount_path="/data",
            train_args={"imgsz": 640},
            gpus=2,
        )
        configure_tuning_task(
            tune,
            pvc_name=pvc_name,
            mount_path="/data",
            accelerator_type="nvidia.com/gpu",
            accelerator_count=2,
            node_selector={"nvidia.com/gpu.present": "true"},
            toleration={"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            shm_size="8Gi",
            secret_name=creds,
            retries=3,
            timeout_s=7200,
        )

    spec, platform = _compile(user_pipeline, tmp_path)
    task = spec["root"]["dag"]["tasks"]["hpo-tune"]
    assert task["cachingOptions"].get("enableCache", False) is False
    assert task["retryPolicy"]["maxRetryCount"] == 3
    res = spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["resources"]["accelerator"]
    assert res["resourceType"] == "nvidia.com/gpu" and str(res["resourceCount"]) == "2"
    container = spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]
    assert container["image"] == IMAGE
    # the defaults: 4 CPUs; 12Gi of memory + the 8Gi /dev/shm, requested and limited
    assert container["resources"]["cpuRequest"] == 4 and container["resources"]["cpuLimit"] == 4
    assert container["resources"]["resourceMemoryRequest"] == "20480Mi"
    assert container["resources"]["resourceMemoryLimit"] == "20480Mi"
    k8s = platform["exec-hpo-tune"]
    assert k8s["pvcMount"] == [
        {"componentInputParameter": "pvc_name", "mountPath": "/data", "pvcNameParameter": {"componentInputParameter": "pvc_name"}}
    ]
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "dshm"}]
    env = k8s["secretAsEnv"][0]
    assert env["secretNameParameter"] == {"componentInputParameter": "creds"}
    assert {e["envVar"] for e in env["keyToEnv"]} == set(hpo_kfp.SECRET_ENV_KEYS)
    assert all(e["envVar"] == e["secretKey"] for e in env["keyToEnv"])
    assert k8s["activeDeadlineSeconds"] == "7200" or k8s["activeDeadlineSeconds"] == 7200
    # the outputs the issue asks for
    outs = spec["components"]["comp-hpo-tune"]["outputDefinitions"]
    assert outs["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outs["artifacts"]["leaderboard"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert outs["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outs["artifacts"]["best_model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outs["parameters"] == {
        "study_dir": {"parameterType": "STRING"},
        "best_weights": {"parameterType": "STRING"},
        "best_hyperparameters": {"parameterType": "STRUCT"},
        "best_hyperparameters_json": {"parameterType": "STRING"},
        "tuned_train_args_json": {"parameterType": "STRING"},
        "ultralytics_version": {"parameterType": "STRING"},
    }
    ins = _component_inputs(spec, "comp-hpo-tune")
    for name in (
        "backend",
        "model",
        "data",
        "iterations",
        "epochs",
        "space",
        "metric",
        "output_dir",
        "study_name",
        "train_args",
        "backend_options",
        "concurrent_trials",
        "keep_weights",
        "mount_path",
        "time_budget",
        "allow_changes",
    ):
        assert name in ins, name


# --- the example pipelines


def test_train_then_tune_ir(tmp_path):
    spec, platform = _compile(PIPELINES["train_then_tune"], tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"check-environment", "train-model", "hpo-tune", "train-model-2", "validate-model"}
    assert tasks["train-model"]["dependentTasks"] == ["check-environment"]
    assert tasks["hpo-tune"]["dependentTasks"] == ["train-model"]
    # the final training consumes the best hyperparameters; validate-model consumes the Model
    final = tasks["train-model-2"]
    assert final["taskInfo"]["name"] == "train-final"
    assert final["inputs"]["parameters"]["hyperparameters"] == {
        "taskOutputParameter": {"outputParameterKey": "best_hyperparameters", "producerTask": "hpo-tune"}
    }
    assert tasks["validate-model"]["inputs"]["artifacts"]["weights"] == {
        "taskOutputArtifact": {"outputArtifactKey": "best_model", "producerTask": "hpo-tune"}
    }
    for _name, task in tasks.items():
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        k8s = platform[executor]
        # the same PVC, from the pipeline parameter, on every step
        assert k8s["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}
        assert k8s["pvcMount"][0]["mountPath"] == "/mnt/hpo"
        assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm" and k8s["emptyDirMounts"][0]["medium"] == "Memory"
        assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        assert container["image"] == IMAGE
        acc = container["resources"]["accelerator"]
        # type and count wired to the pipeline parameters accelerator_type and gpus
        assert acc["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
        assert acc["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert task["inputs"]["parameters"]["pipelinechannel--gpus"] == {"componentInputParameter": "gpus"}
        assert task["cachingOptions"].get("enableCache", False) is False
        assert container["resources"]["resourceMemoryRequest"] == container["resources"]["resourceMemoryLimit"]
    assert spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["resources"]["resourceMemoryRequest"] == "14336Mi"
    assert spec["deploymentSpec"]["executors"]["exec-check-environment"]["container"]["resources"]["cpuRequest"] == 1
    assert tasks["hpo-tune"]["retryPolicy"]["maxRetryCount"] == 2
    assert platform["exec-hpo-tune"]["secretAsEnv"][0]["secretNameParameter"] == {"componentInputParameter": "secret_name"}
    assert "secretAsEnv" not in platform["exec-check-environment"]


def test_pipelines_mount_at_the_given_mount_path(tmp_path):
    spec, platform = _compile(make_pipelines(IMAGE, mount_path="/data/hpo")["compare_backends"], tmp_path)
    assert platform["exec-hpo-tune"]["pvcMount"][0]["mountPath"] == "/data/hpo"
    assert platform["exec-compare-studies"]["pvcMount"][0]["mountPath"] == "/data/hpo"
    inner = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert inner["hpo-tune"]["inputs"]["parameters"]["mount_path"] == {"runtimeValue": {"constant": "/data/hpo"}}


def test_joined_workers_take_the_storage_url_from_a_secret(tmp_path):
    spec, platform = _compile(PIPELINES["joined_workers"], tmp_path)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"hpo-tune", "for-loop-2"} or set(root) == {"hpo-tune", "for-loop-1"}
    loop_name = next(n for n in root if n.startswith("for-loop"))
    assert root[loop_name]["parameterIterator"]["items"]["inputParameter"].endswith("workers")
    inner = spec["components"][f"comp-{loop_name}"]["dag"]["tasks"]
    ((joined_name, joined),) = inner.items()
    assert joined["inputs"]["parameters"]["join"] == {"runtimeValue": {"constant": True}}
    assert root["hpo-tune"]["inputs"]["parameters"].get("join", {"runtimeValue": {"constant": False}}) == {
        "runtimeValue": {"constant": False}
    }
    for task in (root["hpo-tune"], joined):
        assert task["inputs"]["parameters"]["backend"] == {"runtimeValue": {"constant": "optuna"}}
        assert "storage_env" in task["inputs"]["parameters"]
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        env = platform[executor]["secretAsEnv"][0]
        assert {"envVar": STORAGE_ENV, "secretKey": STORAGE_ENV} in env["keyToEnv"] and STORAGE_ENV == "HPO_STORAGE"
        assert env.get("optional") is True
    # no URL, password or host anywhere in the compiled pipeline: only the Secret's name
    text = (tmp_path / "p.yaml").read_text()
    assert "postgresql://" not in text and "sqlite://" not in text
    assert spec["root"]["inputDefinitions"]["parameters"]["storage_env"]["defaultValue"] == "HPO_STORAGE"


def test_compare_backends_ir_mounts_inside_parallelfor(tmp_path):
    spec, platform = _compile(PIPELINES["compare_backends"], tmp_path)
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--backends"
    inner = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert inner["hpo-tune"]["inputs"]["parameters"]["backend"] == {
        "componentInputParameter": "pipelinechannel--backends-loop-item"
    }
    assert inner["hpo-tune"]["retryPolicy"]["maxRetryCount"] == 2
    assert inner["hpo-tune"]["cachingOptions"].get("enableCache", False) is False
    k8s = platform["exec-hpo-tune"]
    # inside the loop the PVC name arrives through the loop's input channel of the pipeline parameter
    assert k8s["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pipelinechannel--pvc_name"}
    assert spec["components"]["comp-for-loop-1"]["inputDefinitions"]["parameters"]["pipelinechannel--pvc_name"]
    assert loop["inputs"]["parameters"]["pipelinechannel--pvc_name"] == {"componentInputParameter": "pvc_name"}
    assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert k8s["secretAsEnv"][0]["secretNameParameter"] == {"componentInputParameter": "pipelinechannel--secret_name"}
    acc = spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["resources"]["accelerator"]
    assert acc["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}" and acc["resourceType"] == "nvidia.com/gpu"
    # the final comparison collects every study dir and mounts the same PVC
    cmp_task = spec["root"]["dag"]["tasks"]["compare-studies"]
    assert cmp_task["dependentTasks"] == ["for-loop-1"]
    assert platform["exec-compare-studies"]["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}


def test_component_yaml_loadable(tmp_path):
    path = compile_component(tmp_path / "c.yaml", image=IMAGE)
    loaded = kfp.components.load_component_from_file(str(path))
    assert loaded.name == "hpo-tune"
    assert {"model", "data", "backend", "mount_path", "train_args", "join", "storage_env"} <= set(loaded.component_spec.inputs)

    @dsl.pipeline(name="from-yaml")
    def from_yaml(pvc_name: str = "hpo-data") -> None:
        t = loaded(model="yolov8n.yaml", data="d/data.yaml")
        configure_tuning_task(t, pvc_name=pvc_name, accelerator_count=1)

    spec, platform = _compile(from_yaml, tmp_path)
    assert platform["exec-hpo-tune"]["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}
    assert spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == IMAGE


def test_image_is_required_and_checked(tmp_path, monkeypatch):
    from hpo.errors import ConfigError

    comp = make_tune_component("registry.example/team/hpo:1")

    @dsl.pipeline(name="img")
    def p() -> None:
        comp(model="yolov8n.yaml", data="d.yaml")

    spec, _ = _compile(p, tmp_path)
    assert spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == "registry.example/team/hpo:1"
    for bad in (None, "", "  "):
        with pytest.raises(ConfigError, match="image: no component image set"):
            make_components(bad)
    with pytest.raises(ConfigError, match="image: 'Not An Image' is not an image reference"):
        make_components("Not An Image")
    monkeypatch.delenv("HPO_IMAGE", raising=False)
    with pytest.raises(ConfigError, match="HPO_IMAGE"):
        hpo_kfp.hpo_tune  # noqa: B018  (the module-level component needs $HPO_IMAGE)
    monkeypatch.setenv("HPO_IMAGE", "registry.example/team/hpo:2")
    assert hpo_kfp.hpo_tune.component_spec.implementation.container.image == "registry.example/team/hpo:2"


def test_configure_sets_cpu_and_memory_with_shm_counted_in(tmp_path):
    @dsl.pipeline(name="res")
    def p(pvc_name: str = "x") -> None:
        t = hpo_tune(model="yolov8n.yaml", data="d.yaml")
        configure_tuning_task(t, pvc_name=pvc_name, cpu="6", cpu_limit="8", memory="30Gi", shm_size="2Gi", memory_limit="40Gi")

    spec, _ = _compile(p, tmp_path)
    res = spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["resources"]
    assert (res["cpuRequest"], res["cpuLimit"]) == (6, 8)
    assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("32768Mi", "40960Mi")
    with pytest.raises(ValueError, match=r"memory_limit: '16Gi' is below the request 18432Mi"):

        @dsl.pipeline(name="res2")
        def p2(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="m.yaml", data="d.yaml"), pvc_name=pvc_name, memory="16Gi", memory_limit="16Gi")

    with pytest.raises(ValueError, match="memory: '12 GB' is not a memory quantity"):

        @dsl.pipeline(name="res3")
        def p3(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="m.yaml", data="d.yaml"), pvc_name=pvc_name, memory="12 GB")


def test_cli_pipelines_compile(tmp_path):
    out = tmp_path / "ir"
    r = subprocess.run(
        [*HPO, "pipelines", "compile", str(out), "--image", "registry.example/hpo:2"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "compare_backends.yaml",
        "hpo_tune_component.yaml",
        "joined_workers.yaml",
        "train_then_tune.yaml",
    ]
    ir = yaml.safe_load_all((out / "train_then_tune.yaml").read_text())
    assert next(ir)["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == "registry.example/hpo:2"


def test_cli_pipelines_compile_bad_output_or_no_image(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "HPO_IMAGE"}
    r = subprocess.run([*HPO, "pipelines", "compile", str(tmp_path / "a")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.startswith("hpo: error: image: no component image set") and "--image" in r.stderr
    assert not (tmp_path / "a").exists()  # nothing written
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = subprocess.run(
        [*HPO, "pipelines", "compile", str(blocker), "--image", IMAGE], capture_output=True, text=True, timeout=120
    )
    assert (
        r.returncode == 2
        and r.stderr == f"hpo: error: output: '{blocker}' is a file (or under one); give a folder for the YAML files\n"
    )
    ro = tmp_path / "ro"  # a read-only file system (root ignores permission bits, not this)
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        r = subprocess.run(
            [*HPO, "pipelines", "compile", str(ro / "out"), "--image", IMAGE], capture_output=True, text=True, timeout=120
        )
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"hpo: error: output: cannot create '{ro / 'out'}' (Read-only file system)"), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1


# --- pre-flight


def test_preflight_cli(tmp_path):
    from hpo.datasets import make_digits_cls

    make_digits_cls(tmp_path / "mnt" / "digits", seed=0)
    r = subprocess.run(
        [*HPO, "preflight", "--mount", str(tmp_path / "nope"), "--data", "digits"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "mount: " in r.stderr and "does not exist" in r.stderr
    from hpo.preflight import run_preflight

    missing = run_preflight(mount=tmp_path / "mnt", data="missing")
    assert [c.name for c in missing.failures()] == ["data"] and "does not exist" in missing.failures()[0].message
    gpu = run_preflight(mount=tmp_path / "mnt", data="digits", gpus=1)
    assert [c.message for c in gpu.failures()] == [next(c.message for c in gpu.checks if c.name == "gpu")]
    assert "gpu: 1 requested but torch sees 0" in gpu.failures()[0].message
    r = subprocess.run(
        [
            *HPO,
            "preflight",
            "--mount",
            str(tmp_path / "mnt"),
            "--data",
            "digits",
            "--workers",
            "4",
            "--shm-per-worker-mib",
            str(10**7),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["workers"] == 0
    assert [c["name"] for c in report["checks"]] == ["mount", "output", "data", "gpu", "shm"]
    assert next(c for c in report["checks"] if c["name"] == "shm")["status"] == "warn"
    assert (tmp_path / "mnt" / "studies").is_dir()


def test_preflight_unwritable_output(tmp_path):
    from hpo.preflight import run_preflight

    (tmp_path / "blocker").write_text("a file where the output folder should be")
    report = run_preflight(mount=tmp_path, output="blocker/studies")
    assert not report.ok and [c.name for c in report.failures()] == ["output"]
    assert "cannot write" in report.failures()[0].message


# --- kfp.local: the component end to end on real data


@pytest.mark.slow
def test_tune_component_runs_under_kfp_local(tmp_path, monkeypatch):
    from kfp import local

    from hpo import Study
    from hpo.datasets import make_digits_cls

    mnt = tmp_path / "pvc"  # stands in for the PVC mount
    make_digits_cls(mnt / "datasets" / "digits-cls", seed=0)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    monkeypatch.setenv("HPO_PLOTS", "1")  # the component's HTML report output
    space = json.dumps({"lr0": [1e-4, 1e-2], "fliplr": [0.0, 0.5]})
    train_args = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"}
    task = hpo_tune(
        model="yolov8n-cls.yaml",
        data="datasets/digits-cls",
        backend="ultralytics",
        iterations=2,
        epochs=1,
        space=space,
        mount_path=str(mnt),
        output_dir="studies",
        train_args=train_args,
        seed=0,
    )
    study_dir = mnt / "studies" / "digits-cls-ultralytics"
    assert task.outputs["study_dir"] == str(study_dir)
    assert task.outputs["best_weights"] == str(study_dir / "weights" / "best.pt")
    assert (study_dir / "weights" / "best.pt").is_file()

    metrics = task.outputs["metrics"].metadata
    assert metrics["complete"] == 2 and metrics["failed"] == 0 and metrics["pruned"] == 0 and metrics["trials"] == 2
    study = Study.open(study_dir)
    records = study.records()
    assert sorted(records) == [0, 1]
    assert all(r.status.value == "complete" and r.epochs_completed == 1 for r in records.values())
    assert metrics["best_objective"] == max(r.objective for r in records.values())
    assert all(0.0 <= r.objective <= 1.0 for r in records.values())
    assert study.settings["train_args"]["imgsz"] == 32  # an int again after KFP's Struct
    assert {tuple(sorted(r.params)) for r in records.values()} == {("fliplr", "lr0")}

    board = Path(task.outputs["leaderboard"].path).read_text()
    assert board.count("| complete |") == 2 and "metrics/accuracy_top1" in board
    best_trial = study.best()
    assert task.outputs["best_hyperparameters"] == best_trial.params  # a dict parameter for the next step
    model = task.outputs["best_model"]
    assert Path(model.path).read_bytes() == (study_dir / "weights" / "best.pt").read_bytes()
    assert model.metadata["objective"] == metrics["best_objective"] == best_trial.objective
    assert model.metadata["metric"] == "metrics/accuracy_top1" and model.metadata["backend"] == "ultralytics"
    assert model.metadata["study_dir"] == str(study_dir) and model.metadata["best_trial"] == best_trial.id
    assert model.metadata["resumed"] is False
    page = Path(task.outputs["report"].path).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page.replace("<!DOCTYPE html>", "")
    assert page.count("<td>complete</td>") == 2 and 'src="data:image/png;base64,' in page

    # a re-run (what a KFP retry does) resumes the same study instead of starting over; the
    # ParallelFor pipeline (kfp.local ignores the PVC, so mount_path is a parameter) then compares.
    compare_backends = make_pipelines(IMAGE, mount_path=str(mnt))["compare_backends"]
    compare_backends(
        backends=["ultralytics"],
        model="yolov8n-cls.yaml",
        data="datasets/digits-cls",
        iterations=2,
        epochs=1,
        space=space,
        gpus=0,
        output_dir="studies",
        train_args=train_args,
    )
    assert sorted(Study.open(study_dir).records()) == [0, 1]  # nothing trained twice
    reports = list((tmp_path / "root").glob("hpo-compare-backends-*/compare-studies/report"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert "| 1 | ultralytics |" in text and str(study_dir) in text


def test_tuned_train_args_keep_their_types_into_the_next_step_under_kfp_local(tmp_path, monkeypatch):
    """KFP's dict outputs turn numbers into floats (imgsz 32.0, which Ultralytics refuses); the
    step's JSON outputs keep ints ints: a downstream component receives imgsz and an int
    hyperparameter as ints. Also the Ultralytics version the study ran with, as output and metadata."""
    import ultralytics
    from kfp import local

    from hpo import Study
    from hpo.datasets import make_digits_cls

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0, imgsz=8)
    monkeypatch.setenv("HPO_TRAINER", "hpo.simulate:simulated_trainer")
    monkeypatch.setenv("HPO_PLOTS", "0")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline(name="typed")
    def typed() -> None:
        tune = hpo_tune(
            model="yolov8n-cls.yaml",
            data="digits",
            iterations=2,
            epochs=1,
            mount_path=str(mnt),
            space=json.dumps({"lr0": [1e-4, 1e-2], "close_mosaic": {"type": "int", "low": 1, "high": 9}}),
            train_args={"imgsz": 32, "batch": 16, "workers": 0, "fliplr": 0.5},
            seed=0,
        )
        _user_train(
            tuned_train_args_json=tune.outputs["tuned_train_args_json"], hyperparameters=tune.outputs["best_hyperparameters"]
        )

    run = typed()
    study = Study.open(mnt / "studies" / "digits-ultralytics")
    best = study.best()
    run_dir = next((tmp_path / "root").glob("typed-*"))
    tune_out = json.loads((run_dir / "hpo-tune" / "executor_output.json").read_text())["parameterValues"]
    assert json.loads(tune_out["best_hyperparameters_json"]) == best.params
    assert type(json.loads(tune_out["best_hyperparameters_json"])["close_mosaic"]) is int
    assert tune_out["ultralytics_version"] == ultralytics.__version__ == study.settings["versions"]["ultralytics"]
    got = json.loads(json.loads((run_dir / "user-train" / "executor_output.json").read_text())["parameterValues"]["Output"])
    # the tuned train args: the fixed ones, what hpo chose (no optimizer given and the space tunes lr0:
    # the default policy, keep, resolves auto to what it picks, AdamW with its momentum and warmup_bias_lr),
    # the best params over them
    assert {k: v for k, (v, _) in got["from_json"].items()} == {
        "imgsz": 32,
        "batch": 16,
        "workers": 0,
        "fliplr": 0.5,
        "optimizer": "AdamW",
        "momentum": 0.9,
        "warmup_bias_lr": 0.0,
        **best.params,
    }
    assert got["from_json"]["imgsz"] == [32, "int"] and got["from_json"]["batch"] == [16, "int"]
    assert got["from_json"]["close_mosaic"] == [best.params["close_mosaic"], "int"]
    assert got["from_json"]["fliplr"] == [0.5, "float"] and got["from_json"]["optimizer"] == ["AdamW", "str"]
    # the caveat docs/kfp.md states: the dict output's ints arrive as floats
    assert got["from_dict"]["close_mosaic"] == [float(best.params["close_mosaic"]), "float"]
    meta = json.loads((run_dir / "hpo-tune" / "executor_output.json").read_text())["artifacts"]["best_model"]
    assert meta["artifacts"][0]["metadata"]["ultralytics_version"] == ultralytics.__version__
    del run


@pytest.mark.slow
def test_example_pipeline_hands_best_hyperparameters_and_model_on_under_kfp_local(tmp_path):
    """verify -> train -> tune -> final training with the best hyperparameters + validate the Model."""
    from kfp import local

    from hpo import Study
    from hpo.datasets import make_digits_cls

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    c = make_components(IMAGE)
    with pytest.raises(RuntimeError, match="FAILURE"):  # a GPU the machine does not have stops the pipeline
        c["check_environment"](mount_path=str(mnt), data="digits", model="yolov8n-cls.yaml", gpus=1)
    train_then_tune = make_pipelines(IMAGE, mount_path=str(mnt))["train_then_tune"]
    train_then_tune(
        model="yolov8n-cls.yaml",
        data="digits",
        train_epochs=1,
        iterations=2,
        epochs=1,
        final_epochs=1,
        space=json.dumps({"lr0": [1e-4, 1e-2], "fliplr": [0.0, 0.5]}),
        gpus=0,
        seed=0,
        train_args={"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"},
    )
    study = Study.open(mnt / "studies" / "digits-ultralytics")
    best = study.best()
    assert [r.status.value for r in study.records().values()] == ["complete", "complete"]
    assert (mnt / "train" / "baseline" / "weights" / "best.pt").is_file()
    # the final training ran with the tuned values (Ultralytics' own record of its arguments)
    final_args = yaml.safe_load((mnt / "train" / "final" / "args.yaml").read_text())
    assert set(best.params) == {"lr0", "fliplr"}
    for key, value in best.params.items():
        assert final_args[key] == pytest.approx(value), key
    baseline_args = yaml.safe_load((mnt / "train" / "baseline" / "args.yaml").read_text())
    assert baseline_args["lr0"] == 0.01  # the baseline: Ultralytics' default, not a tuned value
    # validate-model read the Model artifact (a copy of the study's best weights) and validated it
    run_dir = next((tmp_path / "root").glob("hpo-train-then-tune-*"))
    model_file = run_dir / "hpo-tune" / "best_model"
    assert model_file.read_bytes() == (study.path / "weights" / "best.pt").read_bytes()
    out = json.loads((run_dir / "validate-model" / "executor_output.json").read_text())
    objective = out["parameterValues"]["Output"]
    assert 0.0 <= objective <= 1.0
    assert objective == pytest.approx(best.objective, abs=0.02)  # the same weights on the same val split


def test_retry_takes_over_a_killed_pods_lock_at_once_or_waits_in_heartbeat_mode(tmp_path, monkeypatch):
    """A retried pod finds the killed pod's lock. Where the kernel proves the writer dead (flock on a
    local filesystem, NFSv4) it resumes at once; in heartbeat mode (a filesystem without cross-host
    locks) it waits while the heartbeat is fresh, then resumes."""
    import os
    import time as _time

    from hpo import Study
    from hpo.datasets import make_digits_cls
    from hpo.errors import StudyLockedError
    from hpo.lock import kernel_lock_reliable
    from hpo.study import LOCK_STALE_AFTER_S, TrialRecord, TrialStatus
    from hpo_kfp.step import run_tune_step

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0)
    args = dict(
        model="yolov8n-cls.yaml",
        data="digits",
        iterations=1,
        epochs=1,
        mount_path=str(mnt),
        study_name="s",
        space='{"lr0": [0.001, 0.01]}',
        train_args={"imgsz": 32, "workers": 0, "device": "cpu"},
    )
    # the study a killed pod left: one finished trial (so no training is needed here) and its lock
    from hpo.resume import open_study
    from hpo.tuner import Tuner

    tuner = Tuner(
        backend="ultralytics",
        model="yolov8n-cls.yaml",
        data=mnt / "digits",
        space={"lr0": [0.001, 0.01]},
        iterations=1,
        epochs=1,
        train_args={"imgsz": 32, "workers": 0, "device": "cpu"},
        output=mnt / "studies",
        name="s",
    )
    study = open_study(tuner.config)
    study.append(TrialRecord(id=0, params={"lr0": 0.005}, status=TrialStatus.COMPLETE, objective=0.5, epochs_completed=1))
    study.close()
    lock = mnt / "studies" / "s" / "lock"
    dead = json.dumps({"host": "killed-pod-xyz", "pid": 7, "started": "2026-01-01T00:00:00Z"})
    if kernel_lock_reliable(lock.parent):
        lock.write_text(dead)
        t0 = _time.monotonic()
        r = run_tune_step(**args)
        assert _time.monotonic() - t0 < 60 and r.resumed and r.metrics["complete"] == 1
    monkeypatch.setenv("HPO_LOCK_HEARTBEAT", "1")
    lock.write_text(dead)
    t0 = _time.monotonic()
    with pytest.raises(StudyLockedError, match="killed-pod-xyz"):
        run_tune_step(**args, lock_wait_s=1.0)
    assert _time.monotonic() - t0 >= 1.0
    old = _time.time() - LOCK_STALE_AFTER_S - 5  # the dead pod's heartbeat stopped
    os.utime(lock, (old, old))
    r = run_tune_step(**args, lock_wait_s=0)
    assert r.resumed and r.metrics["complete"] == 1 and r.metrics["best_objective"] == 0.5
    assert sorted(Study.open(mnt / "studies" / "s").records()) == [0]


def test_join_and_storage_env_errors_before_anything_trains(tmp_path, monkeypatch):
    """A joined task without a study to join, and a storage variable the Secret did not fill: one
    ConfigError each, nothing trained or written."""
    from hpo.datasets import make_digits_cls
    from hpo.errors import ConfigError
    from hpo_kfp.step import run_tune_step

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0)
    args = dict(
        model="yolov8n-cls.yaml",
        data="digits",
        backend="optuna",
        iterations=2,
        epochs=1,
        mount_path=str(mnt),
        study_name="joined",
        space='{"lr0": [0.001, 0.01]}',
        train_args={"imgsz": 32, "workers": 0, "device": "cpu"},
    )
    monkeypatch.delenv("HPO_TEST_STORAGE", raising=False)
    with pytest.raises(ConfigError, match="storage_env: the environment variable HPO_TEST_STORAGE is not set or empty"):
        run_tune_step(**args, storage_env="HPO_TEST_STORAGE")
    with pytest.raises(ConfigError, match=r"join: no study at .*joined after 0 s; start it with a task that has join=False"):
        run_tune_step(**args, join=True, join_wait_s=0)
    assert not (mnt / "studies" / "joined").exists()


def test_report_ranks_the_parameter_that_drives_the_objective(tmp_path):
    """The HTML report's importance table on a study whose objective follows lr0 and ignores fliplr."""
    pytest.importorskip("optuna")
    from hpo.datasets import make_digits_cls
    from hpo.resume import open_study
    from hpo.study import TrialRecord, TrialStatus
    from hpo.tuner import Tuner
    from hpo_kfp.report import param_importances, study_report_html

    make_digits_cls(tmp_path / "digits", seed=0)
    fliplrs = [0.4, 0.1, 0.3, 0.0, 0.5, 0.2, 0.45, 0.05, 0.35, 0.15]

    def study_of(name: str, n: int):
        tuner = Tuner(
            backend="ultralytics",
            model="yolov8n-cls.yaml",
            data=tmp_path / "digits",
            space={"lr0": [0.001, 0.01], "fliplr": [0.0, 0.5]},
            iterations=10,
            epochs=1,
            train_args={"imgsz": 32, "workers": 0, "device": "cpu"},
            output=tmp_path / "studies",
            name=name,
        )
        study = open_study(tuner.config)
        for i in range(n):
            lr0 = 0.001 + 0.001 * i
            study.append(
                TrialRecord(
                    id=i,
                    params={"lr0": lr0, "fliplr": fliplrs[i]},
                    status=TrialStatus.COMPLETE,
                    objective=10 * lr0,
                    epochs_completed=1,
                    start=f"2026-01-01T00:0{i}:00Z",
                    end=f"2026-01-01T00:0{i}:30Z",
                )
            )
        study.close()
        return study

    study = study_of("s", 10)
    import hpo

    assert study.settings["versions"]["hpo"] == hpo.__version__  # read from the distribution hpo-yolo
    records = list(study.records().values())
    imp = param_importances(records, "maximize")
    assert set(imp) == {"lr0", "fliplr"} and imp["lr0"] > 0.8 > imp["fliplr"]
    page = study_report_html(study.path)
    assert "<h2>Parameter importance</h2>" in page and page.index("<td>lr0</td>") < page.index("<td>fliplr</td>")
    assert page.count('src="data:image/png;base64,') == 1 and page.count("<td>complete</td>") == 10
    # below hpo show's bar of 10 complete trials no importance is ranked, and the page says why
    assert param_importances(records[:9], "maximize") is None
    page = study_report_html(study_of("few", 3).path)
    assert "importance needs 10 complete trials, the study has 3" in page and "<td>lr0</td>" not in page.split("Leaderboard")[0]


def test_step_time_budget_ends_the_study_and_a_retry_continues_it(tmp_path, monkeypatch):
    """The component's time_budget (its step function, on simulated trials): the budget alone ends
    the study (iterations 0), and a retry with a larger budget continues it."""
    from hpo import Study
    from hpo.datasets import make_digits_cls
    from hpo_kfp.step import run_tune_step

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "datasets" / "digits-cls", seed=0, imgsz=8)
    monkeypatch.setenv("HPO_TRAINER", "hpo.simulate:simulated_trainer")
    monkeypatch.setenv("HPO_TRAINER_OPTIONS", json.dumps({"epoch_s": 0.3}))
    monkeypatch.setenv("HPO_PLOTS", "0")
    args = dict(
        model="yolov8n-cls.yaml",
        data="datasets/digits-cls",
        backend="optuna",
        iterations=0,
        epochs=3,
        mount_path=str(mnt),
        backend_options={"pruner": "none"},
        seed=0,
    )
    first = run_tune_step(**args, time_budget="3s")
    study = Study.open(first.study_dir)
    assert study.settings["time_budget"] == 3.0 and study.settings["elapsed_s"] >= 3.0
    n = len(study.finished())
    assert n >= 1 and all(r.status.value in ("complete", "pruned") for r in study.finished())
    again = run_tune_step(**args, time_budget="5s")
    study = Study.open(again.study_dir)
    assert study.settings["time_budget"] == 5.0 and study.settings["elapsed_s"] >= 5.0
    assert len(study.finished()) > n


def test_a_retry_of_a_study_without_a_complete_trial_fails_the_task(tmp_path, monkeypatch):
    """The step's retry resumes its study: one whose every trial failed used to come back as a
    result (nothing to do), turning a KFP retry green. Every attempt fails now, with the reason; a
    re-run with another fixed train arg fails naming it, unless ``allow_changes``."""
    from hpo import Study
    from hpo.datasets import make_digits_cls
    from hpo.errors import RunFailedError, StudyError
    from hpo_kfp.step import run_tune_step

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "datasets" / "digits-cls", seed=0, imgsz=8)
    monkeypatch.setenv("HPO_TRAINER", "hpo.simulate:simulated_trainer")
    monkeypatch.setenv("HPO_TRAINER_OPTIONS", json.dumps({"fail": [0, 1]}))
    monkeypatch.setenv("HPO_PLOTS", "0")
    args = dict(
        model="yolov8n-cls.yaml",
        data="datasets/digits-cls",
        iterations=2,
        epochs=1,
        space=json.dumps({"lr0": [1e-4, 1e-2]}),
        mount_path=str(mnt),
        train_args={"imgsz": 32, "optimizer": "SGD"},
        seed=0,
    )
    with pytest.raises(RunFailedError, match=r"^every trial failed; first error \(trial 0\): "):
        run_tune_step(**args)
    with pytest.raises(RunFailedError, match=r"^every trial failed \(the study already has its 2 finished trials"):
        run_tune_step(**args)  # what a KFP retry of the task runs: it resumes the study
    study_dir = mnt / "studies" / "digits-cls-ultralytics"
    assert [r.status.value for r in Study.open(study_dir).finished()] == ["failed", "failed"]
    monkeypatch.setenv("HPO_TRAINER_OPTIONS", "{}")
    more = dict(args, iterations=3, train_args={"imgsz": 48, "optimizer": "SGD"})
    with pytest.raises(StudyError, match=r"train arg imgsz: stored 32 != given 48\); start a new study"):
        run_tune_step(**more)
    r = run_tune_step(**more, allow_changes=True)
    assert r.resumed and r.metrics["complete"] == 1 and r.metrics["failed"] == 2
    assert Study.open(study_dir).records()[2].settings == 1
