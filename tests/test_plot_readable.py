"""The parallel-coordinate and slice views stay readable from a handful to many trials: no tick
labels run together, no trial drawn white, lines fading with their number; and the report renders
in a real headless Chromium (where one is installed: apt-get install chromium)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hpo import Study, Tuner
from hpo.plots import _line_alpha, parallel_figure, slice_figure, write_plots

SPACE = {
    "lr0": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "momentum": (0.6, 0.98),
    "weight_decay": (0.0, 0.001),  # Optuna's slice ran its ticks together: 0.00025000.0005...
    "hsv_h": (0.0, 0.1),
    "fliplr": (0.0, 1.0),
    "close_mosaic": (0, 10),
}


def _study(tmp_path, data, n):
    return Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=data,
        iterations=n,
        epochs=2,
        output=tmp_path,
        name=f"s{n}",
        space=SPACE,
        train_args={"imgsz": 32, "optimizer": "AdamW"},
        seed=0,
        backend_options={"sampler": "random", "pruner": "none"},
        trainer="hpo.simulate:simulated_trainer",
        plots=False,
    ).run()


def _overlaps(boxes):
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


@pytest.mark.parametrize("n", [6, 150])
def test_parallel_and_slice_labels_never_collide_and_no_trial_is_white(tmp_path, digits_cls, n):
    study = Study.open(_study(tmp_path, digits_cls, n).study_dir)
    complete = [r for r in study.finished() if r.objective is not None]
    params = list(SPACE)
    fig = slice_figure(study, complete, params)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[: len(params)]:
        labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        inside = [t for t in labels if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(inside) >= 2, (ax.get_xlabel(), [t.get_text() for t in labels])
        assert not _overlaps([t.get_window_extent(renderer) for t in inside]), (ax.get_xlabel(), [t.get_text() for t in inside])
    fig = parallel_figure(study, complete, params)
    fig.canvas.draw()
    ax = fig.axes[0]
    texts = [t for t in ax.texts]
    assert len(texts) == 3 * (1 + len(params))  # bottom, middle, top of each axis
    assert not _overlaps([t.get_window_extent(renderer=fig.canvas.get_renderer()) for t in texts])
    ticks = [t.get_window_extent(fig.canvas.get_renderer()) for t in ax.get_xticklabels()]
    assert not _overlaps(ticks)
    colours = [c for coll in ax.collections for c in coll.get_colors()]
    assert len(colours) == n and all(0.299 * r + 0.587 * g + 0.114 * b < 0.95 for r, g, b, _ in colours)


def test_lines_fade_with_their_number():
    assert _line_alpha(6) == 0.8 and _line_alpha(1000) == 0.06 and _line_alpha(100) == 0.5


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless Chromium here (apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(tmp_path, digits_cls):
    result = _study(tmp_path, digits_cls, 6)
    report = result.study_dir / "plots" / "report.html"
    write_plots(result.study_dir)
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    # plotly drew every figure: history, curves, importance, parallel (a Parcoords), slice
    assert dom.count('class="plot-container plotly"') == 5, dom[:500]
    assert 'class="parcoords"' in dom and dom.count('class="xtick"') > 10
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,4000",
            "--virtual-time-budget=15000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    from PIL import Image

    pixels = Image.open(shot).convert("L").resize((140, 400)).tobytes()
    assert sum(p < 200 for p in pixels) > 0.01 * len(pixels)  # drawn (3% measured on 6 trials), not a blank page (0)
