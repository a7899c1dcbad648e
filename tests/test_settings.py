"""One declaration of the settings (hpo.settings.TuneSettings) and what is built from it: the
``hpo tune`` options, the Tuner's keywords and docstring, the KFP step, and the hand-written KFP
component signature, which is checked against it here."""

from __future__ import annotations

import inspect
import json
import logging
import math

import pytest
from conftest import CLS_ARGS

from hpo import ConfigError, Tuner, TunerCallback, TuneSettings
from hpo.settings import REQUIRED, Kfp, from_kfp, specs

SIMULATED = "hpo.simulate:simulated_trainer"
#: Parameters of the KFP component that are no settings: its outputs and the step's own.
KFP_OWN = {"metrics", "leaderboard", "report", "best_model", "final_model", "mount_path", "gpus", "storage_env", "workers"}


def test_every_setting_is_declared_once_with_a_group_and_help():
    names = [s.name for s in specs()]
    assert len(names) == len(set(names)) >= 27  # Tuner's 28 keywords but callbacks= (objects) and workers= (deprecated)
    for s in specs():
        assert s.group in ("problem", "search", "budget", "study", "final", "display") and s.help.strip(), s
        if s.kfp.skip:
            assert s.kfp.name is None and s.kfp.default is ..., s  # skipped: nothing else to say


def test_the_kfp_component_signature_matches_the_settings():
    """KFP reads the component's literal signature, so it is written out by hand: every setting
    the component exposes is a parameter there with its KFP name, type and default, every other
    setting says why not, and the component has nothing else but its outputs and the step's own."""
    pytest.importorskip("kfp")
    from hpo_kfp.components import hpo_tune

    params = inspect.signature(hpo_tune).parameters
    seen = set()
    for s in specs():
        if s.kfp.skip:
            assert s.name not in params, f"{s.name} is skipped ({s.kfp.skip}) but is a component parameter"
            continue
        name = s.kfp.name or s.name
        assert name in params, f"setting {s.name}: the component has no parameter {name!r}"
        p = params[name]
        want = s.default if s.kfp.default is ... else s.kfp.default
        if want is REQUIRED:
            assert p.default is inspect.Parameter.empty, name
        else:
            assert p.default == want and type(p.default) is type(want), (name, p.default, want)
        if s.kfp.type is not None:
            assert p.annotation in (s.kfp.type, s.kfp.type.__name__), (name, p.annotation, s.kfp.type)
        seen.add(name)
    assert set(params) - seen == KFP_OWN


def test_the_kfp_spellings_become_settings():
    params = dict(model="m.yaml", data="d", iterations=0, seed=-1, metric="", study_name="", trial_timeout=0.0, time_budget=" ")
    s = from_kfp(params)
    assert (s.iterations, s.seed, s.metric, s.name, s.trial_timeout, s.time_budget) == (None,) * 6
    assert s.output == "studies" and s.verbose is True and s.resume is False and s.train_args == {}
    s = from_kfp(dict(model="m.yaml", data="d", seed=3, study_name="x", output_dir="o", trial_timeout=5.0))
    assert (s.seed, s.name, s.output, s.trial_timeout, s.iterations) == (3, "x", "o", 5.0, 10)
    with pytest.raises(TypeError, match=r"no parameter 'study' \(did you mean 'study_name'\?\)"):
        from_kfp(dict(model="m", data="d", study="x"))


def test_the_deprecated_kfp_workers_is_concurrent_trials(capsys):
    assert from_kfp(dict(model="m", data="d", workers=3)).concurrent_trials == 3
    err = capsys.readouterr().err
    assert err.startswith("hpo: warning: workers: hpo's 'workers' (trials at once) is deprecated"), err
    assert from_kfp(dict(model="m", data="d", workers=0, concurrent_trials=2)).concurrent_trials == 2


def test_hpo_tune_options_are_the_settings():
    import typer

    from hpo.cli import app

    command = typer.main.get_command(app).commands["tune"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    for s in specs():
        if s.cli is None:
            assert s.name not in options
            continue
        o = options[s.name]
        flags = [f for flag in s.cli.flags for f in flag.split("/")]
        assert sorted([*o.opts, *o.secondary_opts]) == sorted(flags) and o.help == s.cli.help, s.name
        default = s.default if s.cli.default is ... else s.cli.default
        if default is REQUIRED:
            assert o.required, s.name
        else:
            assert o.default == default, (s.name, o.default, default)
    assert set(options) - {s.name for s in specs()} == {"workers", "as_json"}


def test_the_tuner_takes_every_setting_and_documents_it():
    sig = inspect.signature(Tuner)
    doc = Tuner.__doc__ or ""
    for s in specs():
        p = sig.parameters[s.name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        assert p.default == (inspect.Parameter.empty if s.default is REQUIRED else s.default), s.name
        assert f"\n        {s.name}: " in doc, f"Tuner's docstring lacks {s.name}"


def test_an_unknown_keyword_names_the_closest_setting():
    with pytest.raises(
        TypeError, match=r"^Tuner\(\) got an unexpected keyword argument 'iteration' \(did you mean 'iterations'\?\)$"
    ):
        Tuner(model="yolov8n-cls.yaml", data="d", iteration=3)
    with pytest.raises(TypeError, match=r"^Tuner\(\) missing required keyword arguments: 'model', 'data'$"):
        Tuner()
    with pytest.raises(TypeError, match="did you mean 'keep_weights'"):
        TuneSettings(model="m", data="d").replace(keep_weight="best")


def test_settings_and_keywords_make_the_same_tuner(digits_cls, tmp_path):
    base = TuneSettings(model="yolov8n-cls.yaml", data=digits_cls, iterations=2, epochs=1, output=tmp_path, trainer=SIMULATED)
    a = Tuner(base, name="a", train_args={"imgsz": 32})
    b = Tuner(**{**base.as_dict(), "name": "a", "train_args": {"imgsz": 32}})
    assert a.config == b.config and a.settings == b.settings and a.config.settings is a.settings
    assert a.config.keep_weights == 3 and Tuner(base, keep_weights="all").config.keep_weights is None
    with pytest.raises(ConfigError, match="keep_weights: 'top-0' is not best, top-K"):
        Tuner(base, keep_weights="top-0")
    with pytest.raises(ConfigError, match=r"allow_changes: allow_changes=True applies to resume=True only"):
        Tuner(base, allow_changes=True)
    with pytest.warns(FutureWarning, match="use concurrent_trials="):
        assert Tuner(base, workers=2).config.workers == 2


class _Broken(TunerCallback):
    """An observer that raises in every event it has."""

    def __init__(self) -> None:
        self.calls = 0

    def on_trial_end(self, record):
        self.calls += 1
        raise RuntimeError(f"broken observer, trial {record.id}")

    def on_study_end(self, study, result):
        raise KeyError("no such thing")


def test_an_observer_that_raises_never_fails_the_study(digits_cls, tmp_path, capsys):
    """One warning line per observer and event (not one per trial), and the study's result stands."""
    broken = _Broken()
    result = Tuner(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space={"lr0": [1e-4, 1e-2]},
        iterations=3,
        epochs=2,
        output=tmp_path,
        name="s",
        train_args=CLS_ARGS,
        trainer=SIMULATED,
        plots=False,
        callbacks=[broken],
    ).run()
    assert result.counts["complete"] == 3 and broken.calls == 3 and math.isfinite(result.best_objective)
    lines = [line for line in capsys.readouterr().err.splitlines() if "broken" in line or "KeyError" in line]
    assert lines == [
        f"hpo: warning: observer {__name__}._Broken failed in on_trial_end (RuntimeError: broken observer, trial 0); the study goes on",
        f"hpo: warning: observer {__name__}._Broken failed in on_study_end (KeyError: 'no such thing'); the study goes on",
    ]


def test_an_observer_may_refuse_the_study_when_it_starts(digits_cls, tmp_path):
    class Refuses(TunerCallback):
        def on_study_start(self, study, config):
            raise ConfigError("refuses: no such experiment")

    tuner = Tuner(model="yolov8n-cls.yaml", data=digits_cls, iterations=1, epochs=1, output=tmp_path, name="s", trainer=SIMULATED)
    tuner.callbacks.append(Refuses())
    with pytest.raises(ConfigError, match="refuses: no such experiment"):
        tuner.run()


def test_hpo_s_own_observers_are_plugins_in_their_order(digits_cls, tmp_path):
    """The progress display and the plots first, then callbacks=, then MLflow, the weights keeper last."""
    from hpo.plots import PlotCallback
    from hpo.plugins import study_observers
    from hpo.progress import ProgressDisplay
    from hpo.weights import WeightsKeeper

    mine = TunerCallback()
    tuner = Tuner(
        model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path, trainer=SIMULATED, verbose=True, plots=True, mlflow=False
    )
    got = study_observers(tuner.config, tuner.observer_settings, callbacks=[mine])
    assert [type(o) for o in got] == [ProgressDisplay, PlotCallback, TunerCallback, WeightsKeeper] and got[2] is mine
    quiet = Tuner(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path, trainer=SIMULATED, plots=False, mlflow=False)
    assert [type(o) for o in study_observers(quiet.config, quiet.observer_settings)] == [WeightsKeeper]


def test_the_hpo_logger_renders_one_line_per_message_and_masks_credentials(capsys):
    import hpo.log

    log = logging.getLogger("hpo.test")
    planted = "s3" + "cret"  # made at run time: the repository's credential scan (test_manifests) finds no literal
    log.warning(f"storage postgresql://u:{planted}@db/x is slow\nsecond line")
    log.info("fetched a.pt")
    hpo.log.notice(log, "optimizer=SGD")
    assert capsys.readouterr().err == (
        "hpo: warning: storage postgresql://u:***@db/x is slow\nhpo: fetched a.pt\nhpo: notice: optimizer=SGD\n"
    )
    root = logging.getLogger("hpo")
    assert root.propagate is False and hpo.log.DEFAULT_HANDLER in root.handlers


def test_settings_reach_observer_plugins_read_only_and_masked(digits_cls, tmp_path):
    planted = "hunter" + "2"  # made at run time: the repository's credential scan (test_manifests) finds no literal
    tuner = Tuner(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        output=tmp_path,
        trainer=SIMULATED,
        trainer_options={"password": planted},
        mlflow=False,
    )
    seen = tuner.observer_settings
    assert set(seen) == {s.name for s in specs()} and seen["trainer_options"] == {"password": "***"}
    with pytest.raises(TypeError):
        seen["mlflow"] = True  # type: ignore[index]
    assert json.dumps(seen["trainer"]) == json.dumps(SIMULATED)


def test_kfp_declarations_are_plain_literals():
    """What KFP can put in a component's signature: str, int, float, bool, dict; no None."""
    for s in specs():
        k: Kfp = s.kfp
        if not k.skip:
            default = s.default if k.default is ... else k.default
            assert default is REQUIRED or type(default) in (str, int, float, bool, dict), (s.name, default)


def test_the_python_api_says_what_hpo_chose_as_the_cli_does(digits_cls, tmp_path, capsys):
    """A notice (here: no optimizer given, the space tunes lr0, so hpo trains with SGD) is one line
    from the hpo logger when the Tuner is built, in Python as on the command line (once)."""
    Tuner(model="yolov8n-cls.yaml", data=digits_cls, output=tmp_path, trainer=SIMULATED, epochs=1, mlflow=False)
    err = capsys.readouterr().err
    assert err.count("hpo: notice: optimizer: none given") == 1, err
