"""The plugin manager: finds plugins through the entry-point groups ``hpo.backends`` and ``hpo.plugins``.

Nothing is created at import time: call :func:`get_plugin_manager` (cached). hpo's own observers
(:data:`DEFAULT_PLUGINS`: the progress display, the plots, the weights keeper) are registered
first, with the same call as the plugins an entry point names. Loading an entry point imports
only its small plugin module; plugins import their heavy libraries (optuna, ray, torch, mlflow,
kfp) inside their methods, so ``hpo backends`` stays fast. The hooks are in :mod:`hpo.hookspecs`;
this module also calls the ones the core needs (:func:`backends`, :func:`study_observers`,
:func:`add_cli_commands`). :func:`register` adds a plugin in this process without an entry point
(a benchmark's own backend, a test's).

This module's ``__all__`` is public API (plugins, ``hpo_kfp`` and ``hpo_bench`` may use it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import pluggy

from . import hookspecs
from .errors import BackendNotFoundError, HpoError, closest

if TYPE_CHECKING:
    import typer

    from .backend import Backend, Controller
    from .callbacks import TunerCallback
    from .config import TuneConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGIN_GROUP",
    "ENTRY_POINT_GROUPS",
    "DEFAULT_PLUGINS",
    "get_plugin_manager",
    "register",
    "backends",
    "get_backend",
    "study_observers",
    "add_cli_commands",
]

#: Entry-point group of backends (search strategies).
ENTRY_POINT_GROUP = "hpo.backends"
#: Entry-point group of every other plugin (observers such as MLflow tracking, CLI commands).
PLUGIN_GROUP = "hpo.plugins"
#: The groups loaded, in this order.
ENTRY_POINT_GROUPS = (ENTRY_POINT_GROUP, PLUGIN_GROUP)
#: hpo's own plugins, registered by these names before the entry points' plugins: the study
#: observers of :mod:`hpo.progress`, :mod:`hpo.plots` and :mod:`hpo.weights`.
DEFAULT_PLUGINS = ("progress", "plots", "weights")


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """Build the plugin manager: hook specs + every ``hpo.backends`` and ``hpo.plugins`` entry
    point; checks pending hooks.

    Raises:
        pluggy.PluginValidationError: a plugin implements a hook that does not exist (misspelled).
    """
    pm = pluggy.PluginManager("hpo")
    pm.add_hookspecs(hookspecs)
    from . import plots, progress, weights  # DEFAULT_PLUGINS' modules (light: they import their libraries when used)

    for name, module in zip(DEFAULT_PLUGINS, (progress, plots, weights), strict=True):
        pm.register(module, name=name)
    for group in ENTRY_POINT_GROUPS:
        pm.load_setuptools_entrypoints(group)
    pm.check_pending()
    return pm


def register(plugin: object, name: str | None = None) -> None:
    """Register a plugin module or object in this process, as an entry point would (idempotent).

    For a plugin that is not installed with an entry point: a benchmark's own backend, a test's
    observer. Call it before the first :func:`backends` of the process, or it clears that cache.

    Raises:
        pluggy.PluginValidationError: the plugin implements a hook that does not exist.
    """
    pm = get_plugin_manager()
    if not pm.is_registered(plugin):
        pm.register(plugin, name=name)
        pm.check_pending()
        backends.cache_clear()


def study_observers(config: TuneConfig, settings: Mapping[str, Any], *, callbacks: Sequence[Any] = ()) -> list[TunerCallback]:
    """The observers of a study about to run: every plugin's (hook ``hpo_study_observers``) and
    ``callbacks``, in the order they are called.

    The order: the observers of implementations marked ``@hookimpl(tryfirst=True)`` (hpo's
    progress display, then its plots, so that MLflow logs the plots), then ``callbacks``, then
    the other plugins' (MLflow tracking, third-party ones), then those marked ``trylast`` (hpo's
    weights keeper, which deletes weights after every other observer saw the trial); within
    each, in plugin load order (hpo's own, then ``hpo.backends``, then ``hpo.plugins``, each in
    entry-point order).

    Args:
        config: the validated study settings.
        settings: the settings as given (every :class:`hpo.TuneSettings` field), passed read-only.
        callbacks: the Tuner's own observers (``Tuner(callbacks=...)``).

    Returns:
        The observers.

    Raises:
        hpo.ConfigError: a plugin refused the settings or its service (nothing is written yet).
        HpoError: a plugin returned something that is not a list.
    """
    frozen = MappingProxyType(dict(settings))
    given = {"config": config, "settings": frozen}
    impls = get_plugin_manager().hook.hpo_study_observers.get_hookimpls()
    # pluggy keeps [trylast (last registered first), plain, tryfirst] (the others in registration order)
    first = [i for i in impls if i.tryfirst]
    last = [i for i in impls if i.trylast][::-1]
    plain = [i for i in impls if not (i.tryfirst or i.trylast)]

    def observers_of(group: list[Any]) -> list[TunerCallback]:
        found: list[TunerCallback] = []
        for impl in group:
            got = impl.function(**{arg: given[arg] for arg in impl.argnames})
            if not isinstance(got, (list, tuple)):
                raise HpoError(
                    f"plugin {impl.plugin_name}: hpo_study_observers returned {type(got).__name__}, not a list of observers"
                )
            found.extend(got)
        return found

    return [*observers_of(first), *callbacks, *observers_of(plain), *observers_of(last)]


def add_cli_commands(app: typer.Typer, handle_errors: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Let every plugin add its commands to ``app`` (hook ``hpo_cli_commands``)."""
    get_plugin_manager().hook.hpo_cli_commands(app=app, handle_errors=handle_errors)


@functools.cache
def backends() -> dict[str, type[Backend | Controller]]:
    """Installed backends by name, each class with ``plugin`` (distribution) and ``plugin_version`` set.

    Raises:
        HpoError: two plugins register the same backend name.
    """
    from .backend import Backend, Controller

    pm = get_plugin_manager()
    dists: dict[int, tuple[str, str]] = {}
    for plugin, info in pm.list_plugin_distinfo():
        dists[id(plugin)] = (info.project_name, info.version)
    found: dict[str, type[Backend | Controller]] = {}
    for impl in pm.hook.hpo_register_backends.get_hookimpls():
        provided = cast("list[type]", impl.function() or [])
        for cls in provided:
            if not (isinstance(cls, type) and issubclass(cls, (Backend, Controller))):
                raise HpoError(f"plugin {impl.plugin_name}: {cls!r} is not an hpo.Backend or hpo.Controller subclass")
            if cls.name in found:
                raise HpoError(f"backend '{cls.name}' is registered twice ({found[cls.name].__module__}, {cls.__module__})")
            dist_name, version = dists.get(id(impl.plugin), (impl.plugin_name, "?"))
            cls.plugin = dist_name
            cls.plugin_version = _version_of(cls) or version
            found[cls.name] = cls
    return dict(sorted(found.items()))


def _version_of(cls: type) -> str | None:
    lib = getattr(cls, "library", None)
    if not lib:
        return None
    try:
        return importlib.metadata.version(lib)
    except importlib.metadata.PackageNotFoundError:
        return None


def get_backend(name: str) -> type[Backend | Controller]:
    """The backend class called ``name``.

    Raises:
        BackendNotFoundError: no installed backend has that name (the message lists the installed ones).
        hpo.extras.MissingExtra: Ultralytics (every trial trains with it, extra ``yolo``) or the
            backend's ``library`` (e.g. extra ``optuna``) is not installed.
    """
    from .extras import require

    found = backends()
    if name not in found:
        raise BackendNotFoundError(f"backend: unknown '{name}'{closest(name, found)}; installed: {', '.join(found) or 'none'}")
    cls = found[name]
    require("ultralytics", "yolo", "training")
    if cls.library:
        require(cls.library.replace("-", "_"), None, f"backend '{name}'")
    return cls
