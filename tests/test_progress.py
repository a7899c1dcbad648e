"""Live progress from a real tiny study: plain lines with heartbeats (batch progress) and the rich display."""

import io
import re

import pytest
from conftest import CLS_ARGS

pytestmark = pytest.mark.slow


def test_plain_heartbeats_during_an_epoch_and_rich_display(tmp_path, digits_cls):
    from hpo import Tuner
    from hpo.progress import ProgressDisplay

    plain, rich = io.StringIO(), io.StringIO()
    displays = [ProgressDisplay(stream=plain, live=False, heartbeat_s=1.5), ProgressDisplay(stream=rich, live=True)]
    result = Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        iterations=1,
        epochs=1,
        train_args={**CLS_ARGS, "batch": 8},
        space={"lr0": (1e-4, 1e-2)},
        output=tmp_path,
        name="p",
        seed=0,
        callbacks=displays,
    ).run()
    assert result.counts == {"complete": 1, "failed": 0, "pruned": 0}
    text = plain.getvalue()
    assert "trial 0 started (1/1)" in text and re.search(r"trial 0 epoch 1/1 metrics/accuracy_top1=0\.\d+", text)
    beats = [ln for ln in text.splitlines() if ln.startswith("hpo: 0/1 trials, elapsed ")]
    assert beats, text
    # heartbeats carry the running trial's epoch and batch (about 1,400 images / batch 8: 176 batches)
    seen = [tuple(map(int, m.groups())) for ln in beats for m in [re.search(r"trial 0 epoch 1/1 batch (\d+)/(\d+)", ln)] if m]
    assert seen and all(1 <= b <= n and 150 < n < 200 for b, n in seen), beats
    assert re.search(r"trial 0 complete objective=0\.\d+ .*\[1/1\] best 0\.\d+ \(trial 0\), elapsed \S+, ETA 0s", text)
    live = rich.getvalue()
    assert "trial 0 complete objective=" in live and re.search(
        r"trials\s+\S+ 1/1 +elapsed \S+ +ETA 0s +best 0\.\d+ \(trial 0\)", live
    )


def test_the_eta_counts_the_final_stage(tmp_path, digits_cls):
    """With final_epochs the ETA after the last trial is the final stage's epochs at the trials'
    seconds per epoch (simulated trainer, 0.3 s per epoch: 2 x 4 final epochs ~ 2.4 s), not 0s."""
    from hpo import Tuner
    from hpo.progress import ProgressDisplay
    from hpo.testing import SIMULATED

    plain = io.StringIO()
    display = ProgressDisplay(stream=plain, live=False, heartbeat_s=60)
    Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        iterations=2,
        epochs=2,
        space={"lr0": (1e-4, 1e-2)},
        output=tmp_path,
        name="p",
        seed=0,
        trainer=SIMULATED,
        trainer_options={"epoch_s": 0.3},
        final_epochs=4,
        final_seeds=2,
        plots=False,
        callbacks=[display],
    ).run()
    text = plain.getvalue()
    assert "(optuna, 2 trials x 2 epochs, then 2 final runs x 4 epochs," in text, text
    last = re.search(r"trial \d \w+ objective=.*\[2/2\].*ETA (\d+)s", text)
    assert last and 2 <= int(last.group(1)) <= 8, text  # old code: ETA 0s
    assert display.final_epochs == 8 and display.final_s() == 0.0  # every final epoch trained
