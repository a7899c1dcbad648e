"""Views: one precision rule (hpo.fmt.format_value) in every view, hpo show's importance minimum,
and text that fits the terminal without breaking a word (hpo show --all, the live progress lines)."""

from __future__ import annotations

import io
import re

from hpo import Study, Tuner
from hpo.fmt import format_value
from hpo.progress import ProgressDisplay
from hpo.show import MIN_IMPORTANCE_TRIALS, render

SIM = {"trainer": "hpo.simulate:simulated_trainer", "plots": False}
LONG_NAME = "a-rather-long-study-name-that-makes-lines-wrap"


def _study(tmp_path, data, n, name="s", **kw):
    return Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=data,
        iterations=n,
        epochs=2,
        output=tmp_path,
        name=name,
        space={"lr0": (1e-4, 1e-2), "momentum": (0.7, 0.98), "weight_decay": (0.0, 0.001)},
        train_args={"imgsz": 32, "optimizer": "AdamW"},
        seed=0,
        backend_options={"pruner": "none"},
        **SIM,
        **kw,
    ).run()


def _words_whole(expected: str, output: str) -> bool:
    """``expected`` appears in ``output`` once line breaks are spaces: a line broken at a space
    passes, a word broken in two does not."""
    return " ".join(expected.split()) in " ".join(output.split())


def test_format_value_is_one_rule():
    assert format_value(0.43291139602661133) == "0.43291"
    assert format_value(0.000123456) == "0.00012346"
    assert format_value(3.0) == "3" and format_value(7) == "7" and format_value(None) == "-"
    assert format_value(float("nan")) == "nan" and format_value(True) == "True" and format_value("SGD") == "SGD"


def test_show_importance_needs_a_minimum_and_says_what_it_rests_on(tmp_path, digits_cls):
    few = _study(tmp_path, digits_cls, 3, name="few")
    text = render(few.study_dir, width=200)
    assert "params in the space's order" in text
    assert f"importance needs {MIN_IMPORTANCE_TRIALS} complete trials, the study has 3" in text
    assert "importance:" not in text
    many = _study(tmp_path, digits_cls, MIN_IMPORTANCE_TRIALS, name="many")
    text = render(many.study_dir, width=200)
    assert "params by importance" in text and f"over {MIN_IMPORTANCE_TRIALS} complete trials" in text


def test_show_all_fits_80_columns_and_breaks_no_word_one_precision(tmp_path, digits_cls):
    result = _study(tmp_path, digits_cls, 3, name=LONG_NAME)
    text = render(result.study_dir, width=80, show_all=True)
    lines = text.splitlines()
    table = lines.index("") + 1  # the table (--all: every column, may be wider) runs to the next blank line
    end = lines.index("", table)
    blocks = lines[:table] + lines[end:]
    assert all(len(x) <= 80 for x in blocks if str(result.study_dir) not in x), blocks
    assert _words_whole(f"study {result.study_dir}", text)
    assert _words_whole("objective metrics/accuracy_top1 (maximize), 3/3 trials finished", text)
    best = Study.open(result.study_dir).records()[result.best_trial]
    # one precision rule: the best objective and every parameter as format_value shows them
    assert f"metrics/accuracy_top1 = {format_value(best.objective)}" in text
    for key, value in best.params.items():
        assert re.search(rf"{key}\s+{re.escape(format_value(value))}(\s|$)", text, re.M), (key, value)


def test_live_progress_lines_fit_100_columns_without_breaking_a_word(tmp_path, digits_cls, monkeypatch):
    """The header (~150 columns here) and the result lines are folded at spaces (a word longer than
    the width, such as a long path, would be folded: the path here is shorter than 100)."""
    monkeypatch.setenv("COLUMNS", "100")
    stream = io.StringIO()
    result = _study(
        tmp_path,
        digits_cls,
        3,
        name="p",
        callbacks=[ProgressDisplay(stream=stream, live=True)],
        trainer_options={"epoch_s": 0.3},
    )
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue()).replace("\r", "\n")
    lines = [x.rstrip() for x in out.splitlines() if x.strip()]
    assert len(str(result.study_dir)) < 95, "precondition: the path fits a line"
    assert lines and all(len(x) <= 100 for x in lines), [x for x in lines if len(x) > 100]
    assert _words_whole(f"hpo study {result.study_dir} (optuna, 3 trials x 2 epochs, metrics/accuracy_top1 maximize)", out), out
    records = Study.open(result.study_dir).records()
    for r in records.values():
        assert _words_whole(f"trial {r.id} {r.status.value} objective={format_value(r.objective)}", out), out
    # a running trial's row does not repeat its id after its description
    assert not re.search(r"trial (\d+) .*trial \1 epoch", out)
