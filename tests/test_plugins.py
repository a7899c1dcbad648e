"""Third-party plugins through the entry-point group ``hpo.plugins``: observers and CLI commands.

A real plugin (a module and its ``.dist-info`` on ``PYTHONPATH``, found by importlib.metadata like
an installed distribution) contributes a study observer (hook ``hpo_study_observers``) and the
command ``hpo counts`` (hook ``hpo_cli_commands``); the real ``hpo`` command runs a real, tiny
training with it. hpo's own MLflow tracking and ``hpo pipelines compile`` are registered the same way.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from conftest import CLS_ARGS, hpo_cli, kv

PLUGIN = '''
import json
import os

import typer

from hpo import ConfigError, TunerCallback, hookimpl


class Recorder(TunerCallback):
    """Writes every event it sees as one JSON line."""

    def __init__(self, path, settings):
        self.path, self.study = path, None
        self._log("observers", dict(settings), type(settings).__name__)

    def _log(self, *event):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\\n")

    def on_study_start(self, study, config):
        self.study = study
        self._log("study_start", config.name)

    def on_trial_start(self, record):
        self._log("trial_start", record.id)

    def on_trial_end(self, record):
        kept = sorted(p.name for p in (self.study.trial_dir(record.id) / "weights").glob("*.pt"))
        self._log("trial_end", record.id, record.status.value, kept)

    def on_study_end(self, study, result):
        self._log("study_end", result.counts if result else None)


@hookimpl
def hpo_study_observers(config, settings):
    # called before the study directory exists: a plugin may refuse the run, nothing is written
    if config.name == "refused":
        raise ConfigError(f"counts: the test plugin refuses the study name 'refused' (exists: {config.study_dir.exists()})")
    return [Recorder(os.environ["HPO_TEST_EVENTS"], settings)]


def counts(study_dir: str = typer.Argument(..., help="The study directory.")) -> None:
    """Print the study's trials per status as JSON."""
    from hpo import Study
    from hpo.report import count_trials

    print(json.dumps(count_trials(Study.open(study_dir).records().values())))


@hookimpl
def hpo_cli_commands(app, handle_errors):
    app.command("counts")(handle_errors(counts))
'''


@pytest.fixture
def plugin_env(tmp_path):
    site = tmp_path / "site"
    dist = site / "hpo_test_observer-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "hpo_test_observer.py").write_text(textwrap.dedent(PLUGIN))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hpo-test-observer\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hpo.plugins]\nrecorder = hpo_test_observer\n")
    events = tmp_path / "events.jsonl"
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "HPO_TEST_EVENTS": str(events)}, events


def test_tuner_callback_lives_in_its_own_module_and_keeps_its_old_paths():
    import hpo
    import hpo.callbacks
    import hpo.tuner

    assert hpo.callbacks.TunerCallback.__module__ == "hpo.callbacks"
    assert hpo.TunerCallback is hpo.callbacks.TunerCallback is hpo.tuner.TunerCallback


def test_hpo_registers_its_own_plugins_through_entry_points():
    from hpo.plugins import get_plugin_manager

    pm = get_plugin_manager()
    names = dict(pm.list_name_plugin())
    assert names["mlflow"].__name__ == "hpo.tracking" and names["kfp"].__name__ == "hpo_kfp.cli"
    assert {"ultralytics", "optuna", "ray"} <= set(names)
    assert [i.plugin_name for i in pm.hook.hpo_cli_commands.get_hookimpls()] == ["kfp"]
    # hpo's own observers are plugins too (registered first, hpo.plugins.DEFAULT_PLUGINS); pluggy
    # keeps [trylast, plain, tryfirst]: the weights keeper last, the progress display and the plots first
    assert [i.plugin_name for i in pm.hook.hpo_study_observers.get_hookimpls()] == ["weights", "mlflow", "progress", "plots"]


def test_a_plugin_command_is_on_the_command_line_and_a_plugin_may_refuse_a_study(plugin_env, tmp_path, digits_cls):
    env, events = plugin_env
    r = hpo_cli("counts", "--help", env=env)
    assert r.returncode == 0 and "Print the study's trials per status as JSON." in r.stdout, r.stderr
    assert "counts" not in hpo_cli("--help").stdout  # without the plugin: no such command
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(_own_copy(digits_cls, tmp_path)),
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--output",
        str(tmp_path / "out"),
        "--name",
        "refused",
        "--quiet",
        *kv(CLS_ARGS),
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr == "hpo: error: counts: the test plugin refuses the study name 'refused' (exists: False)\n"
    assert not (tmp_path / "out").exists() and not events.exists()


@pytest.mark.slow
def test_a_plugin_observer_sees_a_real_study_before_the_weights_keeper(plugin_env, tmp_path, digits_cls):
    from hpo.settings import specs

    env, events = plugin_env
    out = tmp_path / "out"
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(_own_copy(digits_cls, tmp_path)),
        "--iterations",
        "2",
        "--epochs",
        "1",
        "--output",
        str(out),
        "--name",
        "seen",
        "--space",
        '{"lr0": [0.0002, 0.002]}',
        "--keep-weights",
        "best",
        "--no-mlflow",
        "--quiet",
        *kv(CLS_ARGS),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    # the settings, read-only: every setting of hpo.TuneSettings as given
    assert seen[0][0] == "observers" and seen[0][2] == "mappingproxy"
    assert set(seen[0][1]) == {s.name for s in specs()}
    assert {k: seen[0][1][k] for k in ("mlflow", "experiment", "keep_weights", "verbose")} == {
        "mlflow": False,
        "experiment": None,
        "keep_weights": "best",
        "verbose": False,
    }
    assert seen[1] == ["study_start", "seen"]
    assert [e[0] for e in seen[2:]] == ["trial_start", "trial_end", "trial_start", "trial_end", "study_end"]
    # the observer runs before the weights keeper: every trial still had its weights when it ended
    assert [e[1:] for e in seen if e[0] == "trial_end"] == [
        [0, "complete", ["best.pt", "last.pt"]],
        [1, "complete", ["best.pt", "last.pt"]],
    ]
    assert seen[-1] == ["study_end", {"complete": 2, "failed": 0, "pruned": 0}]
    study = json.loads(hpo_cli("show", str(out / "seen"), "--json").stdout)
    kept = sorted(t for t in (0, 1) if list((out / "seen" / "trials" / str(t) / "weights").glob("*.pt")))
    assert kept == [study["best"]["trial"]]  # then the keeper deleted the other trial's
    r = hpo_cli("counts", str(out / "seen"), env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"running": 0, "interrupted": 0, "complete": 2, "failed": 0, "pruned": 0}


def test_pipelines_compile_without_kfp_names_the_extra_in_one_line(tmp_path):
    """The KFP package's command is on the line without kfp; run, it names the extra (exit 2, nothing written)."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys

        class HideKfp:  # as if kfp were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "kfp":
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, HideKfp())
        from hpo.cli import main
        sys.argv = ["hpo", "pipelines", "compile", "out", "--image", "registry.example.com/team/hpo:0.1.0"]
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        "hpo: error: hpo pipelines compile: needs the Python package 'kfp', which is not installed; "
        "pip install 'hpo-yolo[kfp]' (in a checkout: pip install -e '.[kfp]')\n"
    )
    assert not (tmp_path / "out").exists() and "kfp" not in r.stdout


def _own_copy(data, tmp_path):
    """A copy of the session's dataset: a training writes label caches next to it, which later
    tests of the session (test_cli's read-only one, test_data's digest) must not see."""
    import shutil

    return shutil.copytree(data, tmp_path / "digits-cls", dirs_exist_ok=True)
