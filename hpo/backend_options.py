"""Backend options on the command line: how they read in help, and the checks of misspelled ones.

A backend's options are its pydantic ``Options`` model (:class:`hpo.Backend`); on ``hpo tune``
they are the trailing ``--name value`` pairs. This module renders them for ``hpo backends`` and
``hpo tune --backend X --help`` (choices of a ``Literal``, booleans as ``--flag/--no-flag``) and
checks given options against them before any trial ("did you mean").
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .backend import BackendInfo

__all__ = ["option_usage", "options_help", "normalize_options"]


def _kind(annotation: Any) -> tuple[str, list[Any] | None, bool]:
    """``(metavar, choices, optional)`` of a field annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "{" + ",".join(map(str, args)) + "}", list(args), False
    if args and type(None) in args:  # Optional[X] / X | None
        inner = [a for a in args if a is not type(None)]
        metavar, choices, _ = _kind(inner[0]) if len(inner) == 1 else ("VALUE", None, False)
        return metavar, choices, True
    if annotation is bool:
        return "", None, False
    names = {int: "INT", float: "NUMBER", str: "TEXT"}
    return names.get(annotation, "VALUE"), None, False


def option_usage(backend_cls: type[BackendInfo]) -> list[tuple[str, str]]:
    """``[(usage, help)]`` of a backend's options: ``("--sampler {tpe,random}", "... (default tpe)")``,
    booleans as ``--checkpoint/--no-checkpoint``."""
    out = []
    for name, f in backend_cls.Options.model_fields.items():
        flag = "--" + name.replace("_", "-")
        metavar, _choices, _opt = _kind(f.annotation)
        usage = f"{flag}/--no-{name.replace('_', '-')}" if f.annotation is bool else f"{flag} {metavar}"
        default = f.default
        text = (f.description or "").rstrip(".")
        if f.annotation is bool:
            text += f" (default: {'on' if default else 'off'})"
        elif default is not None:
            text += f" (default {default})"
        out.append((usage, text))
    return out


def options_help(name: str, backend_cls: type[BackendInfo]) -> str:
    """The block ``hpo tune --backend NAME --help`` appends: the backend's options, one per line."""
    lines = [f"Options of backend '{name}' ({backend_cls.description}), given after the other options:"]
    for usage, text in option_usage(backend_cls) or [("(none)", "")]:
        lines.append(f"  {usage}" + (f": {text}" if text else ""))
    return "\n".join(lines)


def normalize_options(
    name: str, backend_cls: type[BackendInfo], options: dict[str, Any], *, cli_options: Sequence[str] = ()
) -> dict[str, Any]:
    """Map ``--no-flag`` to ``flag=False`` for boolean options and refuse unknown options with a
    suggestion.

    Args:
        name: backend name (for messages).
        backend_cls: the backend class.
        options: from :func:`hpo.cli.split_extra_args` (underscored keys).
        cli_options: ``hpo tune``'s own option names (``--seed``...), also suggested.

    Raises:
        ConfigError: an option the backend does not have (``did you mean --sampler?``), or one of
            ``cli_options`` given where backend options go (after ``--``).
    """
    fields = backend_cls.Options.model_fields
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key.startswith("no_") and key[3:] in fields and fields[key[3:]].annotation is bool and value is True:
            out[key[3:]] = False
            continue
        if key not in fields:
            flag = "--" + key.replace("_", "-")
            if flag in cli_options:
                raise ConfigError(
                    f"{name} option '{key}' ({flag}): {flag} is an option of hpo tune itself, not of backend {name}; "
                    "give it among hpo tune's options, before '--' (after '--' come only train args and backend options)"
                )
            known = ["--" + k.replace("_", "-") for k in fields] + list(cli_options)
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            valid = ", ".join("--" + k.replace("_", "-") for k in fields) or "none"
            raise ConfigError(
                f"{name} option '{key}' ({flag}): {backend_cls.__name__} has no such option; {hint}(options of {name}: {valid})"
            )
        out[key] = value
    return out
