"""The plugin manager: finds backends through the entry-point group ``hpo.backends``.

Nothing is created at import time: call :func:`get_plugin_manager` (cached). Loading a backend's
entry point imports only its small plugin module; backends import their heavy libraries (optuna,
ray, torch) inside their methods, so ``hpo backends`` stays fast.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from .errors import BackendNotFound, HpoError, closest

if TYPE_CHECKING:
    from .backend import Backend, Controller

__all__ = ["ENTRY_POINT_GROUP", "get_plugin_manager", "backends", "get_backend"]

ENTRY_POINT_GROUP = "hpo.backends"


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """Build the plugin manager: hook specs + every ``hpo.backends`` entry point; checks pending hooks.

    Raises:
        pluggy.PluginValidationError: a plugin implements a hook that does not exist (misspelled).
    """
    pm = pluggy.PluginManager("hpo")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


@functools.cache
def backends() -> dict[str, type[Backend | Controller]]:
    """Installed backends by name, each class with ``plugin`` (distribution) and ``plugin_version`` set.

    Raises:
        HpoError: two plugins register the same backend name.
    """
    from .backend import Backend, Controller

    pm = get_plugin_manager()
    dists = {}
    for plugin, dist in pm.list_plugin_distinfo():
        dists[id(plugin)] = (dist.project_name, dist.version)
    found: dict[str, type[Backend | Controller]] = {}
    for impl in pm.hook.hpo_register_backends.get_hookimpls():
        for cls in impl.function() or []:
            if not (isinstance(cls, type) and issubclass(cls, (Backend, Controller))):
                raise HpoError(f"plugin {impl.plugin_name}: {cls!r} is not an hpo.Backend or hpo.Controller subclass")
            if cls.name in found:
                raise HpoError(f"backend '{cls.name}' is registered twice ({found[cls.name].__module__}, {cls.__module__})")
            dist, version = dists.get(id(impl.plugin), (impl.plugin_name, "?"))
            cls.plugin = dist
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
        BackendNotFound: no installed backend has that name (the message lists the installed ones).
        hpo.extras.MissingExtra: Ultralytics (every trial trains with it, extra ``yolo``) or the
            backend's ``library`` (e.g. extra ``optuna``) is not installed.
    """
    from .extras import require

    found = backends()
    if name not in found:
        raise BackendNotFound(
            f"backend: unknown '{name}'{closest(name, found)}; installed: {', '.join(found) or 'none'}"
        )
    cls = found[name]
    require("ultralytics", "yolo", "training")
    if cls.library:
        require(cls.library.replace("-", "_"), None, f"backend '{name}'")
    return cls
