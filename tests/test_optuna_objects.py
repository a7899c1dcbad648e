"""The optuna backend takes Optuna sampler and pruner objects from Python (backend_options)."""

from __future__ import annotations

import json

import optuna
import pytest

from hpo import ConfigError, Study, Tuner


def _tuner(tmp_path, digits_cls, name, iterations=4, **kw):
    return Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        epochs=2,
        iterations=iterations,
        output=tmp_path,
        name=name,
        space={"lr0": (1e-4, 1e-2), "momentum": (0.7, 0.98)},
        train_args={"imgsz": 32, "optimizer": "AdamW"},
        trainer="hpo.simulate:simulated_trainer",
        plots=False,
        **kw,
    )


def _params(study_dir):
    return [r.params for r in sorted(Study.open(study_dir).records().values(), key=lambda r: r.id)]


def test_sampler_and_pruner_objects_are_used_as_given(tmp_path, digits_cls):
    given = _tuner(
        tmp_path,
        digits_cls,
        "obj",
        backend_options={"sampler": optuna.samplers.RandomSampler(seed=1), "pruner": optuna.pruners.NopPruner()},
    ).run()
    named = _tuner(tmp_path, digits_cls, "named", seed=1, backend_options={"sampler": "random", "pruner": "none"}).run()
    other = _tuner(tmp_path, digits_cls, "other", seed=2, backend_options={"sampler": "random"}).run()
    # the object drew exactly what Optuna's RandomSampler(seed=1) draws (hpo's "random" with seed 1), not another seed's
    assert _params(given.study_dir) == _params(named.study_dir) != _params(other.study_dir)
    # the NopPruner object pruned nothing where hpo's default pruner (hyperband) prunes on the same curves
    assert given.counts == {"complete": 4, "failed": 0, "pruned": 0} and other.counts["pruned"] > 0
    stored = json.loads((given.study_dir / "study.json").read_text())["options"]
    assert (stored["sampler"], stored["pruner"]) == ("object:optuna.samplers.RandomSampler", "object:optuna.pruners.NopPruner")
    assert json.loads((given.study_dir / "optuna" / "objects.json").read_text()) == {
        "sampler": "object:optuna.samplers.RandomSampler",
        "pruner": "object:optuna.pruners.NopPruner",
    }


def test_resume_needs_an_object_of_the_same_class_again(tmp_path, digits_cls):
    _tuner(
        tmp_path,
        digits_cls,
        "r",
        iterations=2,
        backend_options={"sampler": optuna.samplers.RandomSampler(seed=1), "pruner": "none"},
    ).run()
    with pytest.raises(
        ConfigError, match=r"optuna option 'sampler': this study ran with a sampler object \(optuna\.samplers\.RandomSampler\)"
    ):
        _tuner(tmp_path, digits_cls, "r", iterations=3, resume=True, backend_options={"pruner": "none"})
    with pytest.raises(ConfigError, match="RandomSampler"):
        _tuner(
            tmp_path,
            digits_cls,
            "r",
            iterations=3,
            resume=True,
            backend_options={"sampler": optuna.samplers.TPESampler(), "pruner": "none"},
        )
    # the same class again: resumes, and the object is reseeded, so its seed does not draw the first run's params again
    again = _tuner(
        tmp_path,
        digits_cls,
        "r",
        iterations=4,
        resume=True,
        backend_options={"sampler": optuna.samplers.RandomSampler(seed=1), "pruner": "none"},
    ).run()
    params = _params(again.study_dir)
    assert again.counts["complete"] == 4 and params[2] != params[1] and params[3] != params[1]
    # a deliberate change, from the command line's names
    changed = _tuner(
        tmp_path, digits_cls, "r", iterations=5, resume=True, allow_changes=True, backend_options={"pruner": "none"}
    ).run()
    assert changed.counts["complete"] == 5
    assert json.loads((changed.study_dir / "optuna" / "objects.json").read_text())["sampler"] == "tpe"


def test_an_object_that_is_no_sampler_is_refused(tmp_path, digits_cls):
    with pytest.raises(ConfigError, match=r"optuna option 'sampler'.*neither a name nor an optuna\.samplers"):
        _tuner(tmp_path, digits_cls, "bad", backend_options={"sampler": optuna.pruners.NopPruner()})
