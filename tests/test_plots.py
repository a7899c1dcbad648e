"""What users look at after tuning, from one real tiny study (optuna, the default 26-key space):
the plots and report drawn at the study's end, ``hpo plot``, and ``hpo show``."""

import json
import os
import re
import struct
from pathlib import Path

import pytest

from conftest import CLS_ARGS, hpo_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study26(tmp_path_factory, digits_cls) -> Path:
    """A finished optuna study of 4 trials x 2 epochs in Ultralytics' default space, plots on."""
    from hpo import Tuner

    out = tmp_path_factory.mktemp("studies")
    result = Tuner(
        backend="optuna", model="yolov8n-cls.yaml", data=digits_cls, iterations=4, epochs=2, train_args=CLS_ARGS,
        output=out, name="d26", seed=0, plots=True,
    ).run()
    assert sum(result.counts.values()) == 4 and result.counts["complete"] >= 2
    return result.study_dir


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_study_end_draws_pngs_and_a_self_contained_report(study26):
    plots = study26 / "plots"
    for name in ("history", "curves", "importance", "parallel", "slice"):
        w, h = _png_size(plots / f"{name}.png")
        assert w >= 400 and h >= 300 and (plots / f"{name}.png").stat().st_size > 10_000, name
    importance = json.loads((plots / "importance.json").read_text())
    assert len(importance) == 26 and abs(sum(importance.values()) - 1.0) < 1e-6
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
    page = (plots / "report.html").read_text()
    assert "<script src=" not in page and "cdn.plot.ly" not in page.split("</script>", 1)[1]
    assert page.count('class="plotly-graph-div"') == 5  # history, curves, importance, parallel, slice
    assert "hpo study d26" in page and "best trial" in page


def test_hpo_plot_redraws_on_demand(study26):
    for f in (study26 / "plots").iterdir():
        f.unlink()
    r = hpo_cli("plot", str(study26), "--no-html")
    assert r.returncode == 0, r.stderr
    assert sorted(Path(x).name for x in r.stdout.split()) == sorted(
        ["history.png", "curves.png", "importance.json", "importance.png", "parallel.png", "slice.png"])
    assert not (study26 / "plots" / "report.html").exists()
    r = hpo_cli("plot", str(study26.parent / "nope"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no study at" in r.stderr
