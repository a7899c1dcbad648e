"""Missing extras and the views of odd studies (issue 30): each command that lacks an optional library
says so in one line naming the extra (exit 2, nothing written); a study whose objective never varies
still gets its plots and report; ``hpo plot --open`` without a browser says where the report is;
``curves.png`` tells the trials apart; ``hpo show`` counts only finished trials.

A missing library is made unimportable for real: the ``hpo`` process runs with
``sys.modules[NAME] = None``, so Python raises its own ``ImportError`` on ``import NAME`` (hpo's
code is not patched). tests/test_packaging.py runs the same commands in a venv with only the
``kfp`` extra installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpo import TrialStatus, Tuner
from hpo.report import format_value

SIM = "hpo.simulate:simulated_trainer"
# the simulated objective depends on numeric params only (hpo/simulate.py: q = 0.5 without any),
# so a space of choices alone gives every trial the same curve and the same objective
CONSTANT_SPACE = {
    "optimizer": {"type": "choice", "choices": ["SGD", "AdamW", "Adam"]},
    "cos_lr": {"type": "choice", "choices": [True, False]},
}
SPACE = {"lr0": (1e-5, 1e-1), "hsv_v": (0.0, 0.9)}


def hpo_without(missing: list[str], *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``hpo ARGS`` in a fresh process in which the modules ``missing`` cannot be imported."""
    code = (
        "import sys\n"
        f"for m in {missing!r}:\n"
        "    sys.modules[m] = None\n"
        "from hpo.cli import main\n"
        "sys.argv = ['hpo'] + sys.argv[1:]\n"
        "main()\n"
    )
    full = {**os.environ, "HPO_TRAINER": SIM, **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def _one_line_naming(r: subprocess.CompletedProcess, extra: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("hpo: error: ") and f"pip install 'hpo-yolo[{extra}]'" in r.stderr, r.stderr


def _study(
    out: Path, data: Path, *, space: dict, n: int = 4, epochs: int = 3, plots: bool = False, backend: str = "ultralytics"
) -> Path:
    return (
        Tuner(
            backend=backend,
            model="yolov8n-cls.yaml",
            data=data,
            space=space,
            iterations=n,
            epochs=epochs,
            output=out,
            name="s",
            seed=0,
            plots=plots,
            mlflow=False,
            trainer=SIM,
        )
        .run()
        .study_dir
    )


@pytest.fixture(scope="module")
def varied(tmp_path_factory, digits_cls) -> Path:
    """A finished simulated study of 12 trials x 3 epochs whose objective varies (no plots drawn yet)."""
    return _study(tmp_path_factory.mktemp("varied"), digits_cls, space=SPACE, n=12)


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        (["PIL"], ["datasets", "make", "digits-cls", "out"], "yolo"),
        (["sklearn"], ["datasets", "make", "digits-det", "out"], "yolo"),
        (["PIL"], ["demo", "--out", "out"], "yolo"),
        (["matplotlib"], ["plot", "STUDY"], "plots"),
        (["optuna"], ["plot", "STUDY", "--no-html"], "plots"),
        (["plotly"], ["plot", "STUDY"], "plots"),
    ],
)
def test_a_command_without_its_extra_is_one_line_naming_it(missing, args, extra, tmp_path, varied):
    args = [str(varied) if a == "STUDY" else a for a in args]
    before = sorted(p.name for p in (varied / "plots").iterdir()) if (varied / "plots").exists() else None
    r = hpo_without(missing, *args, cwd=tmp_path)
    _one_line_naming(r, extra)
    assert repr(missing[0]) in r.stderr  # the library's import name
    assert not (tmp_path / "out").exists()  # nothing written
    after = sorted(p.name for p in (varied / "plots").iterdir()) if (varied / "plots").exists() else None
    assert after == before


def test_an_import_of_a_missing_library_outside_require_still_names_the_extra(tmp_path, varied):
    """The command line's safety net (``handle_errors``): an ``ImportError`` of a library that an
    extra installs, raised by a plain import that no ``require`` preceded, becomes the one line naming
    the extra (exit 2); one of a module no extra installs, or of a submodule of an installed
    library, stays a bug (exit 1, "unexpected")."""
    from hpo.extras import missing_extra

    saved = sys.modules.get("plotly")
    try:
        sys.modules["plotly"] = None  # type: ignore[assignment]
        with pytest.raises(ImportError) as caught:
            import plotly  # noqa: F401
        e = missing_extra(caught.value)
    finally:
        if saved is None:
            del sys.modules["plotly"]
        else:
            sys.modules["plotly"] = saved
    assert e is not None and e.exit_code == 2 and "pip install 'hpo-yolo[plots]'" in str(e)
    assert missing_extra(ImportError("x", name="hpo_no_such_module")) is None
    assert missing_extra(ImportError("x", name="optuna.no_such_submodule")) is None  # optuna is installed: a bug


def test_backends_show_the_library_version_and_what_is_not_usable(tmp_path):
    import importlib.metadata

    r = hpo_without([], "backends", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    found = {b["name"]: b for b in json.loads(r.stdout)}
    assert found["optuna"]["library"] == "optuna" and found["optuna"]["version"] == importlib.metadata.version("optuna")
    assert found["ultralytics"]["version"] == importlib.metadata.version("ultralytics")
    assert all(b["usable"] and b["install"] is None for b in found.values())
    r = hpo_without(["optuna", "ultralytics"], "backends", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    found = {b["name"]: b for b in json.loads(r.stdout)}
    assert found["optuna"]["version"] is None and not found["optuna"]["usable"]
    assert found["optuna"]["install"].startswith("pip install 'hpo-yolo[yolo,optuna]'")
    assert found["ray"]["version"] == importlib.metadata.version("ray") and found["ray"]["install"].startswith(
        "pip install 'hpo-yolo[yolo]'"
    )
    r = hpo_without(["optuna"], "backends", cwd=tmp_path, env={"COLUMNS": "200"})  # wide: the hint fits one line
    lines = r.stdout.splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.startswith("optuna "))
    assert "optuna (not installed)" in lines[row] and importlib.metadata.version("hpo-yolo") not in lines[row]
    after = next(ln for ln in lines[row + 1 :] if not ln.startswith(" " * 42))  # the header may be folded to the width
    assert after == "    not usable here: pip install 'hpo-yolo[optuna]' (in a checkout: pip install -e '.[optuna]')"


def test_a_study_without_plotly_draws_its_pngs_and_warns_once(tmp_path, digits_cls):
    r = hpo_without(
        ["plotly"],
        "tune",
        "--backend",
        "ultralytics",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--iterations",
        "3",
        "--epochs",
        "2",
        "--space",
        json.dumps(SPACE),
        "--output",
        str(tmp_path / "o"),
        "--name",
        "np",
        "--seed",
        "0",
        "--plots",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("hpo: warning:")]
    assert warnings == [
        "hpo: warning: the study's plots: plots/report.html not written: needs the Python package 'plotly', which is "
        "not installed; pip install 'hpo-yolo[plots]' (in a checkout: pip install -e '.[plots]')"
    ], r.stderr
    plots = tmp_path / "o" / "np" / "plots"
    assert {"history.png", "curves.png", "importance.png"} <= {p.name for p in plots.iterdir()}
    assert not (plots / "report.html").exists()


def test_constant_objectives_still_get_plots_and_the_report(tmp_path, digits_cls):
    """Every trial at the same objective (the README's first digits-det example: all at mAP 0):
    fANOVA raised 'Encountered zero total variance in all trees', the study wrote no report.html and
    ``hpo plot`` exited 1. Now importance is skipped with one line saying why."""
    study = _study(tmp_path / "o", digits_cls, space=CONSTANT_SPACE, n=4, plots=True, backend="optuna")
    from hpo.study import Study

    records = list(Study.open(study).records().values())
    objectives = {r.objective for r in records if r.status is TrialStatus.COMPLETE}
    assert len(objectives) == 1 and len([r for r in records if r.status is TrialStatus.COMPLETE]) >= 2
    plots = study / "plots"
    assert {"history.png", "curves.png", "report.html"} <= {p.name for p in plots.iterdir()}
    assert not (plots / "importance.json").exists()
    for f in list(plots.iterdir()):
        f.unlink()
    r = hpo_without([], "plot", str(study), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "hpo: notice: parameter importance, parallel and slice plots skipped: every one of the 4 complete trials "
        f"has the same objective ({format_value(objectives.pop())})"
    ]
    assert (plots / "report.html").is_file() and str(plots / "report.html") in r.stdout


def test_plot_open_without_a_browser_says_where_the_report_is(tmp_path, varied):
    # BROWSER=false: Python's webbrowser runs `false`, which fails, as where no browser can start
    r = hpo_without([], "plot", str(varied), "--open", cwd=tmp_path, env={"BROWSER": "false", "DISPLAY": ""})
    assert r.returncode == 0, r.stderr
    report = (varied / "plots" / "report.html").resolve()
    assert r.stderr.splitlines() == [f"hpo: no web browser to open here; the report is {report}"]
    page = report.read_text()
    assert '"tickformat":"d"' in page  # whole epochs (and trials) on the x axes


def test_curves_png_tells_trials_apart(tmp_path, varied):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpo.plots import CURVE_LABELS, _curves_figure
    from hpo.study import Study

    study = Study.open(varied)
    finished = study.finished()
    complete = sorted((r for r in finished if r.status is TrialStatus.COMPLETE), key=lambda r: -(r.objective or 0.0))
    assert len(complete) > CURVE_LABELS  # 12 trials: 8 labelled, the rest grey
    fig = _curves_figure(study, finished)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:CURVE_LABELS] == [f"trial {r.id} ({format_value(r.objective)})" for r in complete[:CURVE_LABELS]]
    assert labels[CURVE_LABELS:] == [f"{len(complete) - CURVE_LABELS} other complete"]
    colours = {ln.get_label(): matplotlib.colors.to_hex(ln.get_color()) for ln in ax.get_lines()}
    assert len({colours[label] for label in labels[:CURVE_LABELS]}) == CURVE_LABELS  # distinct colours
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)


def test_curves_of_one_epoch_have_whole_epoch_ticks(tmp_path, digits_cls):
    """One epoch per trial: the x axis shows whole epochs (MaxNLocator falls back to 0.945 .. 1.05
    when fewer than two integers are in view, unless ``min_n_ticks=1``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpo.plots import _curves_figure
    from hpo.study import Study

    study = Study.open(_study(tmp_path, digits_cls, space=SPACE, n=2, epochs=1))
    fig = _curves_figure(study, study.finished())
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "1" in ticks and all(t.lstrip("−-").isdigit() for t in ticks if t), ticks
    plt.close(fig)


def test_show_counts_only_finished_trials(tmp_path, varied):
    """An interrupted trial is not finished: ``k/N trials`` counts complete, failed and pruned ones."""
    import shutil

    from hpo.show import render
    from hpo.study import Study

    study = tmp_path / "s"
    shutil.copytree(varied, study)
    rows = [json.loads(ln) for ln in (study / "trials.jsonl").read_text().splitlines()]
    last = max(row["id"] for row in rows)  # its run was stopped: an interrupted snapshot, no finished one
    kept = [row for row in rows if row["id"] != last or row["status"] == "running"]
    kept.append({**kept[-1], "status": "interrupted", "objective": None} if kept[-1]["id"] == last else {})
    assert kept[-1], "the last trial has no running snapshot"
    (study / "trials.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
    assert Study.open(study).records()[last].status is TrialStatus.INTERRUPTED
    text = render(study, width=200)
    assert "11/12 trials finished: complete 11; interrupted 1" in text, text
