"""The ``hpo`` command line.

Exit codes: 0 done, 1 the run failed (e.g. every trial failed), 2 bad input (nothing written).
Errors are one line on stderr; ``--debug`` adds the traceback. Heavy libraries are imported inside
commands, so ``hpo --help`` and ``hpo backends`` stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from .cli_k8s import register as register_k8s_commands
from .errors import ConfigError, HpoError
from .log import get_logger
from .redact import mask_text
from .report import study_summary  # re-exported: hpo.cli.study_summary is its old place
from .settings import DEPRECATED_WORKERS, REQUIRED, Spec, TuneSettings, specs

app = typer.Typer(
    name="hpo",
    help="Pluggable hyperparameter optimization for Ultralytics YOLO (backends: hpo backends).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Build the built-in demo datasets (real UCI digits from scikit-learn).", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

_DEBUG = {"on": False}
#: The command line's own warnings and notices (``hpo: warning: ...`` lines, :mod:`hpo.log`).
_log = get_logger("cli")


def _traceback() -> None:
    """With ``--debug``: the current exception's traceback on stderr, credentials masked."""
    if _DEBUG["on"]:
        import traceback

        print(mask_text(traceback.format_exc()), end="", file=sys.stderr)


def _fail(e: BaseException) -> typer.Exit:
    code = getattr(e, "exit_code", 1)
    _traceback()
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"hpo: error: {mask_text(msg)}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn :class:`HpoError` into a one-line message and its exit code (2 bad input, 1 failed run)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .settings import WORDING

        wording = WORDING.set("cli")  # messages name hpo's flags (--iterations), not the Tuner's keywords
        try:
            return fn(*args, **kwargs)
        except HpoError as e:
            raise _fail(e) from None
        except KeyboardInterrupt:
            print("hpo: interrupted; the study keeps every finished trial: continue it with --resume", file=sys.stderr)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except ImportError as e:  # an optional library imported without require(): still its extra's one line
            from .extras import missing_extra

            missing = missing_extra(e)
            if missing is None:
                raise _fail(e) from None
            raise _fail(missing) from None
        except Exception as e:  # noqa: BLE001 - a bug or an unexpected library error: one line, the traceback with --debug
            _traceback()
            text = mask_text((str(e).strip().splitlines() or [""])[0])
            print(
                f"hpo: error: unexpected {type(e).__name__}{': ' + text if text else ''} (run with --debug for the traceback)",
                file=sys.stderr,
            )
            raise typer.Exit(1) from None
        finally:
            WORDING.reset(wording)  # the command ran in this process (typer's CliRunner): Python words again

    return wrapper


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    _DEBUG["on"] = debug


def split_extra_args(tokens: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``hpo tune``'s trailing tokens into train args (``KEY=VALUE``) and backend options.

    ``--name value`` / ``--name=value`` become ``{"name": value}`` (dashes to underscores, values
    parsed like the ``yolo`` CLI's, ``1e-5`` a number); a ``--flag`` not followed by a plain value
    is ``True``, which :func:`hpo.validate.build_config` refuses for an option that is not a bool
    ("option --sigma needs a value").

    Raises:
        ConfigError: a token that is neither.
    """
    from .values import _smart_value

    train: list[str] = []
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            key = key.replace("-", "_")
            if eq:
                options[key] = _smart_value(value)
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--") and "=" not in tokens[i + 1]:
                options[key] = _smart_value(tokens[i + 1])
                i += 1
            else:
                options[key] = True
        elif "=" in tok:
            train.append(tok)
        else:
            raise ConfigError(f"argument: '{tok}' is neither KEY=VALUE (a train arg) nor --option (see hpo tune --help)")
        i += 1
    return train, options


def _print_result(result: Any, as_json: bool) -> None:

    doc = {
        "study_dir": str(result.study_dir),
        "metric": result.metric,
        "direction": result.direction,
        "counts": result.counts,
        "best": {"trial": result.best_trial, "objective": result.best_objective, "params": result.best_params},
        "best_weights": str(result.best_weights) if result.best_weights else None,
        "nothing_to_do": result.nothing_to_do,
        "stopped_by": result.stopped_by,
        "elapsed_s": result.elapsed_s,
        "iterations": result.iterations,
        "final": result.final.summary if getattr(result, "final", None) is not None else None,
    }
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    if result.stopped_by == "time_budget":
        from .values import format_duration

        print(
            f"time budget spent: the study ended after {format_duration(result.elapsed_s or 0)} "
            f"with {sum(result.counts.values())} finished trials (--resume with a larger --time-budget continues it)"
        )
    elif result.nothing_to_do:
        asked = f" (>= --iterations {result.iterations})" if result.iterations is not None else ""
        print(f"nothing to do: the study already has {sum(result.counts.values())} finished trials{asked}")
    from .fmt import format_counts, format_value

    print(f"best trial {result.best_trial}: {result.metric} = {format_value(result.best_objective)}")
    print(f"best hyperparameters (exact values: {result.study_dir / 'best.yaml'}):")
    for key, value in result.best_params.items():
        print(f"{key}: {format_value(value)}")
    print(f"trials: {format_counts(result.counts) or 'none'}  (hpo show {result.study_dir})")
    print(f"study:  {result.study_dir}")
    if result.best_weights:
        print(f"best weights: {result.best_weights}")
    if getattr(result, "final", None) is not None:
        from .final import render_final

        print("\n".join(render_final(result.final.summary)))


#: ``hpo tune``'s options that are no settings, each placed after the setting it follows in ``--help``.
_TUNE_OWN_OPTIONS: dict[str, tuple[str, Any, Any]] = {
    "concurrent_trials": (
        "workers",
        Optional[str],
        typer.Option(None, "--workers", "-w", metavar="N", hidden=True, help="Deprecated: --concurrent-trials."),
    ),
    "seed": ("as_json", bool, typer.Option(False, "--json", help="Print the result as JSON on stdout.")),
}


def _cli_annotation(spec: Spec) -> Any:
    """The type ``hpo tune`` parses a setting's option as (``Optional[...]`` when it may be left out)."""
    assert spec.cli is not None
    if "/" in spec.cli.flags[0]:
        return Optional[bool]
    base = spec.cli.type or (str if spec.default is REQUIRED or spec.default is None else type(spec.default))
    default = spec.default if spec.cli.default is ... else spec.cli.default
    return Optional[base] if default is None else base


def _tune_signature() -> inspect.Signature:
    """``tune(ctx, <an option per setting of hpo.settings with a Cli>, workers, as_json)``: what typer
    reads to build ``hpo tune``'s options (flags, help, defaults from :mod:`hpo.settings`)."""
    P = inspect.Parameter
    params = [P("ctx", P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for spec in specs():
        if spec.cli is not None:
            cli = spec.cli
            default = spec.default if cli.default is ... else cli.default
            option = typer.Option(... if default is REQUIRED else default, *cli.flags, help=cli.help, metavar=cli.metavar)
            params.append(P(spec.name, P.KEYWORD_ONLY, default=option, annotation=_cli_annotation(spec)))
        if spec.name in _TUNE_OWN_OPTIONS:
            name, annotation, option = _TUNE_OWN_OPTIONS[spec.name]
            params.append(P(name, P.KEYWORD_ONLY, default=option, annotation=annotation))
    return inspect.Signature(params, return_annotation=None)


def tune(ctx: typer.Context, **given: Any) -> None:
    """``hpo tune``: its options are the settings (:mod:`hpo.settings`), its trailing arguments the
    train args and backend options (:func:`split_extra_args`)."""
    import warnings

    from .errors import HpoWarning
    from .tuner import Tuner
    from .values import parse_train_args

    warnings.filterwarnings("ignore", category=HpoWarning)  # printed as "hpo: warning:" lines (_tune)
    as_json, workers = bool(given.pop("as_json", False)), given.pop("workers", None)
    values: dict[str, Any] = {}
    for spec in specs():
        if spec.cli is not None:
            value = given[spec.name]
            values[spec.name] = spec.cli.to_setting(value) if spec.cli.to_setting else value
    if workers is not None:
        _log.warning(f"--workers: {DEPRECATED_WORKERS}")
        values["concurrent_trials"] = workers
    train_pairs, options = split_extra_args(list(ctx.args))
    options = _checked_options(values["backend"], options, ctx)
    settings = TuneSettings(**values, train_args=parse_train_args(train_pairs), backend_options=options)
    with _stdout_to_stderr(as_json):
        result = _tune(Tuner, settings)
    _print_result(result, as_json)


tune.__signature__ = _tune_signature()  # type: ignore[attr-defined]
tune.__annotations__ = {p.name: p.annotation for p in tune.__signature__.parameters.values()}  # type: ignore[attr-defined]
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=(
        "Tune hyperparameters. Trailing KEY=VALUE pairs are Ultralytics train args "
        "(imgsz=32 batch=16 device=cpu); trailing --option value pairs are the backend's options "
        "(hpo backends lists them)."
    ),
)(handle_errors(tune))


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With ``--json``, everything else that reaches stdout while the study runs (Ultralytics' first-run
    settings message, a Ray driver's forwarded worker output, a trainer's prints) goes to stderr instead,
    at the file-descriptor level, so stdout holds the JSON document alone."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _tune(tuner_cls: Any, settings: TuneSettings) -> Any:
    """Build the :class:`~hpo.Tuner` (it logs its notices), print its warnings, and run it (SIGTERM: interrupt)."""
    tuner = tuner_cls(settings)
    cfg = tuner.config  # its notices are logged by the Tuner itself (hpo logger), in Python as here
    for text in cfg.warnings:
        _log.warning(text)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a pod's SIGTERM: stop cleanly, resumable
    return tuner.run()


def _checked_options(backend: str, options: dict[str, Any], ctx: typer.Context) -> dict[str, Any]:
    """Backend options with ``--no-flag`` mapped and misspellings refused (unknown backends are
    left to the Tuner's own message)."""
    from .backend_options import normalize_options
    from .plugins import backends as installed

    cls = installed().get(backend)
    if cls is None:
        return options
    own = [o for p in ctx.command.params for o in p.opts if o.startswith("--")]
    return normalize_options(backend, cls, options, cli_options=own)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command()
@handle_errors
def show(
    study_dir: Path = typer.Argument(..., help="The study directory <output>/<name>."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    as_csv: bool = typer.Option(False, "--csv", help="Print every trial as CSV on stdout (one column per parameter)."),
    show_all: bool = typer.Option(False, "--all", help="Every trial and every parameter, whatever the width."),
    params: Optional[str] = typer.Option(
        None, "--params", help="Parameters to show, comma-separated (default: the most important that fit)."
    ),
    importance: str = typer.Option(
        "auto",
        "--importance",
        help="How the parameters are ordered: auto (plots/importance.json while current, else fANOVA up to 100 "
        "complete trials, else each parameter's main effect, milliseconds), fanova (every complete trial; minutes on "
        "large studies), ped-anova or main-effects.",
    ),
) -> None:
    """Print a study's leaderboard (best first), its best configuration and its size on disk."""
    from .show import render, to_csv
    from .study import Study

    if not Study.exists(study_dir):
        raise ConfigError(f"study: no study at '{study_dir}'; pass the folder <output>/<name> that holds study.json")
    if as_json:
        print(json.dumps(study_summary(study_dir), indent=2))
    elif as_csv:
        sys.stdout.write(to_csv(study_dir))
    else:
        chosen = [p.strip() for p in params.split(",") if p.strip()] if params else None
        sys.stdout.write(render(study_dir, params=chosen, show_all=show_all, importance=importance))


@app.command("final")
@handle_errors
def final(
    study_dir: Path = typer.Argument(..., help="The study directory <output>/<name>."),
    epochs: Optional[str] = typer.Option(
        None,
        "--epochs",
        "-e",
        metavar="N",
        help="Epochs per final run (default: the last final stage's, or --final-epochs of the study).",
    ),
    seeds: Optional[str] = typer.Option(
        None,
        "--seeds",
        metavar="R",
        help="Runs per configuration, with seeds no trial used: seed+1..seed+R of the train arg seed (default: the last stage's, else 1).",
    ),
    top: Optional[str] = typer.Option(
        None, "--top", metavar="K", help="How many of the best configurations to train (default: the last stage's, else 1)."
    ),
    time_budget: Optional[str] = typer.Option(
        None,
        "--time-budget",
        "-t",
        metavar="DURATION",
        help="Wall-clock budget of this final stage: no run starts after it, a running one stops at its next epoch (interrupted).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the final stage's summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    mlflow: Optional[bool] = typer.Option(
        None,
        "--mlflow/--no-mlflow",
        help="MLflow tracking: a child run per final run under the study's parent run (default: on when MLFLOW_TRACKING_URI is set).",
    ),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment (default: the study's)."),
    plots: Optional[bool] = typer.Option(
        None, "--plots/--no-plots", help="Redraw <study>/plots/ with final.png (default: on unless HPO_PLOTS=0)."
    ),
) -> None:
    """Train a finished study's best configuration(s) for a full schedule with fresh seeds and score
    them on the test split (the final model); also continues an interrupted final stage."""
    from .final import FINAL_SUMMARY, read_final_summary, render_final, require_complete, run_final_stage
    from .study import Study
    from .values import _count, parse_duration

    if not Study.exists(study_dir):
        raise ConfigError(f"study: no study at '{study_dir}'; pass the folder <output>/<name> that holds study.json")
    last = read_final_summary(study_dir) if (Path(study_dir) / FINAL_SUMMARY).is_file() else None
    stored = Study.open(study_dir).settings
    n_epochs = epochs if epochs is not None else (last or {}).get("epochs") or stored.get("final_epochs")
    if not n_epochs:
        raise ConfigError("epochs: the study has no final stage to continue; give --epochs N (epochs per final run)")
    n_epochs = _count("epochs", n_epochs)
    run_seeds: int | list[int] = _count("seeds", seeds) if seeds is not None else list((last or {}).get("seeds") or []) or 1
    n_top = _count("top", top) if top is not None else len((last or {}).get("configurations") or []) or 1
    budget = parse_duration("time_budget", time_budget) if time_budget is not None else None
    if plots is None:
        plots = os.environ.get("HPO_PLOTS", "1").strip().lower() not in ("0", "false", "no", "off")
    from .tracking import tracker_for_study

    tracker = tracker_for_study(study_dir, enabled=mlflow, experiment=experiment)  # refuses a bad server before anything runs
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with Study.open(study_dir, writer=True) as study, _stdout_to_stderr(as_json):
        if tracker is not None:
            tracker.attach(study)
        result = None
        try:
            result = run_final_stage(
                study,
                epochs=n_epochs,
                seeds=run_seeds,
                top=n_top,
                time_budget_s=budget,
                observers=[tracker] if tracker is not None else [],
                verbose=not quiet,
            )
        except KeyboardInterrupt:
            print(
                "hpo: interrupted; the final runs that completed are kept: the same hpo final command continues the stage",
                file=sys.stderr,
            )
            raise typer.Exit(130) from None
        finally:
            if plots:
                from .plots import write_plots

                try:
                    write_plots(study.path)
                except Exception as e:  # noqa: BLE001 - pictures are never worth a failed stage
                    _log.warning(f"could not draw the study's plots ({type(e).__name__}: {e})".splitlines()[0])
            if tracker is not None:
                tracker.finish(study, ok=bool(result is not None and result.complete))
    if as_json:
        print(json.dumps(result.summary, indent=2, default=str))
    else:
        print("\n".join(render_final(result.summary)))
    require_complete(result, resume_hint=f"run 'hpo final {study_dir}' again")


@app.command()
@handle_errors
def plot(
    study_dir: Path = typer.Argument(..., help="The study directory <output>/<name>."),
    open_report: bool = typer.Option(False, "--open", help="Open plots/report.html in the web browser."),
    no_html: bool = typer.Option(False, "--no-html", help="PNGs only (report.html inlines plotly.js, about 5 MB)."),
) -> None:
    """Draw a study's plots into <study>/plots/ (PNGs and one self-contained report.html)."""
    from .plots import require_plot_libraries, write_plots
    from .study import Study

    require_plot_libraries("hpo plot", html=not no_html)
    if not Study.exists(study_dir):
        raise ConfigError(f"study: no study at '{study_dir}'; pass the folder <output>/<name> that holds study.json")
    files = write_plots(study_dir, html_report=not no_html)
    if not files:
        print(f"no finished trial in {study_dir} yet: nothing to draw")
        return
    for f in files:
        print(f)
    report = Path(study_dir) / "plots" / "report.html"
    if open_report and report.is_file():
        import webbrowser

        try:
            opened = webbrowser.open(report.resolve().as_uri())
        except webbrowser.Error:
            opened = False
        if not opened:
            print(f"hpo: no web browser to open here; the report is {report.resolve()}", file=sys.stderr)


@app.command()
@handle_errors
def backends(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List installed backends: the version of each one's library, whether it is usable here, and
    the extra that a backend which is not usable needs (every backend trains with Ultralytics)."""
    import importlib.metadata

    from .backend import describe_options
    from .backend_options import option_usage
    from .extras import EXTRA_OF, install_hint, installed
    from .plugins import backends as installed_backends

    found = installed_backends()
    doc = []
    for name, cls in found.items():
        lib = cls.library
        needs = [] if installed("ultralytics") else ["yolo"]
        version: str | None = cls.plugin_version
        if lib:
            module = lib.replace("-", "_")
            try:
                version = importlib.metadata.version(lib) if installed(module) else None
            except importlib.metadata.PackageNotFoundError:
                version = None
            if version is None:
                needs.append(EXTRA_OF.get(module.split(".")[0], "all"))
        extras = ",".join(dict.fromkeys(needs))
        doc.append(
            {
                "name": name,
                "plugin": cls.plugin,
                "library": lib,
                "version": version,
                "usable": not needs,
                "install": install_hint(extras) if needs else None,
                "description": cls.description,
                "options": describe_options(cls),
            }
        )
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    import textwrap

    from .show import terminal_width

    width = max(60, terminal_width())  # every line fits the terminal, folded at spaces (never inside a word)

    def fold(text: str, indent: int, hang: int) -> str:
        return "\n".join(
            textwrap.wrap(
                text,
                width,
                initial_indent=" " * indent,
                subsequent_indent=" " * hang,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )

    for b in doc:
        shown = f"{b['library'] or b['plugin']} {b['version'] or '(not installed)'}"
        print(fold(f"{b['name']:<12} {shown:<28} {b['description']}  [{b['plugin']}]", 0, 42))
        if not b["usable"]:
            print(fold(f"not usable here: {b['install']}", 4, 6))
        for usage, text in option_usage(found[str(b["name"])]):
            print(fold(f"{usage}: {text}", 4, 8))


@app.command()
@handle_errors
def unlock(
    study_dir: Path = typer.Argument(..., help="The study directory."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Also remove a lock held by another host that hpo cannot prove dead (a filesystem without cross-host locks).",
    ),
) -> None:
    """Remove a study's lock whose writer is gone (never the lock of a live writer)."""
    from .study import Study

    if not Study.exists(study_dir):
        raise ConfigError(f"study: no study at '{study_dir}'")
    info = Study.break_lock(study_dir, force=force)
    print(
        f"removed the lock of a writer that is gone (host {info.get('host')} pid {info.get('pid')})"
        if info
        else "no lock was held"
    )


@datasets_app.command("make")
@handle_errors
def datasets_make(
    name: str = typer.Argument(..., help="digits-cls or digits-det"),
    out: Path = typer.Argument(..., help="Target folder (new or empty)."),
    seed: int = typer.Option(0, "--seed", help="Seed (the output is deterministic for a seed)."),
    imgsz: Optional[int] = typer.Option(
        None, "--imgsz", help="Image side in px: digits-cls's images (default 32) or digits-det's canvases (default 96)."
    ),
    images: Optional[str] = typer.Option(
        None,
        "--images",
        help="digits-det only: canvases per split, TRAIN,VAL[,TEST] (default 64,16,16; TEST 0: no test split).",
    ),
) -> None:
    """Write a demo dataset in Ultralytics format; prints what to pass as --data."""
    from .datasets import make_dataset, require_dataset_libraries

    counts = None
    if images is not None:
        try:
            counts = [int(v) for v in images.split(",")]
        except ValueError:
            raise ConfigError(f"images: '{images}' is not TRAIN,VAL[,TEST] whole numbers, e.g. 256,64,64") from None
    require_dataset_libraries("hpo datasets make")

    print(make_dataset(name, out, seed=seed, imgsz=imgsz, images=counts))


@app.command()
@handle_errors
def demo(
    out: Path = typer.Option(Path("hpo-demo"), "--out", help="Folder for the demo data and study."),
    backend: str = typer.Option("ultralytics", "--backend", "-b"),
    iterations: int = typer.Option(6, "--iterations", "-n"),
    epochs: int = typer.Option(2, "--epochs", "-e"),
) -> None:
    """Build digits-cls and tune yolov8n-cls on it with hpo's defaults (no optimizer given, the
    classification task's default space; the first trial is Ultralytics' default training): a real
    run, about a minute of training on 2 CPU cores. Run again, it resumes its study in --out; one
    made with other settings (other --epochs, an older hpo's demo) is refused, naming --out."""
    from .datasets import make_digits_cls, require_dataset_libraries
    from .errors import SettingsChangedError
    from .plugins import get_backend
    from .tuner import Tuner

    require_dataset_libraries("hpo demo")
    get_backend(backend)  # the backend and Ultralytics are installed, before the demo data is written
    data = out / "digits-cls"
    if not (data / "train").is_dir():
        make_digits_cls(data, seed=0)
    name = f"demo-{backend}"
    resume = (out / "studies" / name / "study.json").is_file()
    cfg_args = {"imgsz": 32, "batch": 64, "workers": 0, "device": "cpu"}
    tuner = Tuner(
        backend=backend,
        model="yolov8n-cls.yaml",
        data=data,
        iterations=iterations,
        epochs=epochs,
        train_args=cfg_args,
        output=out / "studies",
        name=name,
        resume=resume,
        seed=0,
        callbacks=[],
        verbose=True,
    )
    try:
        result = tuner.run()
    except SettingsChangedError as e:
        raise SettingsChangedError(
            f"demo: {out / 'studies' / name} holds a demo study with other settings ({e.detail}); "
            f"delete {out}, or pass another --out",
            e.detail,
        ) from None
    _print_result(result, False)


register_k8s_commands(app, handle_errors)  # hpo preflight / k8s


def _add_plugin_commands() -> None:
    """Let plugins add their commands (hook ``hpo_cli_commands``; the KFP package adds ``hpo
    pipelines compile``). A broken plugin must not take the whole command line down: it is one
    warning line on stderr, and hpo's own commands still work."""
    from .plugins import add_cli_commands

    try:
        add_cli_commands(app, handle_errors)
    except Exception as e:  # noqa: BLE001 - e.g. a plugin that fails to import
        _log.warning(f"a plugin's commands were not added ({type(e).__name__}: {str(e).strip()[:200]})")


_add_plugin_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    ``--debug`` is accepted anywhere on the line (``hpo tune ... --debug`` too).
    ``hpo tune [--backend X] --help`` ends with backend X's options (default: ultralytics).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:
        args = ["--debug"] + [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    import click

    for cmd in [command, *getattr(command, "commands", {}).values()]:
        help_option = cmd.get_help_option(click.Context(cmd))  # cached by click: the one --help renders
        for param in [*cmd.params, *([help_option] if help_option is not None else [])]:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value: no "<bool>" in help
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["tune"] and ("--help" in args or "-h" in args):
        _add_backend_help(getattr(command, "commands", {})["tune"], args)
    command.main(args=args, prog_name="hpo")


def _add_backend_help(tune_cmd: Any, args: list[str]) -> None:
    """End ``hpo tune --help`` with the chosen backend's options (parsed as trailing options,
    see :func:`split_extra_args`)."""
    from .backend_options import options_help
    from .plugins import backends as installed

    name = "ultralytics"
    for i, a in enumerate(args):
        if a in ("--backend", "-b") and i + 1 < len(args):
            name = args[i + 1]
        elif a.startswith("--backend="):
            name = a.split("=", 1)[1]
    found = installed()
    if name not in found:
        tune_cmd.epilog = f"Backend '{name}' is not installed; installed: {', '.join(found)} (hpo backends)."
        return
    others = ", ".join(n for n in found if n != name)
    tune_cmd.epilog = options_help(name, found[name]) + f"\n\nOther backends: {others} (hpo tune --backend NAME --help)."


if __name__ == "__main__":
    main()
