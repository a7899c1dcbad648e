"""The ultralytics backend's limits: a space it cannot search is refused before any trial, and an
exhausted one stops the study with one line instead of the native RuntimeError."""

import pytest
from conftest import CLS_ARGS

from hpo import ConfigError, RunFailed, TrialRecord, TrialStatus
from hpo.config import build_config
from hpo.study import Study


def _config(digits_cls, tmp_path, space, iterations):
    return build_config(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space=space,
        iterations=iterations,
        epochs=1,
        train_args=dict(CLS_ARGS),
        output=tmp_path / "out",
        seed=0,
    )


def test_distinct_configurations_must_cover_the_iterations(digits_cls, tmp_path):
    space = {"close_mosaic": (0, 2), "nbs": (63, 64)}  # 3 x 2 whole numbers
    assert _config(digits_cls, tmp_path, space, 6).iterations == 6
    with pytest.raises(
        ConfigError, match=r"holds only 6 distinct configurations \(close_mosaic: 3 values, nbs: 2 values\) for --iterations 7"
    ):
        _config(digits_cls, tmp_path, space, 7)
    # a float range has one value per 1e-5 (the native _constrain rounds to 5 decimals)
    with pytest.raises(ConfigError, match=r"holds only 11 distinct configurations \(perspective: 11 values\)"):
        _config(digits_cls, tmp_path, {"perspective": (0.0, 0.0001)}, 12)
    assert not (tmp_path / "out").exists()


def test_an_exhausted_space_stops_with_one_line_not_a_native_runtime_error(digits_cls, tmp_path):
    from hpo_ultralytics import UltralyticsBackend

    cfg = _config(digits_cls, tmp_path, {"close_mosaic": (0, 1)}, 2)
    study = Study.create(cfg.study_dir, cfg.to_settings())
    try:
        backend = UltralyticsBackend(config=cfg, study=study, options=cfg.options)
        seen = []
        for trial_id, objective in ((0, 0.5), (1, 0.7)):
            params = backend.ask().params
            seen.append(params["close_mosaic"])
            backend.tell(TrialRecord(id=trial_id, params=params, status=TrialStatus.COMPLETE, objective=objective))
        assert sorted(seen) == [0, 1]  # each configuration once
        with pytest.raises(RunFailed) as e:
            backend.ask()
        message = str(e.value)
        assert message.startswith(
            "ultralytics backend: Tuner: Unable to generate a unique hyperparameter mutation after 2 complete trials"
        )
        assert "(the space holds 2 configurations)" in message and "\n" not in message and "\x1b" not in message
    finally:
        study.close()
