"""hpo.report: one place that counts trials and reports a study; every reader shows the same counts.

The expected strings were produced by the code before it moved into hpo.report (the counts were
computed in five places then), on the same study: the outputs stayed identical.
"""

from __future__ import annotations

import re

import pytest

from hpo import Study, TrialRecord, TrialStatus
from hpo.report import FINISHED, SUMMARY_STATUSES, count_trials, leaderboard_markdown, study_summary, trials_frame

#: (status, objective) of trials 0..7: every status, interrupted and running included
ROWS = [
    ("complete", 0.5),
    ("failed", None),
    ("pruned", 0.2),
    ("complete", 0.7),
    ("running", None),
    ("interrupted", None),
    ("complete", 0.6),
    ("pruned", 0.1),
]


@pytest.fixture
def study(tmp_path):
    s = Study.create(
        tmp_path / "s",
        {
            "direction": "maximize",
            "backend": "b",
            "metric": "metrics/accuracy_top1",
            "iterations": 9,
            "space": {"lr0": {}, "momentum": {}},
        },
    )
    for i, (status, obj) in enumerate(ROWS):
        s.append(
            TrialRecord(
                id=i,
                params={"lr0": 0.001 * (i + 1), "momentum": 0.9 - i / 100},
                status=TrialStatus(status),
                objective=obj,
                epochs_completed=i % 3,
                duration_s=1.5 * i,
                start=f"2026-01-01T00:0{i}:00+00:00",
                end=f"2026-01-01T00:0{i}:30+00:00",
                error="x|y" if status == "failed" else None,
            )
        )
    yield s
    s.close()


def test_count_trials_counts_the_statuses_asked_in_their_order(study):
    records = list(study.records().values())
    assert count_trials(records) == {"running": 1, "interrupted": 1, "complete": 3, "failed": 1, "pruned": 2}
    assert list(count_trials(records)) == [s.value for s in TrialStatus]
    assert count_trials(study.finished(), FINISHED) == {"complete": 3, "failed": 1, "pruned": 2}
    assert list(count_trials(records, ("pruned", TrialStatus.COMPLETE))) == ["pruned", "complete"]
    assert count_trials([], SUMMARY_STATUSES) == {"complete": 0, "failed": 0, "pruned": 0, "running": 0}
    with pytest.raises(ValueError):
        count_trials(records, ("done",))


def test_every_reader_reports_the_counts_it_reported_before(study, tmp_path):
    from hpo.show import render
    from hpo_kfp.report import study_report_html

    board = leaderboard_markdown(study, top=None).splitlines()
    assert board[2] == (
        "backend **b**, objective `metrics/accuracy_top1` (maximize), trials: running 1, interrupted 1, "
        "complete 3, failed 1, pruned 2"
    )
    assert [line.split(" | ")[1:3] for line in board[6:9]] == [["3", "complete"], ["6", "complete"], ["0", "complete"]]
    assert board[9] == "| 4 | 1 | failed | - | 1 | 1.5 | 0.002 | 0.89 |" and len(board) == 6 + len(ROWS)
    summary = study_summary(study.path)
    assert summary["counts"] == {"complete": 3, "failed": 1, "pruned": 2, "running": 1}  # interrupted: not counted
    assert summary["best"] == {"trial": 3, "params": {"lr0": 0.004, "momentum": 0.87}, "objective": 0.7}
    assert summary["disk_bytes"] == sum(f.stat().st_size for f in study.path.rglob("*") if f.is_file())
    text = render(study.path, width=100).splitlines()
    assert text[1:3] == [  # finished trials only in k/N (issue 30: an interrupted trial is not finished)
        "  backend b, objective metrics/accuracy_top1 (maximize), 6/9 trials finished: complete 3, failed 1,",
        "    pruned 2; running 1, interrupted 1",
    ]
    html = study_report_html(study.path)
    assert re.search(r"\(maximize\); complete 3, pruned 2, failed 1, running 1; best trial 3: 0.7</p>", html)
    frame = trials_frame(study.ranked())
    assert list(frame["id"]) == [3, 6, 0, 1, 2, 4, 5, 7] and list(frame.columns[-2:]) == ["params.lr0", "params.momentum"]


def test_old_import_paths_are_the_same_functions():
    import hpo.cli
    import hpo.report
    import hpo.tuner

    assert hpo.cli.study_summary is hpo.report.study_summary
    assert hpo.tuner.leaderboard_markdown is hpo.report.leaderboard_markdown
    assert hpo.tuner.trials_frame is hpo.report.trials_frame
