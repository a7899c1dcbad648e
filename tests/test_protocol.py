"""The pre-registered protocol's harness (benchmarks/: protocol, harness, stats, report, fidelity).

Statistics are checked on inputs whose answers are known (published tables or exact
enumeration); the harness runs end to end on a tiny protocol with real Ultralytics trainings for
``model.tune`` and the final trainings, hpo's simulated trainer for the hpo study (the search is not
the point here), and is killed part way and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
name: tiny
device: cpu
seeds: {evaluation: "1000-1001", development: "100-101"}
problems:
  cls:
    dataset: digits-cls
    model: yolov8n-cls.yaml
    start: shared-init
    imgsz: 32
    batch: 16
    images: {train: 4, val: 2, test: 2}
    trial_epochs: 1
    iterations: 1
    final_epochs: 1
    final_seeds: 1
    cap_s: 300
contenders:
  model-tune: {kind: model.tune}
  sim: {kind: hpo, backend: ultralytics, env: {HPO_TRAINER: "hpo.simulate:simulated_trainer"}}
  tune-ray: {kind: model.tune-ray}
conditions:
  primary:
    label: "tiny"
    baseline: model-tune
    contenders: [model-tune, sim, tune-ray]
    problems: [cls]
    contender_seeds: {tune-ray: "1000"}
noise_floor: {condition: primary, trainings: 2}
statistics: {primary_condition: primary, primary_contenders: [sim]}
fidelity: {condition: primary, factor: 2, configs: 3}
"""


def _bench(*args: str, cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "hpo_bench", "protocol", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        **kw,
    )


# statistics on known inputs ---------------------------------------------------------------------


def test_wilcoxon_exact_values():
    from hpo_bench.stats import wilcoxon_test

    # all 10 differences positive: p = 2 / 2^10 (exact null distribution)
    assert wilcoxon_test([0.01 * i for i in range(1, 11)]) == {"p": 2 / 1024, "n_nonzero": 10, "method": "exact"}
    # rank 2 negative: P(W- <= 2) = 3/1024 each side -> 6/1024
    assert wilcoxon_test([1, -2, 3, 4, 5, 6, 7, 8, 9, 10])["p"] == pytest.approx(6 / 1024)
    # zeros dropped, tied |d| -> exact enumeration of the 4 remaining signs: 2 / 16
    res = wilcoxon_test([0.1, 0.1, 0.2, 0.0, 0.3])
    assert res["p"] == pytest.approx(0.125) and res["n_nonzero"] == 4 and "enumeration" in res["method"]
    assert wilcoxon_test([0.0, 0.0])["p"] == 1.0
    assert wilcoxon_test([])["p"] is None


def test_holm_step_down():
    from hpo_bench.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x, made monotone: 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.01]) == pytest.approx([0.5, None, 0.02])
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_seeds_needed_matches_cohens_table():
    from hpo_bench.stats import seeds_needed

    # paired t, effect 0.5 sd, alpha 0.05 two-sided, power 0.8: 34 pairs (Cohen 1988; G*Power gives 34)
    assert seeds_needed(0.04, delta=0.02) == 34
    # effect 1 sd: 10 pairs (G*Power: 10)
    assert seeds_needed(0.02, delta=0.02) == 10
    assert seeds_needed(0.0) == 2
    assert seeds_needed(None) is None


def test_bootstrap_interval_is_fixed_by_its_seed_and_brackets_the_mean():
    from hpo_bench.stats import bootstrap_ci

    d = [0.05, 0.12, -0.02, 0.08, 0.10, 0.03, 0.07, 0.01, 0.09, 0.04]
    a, b = bootstrap_ci(d, seed=0), bootstrap_ci(d, seed=0)
    assert a == b and a is not None
    assert a[0] < sum(d) / len(d) < a[1]
    assert a[0] > 0  # 9 of 10 positive: the interval excludes 0
    assert bootstrap_ci([0.1]) is None
    assert bootstrap_ci([0.02, 0.02, 0.02]) == [0.02, 0.02]


def test_compare_paired_counts_ties_by_the_margin_and_lists_missing_seeds():
    from hpo_bench.stats import compare_paired, tie_margin, verdict

    margin = tie_margin(0.02, k=1.0, final_seeds=2)
    assert margin == pytest.approx(0.02)  # 0.02 * sqrt(2/2)
    c = compare_paired(
        {1: 0.80, 2: 0.71, 3: 0.60, 4: None, 5: 0.9},
        {1: 0.70, 2: 0.70, 3: 0.65, 4: 0.5},
        margin=margin,
        resamples=1000,
        level=0.95,
        boot_seed=0,
        delta=0.02,
        alpha=0.05,
        power=0.8,
    )
    assert c["seeds"] == [1, 2, 3] and c["missing"] == [4, 5]
    assert (c["better"], c["tie"], c["worse"]) == (1, 1, 1)
    assert c["mean_diff"] == pytest.approx((0.10 + 0.01 - 0.05) / 3)
    assert verdict(0.03, 0.01, [0.01, 0.05], alpha=0.05, margin=0.02) == "better"
    assert verdict(-0.03, 0.01, [-0.05, -0.01], alpha=0.05, margin=0.02) == "worse"
    assert verdict(0.001, 0.6, [-0.01, 0.015], alpha=0.05, margin=0.02) == "tie"
    assert verdict(0.01, 0.3, [-0.03, 0.05], alpha=0.05, margin=0.02) == "not shown"


def _synthetic(tmp_path: Path) -> dict:
    """A results document with known scores: 10 seeds, backend `a` always 0.05 better, `b` level."""
    text = TINY.replace("contenders: [model-tune, sim, tune-ray]", "contenders: [model-tune, sim, b]")
    text = text.replace('    contender_seeds: {tune-ray: "1000"}\n', "")
    text = text.replace("  sim: {kind: hpo", "  b: {kind: hpo, backend: optuna}\n  sim: {kind: hpo")
    text = text.replace('evaluation: "1000-1001"', 'evaluation: "1000-1009"').replace(
        "primary_contenders: [sim]", "primary_contenders: [sim, b]"
    )
    units = {}
    machine = {"cpu": "test", "cores": 2, "ram_bytes": 0, "gpus": [], "versions": {}}
    for i, s in enumerate(range(1000, 1010)):
        base = 0.6 + 0.01 * i
        for who, score in (("model-tune", base), ("sim", base + 0.05), ("b", base + (0.001 if i % 2 else -0.001))):
            common = {
                "condition": "primary",
                "problem": "cls",
                "seed": s,
                "contender": who,
                "wall_s": 10.0,
                "load_start": 1.0,
                "t_start": 0.0,
                "sitting": 0,
            }
            units[f"study/primary/cls/{s}/{who}"] = {
                **common,
                "kind": "study",
                "status": "done",
                "best_val": score + 0.1,
                "budget_s": 10.0,
                "space": "x",
            }
            units[f"final/primary/cls/{s}/{who}"] = {
                **common,
                "kind": "final",
                "status": "done",
                "score": score,
                "score_val": score,
                "params": {},
                "train_args": {},
                "impl": ["hpo.train_final"],
            }
    for j, v in enumerate([0.60, 0.62, 0.61, 0.63, 0.59, 0.60, 0.62, 0.61, 0.60, 0.62]):
        units[f"noise/cls/{j}"] = {
            "kind": "noise",
            "condition": "primary",
            "problem": "cls",
            "seed": j,
            "status": "done",
            "score": v,
            "wall_s": 5.0,
            "load_start": 1.0,
            "t_start": 0.0,
        }
    return {
        "protocol": {"text": text, "path": str(tmp_path / "p.yaml"), "sha256": "0" * 64, "git": None},
        "seed_set": "evaluation",
        "sittings": [
            {
                "command": "x",
                "started": 0.0,
                "ended": 3600.0,
                "machine": machine,
                "load_start": 1.0,
                "load_end": 1.0,
                "units": list(units),
            }
        ],
        "units": {k: {**u, "id": k} for k, u in units.items()},
    }


def test_report_statistics_on_known_scores(tmp_path: Path):
    from hpo_bench.protocol_report import compute, write_protocol_report

    res = _synthetic(tmp_path)
    comp = compute(res)
    by = {c["contender"]: c for c in comp["comparisons"]}
    a, b = by["sim"], by["b"]
    assert a["mean_diff"] == pytest.approx(0.05) and a["wilcoxon"]["p"] == pytest.approx(2 / 1024)
    # Holm over the family of two: the smaller p doubled
    assert a["p_holm"] == pytest.approx(2 * 2 / 1024) and a["verdict"] == "better"
    noise_sd = comp["noise_floor"]["cls"]["sd"]
    assert comp["noise_floor"]["cls"]["margin"] == pytest.approx(noise_sd * (2 / 1) ** 0.5)
    assert (b["better"], b["tie"], b["worse"]) == (0, 10, 0) and b["verdict"] == "tie"
    paths = write_protocol_report(res, tmp_path)
    md = paths["report"].read_text()
    assert "| cls | sim | auto |" in md and "better" in md and "PILOT" not in md
    assert json.loads(paths["json"].read_text())["comparisons"][0]["seeds"] == list(range(1000, 1010))


def test_the_registered_criterion_is_stated_per_contender(tmp_path: Path):
    """``criterion_better: 1``: sim is better on cls (met), b is a tie (not met), so the criterion is
    not met, and the report says so; a protocol without a criterion reports none."""
    from hpo_bench.protocol_report import compute, write_protocol_report

    res = _synthetic(tmp_path)
    res["protocol"]["text"] = res["protocol"]["text"].replace(
        "primary_contenders: [sim, b]", "primary_contenders: [sim, b], criterion_better: 1"
    )
    comp = compute(res)
    assert comp["criterion"] == {
        "needed": 1,
        "contenders": {"sim": {"better": ["cls"], "met": True}, "b": {"better": [], "met": False}},
        "met": False,
    }
    md = write_protocol_report(res, tmp_path)["report"].read_text()
    assert "at least 1 of the problems: **not met**" in md and "- `sim`: better on cls: met" in md
    res["protocol"]["text"] = res["protocol"]["text"].replace(", criterion_better: 1", "")
    assert compute(res)["criterion"] is None


def test_a_contender_on_a_planned_seed_subset_pairs_there_and_lists_no_seed_outside_it(tmp_path: Path):
    from hpo_bench.protocol_report import compute, write_protocol_report

    res = _synthetic(tmp_path)
    text = res["protocol"]["text"].replace(
        "    problems: [cls]\n", '    problems: [cls]\n    contender_seeds: {b: "1000-1004"}\n', 1
    )
    res["protocol"]["text"] = text
    for s in range(1005, 1010):  # b was planned on 1000-1004 only
        del res["units"][f"study/primary/cls/{s}/b"], res["units"][f"final/primary/cls/{s}/b"]
    for s in range(1000, 1010):  # model.tune's budgets 10, 20, ..., 100 s
        res["units"][f"study/primary/cls/{s}/model-tune"]["wall_s"] = 10.0 * (s - 999)
        res["units"][f"final/primary/cls/{s}/model-tune"]["wall_s"] = 10.0 * (s - 999)
    by = {c["contender"]: c for c in compute(res)["comparisons"]}
    assert by["b"]["seeds"] == list(range(1000, 1005)) and by["b"]["missing"] == []
    assert by["sim"]["seeds"] == list(range(1000, 1010))
    # the headline's budget of b: the median of model.tune's budgets on b's seeds (30 s), sim's on all ten
    md = write_protocol_report(res, tmp_path)["report"].read_text()
    row = {ln.split("|")[2].strip(): ln for ln in md.splitlines() if ln.startswith("| cls |")}
    assert "model.tune: 30 s median" not in row["b"] and ": 30 s median" in row["b"], row["b"]
    assert ": 55 s median" in row["sim"], row["sim"]


def test_a_comparison_with_planned_seeds_still_to_run_is_incomplete_not_a_verdict(tmp_path: Path):
    """Protocol amendment 3: the report is written while a condition is still running; its
    comparisons then say how many planned seeds they have, never a verdict over a part of them."""
    from hpo_bench.protocol_report import compute, write_protocol_report

    res = _synthetic(tmp_path)
    del res["units"]["final/primary/cls/1009/sim"]  # its study done, its final not run yet
    for s in (1008, 1009):  # the baseline's seeds not started
        del res["units"][f"study/primary/cls/{s}/model-tune"], res["units"][f"final/primary/cls/{s}/model-tune"]
    by = {c["contender"]: c for c in compute(res)["comparisons"]}
    assert by["sim"]["pending"] == [1008, 1009] and by["sim"]["verdict"] == "incomplete"
    assert by["sim"]["seeds"] == list(range(1000, 1008)) and by["sim"]["mean_diff"] == pytest.approx(0.05)
    md = write_protocol_report(res, tmp_path)["report"].read_text()
    assert "incomplete (8 of 10 seeds)" in md
    # a planned contender with nothing recorded yet is listed too, with nothing to compare
    for k in [k for k in res["units"] if k.endswith("/sim")]:
        del res["units"][k]
    sim = {c["contender"]: c for c in compute(res)["comparisons"]}["sim"]
    assert sim["seeds"] == [] and len(sim["pending"]) == 10 and sim["missing"] == [] and sim["verdict"] == "incomplete"
    # a failed final is a missing pair (section 6), not a pending seed: the verdict stands
    res = _synthetic(tmp_path)
    res["units"]["final/primary/cls/1009/b"].update(status="failed", score=None)
    b = {c["contender"]: c for c in compute(res)["comparisons"]}["b"]
    assert b["pending"] == [] and b["missing"] == [1009] and b["verdict"] == "tie"


def test_trials_per_study_count_only_trials_ended_within_the_budget(tmp_path: Path):
    from hpo_bench.protocol_report import trial_counts, write_protocol_report

    res = _synthetic(tmp_path)

    def trial(status: str, end_s: float | None) -> dict:
        return {"status": status, "end_s": end_s, "objective": 0.5, "epochs": 1, "params": {}}

    for s in range(1000, 1010):
        res["units"][f"study/primary/cls/{s}/sim"]["trials"] = [
            trial("complete", 3.0),
            trial("pruned", 5.0),
            trial("failed", 6.0),
            trial("complete", 9.5 if s % 2 else 11.0),  # after the 10 s budget on even seeds
            trial("pruned", 12.0),  # cut by the budget: ended after it, never counted
        ]
        res["units"][f"study/primary/cls/{s}/model-tune"].update(budget_s=None, trials=[trial("complete", 99.0)] * 3)
    res["units"]["study/primary/cls/1009/sim"]["status"] = "failed"  # no result: not counted
    counts = trial_counts(res)
    sim, base = counts["primary/cls/sim"], counts["primary/cls/model-tune"]
    assert sim["studies"] == 9 and sim["pruned_mean"] == 1.0 and sim["failed_mean"] == 1.0
    assert sim["complete_mean"] == pytest.approx(1 + 4 / 9) and sim["after_budget_mean"] == pytest.approx(1 + 5 / 9)
    assert (base["studies"], base["complete_mean"], base["after_budget_mean"]) == (10, 3.0, 0.0)
    md = write_protocol_report(res, tmp_path)["report"].read_text()
    assert "| primary/cls/sim | 9 | 1.4 | 1.0 | 1.0 | 1.6 |" in md


def test_report_shows_amendment_2_checkpoints_machines_and_dropped_units(tmp_path: Path):
    """Protocol amendment 2: a checkpoint lost with its machine and trained again splits the seeds
    into A and B (shown apart, descriptively); every seed's studies on one machine; dropped units listed."""
    from hpo_bench.protocol_report import compute, write_protocol_report

    res = _synthetic(tmp_path)
    other = {**res["sittings"][0], "machine": {**res["sittings"][0]["machine"], "cpu": "other"}, "started": 5000.0}
    res["sittings"].append(other)
    prep = {"kind": "prep", "problem": "cls", "status": "done", "objective_val": 0.5, "wall_s": 1.0, "t_start": -20.0}
    res["dropped"] = [
        {"unit": {**prep, "id": "prep/cls", "sitting": 0, "t_end": -10.0}, "why": "lost with the machine"},
        {"unit": {**res["units"]["study/primary/cls/1009/model-tune"], "sitting": 0}, "why": "machine changed"},
    ]
    res["units"]["prep/cls"] = {**prep, "id": "prep/cls", "sitting": 1, "t_end": 50.0, "objective_val": 0.4}
    for s in range(1005, 1010):
        for who in ("model-tune", "sim", "b"):
            for kind in ("study", "final"):
                res["units"][f"{kind}/primary/cls/{s}/{who}"].update(t_start=100.0, sitting=1)
    comp = compute(res)
    assert [c["label"] for c in comp["checkpoints"]["cls"]] == ["A", "B"] and comp["checkpoints"]["cls"][1]["current"]
    sim = next(c for c in comp["comparisons"] if c["contender"] == "sim")
    assert sim["by_checkpoint"]["A"]["seeds"] == [1000, 1001, 1002, 1003, 1004]
    assert sim["by_checkpoint"]["B"]["seeds"] == [1005, 1006, 1007, 1008, 1009]
    assert sim["by_checkpoint"]["B"]["mean_diff"] == pytest.approx(0.05) and sim["seeds"] == list(range(1000, 1010))
    assert comp["provenance"]["mixed_machines"] == [] and comp["provenance"]["mixed_checkpoints"] == []
    assert [d["unit"] for d in comp["provenance"]["dropped"]] == ["prep/cls", "study/primary/cls/1009/model-tune"]
    md = write_protocol_report(res, tmp_path)["report"].read_text()
    assert "| cls | A | 0 | test, 2 cores | 0.5000 | lost, retrained |" in md and "| primary | cls | sim | B |" in md
    # a seed whose studies ran on two machines, and one whose final started from another checkpoint, are named
    res["units"]["study/primary/cls/1000/b"]["sitting"] = 1
    res["units"]["final/primary/cls/1001/b"]["t_start"] = 100.0
    prov = compute(res)["provenance"]
    assert prov["mixed_machines"] == ["primary/cls/1000"] and prov["mixed_checkpoints"] == ["primary/cls/1001"]


def test_before_sitting_drops_every_unfinished_seed_and_names_the_amendment(tmp_path: Path, capsys):
    """Protocol amendments 2 and 4: before a sitting, a condition, problem and seed whose studies are
    unfinished loses all its units (they run again in one sitting, on one machine); as a function and
    as ``protocol before-sitting DIR`` (alias ``new-machine``)."""
    import yaml

    from hpo_bench.harness import drop_unfinished_seeds
    from hpo_bench.protocol import Protocol
    from hpo_bench.protocol_cli import main

    res = _synthetic(tmp_path)
    res["protocol"]["text"] = res["protocol"]["text"].replace(
        "    problems: [cls]\n", '    problems: [cls]\n    contender_seeds: {b: "1000-1004"}\n', 1
    )
    proto = Protocol.model_validate(yaml.safe_load(res["protocol"]["text"]))
    for s in (1003, 1007):  # 1003: b's study not run yet (unfinished); 1007: b is not planned there (finished)
        del res["units"][f"study/primary/cls/{s}/b"], res["units"][f"final/primary/cls/{s}/b"]
    n = len(res["units"])
    seed_1003 = [
        "study/primary/cls/1003/model-tune",
        "final/primary/cls/1003/model-tune",
        "study/primary/cls/1003/sim",
        "final/primary/cls/1003/sim",
    ]
    same = json.loads(json.dumps(res))
    # the same machine (amendment 4): the unfinished seed goes, the finished ones stay
    assert drop_unfinished_seeds(same, proto, {"cpu": "test", "cores": 2}) == seed_1003 and len(same["units"]) == n - 4
    assert same["dropped"][0]["why"].startswith("protocol amendment 4") and "sitting 0" in same["dropped"][0]["why"]
    # another machine (amendment 2): the same units, the reason names both machines
    assert drop_unfinished_seeds(res, proto, {"cpu": "test", "cores": 4}) == seed_1003
    assert len(res["units"]) == n - 4 and [d["unit"]["seed"] for d in res["dropped"]] == [1003] * 4
    assert "test, 2 cores" in res["dropped"][0]["why"] and "test, 4 cores" in res["dropped"][0]["why"]
    assert drop_unfinished_seeds(res, proto, {"cpu": "test", "cores": 4}) == []  # nothing unfinished is left
    # the command: --dry-run writes nothing; then the drop, its events, and nothing left; the old name still works
    res = _synthetic(tmp_path)
    del res["units"]["study/primary/cls/1005/sim"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(res))
    assert main(["before-sitting", str(run), "--dry-run"]) == 0
    assert "would drop study/primary/cls/1005/model-tune" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text()) == res and not (run / "events.jsonl").exists()
    assert main(["new-machine", str(run)]) == 0
    doc = json.loads((run / "results.json").read_text())
    assert not [u for u in doc["units"] if "/1005/" in u] and len(doc["dropped"]) == 5  # 2 studies, 3 finals
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert len(events) == 5 and events[0]["event"].startswith("dropped: protocol amendment")
    assert main(["before-sitting", str(run)]) == 0 and "nothing to drop" in capsys.readouterr().out.splitlines()[-1]
    assert main(["before-sitting", str(tmp_path / "none")]) == 2 and "no results.json" in capsys.readouterr().err


# the protocol file and the command's refusals ----------------------------------------------------


def test_protocol_errors_are_one_line_naming_the_field(tmp_path: Path):
    from hpo_bench.protocol import load_protocol

    p = tmp_path / "p.yaml"
    p.write_text(TINY)
    proto, sha = load_protocol(p)
    assert proto.problems["cls"].metric == "metrics/accuracy_top1" and len(sha) == 64
    for bad, words in (
        (TINY.replace("baseline: model-tune", "baseline: nope"), ["conditions.primary", "'nope'"]),
        (TINY.replace('development: "100-101"', 'development: "1000-1001"'), ["seeds", "[1000, 1001]"]),
        (TINY.replace("imgsz: 32", "imgsz: big"), ["problems.cls.imgsz", "'big'"]),
        (TINY.replace("final_seeds: 1", "final_seeds: 1\n    colour: red"), ["problems.cls.colour"]),
        (TINY.replace("{kind: model.tune}", "{kind: model.tune, options: {a: 1}}"), ["contenders.model-tune", "options"]),
        (TINY.replace('{tune-ray: "1000"}', '{tune-ray: "1005"}'), ["contender_seeds.tune-ray", "'1005'"]),
        (TINY.replace("device: cpu", "device: gpu"), ["device", "'0,1'", "'gpu'"]),
    ):
        p.write_text(bad)
        with pytest.raises(ValueError) as e:
            load_protocol(p)
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    out = tmp_path / "run"
    for args, words in (
        (["run", "--protocol", str(p), "--out", str(out), "--seeds", "7"], ["--seeds", "development seeds 100-101"]),
        (["run", "--protocol", str(p), "--out", str(out), "--seeds", "100,1000"], ["--seeds"]),
        # evaluation seeds need a committed protocol (this one is in no repository)
        (["run", "--protocol", str(p), "--out", str(out), "--seeds", "1000"], ["--protocol", "committed"]),
        (["run", "--protocol", str(p), "--out", str(out), "--seeds", "100", "--condition", "other"], ["--condition", "'other'"]),
        (["run", "--protocol", str(tmp_path / "none.yaml"), "--out", str(out)], ["--protocol", "cannot read"]),
        (["fidelity", "--protocol", str(p), "--out", str(out), "--problem", "nope"], ["--problem", "'nope'"]),
    ):
        proc = _bench(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
        assert not out.exists()


# data --------------------------------------------------------------------------------------------


def test_detection_splits_draw_disjoint_digits_and_other_classes_for_pretraining(tmp_path: Path):
    import numpy as np
    import yaml

    from hpo_bench.problems import build_pretrain_data, build_problem_data, glyph_split
    from hpo_bench.protocol import ProblemSpec

    pools = glyph_split((0.6, 0.2, 0.2), 0)
    assert sum(len(v) for v in pools.values()) == 1797
    assert not (set(pools["train"]) & set(pools["test"])) and not (set(pools["val"]) & set(pools["test"]))
    from sklearn.datasets import load_digits

    labels = load_digits().target
    assert np.bincount(labels[pools["test"]]).min() >= 34  # stratified: every digit ~20% of its ~180
    p = ProblemSpec(
        dataset="digits-det",
        model="yolov8n.yaml",
        start="warm-start",
        classes=[6, 7, 8, 9],
        imgsz=64,
        batch=4,
        images={"train": 6, "val": 3, "test": 3},
        warm_start={"epochs": 1, "classes": [0, 1, 2], "images": 5},
        trial_epochs=1,
        iterations=1,
        final_epochs=1,
        final_seeds=1,
    )
    data = Path(build_problem_data(p, tmp_path / "ft"))
    doc = yaml.safe_load(data.read_text())
    assert doc["names"] == {0: "6", 1: "7", 2: "8", 3: "9"} and doc["test"] == "images/test"
    assert doc["path"] == str((tmp_path / "ft").resolve())
    assert len(list((tmp_path / "ft" / "images" / "test").glob("*.png"))) == 3
    ids = {int(ln.split()[0]) for f in (tmp_path / "ft" / "labels").rglob("*.txt") for ln in f.read_text().splitlines()}
    assert ids <= {0, 1, 2, 3} and ids
    pre = yaml.safe_load(Path(build_pretrain_data(p, tmp_path / "pre")).read_text())
    assert pre["names"] == {0: "0", 1: "1", 2: "2"} and "test" not in pre
    # reused as built (same recipe): nothing rewritten
    before = (tmp_path / "ft" / "build.json").stat().st_mtime_ns
    build_problem_data(p, tmp_path / "ft")
    assert (tmp_path / "ft" / "build.json").stat().st_mtime_ns == before


def test_spread_configs_cover_each_range_once_per_stratum():
    from hpo import SearchSpace
    from hpo_bench.fidelity import spread_configs

    space = SearchSpace.parse(
        {"lr0": {"type": "logfloat", "low": 1e-4, "high": 1e-1}, "close_mosaic": (0, 9), "fliplr": (0.0, 1.0)}
    )
    cfgs = spread_configs(space, 10, seed=0)
    assert len(cfgs) == 10 and cfgs == spread_configs(space, 10, seed=0)
    # a Latin hypercube: each tenth of every range holds exactly one configuration
    import math

    assert sorted(int(c["fliplr"] * 10) for c in cfgs) == list(range(10))
    assert sorted(int((math.log10(c["lr0"]) + 4) / 3 * 10) for c in cfgs) == list(range(10))
    assert sorted(c["close_mosaic"] for c in cfgs) == list(range(10))


# end to end: run, kill, resume, report -----------------------------------------------------------


@pytest.mark.slow
def test_protocol_runs_end_to_end_and_resumes_after_a_kill(tmp_path: Path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "hpo_bench", "protocol", "run", "--protocol", str(p), "--out", str(out), "--seeds", "100"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    first: dict = {}
    while time.time() < deadline:  # kill the run once model.tune's study is recorded (the next unit is running)
        try:
            units = json.loads((out / "results.json").read_text())["units"]
        except (OSError, ValueError):
            units = {}
        if "study/primary/cls/100/model-tune" in units:
            first = units["study/primary/cls/100/model-tune"]
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first, "model.tune's study was not recorded within 300 s"
    recorded = set(json.loads((out / "results.json").read_text())["units"])
    assert "final/primary/cls/100/model-tune" not in recorded
    # without --resume a second run is refused; with it, the recorded units are kept
    again = _bench("run", "--protocol", str(p), "--out", str(out), "--seeds", "100")
    assert again.returncode == 2 and "--resume" in again.stderr
    done = _bench("run", "--protocol", str(p), "--out", str(out), "--seeds", "100", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    units = res["units"]
    assert units["study/primary/cls/100/model-tune"]["t_start"] == first["t_start"]  # kept, not re-run
    assert len(res["sittings"]) == 2 and "study/primary/cls/100/model-tune" not in res["sittings"][1]["units"]
    # every sitting records the code it ran (git HEAD and whether hpo/, plugins/ or benchmarks/ differ)
    code = res["sittings"][1]["code"]
    assert len(code["commit"]) == 40 and int(code["commit"], 16) >= 0 and isinstance(code["dirty"], bool)
    # Ultralytics' Ray Tune path runs offline; its trials are read from Ray's experiment folder, and
    # only a trial that ended within model.tune's wall time counts (Ray's start-up may pass it)
    ray = units.pop("study/primary/cls/100/tune-ray")
    assert ray["contender_kind"] == "model.tune-ray" and ray["rc"] == 0 and len(ray["trials"]) == 1
    t = ray["trials"][0]
    assert t["status"] == "complete" and 0.0 <= t["objective"] <= 1.0 and t["end_s"] > 0
    assert ray["status"] == ("done" if t["end_s"] <= ray["budget_s"] else "no result")
    assert (units.pop("final/primary/cls/100/tune-ray", None) is not None) == (ray["status"] == "done")
    expected = {
        "study/primary/cls/100/model-tune",
        "study/primary/cls/100/sim",
        "final/primary/cls/100/model-tune",
        "final/primary/cls/100/sim",
        "noise/cls/900001",
        "noise/cls/900002",
    }
    # the hpo contender's budget is model.tune's wall time, its process start-up included: on a loaded
    # machine its one trial can end after it, and then it has no result and no final unit (the rule)
    sim_unit = units["study/primary/cls/100/sim"]
    if sim_unit["status"] != "done":
        assert sim_unit["status"] == "no result", sim_unit
        assert not [t for t in sim_unit["trials"] if t["status"] == "complete" and (t["end_s"] or 1e18) <= sim_unit["budget_s"]]
        expected.discard("final/primary/cls/100/sim")
    assert set(units) == expected, {k: (v.get("status"), v.get("error")) for k, v in units.items()}
    for uid in expected - {"study/primary/cls/100/sim"}:
        u = units[uid]
        assert u["status"] == "done", (uid, u.get("error"))
        assert u["wall_s"] > 0 and u["load_start"] >= 0 and u["load_end"] >= 0 and u["sitting"] in (0, 1)
    tune, sim = units["study/primary/cls/100/model-tune"], units["study/primary/cls/100/sim"]
    assert tune["space"] == "model.tune default (26 keys)" and "optimizer" not in tune["train_args"]  # as users run it
    # model.tune sets optimizer=AdamW itself when none is given (Ultralytics 8.4.190): its incumbent was
    # measured under AdamW and is retrained with it, read from its trainings' args.yaml (amendment 1)
    assert len(tune["incumbent"]) == 27 and tune["incumbent"]["optimizer"] == "AdamW" and tune["counts"]["complete"] == 1
    assert sim["budget_s"] == pytest.approx(tune["wall_s"])  # model.tune's wall time is the budget
    assert all(t["end_s"] <= sim["budget_s"] for t in sim["trials"] if t["status"] == "complete")
    for who in ("model-tune", "sim") if "final/primary/cls/100/sim" in units else ("model-tune",):
        f = units[f"final/primary/cls/100/{who}"]
        assert f["final_seeds"] == [10001] and f["split"] == ["test"] and 0.0 <= f["score"] <= 1.0
        assert f["params"] == (tune if who == "model-tune" else sim)["incumbent"]
    final_tune = units["final/primary/cls/100/model-tune"]
    assert final_tune["train_args"].get("optimizer") is None and final_tune["params"]["optimizer"] == "AdamW"
    # the unit cut off by the kill started twice (events), and ran to its end once
    events = [json.loads(ln) for ln in (out / "events.jsonl").read_text().splitlines()]
    starts = [e["unit"] for e in events if e["event"] == "start"]
    assert starts.count("study/primary/cls/100/model-tune") == 1
    report = (out / "report.md").read_text()
    assert (
        "PILOT on development seeds" in report
        and "| cls | model-tune | none given -> AdamW | model.tune default (26 keys) |" in report
    )
    assert "## Sittings (machine and load)" in report and "| 1 |" in report
    # report rebuilds from results.json alone
    (out / "report.md").unlink()
    assert _bench("report", str(out)).returncode == 0 and (out / "report.md").is_file()


@pytest.mark.slow
def test_fidelity_trains_short_and_long_and_correlates(tmp_path: Path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    out = tmp_path / "fid"
    proc = _bench("fidelity", "--protocol", str(p), "--problem", "cls", "--out", str(out), "--seed", "100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "fidelity.json").read_text())
    plan = doc["plan"]
    assert (plan["short_epochs"], plan["long_epochs"]) == (1, 2) and len(plan["configs"]) == 3
    assert plan["configs"][0]["params"] == {} and plan["configs"][0]["source"] == "Ultralytics defaults"
    assert len(doc["units"]) == 6 and all(u["status"] == "done" for u in doc["units"].values())
    rows = doc["computed"]["rows"]
    assert all(len(r["long_curve"]) == 2 and len(r["short_curve"]) == 1 for r in rows)
    md = (out / "fidelity.md").read_text()
    assert "short val -> long test" in md and "| 2 |" in md
    again = _bench("fidelity", "--protocol", str(p), "--problem", "cls", "--out", str(out), "--seed", "100", "--resume")
    assert again.returncode == 0 and len(json.loads((out / "fidelity.json").read_text())["sittings"]) == 2


# the committed pre-registration (benchmarks/protocol.yaml) ---------------------------------------


def _seeds_in_committed_results(runs_of: str | None = None) -> set[int]:
    """Every whole number under a key naming a seed in the committed benchmark results, leaving out
    the evaluation runs of the protocol whose sha256 is ``runs_of`` (its own sittings use its seeds)."""
    found: set[int] = set()

    def walk(x: object, key: str = "") -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, str(k))
        elif isinstance(x, list):
            for v in x:
                walk(v, key)
        elif "seed" in key.lower() and isinstance(x, int) and not isinstance(x, bool):
            found.add(x)

    def own_run(doc: object) -> bool:
        return (
            isinstance(doc, dict)
            and doc.get("seed_set") == "evaluation"
            and isinstance(doc.get("protocol"), dict)
            and doc["protocol"].get("sha256") == runs_of
        )

    files = sorted((ROOT / "benchmarks" / "results").rglob("*.json"))
    # a run folder of that protocol's evaluation: its results.json and what was computed from it (report.json)
    own_folders = {
        f.parent for f in files if f.name == "results.json" and runs_of is not None and own_run(json.loads(f.read_text()))
    }
    for f in files:
        if f.parent in own_folders:
            continue
        walk(json.loads(f.read_text()))
    return found


@pytest.mark.parametrize("name", ["protocol.yaml", "protocol-v2.yaml"])
def test_committed_protocol_parses_and_its_evaluation_seeds_were_never_used(name: str):
    """Each committed CPU protocol (version 1, and version 2 on fresh seeds) evaluates on seeds and
    training seeds no other protocol, default or committed result used, on the primary condition
    with every seed shared by the baseline and each backend at its shipped defaults."""
    from hpo.final import fresh_seeds
    from hpo_bench.__main__ import _parser
    from hpo_bench.protocol import NoiseFloorSpec, WarmStart, final_seeds, load_protocol, noise_seeds
    from hpo_bench.suite import SUITES

    proto, sha = load_protocol(ROOT / "benchmarks" / name)
    ev, dev = proto.evaluation_seeds(), proto.development_seeds()
    assert len(ev) >= 10 and not set(ev) & set(dev)
    # the primary condition: every evaluation seed, shared by the baseline and every Holm contender
    primary = proto.conditions[proto.statistics.primary_condition]
    assert proto.condition_seeds(proto.statistics.primary_condition) == ev
    assert not set(proto.statistics.primary_contenders) & set(primary.contender_seeds)
    assert sorted(primary.problems) == ["digits-cls", "digits-det", "digits-ft"] and not primary.train_args
    assert primary.space is None and primary.tune_space is None  # each contender's own default space
    # contenders as users run them: model.tune with nothing but the problem's args; hpo's shipped defaults
    assert proto.contenders[primary.baseline].kind == "model.tune"
    for who in proto.statistics.primary_contenders:
        c = proto.contenders[who]
        assert c.kind == "hpo" and c.options == {} and c.env == {}, who
    # the held-out problem fine-tunes from a checkpoint of other classes
    ft = proto.problems["digits-ft"]
    assert ft.warm_start is not None and ft.warm_start.classes and not set(ft.warm_start.classes) & set(ft.digits)
    # seeds the code names by default, or that earlier committed results used
    sim_default = _parser().parse_args(["simulate"]).seeds
    used = (
        {s for suite in SUITES.values() for s in suite["seeds"]}
        | {1000 + s for suite in SUITES.values() for s in suite["seeds"]}  # benchmarks/run.py's retrain seeds
        | set(range(sim_default))  # the simulator's default seeds 0..N-1
        | {0}  # Ultralytics' default train arg seed
        | set(fresh_seeds(10))  # hpo's final runs without --seed: 1..R
        | {WarmStart(epochs=1).seed, NoiseFloorSpec(condition="x").seed_base}
        | _seeds_in_committed_results(runs_of=sha)  # the evaluation's own sittings excepted
    )
    assert not set(ev) & used, sorted(set(ev) & used)
    # every training seed of the evaluation differs from every other training seed of the protocol
    eval_train = {s for p in proto.problems.values() for e in ev for s in [e, *final_seeds(e, p.final_seeds)]}
    dev_train = {s for p in proto.problems.values() for d in dev for s in [d, *final_seeds(d, p.final_seeds)]}
    assert not eval_train & (dev_train | set(noise_seeds(proto)) | used)
    others = [
        load_protocol(ROOT / "benchmarks" / f)[0] for f in ("protocol.yaml", "protocol-v2.yaml", "protocol-gpu.yaml") if f != name
    ]
    for other in others:
        their = {
            s for p in other.problems.values() for e in other.evaluation_seeds() for s in [e, *final_seeds(e, p.final_seeds)]
        }
        assert not set(ev) & set(other.evaluation_seeds()) and not eval_train & (their | set(noise_seeds(other)))
        assert not set(noise_seeds(proto)) & set(noise_seeds(other)) or other.name == "issue27-gpu"
    if name == "protocol.yaml":
        assert proto.fidelity is not None and proto.fidelity.seed in dev
    else:  # version 2: version 1's Holm family, issue 27's criterion registered in the file, 20 seeds
        assert proto.statistics.criterion_better == 2 and proto.statistics.primary_contenders == ["ultralytics", "optuna", "ray"]
        assert len(ev) == 20 and proto.conditions.keys() == {"primary"}


def test_committed_protocol_gives_hpo_model_tunes_own_space_in_the_adamw_condition():
    from hpo import SearchSpace
    from hpo.ultra import native_default_space
    from hpo_bench.protocol import load_protocol

    proto, _ = load_protocol(ROOT / "benchmarks" / "protocol.yaml")
    adamw = proto.conditions["adamw"]
    assert adamw.train_args == {"optimizer": "AdamW"} and adamw.tune_space is None
    assert SearchSpace.parse(adamw.space) == SearchSpace.parse(native_default_space())
    assert len(native_default_space()) == 26


def test_dry_run_checks_like_a_run_and_lists_the_units(tmp_path: Path):
    proc = _bench("run", "--protocol", str(ROOT / "benchmarks" / "protocol.yaml"), "--dry-run", "--seeds", "100")
    assert proc.returncode == 0, proc.stderr
    assert "study/primary: 15 units" in proc.stdout and "noise: 30 units" in proc.stdout and "nothing was run" in proc.stdout
    from hpo_bench.harness import plan_units
    from hpo_bench.protocol import load_protocol

    proto, _ = load_protocol(ROOT / "benchmarks" / "protocol.yaml")
    plan = plan_units(proto, seeds=proto.evaluation_seeds(), conditions=["primary", "adamw"])
    # 10 seeds x 3 problems x 4 contenders + model.tune(use_ray=True) on 5 seeds x 3 problems
    assert sum(u.startswith("study/primary/") for u in plan) == 10 * 3 * 4 + 5 * 3
    assert sum(u.startswith("study/adamw/") for u in plan) == 5 * 2 * 4
    assert sum(u.startswith("noise/") for u in plan) == 3 * 10
    # a dry run refuses what a run refuses, writing nothing
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    bad = _bench("run", "--protocol", str(p), "--dry-run", "--seeds", "1000")
    assert bad.returncode == 2 and "committed" in bad.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["tiny.yaml"]


def test_the_gpu_protocol_is_the_same_protocol_at_gpu_sizes_on_seeds_of_its_own(tmp_path: Path):
    """benchmarks/protocol-gpu.yaml asks the CPU protocol's question (same contenders, conditions,
    statistics, noise floor and AdamW space) on its own evaluation seeds, disjoint from every seed
    the CPU protocol or an earlier benchmark trained with; where torch sees no CUDA device (CI, this
    machine) a run and a dry run are refused in one line, exit 2, nothing written."""
    import torch

    from hpo_bench.harness import plan_units
    from hpo_bench.protocol import final_seeds, load_protocol, noise_seeds

    cpu, _ = load_protocol(ROOT / "benchmarks" / "protocol.yaml")
    gpu, _ = load_protocol(ROOT / "benchmarks" / "protocol-gpu.yaml")
    assert gpu.device == "0" and cpu.device == "cpu"
    assert gpu.contenders.keys() == cpu.contenders.keys()
    assert {k: c.kind for k, c in gpu.contenders.items()} == {k: c.kind for k, c in cpu.contenders.items()}
    assert all(c.options == {} and c.env == {} for c in gpu.contenders.values())
    assert gpu.statistics == cpu.statistics and gpu.noise_floor == cpu.noise_floor
    for name, cond in cpu.conditions.items():
        other = gpu.conditions[name]
        assert (other.contenders, other.problems, other.train_args, other.space) == (
            cond.contenders,
            cond.problems,
            cond.train_args,
            cond.space,
        )
    assert gpu.problems.keys() == cpu.problems.keys()
    for name, p in gpu.problems.items():
        q = cpu.problems[name]
        assert (p.dataset, p.model, p.start, p.classes, p.final_epochs / p.trial_epochs) == (
            q.dataset,
            q.model,
            q.start,
            q.classes,
            5,
        )
        assert p.imgsz > q.imgsz and p.iterations >= q.iterations
    # its seeds and training seeds meet none of the CPU protocol's
    g_ev, g_dev = set(gpu.evaluation_seeds()), set(gpu.development_seeds())
    assert len(g_ev) >= 10 and not (g_ev | g_dev) & set(cpu.evaluation_seeds() + cpu.development_seeds())
    assert not g_ev & _seeds_in_committed_results(runs_of=load_protocol(ROOT / "benchmarks" / "protocol-gpu.yaml")[1])

    def trained(proto, seeds):
        return {s for p in proto.problems.values() for e in seeds for s in [e, *final_seeds(e, p.final_seeds)]}

    g_train = trained(gpu, g_ev)
    assert not g_train & (trained(cpu, cpu.evaluation_seeds() + cpu.development_seeds()) | set(noise_seeds(cpu)))
    assert not g_train & trained(gpu, g_dev)
    plan = plan_units(gpu, seeds=gpu.evaluation_seeds(), conditions=["primary", "adamw"])
    assert sum(u.startswith("study/primary/") for u in plan) == 10 * 3 * 4 + 5 * 3
    if torch.cuda.device_count() == 0:
        proc = _bench("run", "--protocol", str(ROOT / "benchmarks" / "protocol-gpu.yaml"), "--dry-run", "--seeds", "300")
        assert proc.returncode == 2 and "device: the protocol trains on CUDA device 0" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        out = tmp_path / "run"
        proc = _bench("run", "--protocol", str(ROOT / "benchmarks" / "protocol-gpu.yaml"), "--out", str(out), "--seeds", "300")
        assert proc.returncode == 2 and "torch sees 0 CUDA device(s)" in proc.stderr and not out.exists()


def test_evaluation_seeds_refuse_hpo_variables_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from hpo_bench.harness import check_protocol_run
    from hpo_bench.protocol import load_protocol

    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    proto, sha = load_protocol(p)
    monkeypatch.setenv("HPO_AUTO_OPTIMIZER", "keep")
    with pytest.raises(ValueError) as e:
        check_protocol_run(
            proto, sha, p, tmp_path / "out", seeds=[1000], conditions=["primary"], problems=None, contenders=None, resume=False
        )
    assert "HPO_AUTO_OPTIMIZER" in str(e.value) and "\n" not in str(e.value)
    # development seeds run with it (a pilot of a candidate default), and record it by name
    assert (
        check_protocol_run(
            proto, sha, p, tmp_path / "out", seeds=[100], conditions=["primary"], problems=None, contenders=None, resume=False
        )
        is None
    )


def test_code_state_ignores_untracked_results_and_sees_an_edited_tracked_file(tmp_path: Path):
    from hpo_bench.harness import code_state

    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "hpo").mkdir()
    (repo / "hpo" / "a.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    (repo / "benchmarks" / "results" / "results.json").write_text("{}")  # a run writing its results
    state = code_state(repo / "benchmarks")
    assert state is not None and len(state["commit"]) == 40 and state["dirty"] is False
    (repo / "hpo" / "a.py").write_text("x = 2\n")
    assert code_state(repo / "benchmarks") == {"commit": state["commit"], "dirty": True}


def test_the_dev_policy_rule_picks_the_highest_mean_and_breaks_ties_as_committed(tmp_path):
    """benchmarks/protocol-dev-policy.yaml's rule (hpo_bench.dev_policy): the highest mean final
    test score over the cells where every policy has one; within 0.01, resolve, then keep, then sgd."""
    from hpo_bench.dev_policy import decide, main

    def results(scores: dict[tuple[str, int, str, str], float | None]) -> dict:
        units = {}
        for (problem, seed, backend, policy), score in scores.items():
            key = f"primary/{problem}/{seed}/{backend}-{policy}"
            units[f"study/{key}"] = {
                "kind": "study",
                "contender_kind": "hpo",
                "contender": f"{backend}-{policy}",
                "problem": problem,
                "seed": seed,
                "best_val": 0.5,
                "counts": {"complete": 3},
                "trials": [{"trial": 1, "objective": 0.2}, {"trial": 0, "objective": 0.4}],
            }
            units[f"final/{key}"] = {"kind": "final", "score": score}
        return {"seed_set": "development", "units": units}

    base = {("digits-cls", 100, "optuna", p): s for p, s in (("sgd", 0.70), ("keep", 0.60), ("resolve", 0.65))}
    d = decide(results(base))
    assert d["choice"] == "sgd" and not d["tie"] and d["n"] == 1 and d["ranking"] == ["sgd", "resolve", "keep"]
    assert d["cells"][("digits-cls", 100, "optuna")]["keep"]["first"] == 0.4  # trial 0, not the first listed
    close = {**base, ("digits-cls", 100, "optuna", "keep"): 0.695}  # keep within 0.01 of sgd: keep wins the tie
    assert decide(results(close))["choice"] == "keep" and decide(results(close))["tie"]
    # a cell without every policy's score is left out of the means
    partial = {**base, ("digits-det", 100, "optuna", "sgd"): 0.1, ("digits-det", 100, "optuna", "keep"): None}
    assert decide(results(partial))["n"] == 1 and decide(results(partial))["choice"] == "sgd"
    assert decide(results({}))["choice"] is None
    (tmp_path / "results.json").write_text(json.dumps(results(base)))
    assert main([str(tmp_path)]) == 0 and "**Choice: `sgd`** (the highest mean)" in (tmp_path / "decision.md").read_text()
    assert main([str(tmp_path / "none")]) == 2


def _dev_run(name: str, backend: str, problem: str, seed: int, scores: dict[str, float]) -> dict:
    """A development run's results with one (problem, seed) cell: contender ``<backend>-<candidate>``
    per entry of ``scores``, each with a study and a final test score."""
    units = {}
    for cand, score in scores.items():
        key = f"primary/{problem}/{seed}/{backend}-{cand}"
        units[f"study/{key}"] = {
            "kind": "study",
            "contender_kind": "hpo",
            "contender": f"{backend}-{cand}",
            "problem": problem,
            "seed": seed,
            "counts": {"complete": 3},
            "trials": [],
        }
        units[f"final/{key}"] = {"kind": "final", "score": score}
    return {"name": name, "seed_set": "development", "units": units}


def test_the_dev_ultralytics_rule_reads_the_run_protocol_and_prefers_no_pruning_on_a_tie(tmp_path):
    """benchmarks/protocol-dev-ultralytics.yaml's rule: the same highest mean, over the candidates
    r6, r2, r0, r6p, r2p, r0p; within 0.01 of the best the tie goes in that order; the rule is picked
    by the run's protocol name, and the file states the same order."""
    from hpo_bench.dev_policy import RULES, decide

    def results(scores: dict[str, float]) -> dict:
        return _dev_run("issue27-dev-ultralytics", "ultralytics", "digits-cls", 100, scores)

    scores = {"r6": 0.80, "r2": 0.85, "r0": 0.70, "r6p": 0.855, "r2p": 0.60, "r0p": 0.65}
    d = decide(results(scores))
    assert d["n"] == 1 and d["ranking"][:2] == ["r6p", "r2"] and d["tie"] and d["choice"] == "r2"
    d = decide(results({**scores, "r6p": 0.90}))
    assert d["choice"] == "r6p" and not d["tie"]
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "protocol-dev-ultralytics.yaml").read_text()
    assert "to: r6, r2, r0, r6p, r2p, r0p" in text and RULES["issue27-dev-ultralytics"].candidates == (
        "r6",
        "r2",
        "r0",
        "r6p",
        "r2p",
        "r0p",
    )
    for cand in RULES["issue27-dev-ultralytics"].candidates:
        assert f"ultralytics-{cand}:" in text


@pytest.mark.parametrize(
    "name, backend, order, scores",
    [
        ("ray", "ray", ("defaults", "random", "defaultsfifo"), {"defaults": 0.195, "random": 0.2, "defaultsfifo": 0.15}),
        ("optuna", "optuna", ("hyperband", "none", "startup5"), {"hyperband": 0.195, "none": 0.15, "startup5": 0.2}),
    ],
)
def test_a_dev_rule_is_the_one_its_protocol_file_states(name: str, backend: str, order: tuple, scores: dict) -> None:
    """benchmarks/protocol-dev-<name>.yaml's tie order is :data:`hpo_bench.dev_policy.RULES`' and each
    candidate is a contender of the file; a tie within 0.01 goes to the first candidate."""
    from hpo_bench.dev_policy import RULES, decide

    rule = RULES[f"issue27-dev-{name}"]
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / f"protocol-dev-{name}.yaml").read_text()
    assert f"name: issue27-dev-{name}\n" in text
    assert f"to: {', '.join(order)}" in " ".join(text.replace("#", " ").split()) and rule.candidates == order
    for cand in rule.candidates:
        assert f"{backend}-{cand}:" in text
    d = decide(_dev_run(f"issue27-dev-{name}", backend, "digits-det", 102, scores))
    assert d["ranking"][0] != order[0] and d["tie"] and d["choice"] == order[0], d


def test_sizing_counts_a_clear_effect_as_shown_and_none_as_not():
    """benchmarks/sizing.py: differences of +0.1 on every seed are shown better at 10 seeds in every
    simulated evaluation (exact p 2/1024, Holm x3 < 0.05); differences centred on 0 almost never;
    the criterion needs both contenders; the same seed gives the same numbers."""
    from hpo_bench.sizing import chances

    clear = [{"contender": "a", "problem": p, "diffs": [0.1] * 10} for p in ("x", "y", "z")]
    level = [{"contender": "b", "problem": p, "diffs": [-0.05, 0.05, -0.02, 0.02, 0.0]} for p in ("x", "y", "z")]
    r = chances(clear + level, 10, family="per_contender", sims=50)
    assert r["better"]["x/a"] == r["better"]["z/a"] == 1.0 and r["better"]["x/b"] <= 0.1
    assert r["criterion"] <= 0.02
    assert chances(clear, 10, family="per_contender", sims=50)["criterion"] == 1.0
    assert chances(clear + level, 10, sims=50) == chances(clear + level, 10, sims=50)
    with pytest.raises(ValueError, match="family"):
        chances(clear, 10, family="some")
    # the same seeds: whole seeds are drawn, so two comparisons with the same differences per seed
    # (and no jitter) are shown in the same simulated evaluations, however noisy the differences
    twins = [
        {"contender": w, "problem": "x", "seeds": list(range(8)), "diffs": [0.2, -0.1, 0.15, 0.1, -0.05, 0.3, 0.05, 0.12]}
        for w in ("a", "b")
    ]
    r = chances(twins, 8, sims=200, jitter=0.0, family="per_contender", needed=1)
    assert r["better"]["x/a"] == r["better"]["x/b"] == r["criterion"] and 0 < r["criterion"] < 1
