"""pluggy hook specifications of hpo (project name ``"hpo"``).

A plugin is a module or object with functions marked ``@hpo.hookimpl``. hpo loads plugins from two
entry-point groups (:func:`hpo.plugins.get_plugin_manager`): ``hpo.backends`` for search
strategies and ``hpo.plugins`` for everything else (observers, CLI commands). Built-in parts are
registered exactly the same way: the three backends (``hpo_ultralytics``, ``hpo_optuna``,
``hpo_ray``) in ``hpo.backends``, MLflow tracking (:mod:`hpo.tracking`) and the KFP package's
``hpo pipelines compile`` (``hpo_kfp.cli``) in ``hpo.plugins``; hpo's own observers (the
progress display :mod:`hpo.progress`, the plots :mod:`hpo.plots`, the weights keeper
:mod:`hpo.weights`) with the same call, first (:data:`hpo.plugins.DEFAULT_PLUGINS`). A plugin module must import
quickly (heavy libraries inside the functions that use them): every ``hpo`` command loads it.

Hooks (keyword arguments only; an implementation may take any subset of a hook's arguments):

- :func:`hpo_register_backends`: backend classes (``hpo tune --backend NAME``);
- :func:`hpo_study_observers`: observers (:class:`hpo.TunerCallback`) of a study that is about to
  run, e.g. a tracker logging to an experiment-tracking service;
- :func:`hpo_cli_commands`: commands added to the ``hpo`` command line.

A third-party backend::

    # pyproject.toml
    [project.entry-points."hpo.backends"]
    mybackend = "my_package.hpo_plugin"

    # my_package/hpo_plugin.py
    from hpo import Backend, hookimpl

    class MyBackend(Backend):
        name = "mybackend"
        ...

    @hookimpl
    def hpo_register_backends():
        return [MyBackend]

A third-party observer and CLI command (``hpo myreport STUDY``)::

    # pyproject.toml
    [project.entry-points."hpo.plugins"]
    myplugin = "my_package.hpo_plugin"

    # my_package/hpo_plugin.py
    import typer

    from hpo import ConfigError, TunerCallback, hookimpl

    class Notifier(TunerCallback):
        def on_trial_end(self, record):
            print(f"trial {record.id}: {record.status.value} {record.objective}")

    @hookimpl
    def hpo_study_observers(config, settings):
        return [Notifier()] if config.iterations > 1 else []

    def myreport(study_dir: str = typer.Argument(...)) -> None:
        from hpo.report import study_summary

        print(study_summary(study_dir)["counts"])

    @hookimpl
    def hpo_cli_commands(app, handle_errors):
        app.command("myreport")(handle_errors(myreport))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from .callbacks import TunerCallback
    from .config import TuneConfig

hookspec = pluggy.HookspecMarker("hpo")
hookimpl = pluggy.HookimplMarker("hpo")


@hookspec
def hpo_register_backends() -> list[type]:
    """Return the backend classes this plugin provides.

    Called once when the plugin manager is built (:func:`hpo.plugins.get_plugin_manager`), before
    any study starts. Takes no arguments.

    Returns:
        A list of :class:`hpo.Backend` subclasses, each with a unique ``name`` (the value of
        ``--backend``). A name provided twice is an error naming both plugins.
    """


@hookspec
def hpo_study_observers(config: TuneConfig, settings: Mapping[str, Any]) -> list[TunerCallback]:
    """Return the observers this plugin adds to a study that is about to run.

    Called by :meth:`hpo.Tuner.run` once per run, first thing: before the study directory is
    created, opened or locked. An implementation may check its service here (MLflow creates or
    fetches its experiment) and refuse the run by raising :class:`hpo.ConfigError`: the run stops
    with that one-line error (CLI exit code 2) and nothing is written. Once the study runs, an
    observer that raises never fails it (one warning line naming the observer; a
    :class:`hpo.ConfigError` from ``on_study_start`` still stops the run).

    The order the observers are called in (:func:`hpo.plugins.study_observers`): those of
    implementations marked ``@hookimpl(tryfirst=True)`` (hpo's progress display, then its plots,
    so that MLflow logs them), then the Tuner's ``callbacks=``, then the other plugins' (MLflow
    tracking, third-party ones) in the order the plugins were loaded, then those marked
    ``trylast`` (hpo's weights keeper, which deletes weights after every other observer saw the trial).

    Args:
        config: the validated study settings (:class:`hpo.TuneConfig`: ``name``,
            ``study_dir``, ``backend``, ``join``, ``keep_weights``, ...).
        settings: the study's settings as given, read-only and with credentials masked: every
            field of :class:`hpo.TuneSettings`, e.g. ``mlflow`` (``bool`` or ``None``:
            ``Tuner(mlflow=...)``, CLI ``--mlflow/--no-mlflow``), ``experiment`` (``str`` or
            ``None``: ``Tuner(experiment=...)``, CLI ``--experiment``), ``verbose``, ``plots``.
            Keys a plugin does not know are ignored.

    Returns:
        A list (possibly empty) of :class:`hpo.TunerCallback` objects (or any objects with some of
        its methods).

    Raises:
        hpo.ConfigError: the settings cannot be used (e.g. ``experiment`` with ``mlflow=False``),
            or the service refused them (an MLflow server unreachable, a deleted experiment).
    """


@hookspec
def hpo_cli_commands(app: typer.Typer, handle_errors: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add this plugin's commands to the ``hpo`` command line.

    Called once when :mod:`hpo.cli` is imported, after hpo's own commands are added.

    Args:
        app: the ``hpo`` :class:`typer.Typer` app: add commands with ``app.command(NAME)(fn)``
            or groups with ``app.add_typer(sub, name=NAME)``.
        handle_errors: :func:`hpo.cli.handle_errors`; wrap each command with it so that an
            :class:`hpo.HpoError` is one line on stderr and its exit code (2 bad input).

    Returns:
        Nothing. A command whose optional dependency is missing should still be added, and say
        which extra to install when run (:func:`hpo.extras.require`).
    """
