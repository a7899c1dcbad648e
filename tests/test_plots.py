"""What users look at after tuning, from one real tiny study (optuna, Ultralytics' 26-key space by its name):
the plots and report drawn at the study's end, ``hpo plot``, and ``hpo show``."""

import json
import re
import struct
from pathlib import Path

import pytest
from conftest import CLS_ARGS, hpo_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study26(tmp_path_factory, digits_cls) -> Path:
    """A finished optuna study of 4 trials x 2 epochs in Ultralytics' own tuner space (``space="ultralytics"``,
    26 keys, the most a study shows), plots on."""
    from hpo import Tuner

    out = tmp_path_factory.mktemp("studies")
    result = Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space="ultralytics",
        iterations=4,
        epochs=2,
        train_args=CLS_ARGS,
        output=out,
        name="d26",
        seed=0,
        plots=True,
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
        ["history.png", "curves.png", "importance.json", "importance.meta.json", "importance.png", "parallel.png", "slice.png"]
    )
    assert not (study26 / "plots" / "report.html").exists()
    r = hpo_cli("plot", str(study26.parent / "nope"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no study at" in r.stderr


@pytest.mark.parametrize("columns", [80, 100])
def test_show_fits_the_terminal_with_26_keys(study26, columns):
    from hpo.space import SearchSpace

    keys = list(SearchSpace.default())
    r = hpo_cli("show", str(study26), env={"COLUMNS": str(columns)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(x) for x in lines) <= columns, max(lines, key=len)
    header = next(x for x in lines if x.startswith("trial "))
    shown = header.split()[5:]
    # 4 trials are below hpo show's minimum for an importance (MIN_IMPORTANCE_TRIALS): the space's order, and why
    stored = list(json.loads((study26 / "study.json").read_text())["space"])
    assert len(shown) >= 2 and shown == stored[: len(shown)]
    assert "importance needs 10 complete trials, the study has" in " ".join(r.stdout.split())
    rows = [x.split() for x in lines if x[:1].isdigit()]  # table rows start with the trial id
    assert sum(x[1:2] in (["complete"], ["pruned"], ["failed"]) for x in rows) == 4  # one row per trial
    best = json.loads(hpo_cli("show", str(study26), "--json").stdout)["best"]
    block = "\n".join(lines[lines.index(next(x for x in lines if x.startswith("best trial"))) :])
    for k in keys:  # the best trial's full configuration
        assert re.search(rf"\b{k}\s+\S", block), k
    assert f"best trial {best['trial']}:" in block
    assert re.search(r"size on disk \d+\.\d MiB", r.stdout)


def test_show_params_all_csv_json(study26):
    r = hpo_cli("show", str(study26), "--params", "lr0,close_mosaic", env={"COLUMNS": "80"})
    assert r.returncode == 0 and next(x for x in r.stdout.splitlines() if x.startswith("trial ")).split()[5:] == [
        "lr0",
        "close_mosaic",
    ]
    r = hpo_cli("show", str(study26), "--params", "lr0,lr_zero")
    assert r.returncode == 2 and "params: lr_zero not in the study's space" in r.stderr
    r = hpo_cli("show", str(study26), "--all", env={"COLUMNS": "80"})
    assert len(next(x for x in r.stdout.splitlines() if x.startswith("trial ")).split()) == 5 + 26
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(hpo_cli("show", str(study26), "--csv").stdout)))
    shown = json.loads(hpo_cli("show", str(study26), "--json").stdout)
    assert len(rows) == 4 and len(rows[0]) == 9 + 26
    by_id = {t["id"]: t for t in shown["trials"]}
    for row in rows:
        t = by_id[int(row["id"])]
        assert row["status"] == t["status"] and float(row["lr0"]) == t["params"]["lr0"]
    assert shown["disk_bytes"] > 1_000_000 and set(shown) >= {"study_dir", "backend", "metric", "counts", "trials", "best"}


def _pt_files(study: Path) -> dict[int, list[str]]:
    return {int(d.name): sorted(f.name for f in (d / "weights").glob("*.pt")) for d in (study / "trials").iterdir()}


def test_keep_weights_default_top3_then_resume_with_best(study26, digits_cls):
    from hpo import Tuner
    from hpo.study import Study

    study = Study.open(study26)
    complete = [r.id for r in study.ranked() if r.status.value == "complete"]
    pts = _pt_files(study26)
    assert {i for i, names in pts.items() if names} == set(complete[:3])  # default top-3; pruned trials keep none
    assert all(names == ["best.pt", "last.pt"] for i, names in pts.items() if i in complete[:3])
    assert all((study26 / "trials" / str(i) / "results.csv").is_file() for i in pts)  # the rest of each folder stays
    assert json.loads((study26 / "study.json").read_text())["keep_weights"] == "top-3"
    best_pt = (study26 / "weights" / "best.pt").read_bytes()
    # resumed with 'best': only the best trial keeps its weights, the study's copy is unchanged
    result = Tuner(
        backend="optuna",
        model="yolov8n-cls.yaml",
        data=digits_cls,
        space="ultralytics",
        iterations=5,
        epochs=2,
        train_args=CLS_ARGS,
        output=study26.parent,
        name=study26.name,
        seed=0,
        resume=True,
        keep_weights="best",
        plots=False,
    ).run()
    assert sum(result.counts.values()) == 5
    pts = _pt_files(study26)
    assert [i for i, names in pts.items() if names] == [result.best_trial]
    assert result.best_weights.is_file() and result.best_weights.stat().st_size > 100_000
    if result.best_trial in complete:
        assert result.best_weights.read_bytes() == best_pt
    r = hpo_cli("show", str(study26))
    assert "(weights kept: best)" in r.stdout
