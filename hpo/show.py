"""``hpo show``: a study's leaderboard that fits the terminal, the best configuration, the size on disk.

The leaderboard shows id, status, objective, epochs and duration (and, for a study resumed with
``--allow-changes``, the settings version each trial trained under, with a legend), then as many
of the most important parameters as fit the width (or the ones named with ``--params``), and says what their
importance rests on. Importance (:func:`importance_ranking`, see :mod:`hpo.plots`) comes from
``plots/importance.json`` while it was computed from the study's current records, else from
Optuna's fANOVA up to :data:`hpo.plots.SHOW_FANOVA_TRIALS` complete trials, else from the
main-effect estimate (:func:`hpo.plots.main_effects`, milliseconds), so ``hpo show`` answers in
about a second at any size; ``--importance fanova`` asks for fANOVA over every complete trial. The best
trial's full configuration follows as a block of ``key value`` columns.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from pathlib import Path

from .errors import ConfigError
from .files import count_tree_bytes, human_bytes, tree_bytes
from .fmt import format_counts, format_value
from .redact import mask_text
from .report import count_trials
from .study import Study, TrialRecord, TrialStatus, settings_versions

__all__ = [
    "render",
    "to_csv",
    "disk_bytes",
    "important_params",
    "importance_ranking",
    "IMPORTANCE_METHODS",
    "terminal_width",
    "human_bytes",
    "MIN_IMPORTANCE_TRIALS",
]

#: Rows shown without ``--all``.
TOP_ROWS = 20
#: Complete trials below which ``hpo show`` orders no parameter by importance (the space's order,
#: saying why). An importance from fANOVA's random forest over fewer points ranks noise: with 2-4
#: trials every parameter can explain the spread (issue 30). 10 is Optuna's own bar for leaving
#: pure random sampling (``TPESampler(n_startup_trials=10)``): a judgment, stated, not a measured threshold.
MIN_IMPORTANCE_TRIALS = 10
#: What the order rests on when there is no importance.
SPACE_ORDER = "the space's order"


def terminal_width() -> int:
    """Columns to fit: ``$COLUMNS``, else the terminal's width, else 100 (piped output)."""
    return shutil.get_terminal_size(fallback=(100, 24)).columns


#: Bytes the files under a path take (apparent sizes; links not followed): :func:`hpo.files.tree_bytes`.
disk_bytes = tree_bytes


#: Seconds ``hpo show`` spends counting the study's bytes on disk (one ``lstat`` per file: a
#: 10,000-trial study with Ray's experiment folders can take seconds on a cold cache or a PVC).
DISK_COUNT_S = 0.3


def _disk_size(path: Path) -> str:
    """``"1.2 GiB"``, or ``"over 1.2 GiB (counted for 0.3 s; du -sh PATH for all)"`` when the
    count took longer than :data:`DISK_COUNT_S`."""
    total, complete = count_tree_bytes(path, DISK_COUNT_S)
    if complete:
        return human_bytes(total)
    return f"over {human_bytes(total)} (counted for {DISK_COUNT_S:g} s; du -sh {path} for all)"


#: ``method`` of :func:`importance_ranking` (``hpo show --importance``).
IMPORTANCE_METHODS = ("auto", "fanova", "ped-anova", "main-effects")


def important_params(study: Study, keys: list[str]) -> list[str]:
    """``keys`` most important first (see :func:`importance_ranking`), else in the space's order."""
    return importance_ranking(study, keys)[0]


def importance_ranking(study: Study, keys: list[str], method: str = "auto") -> tuple[list[str], str]:
    """``keys`` most important first, and what the order rests on.

    Args:
        study: the open study.
        keys: the parameters to order.
        method: ``"auto"``: ``plots/importance.json`` while it is current (computed from the
            study's records as they are), else fANOVA up to :data:`hpo.plots.SHOW_FANOVA_TRIALS`
            complete trials, else the main-effect estimate (:func:`hpo.plots.main_effects`,
            milliseconds); ``"fanova"``: fANOVA over every complete trial (the current file if it
            holds that); ``"ped-anova"``: Optuna's PED-ANOVA over every complete trial;
            ``"main-effects"``: :func:`hpo.plots.main_effects`.

    Returns:
        ``(ordered keys, basis)``, e.g. ``"fANOVA over 80 complete trials"``; the basis starts
        with ``"the space's order"`` when there is no importance: fewer than
        :data:`MIN_IMPORTANCE_TRIALS` complete trials (then it says how many there are), or no
        optuna installed.

    Raises:
        ConfigError: an unknown ``method``.
    """
    if method not in IMPORTANCE_METHODS:
        raise ConfigError(f"importance: {method!r} is not one of {', '.join(IMPORTANCE_METHODS)}; e.g. --importance fanova")
    imp = None
    try:
        from .plots import SHOW_FANOVA_TRIALS, cached_importance, importance

        finished = study.finished()
        n_complete = sum(1 for r in finished if r.status is TrialStatus.COMPLETE and r.objective is not None)
        if n_complete < MIN_IMPORTANCE_TRIALS:
            return list(keys), (
                f"{SPACE_ORDER}: importance needs {MIN_IMPORTANCE_TRIALS} complete trials, the study has {n_complete}"
            )
        cached = cached_importance(study, finished)
        if method == "auto":
            imp = cached
            if imp is None:
                imp = importance(study, finished, method="fanova" if n_complete <= SHOW_FANOVA_TRIALS else "main-effects")
        elif cached is not None and cached.method == method and cached.trials >= cached.of:
            imp = cached
        else:
            imp = importance(study, finished, method=method)
    except Exception:  # noqa: BLE001 - the order of columns is not worth an error (e.g. no optuna)
        imp = None
    if imp is None:
        return list(keys), SPACE_ORDER
    ordered = [k for k in imp.values if k in keys]
    return ordered + [k for k in keys if k not in ordered], imp.describe()


#: Objectives and parameters as every view shows them (:func:`hpo.fmt.format_value`).
_fmt = format_value


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 600:
        return f"{s:.1f}s"
    if s < 36000:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def _grid(items: list[tuple[str, str]], width: int, indent: int = 2) -> list[str]:
    """``key value`` pairs in as many columns as fit ``width`` (filled top to bottom)."""
    if not items:
        return []
    kw = max(len(k) for k, _ in items)
    vw = max(len(v) for _, v in items)
    cell = kw + 1 + vw + 3
    ncol = max(1, min(len(items), (width - indent + 3) // cell))
    nrow = math.ceil(len(items) / ncol)
    lines = []
    for i in range(nrow):
        cells = [items[j] for j in range(i, len(items), nrow)]
        text = "   ".join(f"{k:<{kw}} {v:<{vw}}" for k, v in cells).rstrip()
        if len(text) + indent > width:  # one value too long for the grid: cut it
            text = text[: max(0, width - indent - 3)] + "..."
        lines.append(" " * indent + text)
    return lines


def _table(
    rows: list[TrialRecord], params: list[str], width: int | None, *, fixed_params: bool, settings: bool = False
) -> tuple[list[str], list[str]]:
    """Plain-text table lines and the params shown (as many of ``params`` as fit ``width``);
    ``settings``: a column with each trial's settings version (:attr:`TrialRecord.settings`)."""
    head = ["trial", "status", "objective", "epochs", "time", *(["settings"] if settings else [])]
    body = [
        [str(r.id), r.status.value, _fmt(r.objective), str(r.epochs_completed), _duration(r.duration_s)]
        + ([str(r.settings)] if settings else [])
        for r in rows
    ]
    cols = [list(c) for c in zip(head, *body, strict=False)] if body else [[h] for h in head]
    shown: list[str] = []
    gap = 2

    def used(columns: list[list[str]]) -> int:
        return sum(max(len(x) for x in c) for c in columns) + gap * (len(columns) - 1)

    for key in params:
        col = [key] + [_fmt(r.params.get(key)) for r in rows]
        if width is not None and used(cols + [col]) > width:
            if fixed_params:  # asked for by name: shorten the header rather than drop the column
                w = max(len(x) for x in col[1:])
                col[0] = key[: max(w, 4)]
                if used(cols + [col]) > width:
                    break
            else:
                break
        cols.append(col)
        shown.append(key)
    widths = [max(len(x) for x in c) for c in cols]
    numeric = [False, False, True, True, True] + [True] * (len(cols) - 5)
    lines = []
    for i in range(len(cols[0])):
        cells = [(c[i].rjust(w) if num else c[i].ljust(w)) for c, w, num in zip(cols, widths, numeric, strict=False)]
        lines.append((" " * gap).join(cells).rstrip())
        if i == 0:
            lines.append((" " * gap).join("-" * w for w in widths))
    return lines, shown


def render(
    study_dir: str | Path,
    *,
    width: int | None = None,
    params: list[str] | None = None,
    show_all: bool = False,
    importance: str = "auto",
) -> str:
    """The text of ``hpo show``.

    Args:
        study_dir: the study directory.
        width: columns to fit (default :func:`terminal_width`); ``--all`` ignores it.
        params: parameters to show (default: the most important ones that fit).
        show_all: every trial and every parameter, whatever the width.
        importance: how the parameters are ordered (``method`` of :func:`importance_ranking`).

    Raises:
        hpo.errors.StudyError: no study at ``study_dir``.
        hpo.errors.ConfigError: ``params`` names a key outside the study's space, or an unknown
            ``importance``.
    """
    study = Study.open(study_dir)
    width = terminal_width() if width is None else width
    records = study.ranked()
    keys = list(study.settings.get("space") or (records[0].params if records else {}))
    if params:
        unknown = [p for p in params if p not in keys]
        if unknown:
            raise ConfigError(f"params: {', '.join(unknown)} not in the study's space; choose from {', '.join(keys)}")
        order, basis = list(params), ""
    elif show_all:
        order, basis = keys, ""
    else:
        if importance not in IMPORTANCE_METHODS:
            raise ConfigError(
                f"importance: {importance!r} is not one of {', '.join(IMPORTANCE_METHODS)}; e.g. --importance fanova"
            )
        order, basis = importance_ranking(study, keys, importance)
    counts = count_trials(records)
    best = study.best([r for r in records if r.status.finished])
    s = study.settings
    fit = width  # text blocks fit the terminal, also with --all (only its table may be wider)
    out = _wrap(f"study {study.path}", fit)
    out += _wrap(
        f"backend {s.get('backend')}, objective {s.get('metric')} ({study.direction}), "
        f"{sum(r.status.finished for r in records)}/{s.get('iterations')} trials finished: "
        + "; ".join(
            part
            for part in (
                format_counts({k: v for k, v in counts.items() if TrialStatus(k).finished}),
                format_counts({k: v for k, v in counts.items() if not TrialStatus(k).finished}),
            )
            if part
        ),
        fit,
        2,
    )
    out += _wrap(f"size on disk {_disk_size(study.path)} (weights kept: {s.get('keep_weights', 'all')})", fit, 2)
    out.append("")
    rows = records if show_all else records[:TOP_ROWS]
    versions = settings_versions(s)
    lines, shown = _table(rows, order, None if show_all else width, fixed_params=bool(params), settings=bool(versions))
    out += lines
    notes = []
    if len(rows) < len(records):
        notes.append(f"{len(records) - len(rows)} more trials (--all)")
    hidden = len(keys) - len(shown)
    if hidden > 0:
        notes.append(f"{hidden} more params (--all, --params a,b)" if not params else "")
    ordered = not basis.startswith(SPACE_ORDER)
    if not params and shown and not show_all:
        notes.insert(0, "params by importance" if ordered else "params in the space's order")
    notes = [n for n in notes if n]
    if notes:
        out += _wrap("; ".join(notes), fit)
    if not params and shown and not show_all and ordered:
        hint = "" if basis.startswith("fANOVA") and "sample" not in basis else "; --importance fanova for fANOVA"
        out += _wrap(f"importance: {basis}{hint}", fit)
    elif not params and shown and not show_all and basis != SPACE_ORDER:
        out += _wrap(basis[len(SPACE_ORDER) + 2 :], fit)
    if versions:  # resumed with --allow-changes: which settings each trial trained under
        out += _wrap("settings 0: as the study was created", fit)
        for k, entry in sorted(versions.items()):
            out += _wrap(f"settings {k}: resumed {entry.get('at')} with --allow-changes: {entry.get('allowed_changes')}", fit)
    if best is not None:
        out += [""] + _wrap(f"best trial {best.id}: {s.get('metric')} = {_fmt(best.objective)}", fit)
        out += _grid([(k, _fmt(v)) for k, v in best.params.items()], fit)
        weights = study.path / "weights" / "best.pt"
        if weights.is_file():
            out += _wrap(f"weights {weights}", fit, 2)
    else:
        out += ["", "no complete trial yet"]
    from .final import read_final_summary, render_final

    final = read_final_summary(study.path)
    if final is not None:
        out += [""] + render_final(final, width=fit)
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int | None, indent: int = 0) -> list[str]:
    """``text`` indented and folded to ``width`` at spaces: a word is never broken (one longer
    than the width, such as a long path, stands on a line of its own, whole)."""
    import textwrap

    pad = " " * indent
    if width is None:
        return [pad + text]
    return textwrap.wrap(
        text, width, initial_indent=pad, subsequent_indent=pad + "  ", break_on_hyphens=False, break_long_words=False
    ) or [""]


def to_csv(study_dir: str | Path) -> str:
    """Every trial as CSV (best first): ``id,status,objective,epochs_completed,duration_s,train_s,
    start,end,error`` then one column per parameter (the space's keys)."""
    study = Study.open(study_dir)
    records = study.ranked()
    keys = list(study.settings.get("space") or (records[0].params if records else {}))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "status", "objective", "epochs_completed", "duration_s", "train_s", "start", "end", "error", *keys])
    for r in records:
        w.writerow(
            [
                r.id,
                r.status.value,
                r.objective,
                r.epochs_completed,
                r.duration_s,
                r.train_s,
                r.start,
                r.end,
                mask_text(r.error) if r.error else r.error,  # records older than masking
                *(r.params.get(k) for k in keys),
            ]
        )
    return buf.getvalue()
