"""The ``hpo`` command line.

Exit codes: 0 done, 1 the run failed (e.g. every trial failed), 2 bad input (nothing written).
Errors are one line on stderr; ``--debug`` adds the traceback. Heavy libraries are imported inside
commands, so ``hpo --help`` and ``hpo backends`` stay fast.
"""

from __future__ import annotations

import contextlib
import functools
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
from .redact import mask_text
from .report import study_summary  # re-exported: hpo.cli.study_summary is its old place

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
        try:
            return fn(*args, **kwargs)
        except HpoError as e:
            raise _fail(e) from None
        except KeyboardInterrupt:
            print("hpo: interrupted; the study keeps every finished trial: continue it with --resume", file=sys.stderr)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug or an unexpected library error: one line, the traceback with --debug
            _traceback()
            text = mask_text((str(e).strip().splitlines() or [""])[0])
            print(
                f"hpo: error: unexpected {type(e).__name__}{': ' + text if text else ''} (run with --debug for the traceback)",
                file=sys.stderr,
            )
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    _DEBUG["on"] = debug


def split_extra_args(tokens: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``hpo tune``'s trailing tokens into train args (``KEY=VALUE``) and backend options.

    ``--name value`` / ``--name=value`` become ``{"name": value}`` (dashes to underscores, values
    parsed like the ``yolo`` CLI's, ``1e-5`` a number); a ``--flag`` not followed by a plain value
    is ``True``, which :func:`hpo.config.build_config` refuses for an option that is not a bool
    ("option --sigma needs a value").

    Raises:
        ConfigError: a token that is neither.
    """
    from .config import _smart_value

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
    import yaml

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
    }
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    if result.stopped_by == "time_budget":
        from .config import format_duration

        print(
            f"time budget spent: the study ended after {format_duration(result.elapsed_s or 0)} "
            f"with {sum(result.counts.values())} finished trials (--resume with a larger --time-budget continues it)"
        )
    elif result.nothing_to_do:
        asked = f" (>= --iterations {result.iterations})" if result.iterations is not None else ""
        print(f"nothing to do: the study already has {sum(result.counts.values())} finished trials{asked}")
    print(f"best trial {result.best_trial}: {result.metric} = {result.best_objective}")
    print("best hyperparameters:")
    print(yaml.safe_dump(result.best_params, sort_keys=False).rstrip())
    print(f"trials: {result.counts}  (hpo show {result.study_dir})")
    print(f"study:  {result.study_dir}")
    if result.best_weights:
        print(f"best weights: {result.best_weights}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=(
        "Tune hyperparameters. Trailing KEY=VALUE pairs are Ultralytics train args "
        "(imgsz=32 batch=16 device=cpu); trailing --option value pairs are the backend's options "
        "(hpo backends lists them)."
    ),
)
@handle_errors
def tune(
    ctx: typer.Context,
    backend: str = typer.Option("ultralytics", "--backend", "-b", help="Backend name (hpo backends)."),
    model: str = typer.Option(..., "--model", "-m", help="Bundled model YAML (yolov8n.yaml) or local .pt; never downloaded."),
    data: str = typer.Option(..., "--data", "-d", help="Data YAML, or classification folder."),
    iterations: Optional[str] = typer.Option(
        None,
        "--iterations",
        "-n",
        metavar="N",
        help="Total finished trials of the study (default 10; with --time-budget: no cap unless given).",
    ),
    time_budget: Optional[str] = typer.Option(
        None,
        "--time-budget",
        "-t",
        metavar="DURATION",
        help="Wall-clock budget of the whole study, over all its runs: seconds (3600) or 90m, 2h, 1h30m. No trial starts after it; running trials stop at their next epoch (pruned).",
    ),
    epochs: str = typer.Option("10", "--epochs", "-e", metavar="N", help="Training epochs per trial (the full fidelity)."),
    output: str = typer.Option("runs/hpo", "--output", "-o", help="Folder of studies (e.g. the mounted volume)."),
    name: Optional[str] = typer.Option(None, "--name", help="Study name (default <data>-<backend>)."),
    space: Optional[str] = typer.Option(
        None, "--space", "-s", help="Search space: YAML/JSON file or inline JSON (default: Ultralytics' tuner space)."
    ),
    metric: Optional[str] = typer.Option(None, "--metric", help="Objective metric (default by task, e.g. metrics/mAP50-95(B))."),
    resume: bool = typer.Option(False, "--resume", help="Continue the existing study up to --iterations."),
    join: bool = typer.Option(
        False, "--join", help="Add this process to a running study (same --output/--name; backends that support it, e.g. optuna)."
    ),
    allow_changes: bool = typer.Option(
        False,
        "--allow-changes",
        help="With --resume: continue with changed data or train args (a new settings version; hpo show marks each trial's).",
    ),
    trial_timeout: Optional[float] = typer.Option(None, "--trial-timeout", help="Seconds before a trial is killed (failed)."),
    concurrent_trials: str = typer.Option(
        "1",
        "--concurrent-trials",
        "-j",
        metavar="N",
        help="Trials trained at once (several GPUs: one each); Ultralytics' data-loader workers stay workers=N.",
    ),
    workers: Optional[str] = typer.Option(
        None, "--workers", "-w", metavar="N", hidden=True, help="Deprecated: --concurrent-trials."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the backend's sampler."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    mlflow: Optional[bool] = typer.Option(
        None,
        "--mlflow/--no-mlflow",
        help="MLflow tracking: a parent run per study, a child run per trial (default: on when MLFLOW_TRACKING_URI is set; see docs/mlflow.md).",
    ),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name (default: the study name)."),
    download_weights: Optional[bool] = typer.Option(
        None,
        "--download-weights/--no-download-weights",
        help="Let Ultralytics fetch official weights named by --model (yolov8n.pt) once, before the first trial, into --weights-dir (default: env HPO_DOWNLOAD_WEIGHTS, else off).",
    ),
    weights_dir: Optional[str] = typer.Option(
        None, "--weights-dir", help="Folder of fetched official weights (default <output>/pretrained)."
    ),
    keep_weights: str = typer.Option(
        "top-3",
        "--keep-weights",
        metavar="best|top-K|all",
        help="Trials that keep their weights/*.pt; the others' are deleted as trials finish (<study>/weights/best.pt stays).",
    ),
    plots: Optional[bool] = typer.Option(
        None,
        "--plots/--no-plots",
        help="Draw <study>/plots/ (PNGs, report.html) when the run ends (default: on unless HPO_PLOTS=0).",
    ),
) -> None:
    import warnings

    from .config import parse_train_args
    from .errors import HpoWarning
    from .tuner import Tuner

    warnings.filterwarnings("ignore", category=HpoWarning)  # printed below as "hpo: warning:" lines
    if workers is not None:
        from .tuner import DEPRECATED_WORKERS

        print(f"hpo: warning: --workers: {DEPRECATED_WORKERS}", file=sys.stderr)
        concurrent_trials = workers
    train_pairs, options = split_extra_args(list(ctx.args))
    options = _checked_options(backend, options, ctx)
    callbacks: list[Any] = []
    with _stdout_to_stderr(as_json):
        result = _tune(
            Tuner,
            backend=backend,
            model=model,
            data=data,
            space=space,
            iterations=iterations,
            epochs=epochs,
            metric=metric,
            train_args=parse_train_args(train_pairs),
            output=output,
            name=name,
            resume=resume,
            join=join,
            allow_changes=allow_changes,
            trial_timeout=trial_timeout,
            time_budget=time_budget,
            concurrent_trials=concurrent_trials,
            seed=seed,
            backend_options=options,
            callbacks=callbacks,
            mlflow=mlflow,
            experiment=experiment,
            plots=plots,
            keep_weights=keep_weights,
            verbose=not quiet,
            download_weights=download_weights,
            weights_dir=weights_dir,
        )
    _print_result(result, as_json)


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


def _tune(tuner_cls: Any, **kwargs: Any) -> Any:
    """Build the :class:`~hpo.Tuner`, print its notices and warnings, and run it (SIGTERM: interrupt)."""
    tuner = tuner_cls(**kwargs)
    cfg = tuner.config
    for notice in cfg.notices:
        print(f"hpo: notice: {mask_text(notice)}", file=sys.stderr)
    for warning in cfg.warnings:
        print(f"hpo: warning: {mask_text(warning)}", file=sys.stderr)
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


@app.command()
@handle_errors
def plot(
    study_dir: Path = typer.Argument(..., help="The study directory <output>/<name>."),
    open_report: bool = typer.Option(False, "--open", help="Open plots/report.html in the web browser."),
    no_html: bool = typer.Option(False, "--no-html", help="PNGs only (report.html inlines plotly.js, about 5 MB)."),
) -> None:
    """Draw a study's plots into <study>/plots/ (PNGs and one self-contained report.html)."""
    from .plots import write_plots
    from .study import Study

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

        webbrowser.open(report.resolve().as_uri())


@app.command()
@handle_errors
def backends(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """List installed backends with their versions and options."""
    from .backend import describe_options
    from .backend_options import option_usage
    from .plugins import backends as installed

    found = installed()
    doc = [
        {
            "name": name,
            "plugin": cls.plugin,
            "version": cls.plugin_version,
            "description": cls.description,
            "options": describe_options(cls),
        }
        for name, cls in found.items()
    ]
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    for b in doc:
        print(f"{b['name']:<12} {b['version']:<10} {b['description']}  [{b['plugin']}]")
        for usage, text in option_usage(found[str(b["name"])]):
            print(f"    {usage}: {text}")


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
) -> None:
    """Write a demo dataset in Ultralytics format; prints what to pass as --data."""
    from .datasets import make_dataset

    print(make_dataset(name, out, seed=seed))


@app.command()
@handle_errors
def demo(
    out: Path = typer.Option(Path("hpo-demo"), "--out", help="Folder for the demo data and study."),
    backend: str = typer.Option("ultralytics", "--backend", "-b"),
    iterations: int = typer.Option(6, "--iterations", "-n"),
    epochs: int = typer.Option(2, "--epochs", "-e"),
) -> None:
    """Build digits-cls and tune yolov8n-cls on it (a real run, a few minutes on 2 CPU cores)."""
    from .datasets import make_digits_cls
    from .tuner import Tuner

    data = out / "digits-cls"
    if not (data / "train").is_dir():
        make_digits_cls(data, seed=0)
    space = {
        "lr0": (1e-4, 1e-2),
        "lrf": (0.01, 1.0),
        "momentum": (0.7, 0.98, 0.3),
        "weight_decay": (0.0, 0.001),
        "warmup_epochs": (0.0, 1.0),
        "hsv_v": (0.0, 0.9),
        "fliplr": (0.0, 0.5),
    }
    name = f"demo-{backend}"
    resume = (out / "studies" / name / "study.json").is_file()
    cfg_args = {"imgsz": 32, "batch": 64, "workers": 0, "optimizer": "AdamW", "device": "cpu"}
    tuner = Tuner(
        backend=backend,
        model="yolov8n-cls.yaml",
        data=data,
        space=space,
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
    _print_result(tuner.run(), False)


register_k8s_commands(app, handle_errors)  # hpo preflight / k8s


def _add_plugin_commands() -> None:
    """Let plugins add their commands (hook ``hpo_cli_commands``; the KFP package adds ``hpo
    pipelines compile``). A broken plugin must not take the whole command line down: it is one
    warning line on stderr, and hpo's own commands still work."""
    from .plugins import add_cli_commands

    try:
        add_cli_commands(app, handle_errors)
    except Exception as e:  # noqa: BLE001 - e.g. a plugin that fails to import
        print(f"hpo: warning: a plugin's commands were not added ({type(e).__name__}: {str(e).strip()[:200]})", file=sys.stderr)


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
