"""The ultralytics backend's limits: a space it cannot search is refused before any trial, and an
exhausted one stops the study with one line instead of the native RuntimeError."""

import math

import pytest
from conftest import CLS_ARGS

from hpo import ConfigError, RunFailedError, TrialRecord, TrialStatus
from hpo.study import Study
from hpo.validate import build_config


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
        with pytest.raises(RunFailedError) as e:
            backend.ask()
        message = str(e.value)
        assert message.startswith(
            "ultralytics backend: Tuner: Unable to generate a unique hyperparameter mutation after 2 complete trials"
        )
        assert "(the space holds 2 configurations)" in message and "\n" not in message and "\x1b" not in message
    finally:
        study.close()


def _prune_backend(digits_cls, tmp_path, epochs, **options):
    from hpo_ultralytics import UltralyticsBackend

    cfg = build_config(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space={"lr0": (0.001, 0.1)},
        iterations=20,
        epochs=epochs,
        train_args=dict(CLS_ARGS),
        output=tmp_path / "out",
        seed=0,
        backend_options=options,
    )
    study = Study.create(cfg.study_dir, cfg.to_settings())
    return UltralyticsBackend(config=cfg, study=study, options=cfg.options), study


def test_early_stopping_stops_trials_below_the_median_at_the_same_epoch(digits_cls, tmp_path):
    """The median rule (Optuna's PercentilePruner, 50th percentile): after 4 complete trials with
    epoch-1 top-1 of 0.2, 0.4, 0.6 and 0.8 (median 0.5), a trial at 0.45 after epoch 1 stops and one
    at 0.55 goes on; the last epoch and a missing metric never stop a trial."""
    metric = "metrics/accuracy_top1"
    backend, study = _prune_backend(digits_cls, tmp_path, epochs=3, pruner="percentile")
    try:
        assert backend.options.prune_percentile == 50.0  # the median by default
        running = TrialRecord(id=99, params={"lr0": 0.01}, status=TrialStatus.RUNNING)
        for i, v in enumerate((0.2, 0.4, 0.6)):
            epochs = [{"epoch": e, metric: v + 0.1 * (e - 1)} for e in (1, 2, 3)]
            backend.tell(TrialRecord(id=i, params={"lr0": 0.01}, status=TrialStatus.COMPLETE, objective=v + 0.2, epochs=epochs))
        assert not backend.should_prune(running, {"epoch": 1, metric: 0.0})  # 3 peers: still starting up
        epochs = [{"epoch": e, metric: 0.8 + 0.01 * e} for e in (1, 2, 3)]
        backend.tell(TrialRecord(id=3, params={"lr0": 0.02}, status=TrialStatus.COMPLETE, objective=0.83, epochs=epochs))
        assert backend.should_prune(running, {"epoch": 1, metric: 0.45})
        assert not backend.should_prune(running, {"epoch": 1, metric: 0.55})
        assert backend.should_prune(running, {"epoch": 2, metric: 0.55})  # epoch 2: 0.3, 0.5, 0.7, 0.82 -> 0.6
        assert not backend.should_prune(running, {"epoch": 3, metric: 0.0})  # the last epoch: complete
        assert not backend.should_prune(running, {"epoch": 1, metric: float("nan")})
        assert not backend.should_prune(running, {"epoch": 1})
        # a pruned or failed trial is no peer
        backend.tell(
            TrialRecord(
                id=4, params={"lr0": 0.03}, status=TrialStatus.PRUNED, objective=0.01, epochs=[{"epoch": 1, metric: 0.01}]
            )
        )
        assert not backend.should_prune(running, {"epoch": 1, metric: 0.55})
    finally:
        study.close()


def test_early_stopping_off_and_at_another_percentile(digits_cls, tmp_path):
    metric = "metrics/accuracy_top1"
    cases = (
        ({}, False),  # the default: no early stopping, as Ultralytics' own tuner
        ({"pruner": "none"}, False),
        ({"pruner": "percentile", "prune_percentile": 25.0}, False),
        ({"pruner": "percentile", "prune_percentile": 75.0}, True),
    )
    for case, (options, at_045) in enumerate(cases):
        backend, study = _prune_backend(digits_cls, tmp_path / str(case), 3, **options)
        try:
            for i, v in enumerate((0.2, 0.4, 0.6, 0.8)):
                backend.tell(
                    TrialRecord(
                        id=i, params={"lr0": 0.01}, status=TrialStatus.COMPLETE, objective=v, epochs=[{"epoch": 1, metric: v}]
                    )
                )
            running = TrialRecord(id=9, params={"lr0": 0.01}, status=TrialStatus.RUNNING)
            # 25th percentile of (0.2, 0.4, 0.6, 0.8) is 0.35, the 75th 0.65
            assert backend.should_prune(running, {"epoch": 1, metric: 0.45}) is at_045, options
            assert backend.should_prune(running, {"epoch": 1, metric: 0.1}) is (options.get("pruner") == "percentile"), options
        finally:
            study.close()


def test_a_random_initial_population_comes_before_the_mutation(digits_cls, tmp_path):
    """Proposal 0 is Ultralytics' defaults (lr0 0.01), the next ``initial_random`` are uniform over
    the space (lr0 in 0.001-0.1: they spread over it, where a mutation of the defaults stays near
    0.01), and the one after them is the native mutation, which with no complete trial yet proposes
    the defaults again (``Tuner._mutate`` without history)."""
    backend, study = _prune_backend(digits_cls, tmp_path / "k20", 3, initial_random=20)
    try:
        lr0 = [backend.ask().params["lr0"] for _ in range(21)]
        assert lr0[0] == 0.01
        drawn = lr0[1:]
        assert all(0.001 <= v <= 0.1 for v in drawn) and len(set(drawn)) == 20
        assert max(drawn) - min(drawn) > 0.06 and sum(v > 0.04 for v in drawn) >= 5, drawn
    finally:
        study.close()
    backend, study = _prune_backend(digits_cls, tmp_path / "k2", 3, initial_random=2)
    try:
        assert backend.options.initial_random == 2
        lr0 = [backend.ask().params["lr0"] for _ in range(4)]
        # proposal 3 is asked before any trial completed: drawn too, not the start again
        assert lr0[0] == 0.01 and 0.01 not in lr0[1:] and len(set(lr0)) == 4, lr0
    finally:
        study.close()


def test_the_native_start_by_default_and_no_repeat_of_it_before_a_result(digits_cls, tmp_path):
    """initial_random=0 by default (benchmarks/results/dev-ultralytics/decision.md): proposal 0 is
    the start; with one complete trial the next is the native mutation of it; proposals asked before any trial completed
    (concurrent trials at the start) are uniform draws, never the start again."""
    backend, study = _prune_backend(digits_cls, tmp_path / "default", 3)
    try:
        assert backend.options.initial_random == 0
        first = backend.ask().params["lr0"]
        early = [backend.ask().params["lr0"] for _ in range(2)]  # concurrent: nothing told yet
        assert first == 0.01 and 0.01 not in early and len(set(early)) == 2, early
        backend.tell(TrialRecord(id=0, params={"lr0": 0.01}, status=TrialStatus.COMPLETE, objective=0.5))
        child = backend.ask().params["lr0"]
        assert child != 0.01 and child not in early and 0.001 <= child <= 0.1, child
    finally:
        study.close()


def test_random_draws_never_repeat_a_configuration(digits_cls, tmp_path):
    """In a 3-value integer space, the uniform draws skip configurations already proposed; once
    none is left the native mutation reports the space exhausted (one line)."""
    from hpo_ultralytics import UltralyticsBackend

    cfg = _config(digits_cls, tmp_path, {"close_mosaic": (0, 2)}, 3)
    study = Study.create(cfg.study_dir, cfg.to_settings())
    try:
        backend = UltralyticsBackend(config=cfg, study=study, options=cfg.options)
        seen = []
        for trial_id in range(3):
            params = backend.ask().params
            seen.append(params["close_mosaic"])
            backend.tell(TrialRecord(id=trial_id, params=params, status=TrialStatus.COMPLETE, objective=0.1 * trial_id))
        assert sorted(seen) == [0, 1, 2]
        with pytest.raises(RunFailedError, match="Unable to generate a unique hyperparameter mutation after 3 complete trials"):
            backend.ask()
    finally:
        study.close()


def test_log_scaled_keys_are_searched_in_log10_and_recorded_as_values(digits_cls, tmp_path):
    """A log-scaled range (the default space's lr0 under AdamW) is accepted: the random start is uniform
    in log10 (about half of 40 draws in 1e-5..1e-1 fall below 1e-3, where a linear draw falls 1 % of the
    time), the mutation reads the history in log10 and stays in the bounds, the first proposal is the space's start, a log-scaled
    integer key never repeats a configuration, and tune_results.ndjson holds the values themselves."""
    import json

    from hpo_ultralytics import UltralyticsBackend

    space = {
        "lr0": {"type": "logfloat", "low": 1e-5, "high": 1e-1, "start": 0.000714},
        "nbs": {"type": "int", "low": 8, "high": 64, "log": True},
    }
    cfg = build_config(
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space=space,
        iterations=80,
        epochs=1,
        train_args=dict(CLS_ARGS),
        output=tmp_path / "out",
        seed=0,
        backend_options={"initial_random": 40},
    )
    study = Study.create(cfg.study_dir, cfg.to_settings())
    try:
        backend = UltralyticsBackend(config=cfg, study=study, options=cfg.options)
        proposals = []
        for trial_id in range(60):
            params = backend.ask().params
            proposals.append(params)
            objective = -abs(math.log10(params["lr0"]) + 3.5)  # best near 3e-4
            backend.tell(TrialRecord(id=trial_id, params=params, status=TrialStatus.COMPLETE, objective=objective))
        assert proposals[0] == {"lr0": 0.000714, "nbs": 64}  # the start (nbs: Ultralytics' default)
        drawn = [p["lr0"] for p in proposals[1:41]]
        assert 12 <= sum(v < 1e-3 for v in drawn) <= 28, sorted(drawn)
        assert all(1e-5 <= p["lr0"] <= 1e-1 and 8 <= p["nbs"] <= 64 and isinstance(p["nbs"], int) for p in proposals)
        assert len({(p["lr0"], p["nbs"]) for p in proposals}) == 60
        rows = [json.loads(line) for line in (cfg.study_dir / "ultralytics" / "tune_results.ndjson").read_text().splitlines()]
        # the mutation reads the history in log10 too: its proposals centre on the best (3e-4), not near 1e-2
        mutated = sorted(p["lr0"] for p in proposals[41:])
        assert 1e-4 < mutated[len(mutated) // 2] < 1e-3, mutated
        assert [r["hyperparameters"] for r in rows] == proposals
    finally:
        study.close()


def test_native_proposals_from_memory_equal_those_from_the_file(tmp_path):
    """The native ``Tuner._mutate`` reads ``tune_results.ndjson`` back on every proposal; the plugin
    hands it the same rows from memory instead: the proposals must be the ones the file gives."""
    import random

    from hpo_ultralytics._native import NativeProposals

    space = {"lr0": (1e-5, 1e-1), "momentum": (0.6, 0.98, 0.3), "close_mosaic": (0.0, 10.0), "hsv_v": (0.0, 0.9)}
    rng = random.Random(0)
    fast = NativeProposals(space, {"imgsz": 32}, tmp_path)
    rows = []
    for i in range(45):  # past 30 rows the native code also draws from the elite's covariance
        hyp = {k: round(lo + rng.random() * (hi - lo), 5) for k, (lo, hi, *_) in space.items()}
        hyp["close_mosaic"] = int(hyp["close_mosaic"])
        fitness = i / 45 + rng.random() / 100  # the latest rows are the parents: each one counts
        rows.append(fast.result_record(i + 1, fitness, hyp, {"d": {"fitness": fitness}}, {"d": str(tmp_path / str(i))}))
    fast.set_results(rows[:40])
    for row in rows[40:]:
        fast.save_result(row)
    assert (tmp_path / "tune_results.ndjson").read_text().count("\n") == 45
    reading = NativeProposals(space, {"imgsz": 32}, tmp_path)
    del reading._tuner._load_local_results, reading._tuner._local_results_to_array  # the native methods: read the file
    for draw in range(12):
        assert fast.mutate(9, 0.2, seed=0, draw=draw) == reading.mutate(9, 0.2, seed=0, draw=draw)
