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

import pipelines  # noqa: E402
from pipelines import configure_tuning_task, hpo_tune  # noqa: E402
from pipelines.components import PUBLISHED_IMAGE, make_tune_component  # noqa: E402
from pipelines.examples import COMPONENT_YAML, PIPELINES, compile_component  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HPO = [str(Path(sys.executable).parent / "hpo")]


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


def test_user_pipeline_with_the_helper_compiles_every_setting(tmp_path):
    """What docs/kfp.md shows: an import and a few lines in an existing pipeline."""

    @dsl.pipeline(name="user-pipeline")
    def user_pipeline(pvc_name: str = "hpo-data", creds: str = "hpo-credentials") -> None:
        tune = hpo_tune(model="yolov8n.yaml", data="datasets/coco8/data.yaml", iterations=20, epochs=10,
                        mount_path="/data", train_args={"imgsz": 640}, gpus=2)
        configure_tuning_task(
            tune, pvc_name=pvc_name, mount_path="/data", accelerator_type="nvidia.com/gpu", accelerator_count=2,
            node_selector={"nvidia.com/gpu.present": "true"},
            toleration={"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            shm_size="8Gi", secret_name=creds, retries=3, timeout_s=7200,
        )

    spec, platform = _compile(user_pipeline, tmp_path)
    task = spec["root"]["dag"]["tasks"]["hpo-tune"]
    assert task["cachingOptions"].get("enableCache", False) is False
    assert task["retryPolicy"]["maxRetryCount"] == 3
    res = spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["resources"]["accelerator"]
    assert res["resourceType"] == "nvidia.com/gpu" and str(res["resourceCount"]) == "2"
    assert spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == pipelines.DEFAULT_IMAGE
    k8s = platform["exec-hpo-tune"]
    assert k8s["pvcMount"] == [{"componentInputParameter": "pvc_name", "mountPath": "/data",
                                "pvcNameParameter": {"componentInputParameter": "pvc_name"}}]
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "dshm"}]
    env = k8s["secretAsEnv"][0]
    assert env["secretNameParameter"] == {"componentInputParameter": "creds"}
    assert {e["envVar"] for e in env["keyToEnv"]} == set(pipelines.SECRET_ENV_KEYS)
    assert all(e["envVar"] == e["secretKey"] for e in env["keyToEnv"])
    assert k8s["activeDeadlineSeconds"] == "7200" or k8s["activeDeadlineSeconds"] == 7200
    # the outputs the issue asks for
    outs = spec["components"]["comp-hpo-tune"]["outputDefinitions"]
    assert outs["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outs["artifacts"]["leaderboard"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert "best_hyperparameters" in outs["artifacts"]
    assert set(outs["parameters"]) == {"study_dir", "best_weights"}
    ins = _component_inputs(spec, "comp-hpo-tune")
    for name in ("backend", "model", "data", "iterations", "epochs", "space", "metric", "output_dir",
                 "study_name", "train_args", "backend_options", "concurrent_trials", "keep_weights", "mount_path"):
        assert name in ins, name


# --- the example pipelines


def test_train_then_tune_ir(tmp_path):
    spec, platform = _compile(PIPELINES["train_then_tune"], tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"check-environment", "train-baseline", "hpo-tune"}
    assert tasks["train-baseline"]["dependentTasks"] == ["check-environment"]
    assert tasks["hpo-tune"]["dependentTasks"] == ["train-baseline"]
    for name in tasks:
        k8s = platform[f"exec-{name}"]
        # the same PVC, from the pipeline parameter, on every step
        assert k8s["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}
        assert k8s["pvcMount"][0]["mountPath"] == "/mnt/hpo"
        assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm" and k8s["emptyDirMounts"][0]["medium"] == "Memory"
        assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
        acc = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["resources"]["accelerator"]
        # type and count wired to the pipeline parameters accelerator_type and gpus
        assert acc["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
        assert acc["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert tasks[name]["inputs"]["parameters"]["pipelinechannel--gpus"] == {"componentInputParameter": "gpus"}
        assert tasks[name]["cachingOptions"].get("enableCache", False) is False
    assert tasks["hpo-tune"]["retryPolicy"]["maxRetryCount"] == 2
    assert platform["exec-hpo-tune"]["secretAsEnv"][0]["secretNameParameter"] == {"componentInputParameter": "secret_name"}
    assert "secretAsEnv" not in platform["exec-check-environment"]


def test_compare_backends_ir_mounts_inside_parallelfor(tmp_path):
    spec, platform = _compile(PIPELINES["compare_backends"], tmp_path)
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--backends"
    inner = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert inner["hpo-tune"]["inputs"]["parameters"]["backend"] == {"componentInputParameter": "pipelinechannel--backends-loop-item"}
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


def test_component_yaml_in_sync_and_loadable(tmp_path):
    fresh = compile_component(tmp_path / "c.yaml", image=PUBLISHED_IMAGE)
    assert COMPONENT_YAML.read_text() == fresh.read_text(), "regenerate: python -m pipelines.examples"
    loaded = kfp.components.load_component_from_file(str(COMPONENT_YAML))
    assert loaded.name == "hpo-tune"
    assert {"model", "data", "backend", "mount_path", "train_args"} <= set(loaded.component_spec.inputs)

    @dsl.pipeline(name="from-yaml")
    def from_yaml(pvc_name: str = "hpo-data") -> None:
        t = loaded(model="yolov8n.yaml", data="d/data.yaml")
        configure_tuning_task(t, pvc_name=pvc_name, accelerator_count=1)

    spec, platform = _compile(from_yaml, tmp_path)
    assert platform["exec-hpo-tune"]["pvcMount"][0]["pvcNameParameter"] == {"componentInputParameter": "pvc_name"}
    assert spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == PUBLISHED_IMAGE


def test_image_is_a_parameter(tmp_path):
    comp = make_tune_component("registry.example/team/hpo:1")

    @dsl.pipeline(name="img")
    def p() -> None:
        comp(model="yolov8n.yaml", data="d.yaml")

    spec, _ = _compile(p, tmp_path)
    assert spec["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == "registry.example/team/hpo:1"


def test_cli_pipelines_compile(tmp_path):
    out = tmp_path / "ir"
    r = subprocess.run([*HPO, "pipelines", "compile", str(out), "--image", "registry.example/hpo:2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["compare_backends.yaml", "hpo_tune_component.yaml", "train_then_tune.yaml"]
    ir = yaml.safe_load_all((out / "train_then_tune.yaml").read_text())
    assert next(ir)["deploymentSpec"]["executors"]["exec-hpo-tune"]["container"]["image"] == "registry.example/hpo:2"


# --- pre-flight


def test_preflight_cli(tmp_path):
    from hpo.datasets import make_digits_cls

    make_digits_cls(tmp_path / "mnt" / "digits", seed=0)
    r = subprocess.run([*HPO, "preflight", "--mount", str(tmp_path / "nope"), "--data", "digits"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "mount: " in r.stderr and "does not exist" in r.stderr
    from hpo.preflight import run_preflight

    missing = run_preflight(mount=tmp_path / "mnt", data="missing")
    assert [c.name for c in missing.failures()] == ["data"] and "does not exist" in missing.failures()[0].message
    gpu = run_preflight(mount=tmp_path / "mnt", data="digits", gpus=1)
    assert [c.message for c in gpu.failures()] == [next(c.message for c in gpu.checks if c.name == "gpu")]
    assert "gpu: 1 requested but torch sees 0" in gpu.failures()[0].message
    r = subprocess.run([*HPO, "preflight", "--mount", str(tmp_path / "mnt"), "--data", "digits", "--workers", "4",
                        "--shm-per-worker-mib", str(10**7), "--json"], capture_output=True, text=True, timeout=60)
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
    from pipelines.examples import compare_backends

    mnt = tmp_path / "pvc"  # stands in for the PVC mount
    make_digits_cls(mnt / "datasets" / "digits-cls", seed=0)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    monkeypatch.setenv("HPO_PLOTS", "1")  # the component's HTML report output
    space = json.dumps({"lr0": [1e-4, 1e-2], "fliplr": [0.0, 0.5]})
    train_args = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu", "optimizer": "AdamW"}
    task = hpo_tune(model="yolov8n-cls.yaml", data="datasets/digits-cls", backend="ultralytics", iterations=2,
                    epochs=1, space=space, mount_path=str(mnt), output_dir="studies", train_args=train_args, seed=0)
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
    best = yaml.safe_load(Path(task.outputs["best_hyperparameters"].path).read_text())
    assert best["best_objective"] == metrics["best_objective"]
    assert best["best_params"] == records[best["best_trial"]].params
    assert task.outputs["best_hyperparameters"].metadata["resumed"] is False
    page = Path(task.outputs["report"].path).read_text()
    assert page == (study_dir / "plots" / "report.html").read_text() and 'class="plotly-graph-div"' in page

    # a re-run (what a KFP retry does) resumes the same study instead of starting over; the
    # ParallelFor pipeline (kfp.local ignores the PVC, so mount_path is a parameter) then compares.
    compare_backends(backends=["ultralytics"], model="yolov8n-cls.yaml", data="datasets/digits-cls", iterations=2,
                     epochs=1, space=space, gpus=0, mount_path=str(mnt), output_dir="studies", train_args=train_args)
    assert sorted(Study.open(study_dir).records()) == [0, 1]  # nothing trained twice
    reports = list((tmp_path / "root").glob("hpo-compare-backends-*/compare-studies/report"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert "| 1 | ultralytics |" in text and str(study_dir) in text


@pytest.mark.slow
def test_check_and_train_components_under_kfp_local(tmp_path):
    """The tutorial's first two steps on a folder standing in for the PVC."""
    from kfp import local

    from hpo.datasets import make_digits_cls
    from pipelines import check_environment, train_baseline

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    check = check_environment(mount_path=str(mnt), data="digits", model="yolov8n-cls.yaml", gpus=0, workers=0)
    report = json.loads(check.output)
    assert report["ok"] and report["data"] == str(mnt / "digits") and report["output"] == str(mnt / "studies")
    with pytest.raises(RuntimeError, match="FAILURE"):  # a GPU the machine does not have stops the pipeline
        check_environment(mount_path=str(mnt), data="digits", model="yolov8n-cls.yaml", gpus=1)
    train = train_baseline(model="yolov8n-cls.yaml", data="digits", epochs=1, mount_path=str(mnt), output_dir="train",
                           train_args={"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu"})
    weights = Path(train.output)
    assert weights == mnt / "train" / "baseline" / "weights" / "best.pt" and weights.is_file()
    assert (mnt / "train" / "baseline" / "results.csv").is_file()


def test_retry_waits_for_a_dead_pods_lock_then_resumes(tmp_path):
    """A retried pod finds the killed pod's lock: it waits while the heartbeat is fresh, then resumes."""
    import os
    import time as _time

    from hpo import Study
    from hpo.datasets import make_digits_cls
    from hpo.errors import StudyLocked
    from hpo.study import LOCK_STALE_AFTER_S, TrialRecord, TrialStatus
    from pipelines.step import run_tune_step

    mnt = tmp_path / "pvc"
    make_digits_cls(mnt / "digits", seed=0)
    args = dict(model="yolov8n-cls.yaml", data="digits", iterations=1, epochs=1, mount_path=str(mnt),
                study_name="s", space='{"lr0": [0.001, 0.01]}', train_args={"imgsz": 32, "workers": 0, "device": "cpu"})
    # the study a killed pod left: one finished trial (so no training is needed here) and its lock
    from hpo.tuner import Tuner

    tuner = Tuner(backend="ultralytics", model="yolov8n-cls.yaml", data=mnt / "digits", space={"lr0": [0.001, 0.01]},
                  iterations=1, epochs=1, train_args={"imgsz": 32, "workers": 0, "device": "cpu"},
                  output=mnt / "studies", name="s")
    study = tuner._open_study()
    study.append(TrialRecord(id=0, params={"lr0": 0.005}, status=TrialStatus.COMPLETE, objective=0.5, epochs_completed=1))
    study.close()
    lock = mnt / "studies" / "s" / "lock"
    lock.write_text(json.dumps({"host": "killed-pod-xyz", "pid": 7, "started": "2026-01-01T00:00:00Z"}))
    t0 = _time.monotonic()
    with pytest.raises(StudyLocked, match="killed-pod-xyz"):
        run_tune_step(**args, lock_wait_s=1.0)
    assert _time.monotonic() - t0 >= 1.0
    old = _time.time() - LOCK_STALE_AFTER_S - 5  # the dead pod's heartbeat stopped
    os.utime(lock, (old, old))
    r = run_tune_step(**args, lock_wait_s=0)
    assert r.resumed and r.metrics["complete"] == 1 and r.metrics["best_objective"] == 0.5
    assert sorted(Study.open(mnt / "studies" / "s").records()) == [0]
