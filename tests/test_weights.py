"""The weights keeper (``--keep-weights``): which trials keep ``weights/*.pt``, and that a trial's
end touches only the folder of the trial that left the top K (or of the new one), on simulated
studies (the same keeper runs for real training; tests/test_plots.py checks that on a real study)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpo import Study, Tuner
from hpo.weights import WeightsKeeper

SIM = "hpo.simulate:simulated_trainer"
SPACE = {"lr0": {"type": "logfloat", "low": 1e-5, "high": 1e-1}, "momentum": (0.6, 0.98)}


def _tune(tmp_path: Path, data: Path, n: int, keep: str, *, resume: bool = False, metric: str | None = None) -> Tuner:
    tuner = Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=data,
        space=SPACE,
        iterations=n,
        epochs=2,
        metric=metric,
        output=tmp_path,
        name="w",
        resume=resume,
        seed=0,
        plots=False,
        mlflow=False,
        trainer=SIM,
        trainer_options={"weights_bytes": 1000, "fail": [3]},
        keep_weights=keep,
        concurrent_trials=2,
    )
    tuner.run()
    return tuner


def _keeper(tuner: Tuner) -> WeightsKeeper:
    """The run's weights keeper (an observer plugin, :func:`hpo.weights.hpo_study_observers`)."""
    return next(o for o in tuner.observers if isinstance(o, WeightsKeeper))


def _with_weights(study: Path) -> set[int]:
    return {int(d.name) for d in (study / "trials").iterdir() if list((d / "weights").glob("*.pt"))}


def _top(study: Path, k: int) -> set[int]:
    s = Study.open(study)
    done = [r for r in s.ranked() if r.status.value == "complete" and r.objective is not None and math.isfinite(r.objective)]
    return {r.id for r in done[:k]}


@pytest.mark.parametrize("metric", [None, "val/loss"])  # maximised, minimised
def test_top_k_keep_their_weights_and_each_trial_touches_one_folder(tmp_path, digits_cls, metric):
    tuner = _tune(tmp_path, digits_cls, 24, "top-3", metric=metric)
    study = tmp_path / "w"
    assert _with_weights(study) == _top(study, 3) and len(_top(study, 3)) == 3
    assert (study / "weights" / "best.pt").is_file()
    # one folder at most per finished trial: the one that fell out of the top 3, or the trial itself
    assert _keeper(tuner).touched <= 24
    assert _keeper(tuner).freed == 2 * 1000 * (24 - 1 - 3)  # best.pt and last.pt of each complete trial outside (trial 3 failed)


def test_resume_applies_a_new_setting_to_every_finished_trial_once(tmp_path, digits_cls):
    _tune(tmp_path, digits_cls, 10, "all")
    study = tmp_path / "w"
    assert len(_with_weights(study)) == 9  # every complete trial (3 failed before writing any)
    tuner = _tune(tmp_path, digits_cls, 14, "best", resume=True)
    assert _with_weights(study) == _top(study, 1)
    assert _keeper(tuner).touched <= 10 + 4  # the sweep over the 10 at start, then one per trial
