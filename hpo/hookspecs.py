"""pluggy hook specifications of hpo (project name ``"hpo"``).

A plugin is a module or object with functions marked ``@hpo.hookimpl``, registered through the
entry-point group ``hpo.backends`` (built-in backends are registered exactly the same way)::

    # pyproject.toml of a third-party backend
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
"""

from __future__ import annotations

import pluggy

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
