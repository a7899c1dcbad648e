"""The simulated clock (hpo.clock): a study of simulated epochs runs its real loop and time budget
in simulated seconds, the seam the simulated benchmark (benchmarks/simulation.py) stands on."""

import json

from hpo import Tuner, clock


def test_a_simulated_clock_drives_the_time_budget(tmp_path, digits_cls):
    """5-second simulated epochs, 3-epoch trials, a 100 s budget: six trials end (15 s each), the
    seventh is stopped at an epoch boundary past 100 s, all on the simulated clock."""
    with clock.simulated() as sim:
        result = Tuner(
            backend="optuna",
            model="yolov8n-cls.yaml",
            data=digits_cls,
            space={"lr0": (1e-4, 1e-2), "momentum": (0.6, 0.98)},
            epochs=3,
            time_budget=100,
            output=tmp_path,
            name="sim",
            seed=0,
            backend_options={"pruner": "none"},
            trainer="hpo.simulate:simulated_trainer",
            trainer_options={"epoch_s": 5.0},
            train_args={"imgsz": 32, "optimizer": "AdamW"},
            plots=False,
        ).run()
        now = sim.now()
    assert result.stopped_by == "time_budget"
    assert 100 <= result.elapsed_s <= 105 and now == result.elapsed_s
    statuses = result.trials.sort_values("id")["status"].tolist()
    assert statuses == ["complete"] * 6 + ["pruned"], statuses
    rows = [json.loads(line) for line in (tmp_path / "sim" / "trials.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["id"] == 6][-1]
    assert [e["time"] for e in last["epochs"]] == [5.0, 10.0]  # seconds since the trial's first epoch
    assert "time budget" in last["error"]
    clock.sleep(0.01)  # after the block: a real sleep, the simulated clock no longer moves
    assert sim.now() == now
