"""``hpo show`` on a study larger than fANOVA can rate in a second: what the parameters' order rests
on, the cached importance of the plots and when it is stale (simulated trials; tests/test_plots.py
shows a real study)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hpo import TrialRecord, TrialStatus, Tuner
from hpo.plots import main_effects, write_plots
from hpo.show import render

SIM = "hpo.simulate:simulated_trainer"
# the simulated objective is a mean of sin(3 x_k + i_k) terms: lr0 (x = log10, about -5..-1) and
# hsv_v (0..0.9) swing theirs, momentum's range is too narrow to matter
SPACE = {"lr0": (1e-5, 1e-1), "momentum": (0.9, 0.901), "hsv_v": (0.0, 0.9)}


def _tune(out: Path, data: Path, n: int, *, resume: bool = False) -> Path:
    return (
        Tuner(
            backend="ultralytics",
            model="yolov8n-cls.yaml",
            data=data,
            space=SPACE,
            iterations=n,
            epochs=1,
            output=out,
            name="big",
            resume=resume,
            seed=0,
            plots=False,
            mlflow=False,
            trainer=SIM,
            backend_options={"initial_random": 200},
        )
        .run()
        .study_dir
    )


def _order(text: str) -> list[str]:
    return next(x for x in text.splitlines() if x.startswith("trial ")).split()[5:]


def _basis(text: str) -> str:
    return next(x for x in text.splitlines() if x.startswith("importance: "))


@pytest.fixture(scope="module")
def big(tmp_path_factory, digits_cls) -> Path:
    """A finished study of 130 complete trials: more than hpo show rates with fANOVA itself."""
    return _tune(tmp_path_factory.mktemp("show"), digits_cls, 130)


def test_show_says_what_the_order_rests_on_and_reuses_current_plots(big, digits_cls):
    text = render(big, width=200)
    assert _basis(text) == "importance: main-effect variance shares over 130 complete trials; --importance fanova for fANOVA"
    assert _order(text)[-1] == "momentum"
    write_plots(big, html_report=False)
    meta = json.loads((big / "plots" / "importance.meta.json").read_text())
    assert meta["method"] == "fanova" and meta["trials"] == meta["of"] == 130
    text = render(big, width=200)
    assert _basis(text) == "importance: fANOVA over 130 complete trials, from plots/importance.json"
    assert _order(text) == list(json.loads((big / "plots" / "importance.json").read_text()))
    assert _order(render(big, width=200, importance="fanova")) == _order(text)  # asked for what the file holds
    assert "PED-ANOVA over 130 complete trials" in _basis(render(big, width=200, importance="ped-anova"))
    # one more trial: the file no longer rests on the study's records
    _tune(big.parent, digits_cls, 131, resume=True)
    assert "main-effect variance shares over 131 complete trials" in _basis(render(big, width=200))
    # a file an earlier hpo wrote (no meta): used while it is newer than every record
    (big / "plots" / "importance.meta.json").unlink()
    later = (big / "trials.jsonl").stat().st_mtime + 10
    os.utime(big / "plots" / "importance.json", (later, later))
    assert _basis(render(big, width=200)) == "importance: fANOVA over 131 complete trials, from plots/importance.json"
    os.utime(big / "plots" / "importance.json", (later - 20, later - 20))
    assert "main-effect" in _basis(render(big, width=200))


def test_show_rejects_an_unknown_importance_method(big):
    from hpo.errors import ConfigError

    with pytest.raises(ConfigError, match="importance: 'shap' is not one of auto, fanova, ped-anova, main-effects"):
        render(big, importance="shap")


def test_main_effects_rate_the_parameter_that_drives_the_objective():
    import random

    rng = random.Random(0)
    trials = []
    for i in range(400):
        p = {"a": rng.random(), "b": rng.random(), "c": rng.choice(["x", "y"]), "d": 10 ** rng.uniform(-5, -1)}
        y = 3 * p["a"] + (0.5 if p["c"] == "y" else 0.0) + 0.05 * rng.random()
        trials.append(TrialRecord(id=i, params=p, status=TrialStatus.COMPLETE, objective=y))
    shares = main_effects(trials, ["a", "b", "c", "d"])
    assert list(shares)[:2] == ["a", "c"] and abs(sum(shares.values()) - 1) < 1e-9
    assert shares["a"] > 0.7 and shares["b"] < 0.05 and shares["d"] < 0.05
    assert main_effects(trials[:1], ["a"]) == {}
    flat = [TrialRecord(id=i, params={"a": i}, status=TrialStatus.COMPLETE, objective=1.0) for i in range(20)]
    assert main_effects(flat, ["a"]) == {}


def test_main_effects_take_trials_that_lack_a_key_and_a_single_key():
    """A space widened with --allow-changes leaves older trials without the new key: they are left
    out of that key's effect only; one key alone is rated too."""
    trials = [TrialRecord(id=i, params={"a": i % 7}, status=TrialStatus.COMPLETE, objective=float(i % 7)) for i in range(40)]
    trials += [
        TrialRecord(id=40 + i, params={"a": i % 7, "b": i % 3}, status=TrialStatus.COMPLETE, objective=float(i % 7))
        for i in range(40)
    ]
    shares = main_effects(trials, ["a", "b"])
    assert list(shares) == ["a", "b"] and shares["a"] > 0.9
    assert main_effects(trials, ["a"]) == {"a": 1.0}
    assert main_effects(trials, ["b"]) == {"b": 1.0}  # one key that half the trials lack
    from hpo.plots import _columns

    assert _columns(trials, ["b"]) == [[None] * 40 + [i % 3 for i in range(40)]]  # values, not 1-tuples
    assert _columns(trials, ["a", "b"])[1] == _columns(trials, ["b"])[0] and _columns(trials, []) == []


def test_show_bounds_the_disk_count_and_says_so(big, monkeypatch):
    """Counting bytes costs one lstat per file: show stops after DISK_COUNT_S and says the size is
    a lower bound and how to get all of it; with time to finish it prints the exact size."""
    import hpo.show
    from hpo.files import count_tree_bytes, human_bytes, tree_bytes

    extra = big / "many"  # the module's study is shared: the extra files go again at the end
    extra.mkdir(exist_ok=True)
    try:
        for i in range(600):
            (extra / f"f{i}").write_bytes(b"x" * 10)
        total = sum(f.stat().st_size for f in big.rglob("*") if f.is_file() and not f.is_symlink())
        assert tree_bytes(big) == total == count_tree_bytes(big)[0] and count_tree_bytes(big)[1] is True
        counted, complete = count_tree_bytes(big, 0.0)
        assert complete is False and counted < total
        assert f"size on disk {human_bytes(total)} (weights kept" in render(big, width=200)
        monkeypatch.setattr(hpo.show, "DISK_COUNT_S", 0.0)
        line = next(x for x in render(big, width=200).splitlines() if "size on disk" in x)
        assert line.strip().startswith("size on disk over ") and f"(counted for 0 s; du -sh {big} for all)" in line
    finally:
        shutil.rmtree(extra, ignore_errors=True)
