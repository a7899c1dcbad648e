"""``hpo pipelines compile``: the KFP package's command on the ``hpo`` command line.

A plugin of hpo (entry point ``kfp`` in the group ``hpo.plugins``, hook
:func:`hpo.hookspecs.hpo_cli_commands`): the core never imports this package. This module imports
typer only; kfp and the example pipelines (:mod:`hpo_kfp.examples`) are imported when the command
runs, so without the ``kfp`` extra ``hpo --help`` works and the command says which extra to install
(one line, exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from hpo import hookimpl

__all__ = ["pipelines_compile", "hpo_cli_commands"]


def pipelines_compile(
    out_dir: Path = typer.Argument(..., help="Folder for the IR YAML files (created if missing)."),
    image: Optional[str] = typer.Option(
        None, "--image", help="Your hpo image, REGISTRY/NAME:TAG (built from the Dockerfile; default: $HPO_IMAGE)."
    ),
    mount_path: str = typer.Option("/mnt/hpo", "--mount-path", help="Where every task mounts the PVC."),
) -> None:
    """Write the IR YAML of every example pipeline and the tuning component's YAML into OUT_DIR."""
    # Raises hpo.extras.MissingExtra (kfp or kfp-kubernetes missing: extra ``kfp``) and
    # hpo.errors.ConfigError (no or bad image; a mount path Kubernetes or the container would refuse,
    # hpo.preflight.check_mount_path; OUT_DIR is a file or not writable); the text above is the --help
    from hpo.extras import require
    from hpo.preflight import check_mount_path

    check_mount_path(mount_path, "--mount-path")  # before the extras: bad input is bad input
    require("kfp", "kfp", "hpo pipelines compile")
    require("kfp.kubernetes", "kfp", "hpo pipelines compile")
    from .examples import compile_all

    for path in compile_all(out_dir, image or os.environ.get("HPO_IMAGE") or "", mount_path):
        print(path)


@hookimpl
def hpo_cli_commands(app: typer.Typer, handle_errors: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add ``hpo pipelines compile`` to the ``hpo`` app (hook :func:`hpo.hookspecs.hpo_cli_commands`)."""
    pipelines_app = typer.Typer(
        help="Kubeflow Pipelines (v2): compile hpo's example pipelines and component.", no_args_is_help=True
    )
    pipelines_app.command("compile")(handle_errors(pipelines_compile))
    app.add_typer(pipelines_app, name="pipelines")
