"""A mount path Kubernetes or the container would refuse (relative, the root ``/``, a system
folder, ``:`` or ``..``) is refused where it enters: ``hpo pipelines compile --mount-path``, the
pipeline builders, ``configure_tuning_task``, the steps' functions and ``hpo preflight --mount``;
one line naming the field, the value and the fix, exit 2, nothing written."""

import sys
from pathlib import Path

import pytest

kfp = pytest.importorskip("kfp")
from kfp import dsl  # noqa: E402

from hpo.errors import ConfigError  # noqa: E402

HPO = [str(Path(sys.executable).parent / "hpo")]
IMAGE = "registry.example.com/team/hpo:0.1.0"
BAD = {
    "relative/path": "is relative",
    "mnt/hpo": "is relative",
    "/": "container's root",
    "//": "container's root",
    "/etc": "system folder",
    "/usr/local": "system folder",
    "/proc/hpo": "system folder",
    "/dev/shm": "system folder",
    "/mnt/a:b": "contains ':'",
    "/mnt/../hpo": "'..' segment",
    " /mnt/hpo": "whitespace",
    "": "not a path",
}


@pytest.mark.parametrize("value", list(BAD))
def test_pipelines_compile_refuses_a_bad_mount_path(tmp_path, value):
    import subprocess

    out = tmp_path / "out"
    r = subprocess.run(
        [*HPO, "pipelines", "compile", "--image", IMAGE, "--mount-path", value, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hpo: error: --mount-path: "), err
    assert BAD[value] in err and "/mnt/hpo" in err, err  # the cause and the fix
    assert not out.exists()


@pytest.mark.parametrize("value", ["/mnt/hpo", "/data/hpo/", "/workspace", "/tmp/pvc", "/etc/hpo", "/var/lib/hpo"])
def test_good_mount_paths_pass(value):
    from hpo.preflight import check_mount_path

    assert check_mount_path(value) == value


def test_every_python_entry_refuses_a_relative_mount_path(tmp_path):
    from hpo.preflight import run_preflight
    from hpo_kfp import configure_tuning_task, make_tune_component
    from hpo_kfp.examples import compile_all, make_pipelines
    from hpo_kfp.step import run_train_step, run_tune_step, run_validate_step

    with pytest.raises(ConfigError, match=r"^mount_path: 'rel' is relative"):
        make_pipelines(IMAGE, mount_path="rel")
    with pytest.raises(ConfigError, match=r"^mount_path: '/' is the container's root"):
        compile_all(tmp_path / "out", IMAGE, mount_path="/")
    assert not (tmp_path / "out").exists()
    hpo_tune = make_tune_component(IMAGE)
    with pytest.raises(ConfigError, match=r"^mount_path: '/sys' is a system folder"):

        @dsl.pipeline(name="bad-mount")
        def bad(pvc_name: str = "x") -> None:
            configure_tuning_task(hpo_tune(model="yolov8n.yaml", data="d.yaml"), pvc_name=pvc_name, mount_path="/sys")

    for step in (run_tune_step, run_train_step):
        with pytest.raises(ConfigError, match=r"^mount_path: 'pvc' is relative"):
            step(model="yolov8n-cls.yaml", data="digits", mount_path="pvc")
    with pytest.raises(ConfigError, match=r"^mount_path: 'pvc' is relative"):
        run_validate_step(weights=str(tmp_path / "w.pt"), data="digits", mount_path="pvc")
    with pytest.raises(ConfigError, match=r"^mount: '/' is the container's root"):
        run_preflight(mount="/", output="studies")
